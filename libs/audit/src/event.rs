//! The closed set of audit events and their typed fields.
//!
//! Fields are types, not free strings, so that a token, a secret or a
//! password has no place to go: identifiers are validated ([`Identifier`]
//! refuses control characters, over-long values and anything shaped like a
//! JWT), reasons are `&'static str` chosen in code, trace ids are hex.
//!
//! Records use Elastic Common Schema names (`event.*`, `user.id`,
//! `source.ip`, `trace.id`, `service.name`); Estate-specific fields live under
//! `estate.*`. The mapping is in `docs/decisions/0012-audit-events.md`.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// A value that may appear in an audit record as an identifier.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Identifier(String);

/// A value refused as an [`Identifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an audit identifier (too long, control characters, or shaped like a token)")]
pub struct NotAnIdentifier;

impl Identifier {
    /// Validate: 1–255 bytes, no control characters, and not a compact JWS
    /// (three base64url segments) — a token must never be logged, even by mistake.
    pub fn new(value: &str) -> Result<Self, NotAnIdentifier> {
        let looks_like_jwt = value.split('.').count() == 3
            && value.len() > 40
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        let ok = !value.is_empty() && value.len() <= 255 && !value.chars().any(char::is_control) && !looks_like_jwt;
        if ok { Ok(Self(value.to_owned())) } else { Err(NotAnIdentifier) }
    }

    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identifier({})", self.0)
    }
}

/// A W3C trace id (32 lowercase hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TraceId(String);

impl TraceId {
    /// Validate a trace id.
    pub fn new(hex: &str) -> Option<Self> {
        (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Self(hex.to_owned()))
    }
}

/// What happened (ECS `event.action`, with its `event.category`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A request carried no valid credentials.
    AuthenticationFailed,
    /// Authenticated, but not allowed (scope, ownership, admin).
    AccessDenied,
    /// East-west policy refused a workload.
    PolicyDenied,
    /// A rate limit tripped.
    RateLimited,
    /// An administrative operation was performed.
    AdminAction,
    /// A token was issued.
    TokenIssued,
    /// A token was exchanged (RFC 8693).
    TokenExchanged,
    /// A token was revoked.
    TokenRevoked,
    /// A user logged in.
    LoginSucceeded,
    /// A login failed.
    LoginFailed,
    /// A secret or credential was leased.
    SecretLeased,
    /// A lease was renewed.
    SecretRenewed,
    /// A lease was revoked.
    SecretRevoked,
    /// A signing key rotation step.
    KeyRotated,
    /// Audit events were lost (spool full); emitted so the loss is visible.
    AuditOverflow,
    /// A request was refused (malformed, unknown route, too big, …) where no
    /// more specific event said why: the service kit's safety net, so every
    /// refusal leaves a trace (decision 0023).
    RequestRefused,
}

impl Action {
    /// ECS `event.action`.
    pub fn name(self) -> &'static str {
        match self {
            Action::AuthenticationFailed => "authentication_failed",
            Action::AccessDenied => "access_denied",
            Action::PolicyDenied => "policy_denied",
            Action::RateLimited => "rate_limited",
            Action::AdminAction => "admin_action",
            Action::TokenIssued => "token_issued",
            Action::TokenExchanged => "token_exchanged",
            Action::TokenRevoked => "token_revoked",
            Action::LoginSucceeded => "login_succeeded",
            Action::LoginFailed => "login_failed",
            Action::SecretLeased => "secret_leased",
            Action::SecretRenewed => "secret_renewed",
            Action::SecretRevoked => "secret_revoked",
            Action::KeyRotated => "key_rotated",
            Action::AuditOverflow => "audit_overflow",
            Action::RequestRefused => "request_refused",
        }
    }

    /// ECS `event.category`.
    pub fn category(self) -> &'static str {
        match self {
            Action::AuthenticationFailed | Action::LoginSucceeded | Action::LoginFailed => "authentication",
            Action::AccessDenied | Action::PolicyDenied | Action::AdminAction => "iam",
            Action::RateLimited => "network",
            Action::RequestRefused => "web",
            Action::TokenIssued | Action::TokenExchanged | Action::TokenRevoked | Action::KeyRotated => "configuration",
            Action::SecretLeased | Action::SecretRenewed | Action::SecretRevoked => "configuration",
            Action::AuditOverflow => "process",
        }
    }

    /// Syslog severity (RFC 5424): refusals are warnings, the rest notices.
    pub fn severity(self) -> u8 {
        match self {
            Action::AuthenticationFailed
            | Action::AccessDenied
            | Action::PolicyDenied
            | Action::RateLimited
            | Action::RequestRefused
            | Action::LoginFailed => 4,
            Action::AuditOverflow => 3,
            _ => 5,
        }
    }
}

/// ECS `event.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It worked.
    Success,
    /// It was refused or failed.
    Failure,
}

/// One audit event, before it gets its id, time and place in the chain.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub(crate) action: Action,
    pub(crate) outcome: Outcome,
    pub(crate) reason: Option<&'static str>,
    pub(crate) subject: Option<Identifier>,
    pub(crate) user_name: Option<Identifier>,
    pub(crate) client_id: Option<Identifier>,
    pub(crate) peer: Option<Identifier>,
    pub(crate) jti: Option<Identifier>,
    pub(crate) lease_id: Option<Identifier>,
    pub(crate) key_id: Option<Identifier>,
    pub(crate) source_ip: Option<IpAddr>,
    pub(crate) trace_id: Option<TraceId>,
    pub(crate) count: Option<u64>,
    pub(crate) http: Option<HttpFacts>,
}

