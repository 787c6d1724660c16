//! Where verification keys come from: OIDC / RFC 8414 discovery, then the
//! issuer's JWKS, cached.
//!
//! Rules, each with a test in `tests/verifier.rs`:
//! - Discovery must name exactly the configured issuer (mix-up defence), and
//!   `jwks_uri` must be `https`.
//! - Only signature keys are kept: `use` absent or `sig`, `key_ops` absent or
//!   containing `verify`, a `kid`, an asymmetric `kty`. Symmetric (`oct`) keys
//!   are never used: a published HMAC key would let anyone mint tokens.
//! - A key's `alg` (or, when absent, its `kty`/`crv`) pins which header `alg`
//!   may use it.
//! - The cache honours `Cache-Control: max-age` (clamped to
//!   [`MIN_MAX_AGE`]..[`MAX_MAX_AGE`]); a background task refreshes before it
//!   runs out.
//! - An unknown `kid` triggers a refetch at most once per
//!   `min_refetch_interval`, single-flight: a flood of tokens with random
//!   `kid`s cannot become a flood of requests to the IdP.
//! - When the IdP is unreachable the last good keys keep being used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// Shortest cache lifetime honoured, whatever `max-age` says.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(30);
/// Longest cache lifetime honoured.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(3600);
/// Cache lifetime when the response has no `max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// Largest discovery or JWKS document read (API10: a hostile IdP response
/// cannot exhaust memory).
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Why keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Transport or HTTP status.
    #[error("request to {url} failed: {reason}")]
    Http {
        /// What was fetched.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The document is not what the standards say.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// discovery or JWKS.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// A verification key and the algorithms it may verify.
pub(crate) struct VerifierKey {
    key: DecodingKey,
    pin: KeyPin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyPin {
    /// The JWK said `alg`.
    Exactly(Algorithm),
    /// An RSA key without `alg`: any RSA algorithm from the allowlist.
    AnyRsa,
}

impl VerifierKey {
    /// Whether a token whose header says `alg` may be verified with this key.
    pub(crate) fn permits(&self, alg: Algorithm) -> bool {
        match self.pin {
            KeyPin::Exactly(pinned) => pinned == alg,
            KeyPin::AnyRsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
        }
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// Accept a JWK as a signature-verification key, or say why not.
    fn from_jwk(jwk: &Jwk) -> Result<(String, Self), &'static str> {
        let kid = jwk.common.key_id.clone().ok_or("no kid")?;
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return Err("use is not sig");
        }
        if let Some(ops) = &jwk.common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return Err("key_ops lacks verify");
        }
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err("symmetric keys are never accepted");
        }
        let declared = jwk.common.key_algorithm.map(key_algorithm_to_jws).transpose()?;
        let pin = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(ec) => {
                let by_curve = match ec.curve {
                    EllipticCurve::P256 => Algorithm::ES256,
                    EllipticCurve::P384 => Algorithm::ES384,
                    _ => return Err("unsupported curve"),
                };
                if declared.is_some_and(|d| d != by_curve) {
                    return Err("alg does not match crv");
                }
                KeyPin::Exactly(by_curve)
            }
            AlgorithmParameters::RSA(_) => match declared {
                Some(alg) if alg.family() == jsonwebtoken::AlgorithmFamily::Rsa => KeyPin::Exactly(alg),
                Some(_) => return Err("alg does not match kty RSA"),
                None => KeyPin::AnyRsa,
            },
            AlgorithmParameters::OctetKeyPair(_) => match declared {
                Some(Algorithm::EdDSA) | None => KeyPin::Exactly(Algorithm::EdDSA),
                Some(_) => return Err("alg does not match kty OKP"),
            },
            _ => return Err("unknown kty"),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|_| "unusable key material")?;
        Ok((kid, Self { key, pin }))
    }
}

fn key_algorithm_to_jws(alg: KeyAlgorithm) -> Result<Algorithm, &'static str> {
    Ok(match alg {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return Err("not a signature algorithm we accept"),
    })
}

/// Where keys are published.
#[derive(Debug, Clone)]
pub enum KeyLocation {
    /// Run discovery on the issuer (OIDC, then RFC 8414).
    Discover,
    /// Use this JWKS URL directly.
    JwksUri(String),
    /// Keys given in-process as a JWKS document (the authorization server
    /// verifying its own tokens; client assertions against a registered key).
    /// Replace them with [`crate::Verifier::set_static_keys`].
    Static(serde_json::Value),
}

#[derive(Default)]
struct KeyState {
    keys: HashMap<String, Arc<VerifierKey>>,
    /// When the current keys expire from the cache (a refresh is due).
    fresh_until: Option<Instant>,
    jwks_uri: Option<String>,
}

