//! Registered clients and client authentication at the token endpoint.
//!
//! - `client_secret_basic`: SHA-256 of the presented secret compared in
//!   constant time with the stored digest. Unknown clients go through the same
//!   comparison against a dummy digest, and every failure is the same
//!   `invalid_client`: the endpoint does not tell which client ids exist.
//! - `private_key_jwt` (RFC 7523 §3): the assertion is verified by
//!   `estate-tokens` against the client's registered public key, with
//!   `iss = sub = client_id`, `aud` = our token endpoint or issuer, a lifetime
//!   of at most five minutes, and a `jti` that has not been seen before.
//! - Exactly one method per request (RFC 6749 §2.3).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use estate_tokens::jwks::KeyLocation;
use estate_tokens::{Algorithm, Scope, Scopes, Verifier, VerifierConfig};
use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::oauth_error::OAuthError;
use crate::settings::{ClientAuthSettings, ClientSettings, GrantType};
use crate::store::Store;

/// RFC 7523 §2.2 client assertion type.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest client-assertion lifetime accepted.
const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;

/// Configuration errors for clients.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    /// A field is wrong.
    #[error("client {client}: {reason}")]
    Invalid {
        /// The client id.
        client: String,
        /// What is wrong.
        reason: String,
    },
}

enum Authentication {
    SecretDigest([u8; 32]),
    Assertion(Verifier),
    /// A public client: identified by `client_id`, authenticated by nothing
    /// (PKCE protects its codes).
    Public,
}

/// A client as the server knows it.
pub struct Client {
    id: String,
    authentication: Authentication,
    grants: Vec<GrantType>,
    scopes: Scopes,
    audiences: Vec<String>,
    may_introspect: bool,
    redirect_uris: Vec<String>,
}

impl Client {
    /// Whether `uri` is one of its registered redirect URIs (exact match).
    pub fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }

    /// Whether it authenticates (confidential) or not (public).
    pub fn is_public(&self) -> bool {
        matches!(self.authentication, Authentication::Public)
    }

    /// Whether it may introspect tokens.
    pub fn may_introspect(&self) -> bool {
        self.may_introspect
    }
    /// The client id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Whether it may use `grant`.
    pub fn may_use(&self, grant: GrantType) -> bool {
        self.grants.contains(&grant)
    }
    /// Scopes it may request for itself.
    pub fn scopes(&self) -> Scopes {
        self.scopes
    }
    /// Audiences it may request for itself.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }
}

/// All registered clients, and the store that remembers used assertions.
pub struct ClientRegistry {
    clients: HashMap<String, Client>,
    store: Arc<Store>,
    audit: estate_audit::AuditLog,
}

/// Parse a scope list from configuration; unknown names are configuration errors.
pub fn parse_scopes(client: &str, names: &[String]) -> Result<Scopes, ClientConfigError> {
    names
        .iter()
        .map(|n| {
            n.parse::<Scope>().map_err(|_| ClientConfigError::Invalid {
                client: client.to_owned(),
                reason: format!("unknown scope {n}"),
            })
        })
        .collect()
}

