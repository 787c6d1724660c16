//! Typed access-token claims (RFC 9068 JWT access tokens, RFC 8693 `act`).
//!
//! The wire form ([`RawClaims`]) is parsed into [`VerifiedToken`], whose
//! fields are private and typed: a [`Subject`] is not a [`ClientId`], scopes
//! are a closed set, the actor chain is a recursive type. Only
//! [`crate::Verifier`] constructs a `VerifiedToken`, after the signature and
//! every claim rule passed — holding one *is* the proof.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::scope::Scopes;

/// Longest identifier (sub, client_id, jti, iss, aud) we accept.
const MAX_ID_LEN: usize = 255;

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parse: non-empty, at most 255 bytes, no control characters
            /// (these values end up in logs, audit events and SQL parameters).
            pub fn parse(value: &str) -> Option<Self> {
                let ok = !value.is_empty()
                    && value.len() <= MAX_ID_LEN
                    && !value.chars().any(char::is_control);
                ok.then(|| Self(Arc::from(value)))
            }

            /// The value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), &self.0)
            }
        }
    };
}

identifier!(
    /// The `sub` claim: the user (or, for client-credentials tokens, the client).
    Subject
);
identifier!(
    /// The `client_id` claim: the OAuth client the token was issued to.
    ClientId
);
identifier!(
    /// The `jti` claim: the token's unique id (logged and audited instead of the token).
    TokenId
);

/// The `act` claim (RFC 8693 §4.1): who is acting on the subject's behalf,
/// possibly nested when the token was exchanged more than once.
#[derive(Clone, PartialEq, Eq)]
pub struct Actor {
    sub: Subject,
    previous: Option<Box<Actor>>,
}

impl Actor {
    /// The current actor (e.g. `order-svc`).
    pub fn sub(&self) -> &Subject {
        &self.sub
    }

    /// The actor before this one, if the token was exchanged more than once.
    pub fn previous(&self) -> Option<&Actor> {
        self.previous.as_deref()
    }

    /// Build from the wire form, refusing chains deeper than `max_depth`.
    fn from_raw(raw: &RawActor, max_depth: usize) -> Option<Self> {
        if max_depth == 0 {
            return None;
        }
        let previous = match &raw.act {
            Some(inner) => Some(Box::new(Self::from_raw(inner, max_depth - 1)?)),
            None => None,
        };
        Some(Self { sub: Subject::parse(&raw.sub)?, previous })
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actor({}", self.sub)?;
        let mut next = self.previous();
        while let Some(actor) = next {
            write!(f, " <- {}", actor.sub)?;
            next = actor.previous();
        }
        f.write_str(")")
    }
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawActor {
    sub: String,
    #[serde(default)]
    act: Option<Box<RawActor>>,
}

/// The claims as they come off the wire. Signature and time/issuer/audience
/// rules are checked by jsonwebtoken before this is turned into a
/// [`VerifiedToken`].
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawClaims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    pub(crate) aud: OneOrMany,
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    #[serde(default)]
    pub(crate) jti: Option<String>,
    #[serde(default)]
    pub(crate) client_id: Option<String>,
    #[serde(default)]
    pub(crate) scope: Option<String>,
    #[serde(default)]
    pub(crate) act: Option<RawActor>,
}

/// How deep an `act` chain may be before the token is refused.
pub(crate) const MAX_ACTOR_DEPTH: usize = 4;

/// A token whose signature and claims were verified.
#[derive(Clone)]
pub struct VerifiedToken(Arc<Inner>);

struct Inner {
    issuer: String,
    subject: Subject,
    audiences: Vec<String>,
    client_id: Option<ClientId>,
    jti: Option<TokenId>,
    scopes: Scopes,
    actor: Option<Actor>,
    expires_at: i64,
    issued_at: i64,
    /// The header's `kid`: which issuer key signed it.
    key_id: Option<String>,
    /// The token itself, kept only so it can be relayed (RFC 8693 subject
    /// token, FLOW-RELAY). Never logged: `Debug` leaves it out.
    raw: SecretString,
}

/// A claim that verified cryptographically but breaks Estate's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    Subject,
    ClientId,
    Jti,
    Actor,
}