/// Discovery + JWKS cache for one issuer.
pub(crate) struct KeySource {
    issuer: String,
    location: KeyLocation,
    http: reqwest::Client,
    state: RwLock<KeyState>,
    /// Single-flight guard and rate limit for fetches caused by unknown kids.
    last_triggered_fetch: tokio::sync::Mutex<Option<Instant>>,
    static_jwks: RwLock<Option<serde_json::Value>>,
    min_refetch_interval: Duration,
    fetches: AtomicU64,
}

impl KeySource {
    pub(crate) fn new(
        issuer: String,
        location: KeyLocation,
        http: reqwest::Client,
        min_refetch_interval: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            issuer,
            http,
            state: RwLock::default(),
            last_triggered_fetch: tokio::sync::Mutex::new(None),
            static_jwks: RwLock::new(match &location {
                KeyLocation::Static(jwks) => Some(jwks.clone()),
                _ => None,
            }),
            min_refetch_interval,
            fetches: AtomicU64::new(0),
            location,
        })
    }

    /// How many times the JWKS was requested (tests and metrics).
    pub(crate) fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Whether any key is loaded.
    pub(crate) fn has_keys(&self) -> bool {
        self.state.read().is_ok_and(|s| !s.keys.is_empty())
    }

    /// The key, when exactly one is loaded.
    pub(crate) fn only_key(&self) -> Option<Arc<VerifierKey>> {
        let state = self.state.read().ok()?;
        let mut keys = state.keys.values();
        match (keys.next(), keys.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        }
    }

    pub(crate) fn key(&self, kid: &str) -> Option<Arc<VerifierKey>> {
        self.state.read().ok()?.keys.get(kid).cloned()
    }

    /// A token named a `kid` we don't have: refetch, unless a fetch for that
    /// reason happened less than `min_refetch_interval` ago. Concurrent callers
    /// wait for the one fetch in flight instead of starting their own.
    pub(crate) async fn refetch_for_unknown_kid(&self) {
        let mut last = self.last_triggered_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refetch_interval) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(error) = self.refresh().await {
            tracing::warn!(issuer = %self.issuer, %error, "JWKS refetch for unknown kid failed; keeping cached keys");
        }
    }

    /// Fetch keys now. On failure the previous keys stay in place.
    pub(crate) async fn refresh(&self) -> Result<(), FetchError> {
        let static_jwks = self.static_jwks.read().ok().and_then(|s| s.clone());
        let (set, max_age): (RawJwks, Duration) = match static_jwks {
            Some(jwks) => (
                serde_json::from_value(jwks)
                    .map_err(|e| FetchError::Invalid { what: "JWKS", reason: e.to_string() })?,
                MAX_MAX_AGE,
            ),
            None => {
                let jwks_uri = self.jwks_uri().await?;
                self.fetches.fetch_add(1, Ordering::Relaxed);
                let (body, max_age) = get_capped(&self.http, &jwks_uri).await?;
                let set = serde_json::from_slice(&body)
                    .map_err(|e| FetchError::Invalid { what: "JWKS", reason: e.to_string() })?;
                (set, max_age)
            }
        };
        let mut keys = HashMap::new();
        for value in set.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                tracing::debug!(issuer = %self.issuer, "skipping unparseable JWK");
                continue;
            };
            match VerifierKey::from_jwk(&jwk) {
                Ok((kid, key)) => {
                    keys.insert(kid, Arc::new(key));
                }
                Err(reason) => tracing::debug!(issuer = %self.issuer, reason, "skipping JWK"),
            }
        }
        if keys.is_empty() {
            return Err(FetchError::Invalid { what: "JWKS", reason: "no usable signature keys".into() });
        }
        if let Ok(mut state) = self.state.write() {
            state.keys = keys;
            state.fresh_until = Some(Instant::now() + max_age);
        }
        Ok(())
    }

    /// Replace in-process keys (only for [`KeyLocation::Static`]).
    pub(crate) async fn set_static(&self, jwks: serde_json::Value) -> Result<(), FetchError> {
        if !matches!(self.location, KeyLocation::Static(_)) {
            return Err(FetchError::Invalid { what: "JWKS", reason: "keys are fetched, not static".into() });
        }
        if let Ok(mut slot) = self.static_jwks.write() {
            *slot = Some(jwks);
        }
        self.refresh().await
    }

    pub(crate) fn is_static(&self) -> bool {
        matches!(self.location, KeyLocation::Static(_))
    }

    async fn jwks_uri(&self) -> Result<String, FetchError> {
        if let KeyLocation::JwksUri(uri) = &self.location {
            return Ok(uri.clone());
        }
        if let Some(uri) = self.state.read().ok().and_then(|s| s.jwks_uri.clone()) {
            return Ok(uri);
        }
        let uri = self.discover().await?;
        if let Ok(mut state) = self.state.write() {
            state.jwks_uri = Some(uri.clone());
        }
        Ok(uri)
    }

    /// OIDC discovery, then RFC 8414 (`/.well-known/oauth-authorization-server`
    /// inserted before the issuer's path).
    async fn discover(&self) -> Result<String, FetchError> {
        let base = self.issuer.trim_end_matches('/');
        let oidc = format!("{base}/.well-known/openid-configuration");
        let rfc8414 = match base.find("://").and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j)) {
            Some(path_start) => {
                format!("{}/.well-known/oauth-authorization-server{}", &base[..path_start], &base[path_start..])
            }
            None => format!("{base}/.well-known/oauth-authorization-server"),
        };
        let mut last_error = None;
        for url in [oidc, rfc8414] {
            match get_capped(&self.http, &url).await {
                Ok((body, _)) => {
                    let doc: Discovery = serde_json::from_slice(&body)
                        .map_err(|e| FetchError::Invalid { what: "discovery", reason: e.to_string() })?;
                    // RFC 8414 §3.3 / OIDC Discovery §4.3: the issuer must match exactly.
                    if doc.issuer != self.issuer {
                        return Err(FetchError::Invalid {
                            what: "discovery",
                            reason: format!("issuer {:?} is not the configured issuer", doc.issuer),
                        });
                    }
                    if !doc.jwks_uri.starts_with("https://") {
                        return Err(FetchError::Invalid { what: "discovery", reason: "jwks_uri is not https".into() });
                    }
                    return Ok(doc.jwks_uri);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| FetchError::Invalid { what: "discovery", reason: "no document".into() }))
    }

    /// When the background task should refresh next.
    fn next_refresh_in(&self) -> Duration {
        let fresh_until = self.state.read().ok().and_then(|s| s.fresh_until);
        match fresh_until {
            // Refresh at 80 % of the lifetime, so keys never go stale in normal operation.
            Some(until) => until.saturating_duration_since(Instant::now()).mul_f64(0.8),
            None => Duration::ZERO,
        }
    }
}

