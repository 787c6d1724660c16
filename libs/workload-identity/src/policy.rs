//! East-west authorization: which workload may call which route — the
//! application-level twin of an Istio `AuthorizationPolicy`, default deny.
//!
//! ```toml
//! [[allow]]
//! caller = "spiffe://estate.local/ns/estate/sa/order"
//! methods = ["POST"]
//! paths = ["/v1/payments", "/v1/payments/*/refund"]
//!
//! [[allow]]                      # gRPC: the method path, always POST
//! caller = "spiffe://estate.local/ns/estate/sa/order"
//! methods = ["POST"]
//! paths = ["/estate.inventory.v1.Inventory/Reserve"]
//! ```
//!
//! A path pattern is matched segment by segment; `*` matches exactly one
//! segment. A refusal is 403 problem+json (gRPC: `PERMISSION_DENIED`) and a
//! `policy_denied` audit event naming the caller, method and route.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use estate_service_kit::Problem;
use estate_service_kit::serve::ConnectionInfo;
use http::{HeaderValue, Method, StatusCode, header};
use serde::Deserialize;

use crate::peer::Peer;
use crate::spiffe::SpiffeId;

/// Policy file problems.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Unreadable.
    #[error("cannot read policy {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Not valid.
    #[error("invalid policy: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    allow: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    caller: String,
    methods: Vec<String>,
    paths: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    caller: SpiffeId,
    methods: Vec<Method>,
    paths: Vec<Vec<String>>,
}

/// A loaded policy. With no rules, everything is denied.
#[derive(Clone, Default)]
pub struct EastWestPolicy {
    rules: Arc<Vec<Rule>>,
    audit: Option<estate_audit::AuditLog>,
    crls: Option<Arc<crate::crl::CrlSet>>,
}

impl std::fmt::Debug for EastWestPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EastWestPolicy").field("rules", &self.rules).finish_non_exhaustive()
    }
}

impl EastWestPolicy {
    /// Parse TOML text.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml_parse(text)?;
        let mut rules = Vec::new();
        for rule in file.allow {
            let caller = rule.caller.parse().map_err(|_| PolicyError::Invalid(format!("caller {:?}", rule.caller)))?;
            let methods = rule
                .methods
                .iter()
                .map(|m| m.parse::<Method>().map_err(|_| PolicyError::Invalid(format!("method {m:?}"))))
                .collect::<Result<_, _>>()?;
            let paths = rule
                .paths
                .iter()
                .map(|p| {
                    if !p.starts_with('/') || p.contains("**") {
                        return Err(PolicyError::Invalid(format!("path {p:?}")));
                    }
                    Ok(segments(p).map(str::to_owned).collect())
                })
                .collect::<Result<_, _>>()?;
            rules.push(Rule { caller, methods, paths });
        }
        Ok(Self { rules: Arc::new(rules), audit: None, crls: None })
    }

    /// Record every denial in `audit` (a `policy_denied` event).
    pub fn with_audit(mut self, audit: estate_audit::AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Refuse, on every request, callers whose certificate `crls` list —
    /// also on connections established before the revocation.
    pub fn with_crls(mut self, crls: Arc<crate::crl::CrlSet>) -> Self {
        self.crls = Some(crls);
        self
    }

    /// Load a TOML policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        Self::from_toml(&text)
    }

    /// Whether `caller` may call `method path`.
    pub fn allows(&self, caller: &SpiffeId, method: &Method, path: &str) -> bool {
        let requested: Vec<&str> = segments(path).collect();
        self.rules.iter().any(|rule| {
            rule.caller == *caller
                && rule.methods.contains(method)
                && rule.paths.iter().any(|pattern| {
                    pattern.len() == requested.len() && pattern.iter().zip(&requested).all(|(p, r)| p == "*" || p == r)
                })
        })
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn toml_parse(text: &str) -> Result<PolicyFile, PolicyError> {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    Figment::from(Toml::string(text)).extract().map_err(|e| PolicyError::Invalid(e.to_string()))
}

/// Middleware: enforce `policy` on every request (apply with
/// `axum::middleware::from_fn_with_state(policy, enforce)`).
pub async fn enforce(State(policy): State<EastWestPolicy>, request: Request, next: Next) -> Response {
    let info = request.extensions().get::<ConnectionInfo>();
    let peer = info.and_then(Peer::of);
    let revoked = policy
        .crls
        .as_ref()
        .zip(info.and_then(|i| i.peer_certificates.first()))
        .is_some_and(|(crls, leaf)| crls.lists(leaf));
    let allowed =
        !revoked && peer.as_ref().is_some_and(|Peer(id)| policy.allows(id, request.method(), request.uri().path()));
    if allowed {
        // Who called (the verified peer), on the request's span: its
        // `request handled` line carries it — the trail of a request across
        // the estate, hop by hop, without a log line more.
        if let Some(Peer(id)) = &peer {
            tracing::Span::current().record("peer", id.as_str());
        }
        return next.run(request).await;
    }
    tracing::warn!(
        peer = peer.as_ref().map_or("-", |Peer(id)| id.as_str()),
        method = %request.method(),
        path = request.uri().path(),
        revoked,
        "east-west call refused by policy"
    );
    if let Some(audit) = &policy.audit {
        let mut event =
            estate_audit::AuditEvent::new(estate_audit::Action::PolicyDenied, estate_audit::Outcome::Failure)
                .reason(match (&peer, revoked) {
                    (_, true) => "peer_certificate_revoked",
                    (Some(_), false) => "route_not_allowed_for_workload",
                    (None, false) => "no_workload_identity",
                })
                .source(request.extensions().get::<ConnectionInfo>().map(|c| c.remote_addr.ip()));
        if let Some(Peer(id)) = &peer
            && let Ok(peer) = estate_audit::Identifier::new(id.as_str())
        {
            event = event.peer(peer);
        }
        audit.emit(event);
    }
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        // A gRPC "trailers-only" response: status 7 = PERMISSION_DENIED.
        let mut response = StatusCode::OK.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static("7"));
        headers.insert("grpc-message", HeaderValue::from_static("workload%20not%20allowed"));
        return response;
    }
    Problem::new(StatusCode::FORBIDDEN).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[allow]]
