//! Every JOSE and claim rule of the verifier: the refused case and the
//! accepted case, against a real HTTPS IdP (discovery + JWKS) started per test.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::time::Duration;

use estate_testkit::idp::now;
use estate_testkit::{IdpKey, TestIdp};
use estate_tokens::jwks::KeyLocation;
use estate_tokens::{Algorithm, Scope, TokenError, Verifier, VerifierConfig};
use serde_json::{Value, json};

const AUD: &str = "order-api";

async fn setup(adjust: impl FnOnce(&mut VerifierConfig)) -> (TestIdp, Verifier) {
    let idp = TestIdp::start().await.unwrap();
    let mut config = VerifierConfig::new(idp.issuer(), &[AUD]);
    config.ca_pem = Some(idp.ca_pem());
    adjust(&mut config);
    let verifier = Verifier::new(config).await.unwrap();
    (idp, verifier)
}

fn claims(idp: &TestIdp) -> Value {
    idp.access_claims("alice", AUD, "orders:read orders:write openid")
}

async fn refused(verifier: &Verifier, token: &str) -> TokenError {
    verifier.verify(token).await.expect_err("token must be refused")
}

// ------------------------------------------------------------------ happy paths

#[tokio::test]
async fn accepts_a_valid_token_with_typed_claims() {
    let (idp, verifier) = setup(|_| {}).await;
    let token = verifier.verify(&idp.mint(&claims(&idp)).unwrap()).await.unwrap();
    assert_eq!(token.subject().as_str(), "alice");
    assert_eq!(token.issuer(), idp.issuer());
    assert_eq!(token.client_id().unwrap().as_str(), "web");
    assert!(token.jti().is_some());
    assert!(token.scopes().contains(Scope::OrdersRead));
    assert!(token.scopes().contains(Scope::OrdersWrite));
    assert!(!token.scopes().contains(Scope::Admin));
    assert!(token.actor().is_none());
}

#[tokio::test]
async fn accepts_es384_and_eddsa_keys_when_allowed() {
    let (idp, verifier) = setup(|c| c.algorithms = vec![Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA]).await;
    for key in [IdpKey::es384().unwrap(), IdpKey::ed25519().unwrap()] {
        idp.rotate_to(key);
        verifier.refresh_keys().await.unwrap();
        verifier.verify(&idp.mint(&claims(&idp)).unwrap()).await.unwrap();
    }
}

#[tokio::test]
async fn audience_may_be_one_of_several() {
    let (idp, verifier) = setup(|_| {}).await;
    let mut c = claims(&idp);
    c["aud"] = json!(["payment-api", AUD]);
    verifier.verify(&idp.mint(&c).unwrap()).await.unwrap();
}

#[tokio::test]
async fn act_claim_of_an_exchanged_token_is_typed() {
    let (idp, verifier) = setup(|_| {}).await;
    let mut c = claims(&idp);
    c["act"] = json!({"sub": "order-svc"});
    let token = verifier.verify(&idp.mint(&c).unwrap()).await.unwrap();
    assert_eq!(token.actor().unwrap().sub().as_str(), "order-svc");
}

// ------------------------------------------------------------------ JOSE header rules (RFC 8725)

#[tokio::test]
async fn refuses_alg_none() {
    let (idp, verifier) = setup(|_| {}).await;
    let header = base64url(&json!({"alg": "none", "typ": "at+jwt", "kid": idp.active_key().kid()}));
    let token = format!("{header}.{}.", base64url(&claims(&idp)));
    assert_eq!(refused(&verifier, &token).await, TokenError::AlgorithmNotAllowed);
}

#[tokio::test]
async fn refuses_an_algorithm_outside_the_allowlist() {
    let (idp, verifier) = setup(|_| {}).await; // ES256 only
    let key = idp.rotate_to(IdpKey::es384().unwrap());
    verifier.refresh_keys().await.unwrap();
    let token = key.sign(json!({"typ": "at+jwt", "kid": key.kid()}), &claims(&idp)).unwrap();
    assert_eq!(refused(&verifier, &token).await, TokenError::AlgorithmNotAllowed);
}

#[tokio::test]
async fn refuses_hs256_signed_with_the_public_key() {
    // Algorithm confusion: the attacker HMACs with the published public key.
    let (idp, verifier) = setup(|_| {}).await;
    let key = idp.active_key();
    let secret = key.jwk().to_string();
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": key.kid()});
    let message = format!("{}.{}", base64url(&header), base64url(&claims(&idp)));
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        Algorithm::HS256,
    )
    .unwrap();
    assert_eq!(refused(&verifier, &format!("{message}.{sig}")).await, TokenError::AlgorithmNotAllowed);
}

