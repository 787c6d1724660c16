//! The issuer's revocation list (PC-12): a revoked token, subject, client or
//! actor is refused by the verifier — cache hits included — while everything
//! else keeps verifying; no list yet means no verdict (fail closed), a list
//! that cannot be refreshed is kept.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_testkit::TestIdp;
use estate_testkit::idp::now;
use estate_tokens::revocation::RevocationsConfig;
use estate_tokens::{TokenError, Verifier, VerifierConfig};
use serde_json::json;

const AUD: &str = "order-api";

async fn verifier_for(idp: &TestIdp) -> Verifier {
    let mut config = VerifierConfig::new(idp.issuer(), &[AUD]);
    config.ca_pem = Some(idp.ca_pem());
    config.revocations = Some(RevocationsConfig::of_issuer(idp.issuer()));
    Verifier::new(config).await.unwrap()
}

#[tokio::test]
async fn pc12_a_revoked_jti_is_refused_even_from_the_cache_and_others_still_pass() {
    let idp = TestIdp::start().await.unwrap();
    let verifier = verifier_for(&idp).await;
    let claims = idp.access_claims("alice", AUD, "orders:read");
    let token = idp.mint(&claims).unwrap();
    let other = idp.mint(&idp.access_claims("alice", AUD, "orders:read")).unwrap();
    verifier.verify(&token).await.unwrap(); // now cached
    idp.revoke_token(claims["jti"].as_str().unwrap());
    verifier.refresh_revocations().await.unwrap();
    assert_eq!(verifier.verify(&token).await.unwrap_err(), TokenError::Revoked);
    verifier.verify(&other).await.unwrap();
}

#[tokio::test]
async fn pc12_a_revoked_subject_client_or_actor_refuses_tokens_issued_up_to_not_before() {
    let idp = TestIdp::start().await.unwrap();
    let verifier = verifier_for(&idp).await;
    let issued_at = now() - 10;
    let with = |sub: &str, client: &str, actor: Option<&str>, iat: i64| {
        let mut claims = idp.access_claims(sub, AUD, "orders:read");
        claims["client_id"] = json!(client);
        claims["iat"] = json!(iat);
        if let Some(actor) = actor {
            claims["act"] = json!({ "sub": "gateway-svc", "act": { "sub": actor } });
        }
        idp.mint(&claims).unwrap()
    };
    let by_alice = with("alice", "web", None, issued_at);
    let by_client = with("bob", "stolen-app", None, issued_at);
    let by_actor = with("carol", "web", Some("order-svc"), issued_at);
    let later = with("alice", "web", None, issued_at + 5);
    let bystander = with("dave", "web", None, issued_at);
    for token in [&by_alice, &by_client, &by_actor, &later, &bystander] {
        verifier.verify(token).await.unwrap();
    }
    idp.revoke_principal("alice", issued_at + 1);
    idp.revoke_principal("stolen-app", issued_at);
    idp.revoke_principal("order-svc", issued_at);
    verifier.refresh_revocations().await.unwrap();
    for token in [&by_alice, &by_client, &by_actor] {
        assert_eq!(verifier.verify(token).await.unwrap_err(), TokenError::Revoked);
    }
    // Issued after the revocation (a new login), and other principals: accepted.
    verifier.verify(&later).await.unwrap();
    verifier.verify(&bystander).await.unwrap();
}

#[tokio::test]
async fn pc12_without_a_list_nothing_is_accepted_and_a_stale_list_is_kept() {
    let idp = TestIdp::start().await.unwrap();
    idp.set_down(true);
    let mut config = VerifierConfig::new(idp.issuer(), &[AUD]);
    config.ca_pem = Some(idp.ca_pem());
    config.revocations = Some(RevocationsConfig::of_issuer(idp.issuer()));
    let verifier = Verifier::new(config).await.unwrap();
    idp.set_down(false);
    verifier.refresh_keys().await.unwrap();
    let claims = idp.access_claims("alice", AUD, "orders:read");
    let token = idp.mint(&claims).unwrap();
    // Keys but no list yet: a fresh replica cannot tell, so it refuses (503, not 401) and is not ready.
    assert_eq!(verifier.verify(&token).await.unwrap_err(), TokenError::KeysUnavailable);
    assert!(!verifier.has_keys());

    idp.revoke_token(claims["jti"].as_str().unwrap());
    verifier.refresh_revocations().await.unwrap();
    assert!(verifier.has_keys());
    let fine = idp.mint(&idp.access_claims("alice", AUD, "orders:read")).unwrap();
    verifier.verify(&fine).await.unwrap();
    // The issuer goes down: the last list still holds.
    idp.set_down(true);
    assert!(verifier.refresh_revocations().await.is_err());
    assert_eq!(verifier.verify(&token).await.unwrap_err(), TokenError::Revoked);
    verifier.verify(&fine).await.unwrap();
}

#[tokio::test]
async fn pc12_tokens_signed_by_a_revoked_key_are_refused_and_the_new_keys_tokens_pass() {
    let idp = TestIdp::start().await.unwrap();
    let verifier = verifier_for(&idp).await;
    let compromised = idp.active_key();
    let old = idp.mint(&idp.access_claims("alice", AUD, "orders:read")).unwrap();
    verifier.verify(&old).await.unwrap();
    idp.rotate_to(estate_testkit::IdpKey::es256().unwrap());
    verifier.refresh_keys().await.unwrap();
    let new = idp.mint(&idp.access_claims("alice", AUD, "orders:read")).unwrap();
    idp.revoke_key(compromised.kid());
    verifier.refresh_revocations().await.unwrap();
    assert_eq!(verifier.verify(&old).await.unwrap_err(), TokenError::Revoked, "cached, yet refused");
    assert_eq!(verifier.verify(&new).await.unwrap().key_id(), Some(idp.active_key().kid()));
    // Never seen before, key already gone from the JWKS: still "revoked", not
    // "unknown key" — the audit trail names the compromised key every time.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = json!({ "alg": "ES256", "typ": "at+jwt", "kid": compromised.kid() }).to_string();
    let unseen = format!("{}.{}.{}", b64.encode(header), b64.encode(r#"{"sub":"mallory"}"#), b64.encode("sig"));
    assert_eq!(verifier.verify(&unseen).await.unwrap_err(), TokenError::Revoked);
}
