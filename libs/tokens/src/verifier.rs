//! Access-token verification, in this order (cheapest refusal first):
//!
//! 1. size cap, then the verified-token cache (a hit skips 2–6);
//! 2. header: `typ` must be `at+jwt` (RFC 9068 §2.1, switchable for IdPs that
//!    don't set it), `alg` must be in the allowlist — `none` cannot even be
//!    parsed — and `kid` must be present. `jku`, `jwk`, `x5u`, `x5c` are
//!    never consulted: keys come only from the configured issuer's JWKS
//!    (RFC 8725 §3.10). Unknown `crit` entries are refused;
//! 3. the key: a `kid` on the revocation list is refused as revoked here,
//!    before any lookup (whether the key has left the JWKS yet or not);
//!    otherwise looked up by `kid` (an unknown `kid` triggers a rate-limited
//!    refetch), and it must be pinned to the header's `alg`;
//! 4. signature, `iss`, `aud`, `exp`, `nbf` (jsonwebtoken) with at most 60 s
//!    leeway; `exp iss aud sub iat` required;
//! 5. `iat` not in the future (beyond the leeway);
//! 6. typed claims ([`VerifiedToken`]): subject, client id, scopes, `act`.
//!
//! 7. the issuer's revocation list ([`crate::revocation`]), when configured:
//!    checked on every call, cache hits included.
//!
//! Verified tokens are cached for at most `cache_ttl`, and never beyond their
//! `exp`, keyed by SHA-256 of the token. The cache does not delay revocation:
//! the revocation list is consulted on every call, so the bound from
//! revocation to refusal is the list's poll interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};

use crate::claims::{RawClaims, VerifiedToken};
use crate::jwks::{KeyLocation, KeySource, spawn_refresher};
use crate::revocation::{Refusal, RevocationList, RevocationsConfig, spawn_poller};

/// Largest clock skew the configuration may allow (RFC 8725 guidance; ours).
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

/// How a [`Verifier`] is set up.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The exact `iss` expected; also where discovery starts.
    pub issuer: String,
    /// Where keys are published (discovery by default).
    pub keys: KeyLocation,
    /// Accepted audiences; a token must name at least one.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Allowed clock skew (at most [`MAX_LEEWAY`]).
    pub leeway: Duration,
    /// Largest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Require `typ: at+jwt` (RFC 9068). Turn off only for IdPs that don't set it.
    pub require_at_jwt_typ: bool,
    /// How long a verified token is remembered (never beyond its `exp`); zero disables.
    pub cache_ttl: Duration,
    /// Most cached tokens.
    pub cache_capacity: usize,
    /// Least time between two JWKS fetches caused by unknown `kid`s.
    pub min_refetch_interval: Duration,
    /// Extra CA certificates (PEM) trusted for the IdP; `None` uses the system roots.
    pub ca_pem: Option<String>,
    /// Refuse tokens without `kid`. Turn off only where exactly one key can
    /// verify (client assertions against the one registered key): a token
    /// without `kid` is then checked against that key.
    pub require_kid: bool,
    /// The issuer's revocation list, polled; `None`: tokens are valid until
    /// `exp` whatever the issuer revoked.
    pub revocations: Option<RevocationsConfig>,
}

impl VerifierConfig {
    /// Defaults for `issuer` and `audiences`: ES256 only, `at+jwt` required,
    /// 30 s leeway, 8 KiB tokens, 30 s cache, refetch at most every 10 s.
    pub fn new(issuer: impl Into<String>, audiences: &[&str]) -> Self {
        Self {
            issuer: issuer.into(),
            keys: KeyLocation::Discover,
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            algorithms: vec![Algorithm::ES256],
            leeway: Duration::from_secs(30),
            max_token_bytes: 8 * 1024,
            require_at_jwt_typ: true,
            cache_ttl: Duration::from_secs(30),
            cache_capacity: 10_000,
            min_refetch_interval: Duration::from_secs(10),
            ca_pem: None,
            require_kid: true,
            revocations: None,
        }
    }
}