#[tokio::test]
async fn refuses_a_key_used_with_another_algorithm_than_it_is_pinned_to() {
    let (idp, verifier) = setup(|c| c.algorithms = vec![Algorithm::ES256, Algorithm::ES384]).await;
    // Signed by an ES384 key, but the header names the ES256 key's kid.
    let es256_kid = idp.active_key().kid().to_owned();
    let es384 = IdpKey::es384().unwrap();
    let token = es384.sign(json!({"typ": "at+jwt", "kid": es256_kid}), &claims(&idp)).unwrap();
    assert_eq!(refused(&verifier, &token).await, TokenError::KeyAlgorithmMismatch);
}

#[tokio::test]
async fn never_trusts_a_key_embedded_in_the_header() {
    let (idp, verifier) = setup(|_| {}).await;
    let attacker = IdpKey::es256().unwrap();
    // The attacker's public key rides along in `jwk`, under the IdP's kid ...
    let header = json!({"typ": "at+jwt", "kid": idp.active_key().kid(), "jwk": attacker.jwk()});
    let token = attacker.sign(header, &claims(&idp)).unwrap();
    assert_eq!(refused(&verifier, &token).await, TokenError::BadSignature);
    // ... or under its own kid.
    let header = json!({"typ": "at+jwt", "kid": attacker.kid(), "jwk": attacker.jwk()});
    let token = attacker.sign(header, &claims(&idp)).unwrap();
    assert_eq!(refused(&verifier, &token).await, TokenError::UnknownKey);
}

#[tokio::test]
async fn never_fetches_keys_from_a_jku_in_the_header() {
    let (idp, verifier) = setup(|_| {}).await;
    let evil = TestIdp::start().await.unwrap();
    let key = evil.active_key();
    let header = json!({"typ": "at+jwt", "kid": key.kid(), "jku": evil.jwks_uri(), "x5u": evil.jwks_uri()});
    let token = key.sign(header, &claims(&idp)).unwrap();
    assert_eq!(refused(&verifier, &token).await, TokenError::UnknownKey);
    assert_eq!(evil.jwks_requests(), 0, "the verifier followed jku/x5u");
}

#[tokio::test]
async fn refuses_unknown_critical_headers() {
    let (idp, verifier) = setup(|_| {}).await;
    let key = idp.active_key();
    let header = json!({"typ": "at+jwt", "kid": key.kid(), "crit": ["exp-extension"], "exp-extension": 1});
    let token = key.sign(header, &claims(&idp)).unwrap();
    assert_eq!(refused(&verifier, &token).await, TokenError::UnsupportedCritical);
}

#[tokio::test]
async fn requires_typ_at_jwt_unless_switched_off() {
    let (idp, verifier) = setup(|_| {}).await;
    let key = idp.active_key();
    for typ in [Some("JWT"), Some("id_token+jwt"), None] {
        let mut header = json!({"kid": key.kid()});
        if let Some(typ) = typ {
            header["typ"] = json!(typ);
        }
        let token = key.sign(header, &claims(&idp)).unwrap();
        assert_eq!(refused(&verifier, &token).await, TokenError::WrongType, "{typ:?}");
    }
    let token = key.sign(json!({"typ": "application/AT+JWT", "kid": key.kid()}), &claims(&idp)).unwrap();
    verifier.verify(&token).await.unwrap();

    let (idp, lenient) = setup(|c| c.require_at_jwt_typ = false).await;
    let key = idp.active_key();
    let token = key.sign(json!({"typ": "JWT", "kid": key.kid()}), &claims(&idp)).unwrap();
    lenient.verify(&token).await.unwrap();
}

#[tokio::test]
async fn refuses_a_token_without_kid() {
    let (idp, verifier) = setup(|_| {}).await;
    let token = idp.active_key().sign(json!({"typ": "at+jwt"}), &claims(&idp)).unwrap();
    assert_eq!(refused(&verifier, &token).await, TokenError::UnknownKey);
}

