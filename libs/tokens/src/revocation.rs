//! The issuer's revocation list (PC-12): what a verifier must refuse although
//! the signature, audience and lifetime check out.
//!
//! Access tokens are JWTs verified locally, so revoking one at the
//! authorization server alone would leave it usable until `exp`. The
//! authorization server therefore publishes, at `{issuer}/revocations`, the
//! tokens and principals revoked within the last token lifetime, and every
//! verifier polls it (default every 5 s). The bound from revocation to
//! refusal everywhere is one poll interval (plus the request in flight).
//!
//! Wire form (JSON; identifiers as lowercase hex SHA-256 of their UTF-8
//! text, so the list names no user, client or token):
//!
//! ```json
//! { "tokens": ["<sha256(jti)>", …],
//!   "principals": [{ "id": "<sha256(user subject or client id)>", "not_before": 1764900000 }, …],
//!   "keys": ["<kid of a compromised signing key>", …] }
//! ```
//!
//! A token is refused when its `jti` is listed, when it was signed by a
//! listed key (`kid`s are public anyway), or when its `sub`, its
//! `client_id` or any actor in its `act` chain is a listed principal and the
//! token was issued at or before that principal's `not_before`.
//!
//! Until the first list arrives the verifier refuses every token as
//! [`crate::TokenError::KeysUnavailable`] (a fresh replica cannot tell), like
//! missing keys. Later failed polls keep the last list and log a warning:
//! the authorization server being down must not stop the estate, and it
//! cannot revoke anything meanwhile either.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use aws_lc_rs::digest;
use serde::Deserialize;

use crate::claims::VerifiedToken;
use crate::jwks::{FetchError, get_capped};

/// Default poll interval: the documented revocation bound.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// Where the list is and how often to fetch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationsConfig {
    /// `https://…/revocations`.
    pub uri: String,
    /// Poll interval (at least one second).
    pub poll: Duration,
}

impl RevocationsConfig {
    /// The list of `issuer` at its conventional path, polled every [`DEFAULT_POLL`].
    pub fn of_issuer(issuer: &str) -> Self {
        Self { uri: format!("{}/revocations", issuer.trim_end_matches('/')), poll: DEFAULT_POLL }
    }
}

/// How an identifier is published: lowercase hex SHA-256 of its UTF-8 text.
pub fn published_id(identifier: &str) -> String {
    hex(digest::digest(&digest::SHA256, identifier.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    tokens: Vec<String>,
    principals: Vec<WirePrincipal>,
    #[serde(default)]
    keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePrincipal {
    id: String,
    not_before: i64,
}

#[derive(Default)]
struct Snapshot {
    tokens: HashSet<String>,
    principals: HashMap<String, i64>,
    keys: HashSet<String>,
}

/// Why a token is refused by the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No list yet.
    NotLoaded,
    /// Listed.
    Revoked,
}

/// The polled list.
pub(crate) struct RevocationList {
    config: RevocationsConfig,
    http: reqwest::Client,
    snapshot: RwLock<Option<Snapshot>>,
}

impl RevocationList {
    pub(crate) fn new(config: RevocationsConfig, http: reqwest::Client) -> Arc<Self> {
        Arc::new(Self { config, http, snapshot: RwLock::new(None) })
    }

    /// Fetch the list now.
    pub(crate) async fn refresh(&self) -> Result<(), FetchError> {
        let (body, _) = get_capped(&self.http, &self.config.uri).await?;
        let wire: Wire = serde_json::from_slice(&body)
            .map_err(|e| FetchError::Invalid { what: "revocation list", reason: e.to_string() })?;
        let valid =
            |id: &String| id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !wire.tokens.iter().all(valid) || !wire.principals.iter().all(|p| valid(&p.id)) {
            return Err(FetchError::Invalid {
                what: "revocation list",
                reason: "an id is not a SHA-256 hex digest".into(),
            });
        }
        let snapshot = Snapshot {
            tokens: wire.tokens.into_iter().collect(),
            principals: wire.principals.into_iter().map(|p| (p.id, p.not_before)).collect(),
            keys: wire.keys.into_iter().collect(),
        };
        if let Ok(mut slot) = self.snapshot.write() {
            *slot = Some(snapshot);
        }
        Ok(())
    }

    pub(crate) fn loaded(&self) -> bool {
        self.snapshot.read().is_ok_and(|s| s.is_some())
    }

    /// Whether signing key `kid` is on the list (false while none is loaded:
    /// the full check after signature verification fails closed then).
    pub(crate) fn key_revoked(&self, kid: &str) -> bool {
        self.snapshot.read().is_ok_and(|guard| guard.as_ref().is_some_and(|snapshot| snapshot.keys.contains(kid)))
    }

    /// Whether `token` may still be used.
    pub(crate) fn check(&self, token: &VerifiedToken) -> Result<(), Refusal> {
        let Ok(guard) = self.snapshot.read() else { return Err(Refusal::NotLoaded) };
        let Some(snapshot) = guard.as_ref() else { return Err(Refusal::NotLoaded) };
        if snapshot.tokens.is_empty() && snapshot.principals.is_empty() && snapshot.keys.is_empty() {
            return Ok(());
        }
        if token.key_id().is_some_and(|kid| snapshot.keys.contains(kid)) {
            return Err(Refusal::Revoked);
        }
        if token.jti().is_some_and(|jti| snapshot.tokens.contains(&published_id(jti.as_str()))) {
            return Err(Refusal::Revoked);
        }
        let issued = token.issued_at();
        let revoked = |principal: &str| {
            snapshot.principals.get(&published_id(principal)).is_some_and(|not_before| issued <= *not_before)
        };
        let mut actor = token.actor();
        while let Some(current) = actor {
            if revoked(current.sub().as_str()) {
                return Err(Refusal::Revoked);
            }
            actor = current.previous();
        }
        if revoked(token.subject().as_str()) || token.client_id().is_some_and(|c| revoked(c.as_str())) {
            return Err(Refusal::Revoked);
        }
        Ok(())
    }
}

/// Poll the list every `poll` while the verifier lives.
pub(crate) fn spawn_poller(list: &Arc<RevocationList>) {
    let weak: Weak<RevocationList> = Arc::downgrade(list);
    let poll = list.config.poll.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; the list was just loaded (or tried)
        loop {
            ticker.tick().await;
            let Some(list) = weak.upgrade() else { return };
            if let Err(error) = list.refresh().await {
                tracing::warn!(uri = %list.config.uri, %error, "revocation list refresh failed; keeping the last list");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_published_as_sha256_hex() {
        assert_eq!(published_id("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn the_conventional_location_is_under_the_issuer() {
        assert_eq!(RevocationsConfig::of_issuer("https://auth.test/").uri, "https://auth.test/revocations");
    }
}