/// Why a token was refused. Every variant is a 401 `invalid_token` except
/// [`TokenError::KeysUnavailable`] (503: we cannot tell, so we fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No bearer token.
    #[error("missing token")]
    Missing,
    /// Larger than `max_token_bytes`.
    #[error("token too large")]
    TooLarge,
    /// Not a JWS compact serialization, or undecodable parts.
    #[error("malformed token")]
    Malformed,
    /// `typ` is not `at+jwt`.
    #[error("not an access token (typ)")]
    WrongType,
    /// `alg` not allowed (or `none`).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// A `crit` header parameter we do not understand.
    #[error("unsupported critical header")]
    UnsupportedCritical,
    /// No `kid`, or a `kid` the issuer does not publish.
    #[error("unknown key")]
    UnknownKey,
    /// The key is pinned to another algorithm.
    #[error("key not valid for this algorithm")]
    KeyAlgorithmMismatch,
    /// Signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` passed.
    #[error("expired")]
    Expired,
    /// `nbf` (or `iat`) in the future.
    #[error("not yet valid")]
    NotYetValid,
    /// `iss` mismatch.
    #[error("wrong issuer")]
    WrongIssuer,
    /// No accepted audience in `aud`.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is missing or malformed.
    #[error("missing or invalid claim")]
    InvalidClaim,
    /// The issuer revoked the token, its subject, its client or an actor (PC-12).
    #[error("revoked")]
    Revoked,
    /// No keys (or no revocation list) could be loaded from the issuer yet.
    #[error("verification keys unavailable")]
    KeysUnavailable,
}

/// Configuration the verifier refuses to run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Leeway above [`MAX_LEEWAY`].
    #[error("leeway {0:?} exceeds the maximum of 60 s")]
    LeewayTooLarge(Duration),
    /// Empty algorithm list, or an HMAC algorithm (a shared secret is not a verification key).
    #[error("algorithm allowlist must be non-empty and asymmetric")]
    Algorithms,
    /// No audience.
    #[error("at least one audience is required")]
    NoAudience,
    /// The CA PEM or HTTP client could not be built.
    #[error("http client: {0}")]
    Http(String),
}

struct CacheEntry {
    token: VerifiedToken,
    until: Instant,
}

/// Verifies access tokens of one issuer for a set of audiences. Cheap to
/// clone (shared state); keep one per process and audience set.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: VerifierConfig,
    validation: HashMap<Algorithm, Validation>,
    keys: Arc<KeySource>,
    revocations: Option<Arc<RevocationList>>,
    cache: Mutex<HashMap<[u8; 32], CacheEntry>>,
}