#[tokio::test]
async fn refuses_a_tampered_payload() {
    let (idp, verifier) = setup(|_| {}).await;
    let token = idp.mint(&claims(&idp)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims(&idp);
    c["sub"] = json!("mallory");
    let forged = format!("{}.{}.{}", parts[0], base64url(&c), parts[2]);
    assert_eq!(refused(&verifier, &forged).await, TokenError::BadSignature);
}

#[tokio::test]
async fn refuses_a_token_signed_by_another_issuers_key() {
    let (idp, verifier) = setup(|_| {}).await;
    let other = IdpKey::es256().unwrap();
    let token = other.sign(json!({"typ": "at+jwt", "kid": idp.active_key().kid()}), &claims(&idp)).unwrap();
    assert_eq!(refused(&verifier, &token).await, TokenError::BadSignature);
}

#[tokio::test]
async fn refuses_garbage_and_oversize_input_without_panicking() {
    let (idp, verifier) = setup(|c| c.max_token_bytes = 4096).await;
    for garbage in ["", "a", "a.b", "a.b.c", "a.b.c.d", "...", "eyJ.eyJ.x", "\u{0}.\u{0}.\u{0}", "é.é.é"] {
        assert!(verifier.verify(garbage).await.is_err(), "{garbage:?}");
    }
    let mut c = claims(&idp);
    c["pad"] = json!("x".repeat(5000));
    assert_eq!(refused(&verifier, &idp.mint(&c).unwrap()).await, TokenError::TooLarge);
}

// ------------------------------------------------------------------ claim rules

#[tokio::test]
async fn refuses_wrong_issuer() {
    let (idp, verifier) = setup(|_| {}).await;
    let mut c = claims(&idp);
    c["iss"] = json!("https://evil.example");
    assert_eq!(refused(&verifier, &idp.mint(&c).unwrap()).await, TokenError::WrongIssuer);
}

#[tokio::test]
async fn refuses_wrong_or_missing_audience() {
    let (idp, verifier) = setup(|_| {}).await;
    let mut c = claims(&idp);
    c["aud"] = json!("payment-api");
    assert_eq!(refused(&verifier, &idp.mint(&c).unwrap()).await, TokenError::WrongAudience);
    c.as_object_mut().unwrap().remove("aud");
    assert!(verifier.verify(&idp.mint(&c).unwrap()).await.is_err());
}

#[tokio::test]
async fn refuses_tokens_missing_a_required_claim() {
    let (idp, verifier) = setup(|_| {}).await;
    for claim in ["exp", "iss", "sub", "iat"] {
        let mut c = claims(&idp);
        c.as_object_mut().unwrap().remove(claim);
        assert!(verifier.verify(&idp.mint(&c).unwrap()).await.is_err(), "accepted without {claim}");
    }
}

#[tokio::test]
async fn refuses_expired_tokens_beyond_the_leeway() {
    let (idp, verifier) = setup(|c| c.leeway = Duration::from_secs(30)).await;
    let mut c = claims(&idp);
    c["exp"] = json!(now() - 120);
    assert_eq!(refused(&verifier, &idp.mint(&c).unwrap()).await, TokenError::Expired);
    // Within the allowed skew it still passes.
    c["exp"] = json!(now() - 10);
    verifier.verify(&idp.mint(&c).unwrap()).await.unwrap();
}

#[tokio::test]
async fn refuses_not_yet_valid_tokens() {
    let (idp, verifier) = setup(|_| {}).await;
    let mut c = claims(&idp);
    c["nbf"] = json!(now() + 600);
    assert_eq!(refused(&verifier, &idp.mint(&c).unwrap()).await, TokenError::NotYetValid);
    let mut c = claims(&idp);
    c["iat"] = json!(now() + 600);
    assert_eq!(refused(&verifier, &idp.mint(&c).unwrap()).await, TokenError::NotYetValid);
}

#[tokio::test]
async fn refuses_claims_that_would_poison_logs() {
    let (idp, verifier) = setup(|_| {}).await;
    let mut c = claims(&idp);
    c["sub"] = json!("alice\n{\"forged\":\"log line\"}");
    assert_eq!(refused(&verifier, &idp.mint(&c).unwrap()).await, TokenError::InvalidClaim);
}

#[tokio::test]
async fn configuration_refuses_unsafe_settings() {
    let idp = TestIdp::start().await.unwrap();
    let base = || {
        let mut c = VerifierConfig::new(idp.issuer(), &[AUD]);
        c.ca_pem = Some(idp.ca_pem());
        c
    };
    let mut c = base();
    c.leeway = Duration::from_secs(61);
    assert!(Verifier::new(c).await.is_err(), "leeway above 60 s");
    let mut c = base();
    c.algorithms = vec![Algorithm::HS256];
    assert!(Verifier::new(c).await.is_err(), "HMAC in the allowlist");
    let mut c = base();
    c.audiences.clear();
    assert!(Verifier::new(c).await.is_err(), "no audience");
}

// ------------------------------------------------------------------ keys: discovery, rotation, outage

#[tokio::test]
async fn discovery_must_name_the_configured_issuer() {
    let idp = TestIdp::start().await.unwrap();
    // Same server, different spelling of the issuer: the discovery document disagrees.
    let mut config = VerifierConfig::new(format!("https://127.0.0.1:{}", idp.addr().port()), &[AUD]);
    config.ca_pem = Some(idp.ca_pem());
    let verifier = Verifier::new(config).await.unwrap();
    assert!(!verifier.has_keys());
    assert_eq!(refused(&verifier, &idp.mint(&claims(&idp)).unwrap()).await, TokenError::KeysUnavailable);
}

#[tokio::test]
async fn key_rotation_without_restart_and_retired_keys_refused() {
    let (idp, verifier) = setup(|c| c.min_refetch_interval = Duration::ZERO).await;
    let old = idp.active_key();
    let before = idp.mint(&claims(&idp)).unwrap();
    verifier.verify(&before).await.unwrap();

    // The IdP publishes a new key and signs with it: the unknown kid makes the
    // verifier refetch, no restart.
    let new = idp.rotate_to(IdpKey::es256().unwrap());
    let after = idp.mint(&claims(&idp)).unwrap();
    verifier.verify(&after).await.unwrap();
    // Old tokens keep verifying while the old key is published.
    let mut c = claims(&idp);
    c["jti"] = json!("still-valid");
    let old_again = old.sign(json!({"typ": "at+jwt", "kid": old.kid()}), &c).unwrap();
    verifier.verify(&old_again).await.unwrap();

    // The old key is retired; after the next refresh, its tokens are refused.
    idp.retire(old.kid());
    verifier.refresh_keys().await.unwrap();
    let mut c = claims(&idp);
    c["jti"] = json!("after-retirement");
    let stale = old.sign(json!({"typ": "at+jwt", "kid": old.kid()}), &c).unwrap();
    assert_eq!(refused(&verifier, &stale).await, TokenError::UnknownKey);
    assert_eq!(new.kid(), idp.active_key().kid());
}

#[tokio::test]
async fn keeps_verifying_from_cached_keys_while_the_idp_is_down() {
    let (idp, verifier) = setup(|_| {}).await;
    idp.set_down(true);
    assert!(verifier.refresh_keys().await.is_err(), "the IdP is really down");
    let token = idp.mint(&claims(&idp)).unwrap();
    verifier.verify(&token).await.unwrap();
}

#[tokio::test]
async fn an_unknown_kid_flood_causes_a_bounded_number_of_jwks_fetches() {
    let (idp, verifier) = setup(|c| c.min_refetch_interval = Duration::from_secs(60)).await;
    let before = idp.jwks_requests();
    let key = idp.active_key();
    let tokens: Vec<String> = (0..200)
        .map(|i| key.sign(json!({"typ": "at+jwt", "kid": format!("random-{i}")}), &claims(&idp)).unwrap())
        .collect();
    let results = futures::future::join_all(tokens.iter().map(|t| verifier.verify(t))).await;
    assert!(results.iter().all(|r| *r.as_ref().unwrap_err() == TokenError::UnknownKey));
    let fetched = idp.jwks_requests() - before;
    assert!(fetched <= 1, "{fetched} JWKS fetches for 200 unknown kids");
}

#[tokio::test]
async fn tokens_are_refused_with_503_semantics_until_keys_can_be_loaded() {
    let idp = TestIdp::start().await.unwrap();
    idp.set_down(true);
    let mut config = VerifierConfig::new(idp.issuer(), &[AUD]);
    config.ca_pem = Some(idp.ca_pem());
    config.min_refetch_interval = Duration::ZERO;
    let verifier = Verifier::new(config).await.unwrap();
    let token = idp.mint(&claims(&idp)).unwrap();
    assert_eq!(refused(&verifier, &token).await, TokenError::KeysUnavailable);
    idp.set_down(false);
    verifier.verify(&token).await.unwrap();
}

#[tokio::test]
async fn a_configured_jwks_uri_skips_discovery() {
    let idp = TestIdp::start().await.unwrap();
    let mut config = VerifierConfig::new(idp.issuer(), &[AUD]);
    config.ca_pem = Some(idp.ca_pem());
    config.keys = KeyLocation::JwksUri(idp.jwks_uri());
    let verifier = Verifier::new(config).await.unwrap();
    verifier.verify(&idp.mint(&claims(&idp)).unwrap()).await.unwrap();
}

// ------------------------------------------------------------------ helpers

fn base64url(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

// ------------------------------------------------------------------ readiness

#[tokio::test]
async fn readiness_waits_for_every_verifiers_keys() {
    use estate_service_kit::management::ReadinessCheck as _;
    use estate_tokens::readiness::KeysReady;
    let (_idp, with_keys) = setup(|_| {}).await;
    // An issuer that is not up yet: the verifier starts, without keys.
    let port = estate_testkit::free_port().unwrap();
    let without = Verifier::new(VerifierConfig::new(format!("https://127.0.0.1:{port}"), &[AUD])).await.unwrap();
    assert!(!without.has_keys());
    assert!(KeysReady(vec![with_keys.clone(), without]).check().await.is_err());
    assert!(KeysReady(vec![with_keys]).check().await.is_ok());
}