/// Keep the keys fresh in the background until the source is dropped.
pub(crate) fn spawn_refresher(source: &Arc<KeySource>) {
    if source.is_static() {
        return;
    }
    let weak: Weak<KeySource> = Arc::downgrade(source);
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = match weak.upgrade() {
                Some(source) => source.next_refresh_in(),
                None => return,
            };
            tokio::time::sleep(wait).await;
            let Some(source) = weak.upgrade() else { return };
            match source.refresh().await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(error) => {
                    tracing::warn!(issuer = %source.issuer, %error, "JWKS refresh failed; keeping cached keys");
                    drop(source);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    });
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// GET `url`, refusing non-https, non-2xx and bodies over [`MAX_DOCUMENT_BYTES`].
/// Returns the body and the cache lifetime its headers allow.
pub(crate) async fn get_capped(http: &reqwest::Client, url: &str) -> Result<(Vec<u8>, Duration), FetchError> {
    let fail = |reason: String| FetchError::Http { url: url.to_owned(), reason };
    if !url.starts_with("https://") {
        return Err(fail("not https".into()));
    }
    let mut response = http.get(url).send().await.map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("status {}", response.status())));
    }
    let max_age = response
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_max_age)
        .map_or(DEFAULT_MAX_AGE, |age| age.clamp(MIN_MAX_AGE, MAX_MAX_AGE));
    if response.content_length().is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64) {
        return Err(fail("document too large".into()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(fail("document too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

/// `max-age=N` from a `Cache-Control` value (`no-store`/`no-cache` → the minimum).
fn parse_max_age(value: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            max_age = secs.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(json: serde_json::Value) -> Jwk {
        serde_json::from_value(json).unwrap()
    }

    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    #[test]
    fn ec_key_is_pinned_by_curve() {
        let (kid, key) =
            VerifierKey::from_jwk(&jwk(serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y,"kid":"k1"}))).unwrap();
        assert_eq!(kid, "k1");
        assert!(key.permits(Algorithm::ES256));
        assert!(!key.permits(Algorithm::ES384));
        assert!(!key.permits(Algorithm::RS256));
        assert!(!key.permits(Algorithm::HS256));
    }

    #[test]
    fn keys_that_must_not_verify_are_skipped() {
        let cases = [
            (serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y}), "no kid"),
            (serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y,"kid":"k","use":"enc"}), "use is not sig"),
            (
                serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y,"kid":"k","key_ops":["encrypt"]}),
                "key_ops lacks verify",
            ),
            (
                serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y,"kid":"k","alg":"ES384"}),
                "alg does not match crv",
            ),
            (
                serde_json::json!({"kty":"oct","k":"c2VjcmV0","kid":"k","alg":"HS256"}),
                "symmetric keys are never accepted",
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(VerifierKey::from_jwk(&jwk(json)).err(), Some(expected));
        }
    }

    #[test]
    fn max_age_parsing() {
        assert_eq!(parse_max_age("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(parse_max_age("public"), None);
    }
}
