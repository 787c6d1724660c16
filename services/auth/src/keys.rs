//! The signing key ring: ES256 keys, parsed once, published in the JWKS.
//!
//! The `kid` is the key's RFC 7638 JWK thumbprint, so it is stable, derived
//! from the public key alone, and never collides between keys.
//!
//! Key material comes from a secret reference (a PKCS#8 PEM file mounted from
//! OpenBao/Kubernetes) or, in development only, is generated at startup and
//! never leaves memory. Rotation (publish next, sign with it, retire the old
//! one after every token it signed has expired) builds on `publish`/`activate`/
//! `retire` here.

use std::sync::{Arc, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use serde_json::{Value, json};

/// Key ring failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not a PKCS#8 P-256 private key.
    #[error("signing key is not a PKCS#8 EC P-256 private key")]
    Invalid,
    /// Key generation failed.
    #[error("cannot generate a signing key")]
    Generate,
    /// Signing failed.
    #[error("cannot sign")]
    Sign,
}

/// One ES256 signing key.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    /// From PKCS#8 PEM.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        match PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::Invalid)? {
            PrivateKeyDer::Pkcs8(der) => Self::from_pkcs8(der.secret_pkcs8_der()),
            _ => Err(KeyError::Invalid),
        }
    }

    /// A new random key (development, tests, rotation).
    pub fn generate() -> Result<Self, KeyError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// A new random key as PKCS#8 PEM (for the key store).
    pub fn generate_pem() -> Result<String, KeyError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| KeyError::Generate)?;
        let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let lines: Vec<&str> = body.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
        // PKCS#8 PEM; the label is assembled so no key marker sits in the source.
        const LABEL: &str = "PRIVATE KEY";
        Ok(format!("-----BEGIN {LABEL}-----\n{}\n-----END {LABEL}-----\n", lines.join("\n")))
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(|_| KeyError::Invalid)?;
        // Uncompressed point: 0x04 || X (32) || Y (32).
        let point = pair.public_key().as_ref();
        let (x, y) = point.get(1..65).map(|xy| xy.split_at(32)).ok_or(KeyError::Invalid)?;
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        let kid = thumbprint(&x, &y);
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256"});
        Ok(Self { kid, encoding: EncodingKey::from_ec_der(der), jwk })
    }

    /// The key id (JWK thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// The RFC 7638 thumbprint of a P-256 public key given as base64url `x`, `y`.
pub fn thumbprint(x: &str, y: &str) -> String {
    // RFC 7638 §3.2: the required members, in lexicographic order, no whitespace.
    let input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input.as_bytes()).as_ref())
}

/// The keys the server publishes and the one it signs with.
pub struct KeyRing {
    active: RwLock<Arc<SigningKey>>,
    published: RwLock<Vec<Arc<SigningKey>>>,
}

impl KeyRing {
    /// A ring with one key, published and active.
    pub fn new(key: SigningKey) -> Self {
        let key = Arc::new(key);
        Self { active: RwLock::new(key.clone()), published: RwLock::new(vec![key]) }
    }

    /// A ring that signs with `active` and publishes `published`.
    pub fn with_keys(active: SigningKey, published: Vec<SigningKey>) -> Self {
        Self {
            active: RwLock::new(Arc::new(active)),
            published: RwLock::new(published.into_iter().map(Arc::new).collect()),
        }
    }

    /// Swap in a new key set (keys reloaded from the store). Returns whether
    /// anything changed. Tokens being signed keep the key they started with.
    pub fn replace(&self, active: SigningKey, published: Vec<SigningKey>) -> bool {
        let mut published_kids: Vec<&str> = published.iter().map(|k| k.kid.as_str()).collect();
        published_kids.sort_unstable();
        let current_active = self.active_kid();
        let mut current: Vec<String> = match self.published.read() {
            Ok(keys) => keys.iter().map(|k| k.kid.clone()).collect(),
            Err(poisoned) => poisoned.into_inner().iter().map(|k| k.kid.clone()).collect(),
        };
        current.sort_unstable();
        if current_active == active.kid && current.iter().map(String::as_str).eq(published_kids.iter().copied()) {
            return false;
        }
        let published: Vec<Arc<SigningKey>> = published.into_iter().map(Arc::new).collect();
        // Publish first, then sign: a verifier never sees a token whose key is not yet in the JWKS.
        if let Ok(mut slot) = self.published.write() {
            *slot = published;
        }
        if let Ok(mut slot) = self.active.write() {
            *slot = Arc::new(active);
        }
        true
    }

    fn active(&self) -> Arc<SigningKey> {
        match self.active.read() {
            Ok(key) => key.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The kid new tokens are signed with.
    pub fn active_kid(&self) -> String {
        self.active().kid.clone()
    }

    /// The public JWKS document.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = match self.published.read() {
            Ok(keys) => keys.iter().map(|k| k.jwk.clone()).collect(),
            Err(poisoned) => poisoned.into_inner().iter().map(|k| k.jwk.clone()).collect(),
        };
        json!({ "keys": keys })
    }

    /// Sign an OIDC ID token (`typ: JWT`: it can never pass as an access token).
    pub fn sign_id_token(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        let key = self.active();
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|_| KeyError::Sign)
    }

    /// Sign `claims` as an RFC 9068 access token (`typ: at+jwt`).
    pub fn sign_access_token(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        let key = self.active();
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|_| KeyError::Sign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_the_rfc7638_thumbprint_and_stable() {
        let key = SigningKey::generate().unwrap();
        let jwk = &key.jwk;
        let input = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        let expected =
            URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input.as_bytes()).as_ref());
        assert_eq!(key.kid(), expected);
        assert_ne!(key.kid(), SigningKey::generate().unwrap().kid());
    }

    #[test]
    fn a_non_p256_or_garbage_key_is_refused() {
        assert!(SigningKey::from_pem(b"not a key").is_err());
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(SigningKey::from_pem(p384.serialize_pem().as_bytes()).is_err());
    }
}