impl Verifier {
    /// Build a verifier and load keys. An unreachable IdP is not an error here
    /// (the service can start and report not-ready); tokens are refused with
    /// [`TokenError::KeysUnavailable`] until keys arrive.
    pub async fn new(config: VerifierConfig) -> Result<Self, ConfigError> {
        if config.leeway > MAX_LEEWAY {
            return Err(ConfigError::LeewayTooLarge(config.leeway));
        }
        if config.algorithms.is_empty()
            || config.algorithms.iter().any(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
        {
            return Err(ConfigError::Algorithms);
        }
        if config.audiences.is_empty() {
            return Err(ConfigError::NoAudience);
        }
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true);
        if let Some(pem) = &config.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| ConfigError::Http(e.to_string()))?;
            http = http.tls_certs_only([ca]);
        }
        let http = http.build().map_err(|e| ConfigError::Http(e.to_string()))?;
        let validation = config.algorithms.iter().map(|alg| (*alg, validation_for(&config, *alg))).collect();
        let keys =
            KeySource::new(config.issuer.clone(), config.keys.clone(), http.clone(), config.min_refetch_interval);
        if let Err(error) = keys.refresh().await {
            tracing::warn!(issuer = %config.issuer, %error, "initial JWKS fetch failed; will retry in the background");
        }
        spawn_refresher(&keys);
        let revocations = config.revocations.clone().map(|feed| RevocationList::new(feed, http));
        if let Some(list) = &revocations {
            if let Err(error) = list.refresh().await {
                tracing::warn!(issuer = %config.issuer, %error, "initial revocation list fetch failed; will retry");
            }
            spawn_poller(list);
        }
        Ok(Self { inner: Arc::new(Inner { config, validation, keys, revocations, cache: Mutex::new(HashMap::new()) }) })
    }

    /// Whether verification keys (and the revocation list, when configured)
    /// are loaded (for readiness checks).
    pub fn has_keys(&self) -> bool {
        self.inner.keys.has_keys() && self.inner.revocations.as_ref().is_none_or(|list| list.loaded())
    }

    /// Fetch the revocation list now (no-op without one).
    pub async fn refresh_revocations(&self) -> Result<(), crate::jwks::FetchError> {
        match &self.inner.revocations {
            Some(list) => list.refresh().await,
            None => Ok(()),
        }
    }

    /// The revocation list's verdict on an otherwise valid token.
    fn not_revoked(&self, token: VerifiedToken) -> Result<VerifiedToken, TokenError> {
        match self.inner.revocations.as_ref().map(|list| list.check(&token)) {
            None | Some(Ok(())) => Ok(token),
            Some(Err(Refusal::Revoked)) => Err(TokenError::Revoked),
            Some(Err(Refusal::NotLoaded)) => Err(TokenError::KeysUnavailable),
        }
    }

    /// How many JWKS requests this verifier has made.
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.keys.fetch_count()
    }

    /// Fetch keys now (e.g. after an operator-triggered rotation).
    pub async fn refresh_keys(&self) -> Result<(), crate::jwks::FetchError> {
        self.inner.keys.refresh().await
    }

    /// Replace the keys of a verifier built with [`KeyLocation::Static`].
    pub async fn set_static_keys(&self, jwks: serde_json::Value) -> Result<(), crate::jwks::FetchError> {
        self.inner.keys.set_static(jwks).await
    }

    /// Verify `token`; see the module docs for the order of checks.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let config = &self.inner.config;
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > config.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let cache_key: [u8; 32] =
            digest::digest(&digest::SHA256, token.as_bytes()).as_ref().try_into().map_err(|_| TokenError::Malformed)?;
        if let Some(hit) = self.cached(&cache_key) {
            return self.not_revoked(hit);
        }

        // jsonwebtoken cannot represent `alg: none` and refuses unknown `crit`
        // while parsing; say which rule refused the token.
        let header = jsonwebtoken::decode_header(token).map_err(|_| classify_bad_header(token))?;
        // RFC 7515 §4.1.11: a recipient that does not understand a `crit`
        // extension must refuse the token. Estate understands none.
        if header.crit.is_some() {
            return Err(TokenError::UnsupportedCritical);
        }
        if config.require_at_jwt_typ && !is_at_jwt(header.typ.as_deref()) {
            return Err(TokenError::WrongType);
        }
        let Some(validation) = self.inner.validation.get(&header.alg) else {
            return Err(TokenError::AlgorithmNotAllowed);
        };
        // A token of a revoked signing key is refused as revoked whether or
        // not the key is still in the JWKS (it leaves the JWKS and enters the
        // list at about the same time): the audit trail then says "a
        // compromised key's token", not "an unknown key", every time.
        if let (Some(kid), Some(list)) = (header.kid.as_deref(), self.inner.revocations.as_ref())
            && list.key_revoked(kid)
        {
            return Err(TokenError::Revoked);
        }
        let key = match header.kid.as_deref() {
            Some(kid) => self.key_for(kid).await?,
            None if !config.require_kid => self.inner.keys.only_key().ok_or(TokenError::UnknownKey)?,
            None => return Err(TokenError::UnknownKey),
        };
        if !key.permits(header.alg) {
            return Err(TokenError::KeyAlgorithmMismatch);
        }

        let data = jsonwebtoken::decode::<RawClaims>(token, key.decoding_key(), validation).map_err(map_error)?;
        let now = unix_now();
        if data.claims.iat > now + i64::try_from(config.leeway.as_secs()).unwrap_or(60) {
            return Err(TokenError::NotYetValid);
        }
        let (verified, unknown_scopes) =
            VerifiedToken::from_raw(data.claims, token, header.kid.as_deref()).map_err(|_| TokenError::InvalidClaim)?;
        if unknown_scopes > 0 {
            tracing::debug!(unknown_scopes, "token carries scopes this service does not know; ignored");
        }
        self.remember(cache_key, &verified, now);
        self.not_revoked(verified)
    }

    /// The key named `kid`, refetching (rate-limited) when it is unknown.
    async fn key_for(&self, kid: &str) -> Result<std::sync::Arc<crate::jwks::VerifierKey>, TokenError> {
        if let Some(key) = self.inner.keys.key(kid) {
            return Ok(key);
        }
        self.inner.keys.refetch_for_unknown_kid().await;
        if !self.inner.keys.has_keys() {
            return Err(TokenError::KeysUnavailable);
        }
        self.inner.keys.key(kid).ok_or(TokenError::UnknownKey)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<VerifiedToken> {
        let cache = self.inner.cache.lock().ok()?;
        let entry = cache.get(key)?;
        (Instant::now() < entry.until).then(|| entry.token.clone())
    }

    fn remember(&self, key: [u8; 32], token: &VerifiedToken, now: i64) {
        let config = &self.inner.config;
        // Never beyond `exp`: the cache must not extend a token's life.
        let remaining = u64::try_from(token.expires_at() - now).unwrap_or(0);
        let ttl = config.cache_ttl.min(Duration::from_secs(remaining));
        if ttl.is_zero() {
            return;
        }
        let Ok(mut cache) = self.inner.cache.lock() else { return };
        if cache.len() >= config.cache_capacity {
            let now = Instant::now();
            cache.retain(|_, entry| entry.until > now);
            if cache.len() >= config.cache_capacity {
                return; // full of live entries: verify without caching rather than grow
            }
        }
        cache.insert(key, CacheEntry { token: token.clone(), until: Instant::now() + ttl });
    }
}

