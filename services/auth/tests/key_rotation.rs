//! Signing keys held in OpenBao and rotated with the operator command while
//! the server runs: a new key is published before it signs, tokens signed by
//! the old key keep verifying until it retires, then its kid leaves the JWKS.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::{READER_SECRET, TestAuth};
use estate_auth::key_store::{KeyStoreSettings, RotationStep};
use estate_secrets::testing;
use estate_testkit::TestOpenBao;
use estate_tokens::TokenError;
use reqwest::StatusCode;

/// Wait for a condition the server reaches on its own (a reload), with a deadline.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn jwks_kids(auth: &TestAuth) -> Vec<String> {
    let jwks: serde_json::Value =
        auth.http.get(format!("{}/jwks", auth.base_url)).send().await.unwrap().json().await.unwrap();
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

async fn new_token(auth: &TestAuth) -> String {
    let (status, body) = auth
        .post_token(Some(("inventory-reader", READER_SECRET.as_str())), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn rotate_with_the_binary(auth: &TestAuth) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_auth"))
        .args(["keys", "rotate", "--config"])
        .arg(auth.config_path())
        .env_remove("ESTATE_CONFIG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn pc12_signing_key_rotation_without_restart_and_retirement_from_the_jwks() {
    // OpenBao with the auth service's policy and AppRole.
    let bao = TestOpenBao::start().await.unwrap();
    let admin = testing::admin(&bao).unwrap();
    let creds = testing::bootstrap(&admin, &["auth"]).await.unwrap().remove(0);
    let dir = tempfile::tempdir().unwrap();
    let openbao_toml = testing::openbao_section(dir.path(), &bao, &creds).unwrap();

    let store = KeyStoreSettings {
        kv_mount: "kv".into(),
        kv_path: "auth/signing-keys".into(),
        reload_secs: 1,
        publish_lead_secs: 0,
        retire_after_secs: 5,
    };
    // Initialise the key set with the service's own identity, as `auth keys rotate` does.
    let service = testing::login(&bao, &creds).await.unwrap();
    let step = estate_auth::key_store::rotate(&service, &store, estate_testkit::idp::now(), None).await.unwrap();
    assert_eq!(step, RotationStep::Initialised);

    let extra =
        format!("{openbao_toml}[service.key_store]\nreload_secs = 1\npublish_lead_secs = 0\nretire_after_secs = 5\n");
    let auth = TestAuth::start_with(&extra).await;
    let before = new_token(&auth).await;
    let old_kid = kid(&before);
    assert_eq!(jwks_kids(&auth).await, std::slice::from_ref(&old_kid));

    // Step 1: publish. The new key appears in the JWKS but does not sign yet.
    let published = rotate_with_the_binary(&auth);
    assert!(published.contains("Published"));
    // PC-10: the operator action is an audit event (stdout sink of the command).
    let event = published
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["event"]["action"] == "key_rotated")
        .unwrap_or_else(|| panic!("no key_rotated event in {published}"));
    assert_eq!(event["event"]["reason"], "next_key_published");
    assert_eq!(event["service"]["name"], "auth");
    let published_kid = event["estate"]["key_id"].as_str().expect("the event names the key").to_owned();
    assert_ne!(published_kid, old_kid, "the event names the new key");
    eventually("the next key is published", || async { jwks_kids(&auth).await.len() == 2 }).await;
    assert_eq!(kid(&new_token(&auth).await), old_kid, "a published key does not sign yet");

    // Step 2: activate. New tokens use the new key; old tokens still verify.
    assert!(rotate_with_the_binary(&auth).contains("Activated"));
    eventually("tokens are signed with the new key", || async { kid(&new_token(&auth).await) != old_kid }).await;
    assert_eq!(kid(&new_token(&auth).await), published_kid, "the audited key is the one that signs now");
    auth.verifier("inventory-api").await.verify(&before).await.expect("old token verifies while its key retires");

    // Retirement: once the old key's time is up it leaves the JWKS, and its tokens are refused.
    eventually("the old key leaves the JWKS", || async { !jwks_kids(&auth).await.contains(&old_kid) }).await;
    assert_eq!(auth.verifier("inventory-api").await.verify(&before).await.unwrap_err(), TokenError::UnknownKey);
    let after = new_token(&auth).await;
    auth.verifier("inventory-api").await.verify(&after).await.unwrap();
}
