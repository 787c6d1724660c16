//! Talking to a token endpoint: client authentication and response validation.
//!
//! Client authentication (RFC 6749 §2.3, RFC 7523):
//! - `private_key_jwt` (preferred): a short-lived (60 s) ES256 assertion with
//!   `iss = sub = client_id`, `aud` = the token endpoint, a random `jti`;
//! - `client_secret_basic`: id and secret form-encoded, then Basic auth.
//!
//! Responses are third-party input (API10): size-capped, JSON only, and
//! checked — `token_type` must be Bearer, `expires_in` positive and sane, the
//! token non-empty and of a bounded size — before anything uses them.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Largest token endpoint response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Largest access token accepted from the endpoint.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest `expires_in` believed (a day); longer is treated as malformed.
const MAX_EXPIRES_IN: u64 = 86_400;
/// Lifetime of a private_key_jwt assertion.
const ASSERTION_TTL_SECS: i64 = 60;

/// RFC 8693 token type of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// How this client proves who it is to the authorization server.
pub enum ClientAuth {
    /// RFC 7523 client assertion signed with the client's private key.
    PrivateKeyJwt {
        /// The client id.
        client_id: String,
        /// The signing key (ES256, PKCS#8 PEM parsed once).
        key: EncodingKey,
        /// The `kid` the server knows the public key by.
        kid: String,
    },
    /// HTTP Basic with a shared secret.
    SecretBasic {
        /// The client id.
        client_id: String,
        /// The secret.
        secret: SecretString,
    },
}

impl ClientAuth {
    /// `private_key_jwt` from an EC P-256 private key in PEM.
    pub fn private_key_jwt(client_id: &str, kid: &str, pem: &SecretString) -> Result<Self, OAuthError> {
        let key = EncodingKey::from_ec_pem(pem.expose_secret().as_bytes())
            .map_err(|_| OAuthError::Config("client key is not an EC private key in PEM".into()))?;
        Ok(Self::PrivateKeyJwt { client_id: client_id.to_owned(), key, kid: kid.to_owned() })
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        match self {
            ClientAuth::PrivateKeyJwt { client_id, .. } | ClientAuth::SecretBasic { client_id, .. } => client_id,
        }
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the key nor the secret, ever.
        match self {
            ClientAuth::PrivateKeyJwt { client_id, kid, .. } => {
                write!(f, "PrivateKeyJwt {{ client_id: {client_id:?}, kid: {kid:?} }}")
            }
            ClientAuth::SecretBasic { client_id, .. } => write!(f, "SecretBasic {{ client_id: {client_id:?} }}"),
        }
    }
}

/// Failures talking to the token endpoint.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// Bad client configuration.
    #[error("oauth client configuration: {0}")]
    Config(String),
    /// Transport failure.
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    /// The server refused (RFC 6749 §5.2 `error` code when it sent one).
    #[error("token endpoint refused with {status}: {code}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The OAuth error code, or `unknown`.
        code: String,
    },
    /// The response broke the protocol (API10: refused, nothing used).
    #[error("invalid token endpoint response: {0}")]
    InvalidResponse(&'static str),
    /// A recent failure; not retried yet (backoff).
    #[error("token endpoint failed recently; backing off")]
    BackingOff,
}

/// A token from the endpoint, validated.
pub struct IssuedToken {
    /// The access token (secret).
    pub access_token: SecretString,
    /// Lifetime from the moment of issue.
    pub expires_in: Duration,
    /// Granted scope, when the server said.
    pub scope: Option<String>,
    /// RFC 8693 `issued_token_type`, for exchanges.
    pub issued_token_type: Option<String>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("issued_token_type", &self.issued_token_type)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<u64>,
    scope: Option<String>,
    issued_token_type: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: i64,
    exp: i64,
}

/// A client of one token endpoint.
pub struct OAuthClient {
    token_endpoint: String,
    auth: ClientAuth,
    http: reqwest::Client,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient").field("token_endpoint", &self.token_endpoint).field("auth", &self.auth).finish()
    }
}