impl ClientRegistry {
    /// Build from configuration; `token_endpoint` and `issuer` are the
    /// audiences client assertions may name.
    pub async fn new(
        settings: &[ClientSettings],
        issuer: &str,
        token_endpoint: &str,
        store: Arc<Store>,
        audit: estate_audit::AuditLog,
    ) -> Result<Self, ClientConfigError> {
        let mut clients = HashMap::new();
        for c in settings {
            let invalid = |reason: String| ClientConfigError::Invalid { client: c.client_id.clone(), reason };
            validate_grants_and_redirects(c).map_err(invalid)?;
            let authentication = match &c.auth {
                ClientAuthSettings::None => Authentication::Public,
                ClientAuthSettings::ClientSecretBasic { secret_sha256 } => {
                    let digest: [u8; 32] = hex_decode(secret_sha256)
                        .ok_or_else(|| invalid("secret_sha256 must be 64 lowercase hex digits".into()))?;
                    Authentication::SecretDigest(digest)
                }
                ClientAuthSettings::PrivateKeyJwt { public_key_file, kid } => {
                    let pem = std::fs::read(public_key_file)
                        .map_err(|e| invalid(format!("cannot read {}: {e}", public_key_file.display())))?;
                    let jwk = public_jwk_from_pem(&pem, kid.as_deref())
                        .ok_or_else(|| invalid("public key is not EC P-256".into()))?;
                    let mut config = VerifierConfig::new(c.client_id.clone(), &[token_endpoint, issuer]);
                    config.keys = KeyLocation::Static(serde_json::json!({ "keys": [jwk] }));
                    config.algorithms = vec![Algorithm::ES256];
                    // A client assertion is a plain JWT, not an access token.
                    config.require_at_jwt_typ = false;
                    // One-time credentials: never cache.
                    config.cache_ttl = Duration::ZERO;
                    // One registered key: an assertion may omit `kid`.
                    config.require_kid = false;
                    let verifier = Verifier::new(config).await.map_err(|e| invalid(e.to_string()))?;
                    Authentication::Assertion(verifier)
                }
            };
            let client = Client {
                id: c.client_id.clone(),
                authentication,
                grants: c.grant_types.clone(),
                scopes: parse_scopes(&c.client_id, &c.scopes)?,
                audiences: c.audiences.clone(),
                may_introspect: c.may_introspect,
                redirect_uris: c.redirect_uris.clone(),
            };
            clients.insert(c.client_id.clone(), client);
        }
        Ok(Self { clients, store, audit })
    }

    /// Look up a client by id (for policy checks after authentication).
    pub fn get(&self, id: &str) -> Option<&Client> {
        self.clients.get(id)
    }