caller = "spiffe://estate.local/ns/estate/sa/order"
methods = ["POST"]
paths = ["/v1/payments", "/v1/payments/*/refund"]
"#;

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::workload("estate.local", "estate", sa).unwrap()
    }

    #[test]
    fn default_deny_with_exact_segment_matching() {
        let policy = EastWestPolicy::from_toml(POLICY).unwrap();
        assert!(policy.allows(&id("order"), &Method::POST, "/v1/payments"));
        assert!(policy.allows(&id("order"), &Method::POST, "/v1/payments/42/refund"));
        assert!(!policy.allows(&id("order"), &Method::GET, "/v1/payments"), "method");
        assert!(!policy.allows(&id("order"), &Method::POST, "/v1/payments/42"), "path");
        assert!(!policy.allows(&id("order"), &Method::POST, "/v1/payments/42/refund/x"), "extra segment");
        assert!(!policy.allows(&id("order"), &Method::POST, "/v1/payments/a/b/refund"), "* is one segment");
        assert!(!policy.allows(&id("inventory"), &Method::POST, "/v1/payments"), "caller");
        assert!(!EastWestPolicy::default().allows(&id("order"), &Method::POST, "/v1/payments"), "empty denies");
    }

    #[test]
    fn invalid_policies_are_refused() {
        for bad in [
            "[[allow]]\ncaller = \"order\"\nmethods = [\"GET\"]\npaths = [\"/x\"]",
            "[[allow]]\ncaller = \"spiffe://estate.local/ns/estate/sa/order\"\nmethods = [\"GET\"]\npaths = [\"x\"]",
            "[[allow]]\ncaller = \"spiffe://estate.local/ns/estate/sa/order\"\nmethods = [\"GET\"]\npaths = [\"/**\"]",
            "[[allow]]\ncaller = \"spiffe://estate.local/ns/estate/sa/order\"\nmethods = [\"GET\"]\npaths = [\"/x\"]\nextra = 1",
        ] {
            assert!(EastWestPolicy::from_toml(bad).is_err(), "{bad}");
        }
    }
}