impl VerifiedToken {
    pub(crate) fn from_raw(raw: RawClaims, token: &str, kid: Option<&str>) -> Result<(Self, usize), ClaimError> {
        let (scopes, unknown_scopes) = raw.scope.as_deref().map_or((Scopes::empty(), 0), Scopes::parse);
        let actor = match &raw.act {
            Some(act) => Some(Actor::from_raw(act, MAX_ACTOR_DEPTH).ok_or(ClaimError::Actor)?),
            None => None,
        };
        let inner = Inner {
            subject: Subject::parse(&raw.sub).ok_or(ClaimError::Subject)?,
            client_id: raw.client_id.as_deref().map(|c| ClientId::parse(c).ok_or(ClaimError::ClientId)).transpose()?,
            jti: raw.jti.as_deref().map(|j| TokenId::parse(j).ok_or(ClaimError::Jti)).transpose()?,
            issuer: raw.iss,
            audiences: raw.aud.into_vec(),
            scopes,
            actor,
            expires_at: raw.exp,
            issued_at: raw.iat,
            key_id: kid.map(str::to_owned),
            raw: SecretString::from(token.to_owned()),
        };
        Ok((Self(Arc::new(inner)), unknown_scopes))
    }

    /// `iss`.
    pub fn issuer(&self) -> &str {
        &self.0.issuer
    }
    /// `sub`.
    pub fn subject(&self) -> &Subject {
        &self.0.subject
    }
    /// `aud`, as a list.
    pub fn audiences(&self) -> &[String] {
        &self.0.audiences
    }
    /// `client_id`, when present.
    pub fn client_id(&self) -> Option<&ClientId> {
        self.0.client_id.as_ref()
    }
    /// `jti`, when present.
    pub fn jti(&self) -> Option<&TokenId> {
        self.0.jti.as_ref()
    }
    /// The known scopes of the `scope` claim.
    pub fn scopes(&self) -> Scopes {
        self.0.scopes
    }
    /// `act`: who acts on the subject's behalf (exchanged tokens).
    pub fn actor(&self) -> Option<&Actor> {
        self.0.actor.as_ref()
    }
    /// `exp`, seconds since the epoch.
    pub fn expires_at(&self) -> i64 {
        self.0.expires_at
    }
    /// `iat`, seconds since the epoch.
    pub fn issued_at(&self) -> i64 {
        self.0.issued_at
    }
    /// The `kid` of the key that signed it (header).
    pub fn key_id(&self) -> Option<&str> {
        self.0.key_id.as_deref()
    }
    /// The bearer token, to relay it downstream (FLOW-RELAY) or to use it as
    /// an RFC 8693 `subject_token`. Do not log it.
    pub fn bearer(&self) -> &SecretString {
        &self.0.raw
    }

    /// Same token text? (Used by tests; constant-time is not needed for equality of our own copies.)
    pub fn is_token(&self, token: &str) -> bool {
        self.0.raw.expose_secret() == token
    }
}

impl fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token text is deliberately absent (CONVENTIONS §9).
        f.debug_struct("VerifiedToken")
            .field("iss", &self.0.issuer)
            .field("sub", &self.0.subject)
            .field("aud", &self.0.audiences)
            .field("client_id", &self.0.client_id)
            .field("jti", &self.0.jti)
            .field("scopes", &self.0.scopes)
            .field("act", &self.0.actor)
            .field("exp", &self.0.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: serde_json::Value) -> RawClaims {
        serde_json::from_value(json).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({"iss": "https://as", "sub": "alice", "aud": "order-api", "exp": 2, "iat": 1})
    }

    #[test]
    fn identifiers_refuse_empty_long_and_control_characters() {
        assert!(Subject::parse("alice").is_some());
        assert!(Subject::parse("").is_none());
        assert!(Subject::parse(&"a".repeat(256)).is_none());
        assert!(Subject::parse("alice\nFAKE LOG LINE").is_none());
    }

    #[test]
    fn audience_may_be_string_or_array() {
        let mut json = base();
        json["aud"] = serde_json::json!(["order-api", "payment-api"]);
        let (token, _) = VerifiedToken::from_raw(raw(json), "t", None).unwrap();
        assert_eq!(token.audiences(), ["order-api", "payment-api"]);
    }

    #[test]
    fn nested_actor_chain_is_typed_and_bounded() {
        let mut json = base();
        json["act"] = serde_json::json!({"sub": "payment-svc", "act": {"sub": "order-svc"}});
        let (token, _) = VerifiedToken::from_raw(raw(json), "t", None).unwrap();
        let actor = token.actor().unwrap();
        assert_eq!(actor.sub().as_str(), "payment-svc");
        assert_eq!(actor.previous().unwrap().sub().as_str(), "order-svc");

        let mut deep = serde_json::json!({"sub": "a0"});
        for i in 1..=MAX_ACTOR_DEPTH {
            deep = serde_json::json!({"sub": format!("a{i}"), "act": deep});
        }
        let mut json = base();
        json["act"] = deep;
        assert_eq!(VerifiedToken::from_raw(raw(json), "t", None).unwrap_err(), ClaimError::Actor);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let (token, _) = VerifiedToken::from_raw(raw(base()), "eyJsecret.token.text", None).unwrap();
        assert!(!format!("{token:?}").contains("eyJsecret"));
        assert!(token.is_token("eyJsecret.token.text"));
    }
}
