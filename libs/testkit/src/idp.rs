//! A stand-in for a third-party, standards-compliant identity provider
//! (Keycloak, Auth0, Entra ID …): a real HTTPS server on a loopback port with
//! OIDC discovery, a JWKS with cache headers, and a token endpoint for
//! `client_credentials` and token exchange that counts its requests.
//!
//! Tests drive it to create the situations a verifier must survive: key
//! rotation and retirement, an outage, tokens that break each rule. Estate's
//! own authorization server is tested against the same suites once it exists.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use estate_service_kit::serve::TlsListener;
use estate_service_kit::tls::{CertifiedKey, ServerTls};
use http::{HeaderMap, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{TestPki, TestkitError};

/// A signing key of the IdP.
pub struct IdpKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl IdpKey {
    /// A fresh ES256 (P-256) key.
    pub fn es256() -> Result<Self, TestkitError> {
        Self::ec(&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256, "P-256", 32)
    }

    /// A fresh ES384 (P-384) key.
    pub fn es384() -> Result<Self, TestkitError> {
        Self::ec(&rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384, "P-384", 48)
    }

    fn ec(
        rcgen_alg: &'static rcgen::SignatureAlgorithm,
        alg: Algorithm,
        crv: &str,
        coordinate_len: usize,
    ) -> Result<Self, TestkitError> {
        let pair = rcgen::KeyPair::generate_for(rcgen_alg)?;
        let encoding = EncodingKey::from_ec_der(&pair.serialize_der());
        // Uncompressed point: 0x04 || X || Y.
        let raw = pair.public_key_raw();
        let (x, y) = raw
            .get(1..)
            .filter(|xy| xy.len() == coordinate_len * 2)
            .map(|xy| xy.split_at(coordinate_len))
            .ok_or_else(|| TestkitError::failed("EC public key", "unexpected encoding"))?;
        let kid = random_id();
        let jwk = json!({
            "kty": "EC", "crv": crv, "use": "sig", "alg": format!("{alg:?}"), "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        });
        Ok(Self { kid, alg, encoding, jwk })
    }

    /// An EdDSA (Ed25519) key.
    pub fn ed25519() -> Result<Self, TestkitError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let encoding = EncodingKey::from_ed_der(&pair.serialize_der());
        let kid = random_id();
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
        });
        Ok(Self { kid, alg: Algorithm::EdDSA, encoding, jwk })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A verifying key for this key (to check signatures in tests).
    pub fn decoding_key(&self) -> Result<DecodingKey, TestkitError> {
        let jwk = serde_json::from_value(self.jwk.clone()).map_err(|e| TestkitError::failed("jwk", e.to_string()))?;
        DecodingKey::from_jwk(&jwk).map_err(|e| TestkitError::failed("jwk", e.to_string()))
    }

    /// Sign `header`.`claims` as a compact JWS; the header is used verbatim
    /// (so tests can put anything in it). `alg` defaults to the key's.
    pub fn sign(&self, mut header: Value, claims: &Value) -> Result<String, TestkitError> {
        if header.get("alg").is_none() {
            header["alg"] = json!(format!("{:?}", self.alg));
        }
        let message = format!("{}.{}", b64_json(&header), b64_json(claims));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, self.alg)
            .map_err(|e| TestkitError::failed("sign", e.to_string()))?;
        Ok(format!("{message}.{signature}"))
    }
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn random_id() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// A registered client of the IdP's token endpoint.
pub enum IdpClient {
    /// `client_secret_basic`.
    Secret(String),
    /// `private_key_jwt` (RFC 7523) with this public key.
    PublicKey(DecodingKey, Algorithm),
}

struct IdpState {
    issuer: String,
    keys: RwLock<Vec<Arc<IdpKey>>>,
    active: RwLock<Arc<IdpKey>>,
    down: AtomicBool,
    jwks_max_age: AtomicU64,
    token_ttl: AtomicU64,
    jwks_requests: AtomicU64,
    token_requests: AtomicU64,
    clients: RwLock<HashMap<String, IdpClient>>,
    last_token_form: Mutex<Option<HashMap<String, String>>>,
    /// Published revocation list: SHA-256 hex of jtis; of principals with `not_before`.
    revoked_tokens: RwLock<Vec<String>>,
    revoked_principals: RwLock<Vec<(String, i64)>>,
    revoked_keys: RwLock<Vec<String>>,
}

/// A running test IdP; stopped when dropped.
pub struct TestIdp {
    state: Arc<IdpState>,
    pki: TestPki,
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

impl TestIdp {
    /// Start an IdP with one ES256 key, on `https://localhost:<port>`.
    pub async fn start() -> Result<Self, TestkitError> {
        let pki = TestPki::new("idp")?;
        let leaf = pki.localhost_server()?;
        let tls = CertifiedKey::from_pem(leaf.cert_pem().as_bytes(), leaf.key_pem().as_bytes())
            .and_then(CertifiedKey::into_server_config)
            .map_err(|e| TestkitError::failed("IdP TLS", e.to_string()))?;
        let listener =
            TlsListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), ServerTls::new(tls), Duration::from_secs(5))
                .await
                .map_err(TestkitError::io("bind IdP"))?;
        let addr = listener.local_addr().map_err(TestkitError::io("IdP address"))?;
        let key = Arc::new(IdpKey::es256()?);
        let state = Arc::new(IdpState {
            issuer: format!("https://localhost:{}", addr.port()),
            keys: RwLock::new(vec![key.clone()]),
            active: RwLock::new(key),
            down: AtomicBool::new(false),
            jwks_max_age: AtomicU64::new(300),
            token_ttl: AtomicU64::new(300),
            jwks_requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            clients: RwLock::new(HashMap::new()),
            last_token_form: Mutex::new(None),
            revoked_tokens: RwLock::new(Vec::new()),
            revoked_principals: RwLock::new(Vec::new()),
            revoked_keys: RwLock::new(Vec::new()),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .route("/revocations", get(revocations))
            .with_state(state.clone());
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(listener.serve(router, stop_rx, Duration::from_secs(1)));
        Ok(Self { state, pki, addr, _stop: stop })
    }

    /// Publish `jti` as revoked.
    pub fn revoke_token(&self, jti: &str) {
        if let Ok(mut tokens) = self.state.revoked_tokens.write() {
            tokens.push(sha256_hex(jti));
        }
    }

    /// Publish every token of `principal` (a subject or client id) issued at
    /// or before `not_before` as revoked.
    pub fn revoke_principal(&self, principal: &str, not_before: i64) {
        if let Ok(mut principals) = self.state.revoked_principals.write() {
            principals.push((sha256_hex(principal), not_before));
        }
    }

    /// Publish every token signed by `kid` as revoked (a compromised key).
    pub fn revoke_key(&self, kid: &str) {
        if let Ok(mut keys) = self.state.revoked_keys.write() {
            keys.push(kid.to_owned());
        }
    }

    /// The issuer URL (`https://localhost:<port>`).
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// The token endpoint URL.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.state.issuer)
    }

    /// The JWKS URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.state.issuer)
    }

    /// The CA clients must trust to reach it.
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The key that signs now.
    pub fn active_key(&self) -> Arc<IdpKey> {
        self.state.active.read().map(|k| k.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Publish `key` and sign with it from now on (the old key stays published).
    pub fn rotate_to(&self, key: IdpKey) -> Arc<IdpKey> {
        let key = Arc::new(key);
        if let Ok(mut keys) = self.state.keys.write() {
            keys.push(key.clone());
        }
        if let Ok(mut active) = self.state.active.write() {
            *active = key.clone();
        }
        key
    }

    /// Remove a key from the JWKS.
    pub fn retire(&self, kid: &str) {
        if let Ok(mut keys) = self.state.keys.write() {
            keys.retain(|k| k.kid != kid);
        }
    }

    /// Simulate an outage: every endpoint answers 503.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// `Cache-Control: max-age` of JWKS responses.
    pub fn set_jwks_max_age(&self, seconds: u64) {
        self.state.jwks_max_age.store(seconds, Ordering::SeqCst);
    }

    /// `expires_in` of issued tokens.
    pub fn set_token_ttl(&self, seconds: u64) {
        self.state.token_ttl.store(seconds, Ordering::SeqCst);
    }

    /// Number of JWKS requests served.
    pub fn jwks_requests(&self) -> u64 {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// Number of token requests received.
    pub fn token_requests(&self) -> u64 {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Register a client of the token endpoint.
    pub fn register_client(&self, client_id: &str, client: IdpClient) {
        if let Ok(mut clients) = self.state.clients.write() {
            clients.insert(client_id.to_owned(), client);
        }
    }

    /// The form of the last token request (to check what a client sent).
    pub fn last_token_form(&self) -> Option<HashMap<String, String>> {
        self.state.last_token_form.lock().ok()?.clone()
    }

    /// Claims of a valid access token for `aud`, ready to be tweaked.
    pub fn access_claims(&self, sub: &str, aud: &str, scope: &str) -> Value {
        let now = now();
        json!({
            "iss": self.state.issuer, "sub": sub, "aud": aud, "exp": now + 300, "iat": now, "nbf": now,
            "jti": random_id(), "client_id": "web", "scope": scope,
        })
    }

    /// Sign `claims` with the active key and an RFC 9068 header.
    pub fn mint(&self, claims: &Value) -> Result<String, TestkitError> {
        let key = self.active_key();
        key.sign(json!({"typ": "at+jwt", "kid": key.kid}), claims)
    }
}

async fn discovery(State(state): State<Arc<IdpState>>) -> Response {
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{}/jwks", state.issuer),
        "token_endpoint": format!("{}/token", state.issuer),
        "grant_types_supported": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
    .into_response()
}

/// The revocation list in Estate's wire form (see `estate_tokens::revocation`).
async fn revocations(State(state): State<Arc<IdpState>>) -> Response {
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let tokens = state.revoked_tokens.read().map(|t| t.clone()).unwrap_or_default();
    let principals: Vec<Value> = state
        .revoked_principals
        .read()
        .map(|p| p.iter().map(|(id, not_before)| json!({ "id": id, "not_before": not_before })).collect())
        .unwrap_or_default();
    let keys = state.revoked_keys.read().map(|k| k.clone()).unwrap_or_default();
    ([(header::CACHE_CONTROL, "no-store")], Json(json!({ "tokens": tokens, "principals": principals, "keys": keys })))
        .into_response()
}

fn sha256_hex(value: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn jwks(State(state): State<Arc<IdpState>>) -> Response {
    state.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys: Vec<Value> = state.keys.read().map(|k| k.iter().map(|k| k.jwk.clone()).collect()).unwrap_or_default();
    let max_age = state.jwks_max_age.load(Ordering::SeqCst);
    ([(header::CACHE_CONTROL, format!("public, max-age={max_age}"))], Json(json!({ "keys": keys }))).into_response()
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

async fn token(
    State(state): State<Arc<IdpState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut last) = state.last_token_form.lock() {
        *last = Some(form.clone());
    }
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let Some(client_id) = authenticate(&state, &headers, &form) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let grant = form.get("grant_type").map(String::as_str);
    let (sub, aud, issued_token_type) = match grant {
        Some("client_credentials") => (client_id.clone(), form.get("audience").cloned().unwrap_or_default(), None),
        Some("urn:ietf:params:oauth:grant-type:token-exchange") => {
            let Some(subject) = form
                .get("subject_token")
                .and_then(|t| jsonwebtoken::dangerous::insecure_decode_claims::<Value>(t).ok())
            else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
            };
            let sub = subject["sub"].as_str().unwrap_or_default().to_owned();
            (
                sub,
                form.get("audience").cloned().unwrap_or_default(),
                Some("urn:ietf:params:oauth:token-type:access_token"),
            )
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    let ttl = state.token_ttl.load(Ordering::SeqCst);
    let now = now();
    let mut claims = json!({
        "iss": state.issuer, "sub": sub, "aud": aud, "exp": now + i64::try_from(ttl).unwrap_or(300), "iat": now,
        "jti": random_id(), "client_id": client_id, "scope": form.get("scope").cloned().unwrap_or_default(),
    });
    if issued_token_type.is_some() {
        claims["act"] = json!({ "sub": client_id });
    }
    let key = state.active.read().map(|k| k.clone()).unwrap_or_else(|p| p.into_inner().clone());
    let Ok(access_token) = key.sign(json!({"typ": "at+jwt", "kid": key.kid}), &claims) else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    let mut body = json!({ "access_token": access_token, "token_type": "Bearer", "expires_in": ttl });
    if let Some(t) = issued_token_type {
        body["issued_token_type"] = json!(t);
    }
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// client_secret_basic or private_key_jwt; returns the client id.
fn authenticate(state: &IdpState, headers: &HeaderMap, form: &HashMap<String, String>) -> Option<String> {
    let clients = state.clients.read().ok()?;
    if let Some(basic) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()?.strip_prefix("Basic ")) {
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic).ok()?;
        let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        return match clients.get(id)? {
            IdpClient::Secret(expected) if expected == secret => Some(id.to_owned()),
            _ => None,
        };
    }
    if form.get("client_assertion_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        let assertion = form.get("client_assertion")?;
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion).ok()?;
        let id = claims["iss"].as_str()?;
        let IdpClient::PublicKey(key, alg) = clients.get(id)? else { return None };
        let mut validation = jsonwebtoken::Validation::new(*alg);
        validation.set_audience(&[format!("{}/token", state.issuer), state.issuer.clone()]);
        validation.set_issuer(&[id]);
        validation.sub = Some(id.to_owned());
        jsonwebtoken::decode::<Value>(assertion, key, &validation).ok()?;
        return Some(id.to_owned());
    }
    None
}