impl OAuthClient {
    /// A client for `token_endpoint` (https only). `ca_pem`: extra trusted
    /// roots (PEM) for the endpoint; `None` uses the system roots.
    pub fn new(token_endpoint: &str, auth: ClientAuth, ca_pem: Option<&str>) -> Result<Self, OAuthError> {
        if !token_endpoint.starts_with("https://") {
            return Err(OAuthError::Config("token endpoint must be https".into()));
        }
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true);
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| OAuthError::Config(e.to_string()))?;
            http = http.tls_certs_only([ca]);
        }
        let http = http.build().map_err(|e| OAuthError::Config(e.to_string()))?;
        Ok(Self { token_endpoint: token_endpoint.to_owned(), auth, http })
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        self.auth.client_id()
    }

    /// `grant_type=client_credentials` for `scope` at `audience`/`resource`.
    pub async fn client_credentials(&self, scope: &str, audience: Option<&str>) -> Result<IssuedToken, OAuthError> {
        let mut form = vec![("grant_type", "client_credentials".to_owned()), ("scope", scope.to_owned())];
        if let Some(audience) = audience {
            form.push(("audience", audience.to_owned()));
            form.push(("resource", audience.to_owned()));
        }
        self.request(form).await
    }

    /// RFC 8693 token exchange: trade `subject_token` (the user's access token)
    /// for one with a narrower `audience` and `scope`, acting as this client.
    pub async fn exchange(
        &self,
        subject_token: &SecretString,
        audience: &str,
        scope: &str,
    ) -> Result<IssuedToken, OAuthError> {
        let form = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT.to_owned()),
            ("subject_token", subject_token.expose_secret().to_owned()),
            ("subject_token_type", ACCESS_TOKEN_TYPE.to_owned()),
            ("requested_token_type", ACCESS_TOKEN_TYPE.to_owned()),
            ("audience", audience.to_owned()),
            ("resource", audience.to_owned()),
            ("scope", scope.to_owned()),
        ];
        let issued = self.request(form).await?;
        // RFC 8693 §2.2.1: issued_token_type is required in the response.
        if issued.issued_token_type.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(OAuthError::InvalidResponse("issued_token_type is not an access token"));
        }
        Ok(issued)
    }

    async fn request(&self, mut form: Vec<(&'static str, String)>) -> Result<IssuedToken, OAuthError> {
        let mut request = self.http.post(&self.token_endpoint).header(http::header::ACCEPT, "application/json");
        match &self.auth {
            ClientAuth::SecretBasic { client_id, secret } => {
                // RFC 6749 §2.3.1: form-encode both before Basic.
                request = request.basic_auth(form_encode(client_id), Some(form_encode(secret.expose_secret())));
            }
            ClientAuth::PrivateKeyJwt { client_id, key, kid } => {
                form.push(("client_id", client_id.clone()));
                form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
                form.push(("client_assertion", self.assertion(client_id, key, kid)?));
            }
        }
        let mut response =
            request.form(&form).send().await.map_err(|e| OAuthError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| OAuthError::Transport(e.to_string()))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(OAuthError::InvalidResponse("response too large"));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let code = serde_json::from_slice::<ErrorResponse>(&body)
                .ok()
                .and_then(|e| e.error)
                .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic()))
                .unwrap_or_else(|| "unknown".to_owned());
            return Err(OAuthError::Refused { status: status.as_u16(), code });
        }
        validate(serde_json::from_slice(&body).map_err(|_| OAuthError::InvalidResponse("not a JSON token response"))?)
    }

    fn assertion(&self, client_id: &str, key: &EncodingKey, kid: &str) -> Result<String, OAuthError> {
        let now = unix_now();
        let claims = AssertionClaims {
            iss: client_id,
            sub: client_id,
            aud: &self.token_endpoint,
            jti: format!("{:032x}", rand::rng().random::<u128>()),
            iat: now,
            exp: now + ASSERTION_TTL_SECS,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|_| OAuthError::Config("cannot sign client assertion".into()))
    }
}

fn validate(response: TokenResponse) -> Result<IssuedToken, OAuthError> {
    let token = response.access_token.ok_or(OAuthError::InvalidResponse("no access_token"))?;
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(OAuthError::InvalidResponse("access_token malformed"));
    }
    if !response.token_type.is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
        return Err(OAuthError::InvalidResponse("token_type is not Bearer"));
    }
    let expires_in = response.expires_in.ok_or(OAuthError::InvalidResponse("no expires_in"))?;
    if expires_in == 0 || expires_in > MAX_EXPIRES_IN {
        return Err(OAuthError::InvalidResponse("expires_in out of range"));
    }
    Ok(IssuedToken {
        access_token: SecretString::from(token),
        expires_in: Duration::from_secs(expires_in),
        scope: response.scope,
        issued_token_type: response.issued_token_type,
    })
}

/// application/x-www-form-urlencoded for one value (RFC 6749 Appendix B).
fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(json: serde_json::Value) -> TokenResponse {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn hostile_or_broken_responses_are_refused() {
        let ok = serde_json::json!({"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 300});
        assert!(validate(response(ok.clone())).is_ok());
        let mut cases = Vec::new();
        for (field, value) in [
            ("token_type", serde_json::json!("mac")),
            ("expires_in", serde_json::json!(0)),
            ("expires_in", serde_json::json!(10_000_000)),
            ("access_token", serde_json::json!("")),
            ("access_token", serde_json::json!("a b")),
            ("access_token", serde_json::json!("x".repeat(20_000))),
        ] {
            let mut bad = ok.clone();
            bad[field] = value;
            cases.push(bad);
        }
        for field in ["access_token", "token_type", "expires_in"] {
            let mut bad = ok.clone();
            bad.as_object_mut().unwrap().remove(field);
            cases.push(bad);
        }
        for bad in cases {
            assert!(validate(response(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn basic_credentials_are_form_encoded() {
        assert_eq!(form_encode("order-svc"), "order-svc");
        assert_eq!(form_encode("a:b c+/"), "a%3Ab+c%2B%2F");
    }
}