    /// The client id a request *claims* (Basic user name, assertion `iss`, or
    /// `client_id`), read without verifying anything: for rate limiting before
    /// the expensive checks. Never trusted for anything else.
    pub fn claimed_client_id(headers: &HeaderMap, form: &FormParams) -> Option<String> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
            && let Some((_, encoded)) = value.split_once(' ')
        {
            let decoded = STANDARD.decode(encoded.trim()).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            return form_decode(decoded.split_once(':')?.0);
        }
        if let Ok(Some(assertion)) = form.single("client_assertion") {
            let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion).ok()?;
            return claims.get("iss")?.as_str().map(str::to_owned);
        }
        form.single("client_id").ok().flatten().map(str::to_owned)
    }

    /// Authenticate the client of a token request; a client disabled by
    /// `auth revoke client` (PC-12) is refused like a wrong credential.
    pub async fn authenticate(&self, headers: &HeaderMap, form: &FormParams) -> Result<&Client, OAuthError> {
        let client = self.authenticate_credentials(headers, form).await?;
        self.refuse_disabled(client).await?;
        Ok(client)
    }

    /// `Err(InvalidClient)` (audited) when `client` is disabled.
    pub async fn refuse_disabled(&self, client: &Client) -> Result<(), OAuthError> {
        let disabled = self.store.principal_disabled(&client.id).await.map_err(|error| {
            tracing::error!(%error, "client status lookup failed");
            OAuthError::ServerError
        })?;
        if disabled {
            self.audit.emit(
                estate_audit::AuditEvent::new(
                    estate_audit::Action::AuthenticationFailed,
                    estate_audit::Outcome::Failure,
                )
                .reason("client_disabled")
                .client(&client.id),
            );
            return Err(OAuthError::InvalidClient);
        }
        Ok(())
    }

    async fn authenticate_credentials(&self, headers: &HeaderMap, form: &FormParams) -> Result<&Client, OAuthError> {
        let basic = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let assertion_type = form.single("client_assertion_type")?;
        match (basic, assertion_type) {
            (Some(_), Some(_)) => Err(OAuthError::InvalidRequest("use exactly one client authentication method")),
            (Some(value), None) => self.authenticate_basic(value),
            (None, Some(JWT_BEARER_ASSERTION)) => {
                let assertion = form.single("client_assertion")?.ok_or(OAuthError::InvalidClient)?;
                let client = self.authenticate_assertion(assertion).await?;
                // RFC 7523 §3: a client_id parameter, when sent, must match.
                match form.single("client_id")? {
                    Some(id) if id != client.id => Err(OAuthError::InvalidClient),
                    _ => Ok(client),
                }
            }
            (None, Some(_)) => Err(OAuthError::InvalidClient),
            (None, None) => {
                // A public client names itself; it may use only PKCE-protected grants.
                let id = form.single("client_id")?.ok_or(OAuthError::InvalidClient)?;
                match self.clients.get(id) {
                    Some(client) if matches!(client.authentication, Authentication::Public) => Ok(client),
                    _ => Err(OAuthError::InvalidClient),
                }
            }
        }
    }

    fn authenticate_basic(&self, header: &str) -> Result<&Client, OAuthError> {
        let (scheme, encoded) = header.split_once(' ').ok_or(OAuthError::InvalidClient)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(OAuthError::InvalidClient);
        }
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| OAuthError::InvalidClient)?;
        let decoded = String::from_utf8(decoded).map_err(|_| OAuthError::InvalidClient)?;
        let (id, secret) = decoded.split_once(':').ok_or(OAuthError::InvalidClient)?;
        // RFC 6749 §2.3.1: both parts are form-urlencoded.
        let (id, secret) =
            (form_decode(id).ok_or(OAuthError::InvalidClient)?, form_decode(secret).ok_or(OAuthError::InvalidClient)?);
        let presented: [u8; 32] = sha256(secret.as_bytes());
        let client = self.clients.get(&id);
        let expected = match client.map(|c| &c.authentication) {
            Some(Authentication::SecretDigest(digest)) => *digest,
            // Same work for unknown clients and for clients of another method.
            _ => [0u8; 32],
        };
        let matches: bool = presented.ct_eq(&expected).into();
        match client {
            Some(c) if matches && matches!(c.authentication, Authentication::SecretDigest(_)) => Ok(c),
            _ => Err(OAuthError::InvalidClient),
        }
    }

    async fn authenticate_assertion(&self, assertion: &str) -> Result<&Client, OAuthError> {
        // Find the client named by `iss` first; the signature check that follows decides.
        let claimed: serde_json::Value =
            jsonwebtoken::dangerous::insecure_decode_claims(assertion).map_err(|_| OAuthError::InvalidClient)?;
        let id = claimed.get("iss").and_then(|v| v.as_str()).ok_or(OAuthError::InvalidClient)?;
        let client = self.clients.get(id).ok_or(OAuthError::InvalidClient)?;
        let Authentication::Assertion(verifier) = &client.authentication else {
            return Err(OAuthError::InvalidClient);
        };
        let verified = verifier.verify(assertion).await.map_err(|reason| {
            tracing::info!(client_id = %client.id, %reason, "client assertion refused");
            OAuthError::InvalidClient
        })?;
        if verified.subject().as_str() != client.id {
            return Err(OAuthError::InvalidClient);
        }
        if verified.expires_at() - verified.issued_at() > MAX_ASSERTION_LIFETIME_SECS {
            tracing::info!(client_id = %client.id, "client assertion lives too long");
            return Err(OAuthError::InvalidClient);
        }
        let jti = verified.jti().ok_or(OAuthError::InvalidClient)?;
        // RFC 7523 §3 item 7: a `jti` may be used once (until the assertion expires),
        // across every replica sharing the store.
        let fresh = self.store.remember_assertion_jti(&client.id, jti.as_str(), verified.expires_at()).await.map_err(
            |error| {
                tracing::error!(%error, "assertion jti store failed");
                OAuthError::ServerError
            },
        )?;
        if !fresh {
            self.audit.emit(
                estate_audit::AuditEvent::new(
                    estate_audit::Action::AuthenticationFailed,
                    estate_audit::Outcome::Failure,
                )
                .reason("client_assertion_replayed")
                .client(&client.id),
            );
            return Err(OAuthError::InvalidClient);
        }
        Ok(client)
    }
}