fn validation_for(config: &VerifierConfig, alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.leeway = config.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[config.issuer.as_str()]);
    validation.set_audience(&config.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation
}

fn map_error(error: jsonwebtoken::errors::Error) -> TokenError {
    match error.kind() {
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey => {
            TokenError::BadSignature
        }
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => {
            TokenError::InvalidClaim
        }
        _ => TokenError::Malformed,
    }
}

/// RFC 9068 §4: `at+jwt`, or its full media type; case-insensitive (RFC 7515 §4.1.9).
fn is_at_jwt(typ: Option<&str>) -> bool {
    typ.is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"))
}

/// Why a header jsonwebtoken would not parse was refused.
fn classify_bad_header(token: &str) -> TokenError {
    use base64::Engine;
    let header = token
        .split('.')
        .next()
        .and_then(|h| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let Some(header) = header else { return TokenError::Malformed };
    if header.get("crit").is_some() {
        TokenError::UnsupportedCritical
    } else if header.get("alg").is_some() {
        // `none`, or a name jsonwebtoken does not know: not in any allowlist.
        TokenError::AlgorithmNotAllowed
    } else {
        TokenError::Malformed
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The `[service.tokens]` section of a resource server: whose tokens it
/// accepts and for which audience. Everything else keeps the strict
/// defaults of [`VerifierConfig::new`].
///
/// ```toml
/// [service.tokens]
/// issuer = "https://auth.estate.local"
/// audience = "inventory-api"
/// ca_file = "/etc/estate/auth-ca.pem"   # optional: extra CA for the issuer's TLS
/// # revocations = true                  # default: poll {issuer}/revocations …
/// # revocation_poll_secs = 5             # … this often (the revocation bound)
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierSettings {
    /// The exact `iss`; discovery starts here.
    pub issuer: String,
    /// This service's audience.
    pub audience: String,
    /// A JWKS URL to use instead of discovery.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Extra CA certificates (PEM file) for the issuer's TLS.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Poll the issuer's revocation list (PC-12). Switch off only for an
    /// issuer that publishes none, and accept that revoked tokens then live
    /// until `exp`.
    #[serde(default = "default_true")]
    pub revocations: bool,
    /// Where the list is, when not at `{issuer}/revocations`.
    #[serde(default)]
    pub revocation_list_uri: Option<String>,
    /// How often to poll it: the bound from revocation to refusal.
    #[serde(default = "default_poll_secs")]
    pub revocation_poll_secs: u64,
}

fn default_true() -> bool {
    true
}

fn default_poll_secs() -> u64 {
    crate::revocation::DEFAULT_POLL.as_secs()
}

impl VerifierSettings {
    /// The verifier configuration (reads `ca_file`).
    pub fn config(&self) -> std::io::Result<VerifierConfig> {
        let mut config = VerifierConfig::new(&self.issuer, &[self.audience.as_str()]);
        if let Some(uri) = &self.jwks_uri {
            config.keys = KeyLocation::JwksUri(uri.clone());
        }
        if let Some(file) = &self.ca_file {
            config.ca_pem = Some(std::fs::read_to_string(file)?);
        }
        if self.revocations {
            let mut feed = RevocationsConfig::of_issuer(&self.issuer);
            if let Some(uri) = &self.revocation_list_uri {
                feed.uri.clone_from(uri);
            }
            feed.poll = Duration::from_secs(self.revocation_poll_secs.max(1));
            config.revocations = Some(feed);
        }
        Ok(config)
    }
}