/// What an HTTP request was: method, the route it matched (a template from
/// code or the route table, never the raw path a client sent) and the status.
#[derive(Debug, Clone)]
pub(crate) struct HttpFacts {
    pub(crate) method: &'static str,
    pub(crate) route: Identifier,
    pub(crate) status: u16,
}

impl AuditEvent {
    /// An event of `action` with `outcome`.
    pub fn new(action: Action, outcome: Outcome) -> Self {
        Self {
            action,
            outcome,
            reason: None,
            subject: None,
            user_name: None,
            client_id: None,
            peer: None,
            jti: None,
            lease_id: None,
            key_id: None,
            source_ip: None,
            trace_id: None,
            count: None,
            http: None,
        }
    }
    /// The request: `method` (anything but the standard methods is recorded
    /// as `OTHER`), the matched `route` template (`unmatched` when none or
    /// when it is not a valid identifier) and the response `status`.
    pub fn http(mut self, method: &str, route: &str, status: u16) -> Self {
        const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"];
        let method = METHODS.iter().find(|m| **m == method).copied().unwrap_or("OTHER");
        let route = Identifier::new(route).or_else(|_| Identifier::new("unmatched")).ok();
        if let Some(route) = route {
            self.http = Some(HttpFacts { method, route, status });
        }
        self
    }
    /// Why (a fixed string from code: `invalid_token`, `insufficient_scope` …).
    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }
    /// The user (`sub`).
    pub fn subject(mut self, subject: Identifier) -> Self {
        self.subject = Some(subject);
        self
    }
    /// The OAuth client.
    pub fn client_id(mut self, client_id: Identifier) -> Self {
        self.client_id = Some(client_id);
        self
    }
    /// The calling workload's SPIFFE ID.
    pub fn peer(mut self, peer: Identifier) -> Self {
        self.peer = Some(peer);
        self
    }
    /// The token's `jti` (never the token).
    pub fn jti(mut self, jti: Identifier) -> Self {
        self.jti = Some(jti);
        self
    }
    /// A secret lease (e.g. an OpenBao lease id: names the lease, never the
    /// credential it carries). Left out if not a valid [`Identifier`].
    pub fn lease_id(mut self, value: &str) -> Self {
        self.lease_id = Identifier::new(value).ok();
        self
    }
    /// A signing key's `kid` (left out if invalid).
    pub fn key_id(mut self, value: &str) -> Self {
        self.key_id = Identifier::new(value).ok();
        self
    }
    /// Where the request came from.
    pub fn source_ip(mut self, ip: IpAddr) -> Self {
        self.source_ip = Some(ip);
        self
    }
    /// The W3C trace id of the request.
    pub fn trace_id(mut self, trace_id: TraceId) -> Self {
        self.trace_id = Some(trace_id);
        self
    }
    /// A count (e.g. how many events an overflow lost).
    pub fn count(mut self, count: u64) -> Self {
        self.count = Some(count);
        self
    }
    /// The user, from a string; left out if it is not a valid [`Identifier`]
    /// (untrusted input is never written raw).
    pub fn user(self, value: &str) -> Self {
        match Identifier::new(value) {
            Ok(id) => self.subject(id),
            Err(_) => self,
        }
    }
    /// The user name given at a login (ECS `user.name`; left out if invalid).
    pub fn user_name(mut self, value: &str) -> Self {
        self.user_name = Identifier::new(value).ok();
        self
    }
    /// The OAuth client, from a string (left out if invalid).
    pub fn client(self, value: &str) -> Self {
        match Identifier::new(value) {
            Ok(id) => self.client_id(id),
            Err(_) => self,
        }
    }
    /// Who called, from a verified token's subject, client id and token id
    /// (each left out if absent or not a valid identifier).
    pub fn caller(self, subject: &str, client: Option<&str>, jti: Option<&str>) -> Self {
        self.user(subject).client(client.unwrap_or_default()).token_id(jti.unwrap_or_default())
    }
    /// The token id, from a string (left out if invalid).
    pub fn token_id(self, value: &str) -> Self {
        match Identifier::new(value) {
            Ok(id) => self.jti(id),
            Err(_) => self,
        }
    }
    /// The source address, when known.
    pub fn source(self, ip: Option<IpAddr>) -> Self {
        match ip {
            Some(ip) => self.source_ip(ip),
            None => self,
        }
    }

    /// The action.
    pub fn action(&self) -> Action {
        self.action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_refuse_tokens_and_log_injection() {
        assert!(Identifier::new("alice").is_ok());
        assert!(Identifier::new("spiffe://estate.local/ns/estate/sa/order").is_ok());
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.MEUCIQDz1mF0kSgPgr4rZ3vXb0bW8dZpVt2b5pQ"; // secret-scan: allow (the shape of a JWT; signed by nothing)
        assert_eq!(Identifier::new(jwt), Err(NotAnIdentifier));
        assert_eq!(Identifier::new("alice\n{\"forged\":true}"), Err(NotAnIdentifier));
        assert_eq!(Identifier::new(""), Err(NotAnIdentifier));
        assert_eq!(Identifier::new(&"a".repeat(256)), Err(NotAnIdentifier));
    }

    #[test]
    fn trace_ids_are_hex() {
        assert!(TraceId::new("4bf92f3577b34da6a3ce929d0e0e4736").is_some());
        assert!(TraceId::new("4BF92F3577B34DA6A3CE929D0E0E4736").is_none());
        assert!(TraceId::new("short").is_none());
    }
}