/// Token request parameters, with RFC 6749 §3.2's rule that a parameter
/// must not appear twice (except `resource`, RFC 8707).
pub struct FormParams(Vec<(String, String)>);

impl FormParams {
    /// Wrap the decoded form.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// A parameter that may appear at most once; empty values count as absent.
    pub fn single(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(OAuthError::InvalidRequest("repeated parameter"));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty()).collect()
    }
}

/// Configuration rules that keep a client from being set up unsafely.
fn validate_grants_and_redirects(c: &ClientSettings) -> Result<(), String> {
    let public = matches!(c.auth, ClientAuthSettings::None);
    if public
        && (c.grant_types.contains(&GrantType::ClientCredentials) || c.grant_types.contains(&GrantType::TokenExchange))
    {
        return Err("a public client cannot use client_credentials or token exchange".into());
    }
    if c.grant_types.contains(&GrantType::AuthorizationCode) && c.redirect_uris.is_empty() {
        return Err("authorization_code needs at least one redirect URI".into());
    }
    for uri in &c.redirect_uris {
        // OAuth 2.1 §2.3.1 / RFC 8252 §7.3: https, or http on a loopback address for native apps; no fragment.
        let loopback = uri.starts_with("http://127.0.0.1:") || uri.starts_with("http://[::1]:");
        if !(uri.starts_with("https://") || loopback) || uri.contains('#') {
            return Err(format!("redirect URI {uri:?} must be https (or http on a loopback IP) without a fragment"));
        }
    }
    Ok(())
}

/// SHA-256 (codes, refresh tokens and client secrets are stored as this).
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn hex_decode(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Decode one application/x-www-form-urlencoded value.
fn form_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The public JWK of an EC P-256 public key in SubjectPublicKeyInfo PEM,
/// named `kid`, or else its RFC 7638 thumbprint.
fn public_jwk_from_pem(pem: &[u8], kid: Option<&str>) -> Option<serde_json::Value> {
    use rustls_pki_types::SubjectPublicKeyInfoDer;
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).ok()?;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der.as_ref()).ok()?;
    // id-ecPublicKey with namedCurve prime256v1.
    let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    if spki.algorithm.algorithm.to_id_string() != "1.2.840.10045.2.1" || curve.to_id_string() != "1.2.840.10045.3.1.7" {
        return None;
    }
    let point = spki.subject_public_key.data.as_ref();
    if point.len() != 65 || point.first() != Some(&4) {
        return None;
    }
    let (x, y) = point.get(1..)?.split_at(32);
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    let kid = kid.map_or_else(|| crate::keys::thumbprint(&x, &y), str::to_owned);
    Some(serde_json::json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid, "x": x, "y": y}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        let form = FormParams::new(vec![("scope".into(), "a".into()), ("scope".into(), "b".into())]);
        assert!(form.single("scope").is_err());
        let form = FormParams::new(vec![("resource".into(), "a".into()), ("resource".into(), "b".into())]);
        assert_eq!(form.all("resource"), ["a", "b"]);
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%4"), None);
    }

    #[test]
    fn p256_public_key_pem_becomes_a_jwk_and_others_are_refused() {
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let jwk = public_jwk_from_pem(p256.public_key_pem().as_bytes(), None).unwrap();
        assert_eq!(jwk["crv"], "P-256");
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(public_jwk_from_pem(p384.public_key_pem().as_bytes(), None).is_none());
        assert!(public_jwk_from_pem(b"garbage", None).is_none());
    }
}
