//! The authorization server over real TLS: discovery, JWKS, client
//! authentication, client credentials and token exchange — each rule with a
//! refused case and a working one. Tokens are checked with `estate-tokens`
//! (discovery against this very server) and fetched with `estate-oauth-client`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

mod common;

use common::{ALICE_SECRET, PAYMENT_SECRET, READER_SECRET, TestAuth};
use estate_oauth_client::{ClientCredentialsSource, TokenSource};
use estate_testkit::TestIdp;
use estate_tokens::Scope;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

// ------------------------------------------------------------------ discovery and keys

#[tokio::test]
async fn discovery_documents_name_the_issuer_and_its_endpoints() {
    let auth = TestAuth::start().await;
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let doc: Value = auth.http.get(format!("{}{path}", auth.issuer)).send().await.unwrap().json().await.unwrap();
        assert_eq!(doc["issuer"], auth.issuer, "{path}");
        assert_eq!(doc["token_endpoint"], auth.token_endpoint());
        assert_eq!(doc["jwks_uri"], format!("{}/jwks", auth.issuer));
        assert!(doc["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("private_key_jwt")));
    }
}

#[tokio::test]
async fn jwks_publishes_the_signing_key_with_cache_headers_and_no_private_parts() {
    let auth = TestAuth::start().await;
    let response = auth.http.get(format!("{}/jwks", auth.issuer)).send().await.unwrap();
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let jwks: Value = response.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(key.get("d").is_none(), "private key material published");
}

// ------------------------------------------------------------------ client credentials

#[tokio::test]
async fn pc02_issued_tokens_verify_by_discovery_and_live_at_most_300_seconds() {
    let auth = TestAuth::start().await;
    let (status, body) = auth
        .post_token(Some(("inventory-reader", READER_SECRET.as_str())), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() <= 300);
    let token = auth.verifier("inventory-api").await.verify(body["access_token"].as_str().unwrap()).await.unwrap();
    assert_eq!(token.subject().as_str(), "inventory-reader");
    assert_eq!(token.client_id().unwrap().as_str(), "inventory-reader");
    assert!(token.scopes().contains(Scope::InventoryRead));
    assert!(token.expires_at() - token.issued_at() <= 300, "TTL ≤ 300 s");
    assert!(token.jti().is_some());
}

#[tokio::test]
async fn flow_cc_private_key_jwt_client_gets_cached_tokens_from_the_real_server() {
    let auth = TestAuth::start().await;
    let source = ClientCredentialsSource::new(auth.order_client(), "inventory:reserve", Some("inventory-api"));
    let first = source.token().await.unwrap();
    let second = source.token().await.unwrap();
    assert_eq!(first.expose_secret(), second.expose_secret(), "cached");
    let token = auth.verifier("inventory-api").await.verify(first.expose_secret()).await.unwrap();
    assert_eq!(token.subject().as_str(), "order-svc");
    assert!(token.scopes().contains(Scope::InventoryReserve));
    assert!(!token.scopes().contains(Scope::InventoryRead), "only what was asked for");
}

#[tokio::test]
async fn a_wrong_secret_and_an_unknown_client_get_the_same_invalid_client() {
    let auth = TestAuth::start().await;
    let wrong = auth.post_token(Some(("inventory-reader", "wrong")), &[("grant_type", "client_credentials")]).await;
    let unknown = auth.post_token(Some(("nobody", "wrong")), &[("grant_type", "client_credentials")]).await;
    let missing = auth.post_token(None, &[("grant_type", "client_credentials")]).await;
    for (status, body) in [&wrong, &unknown, &missing] {
        assert_eq!(*status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "invalid_client");
    }
    assert_eq!(wrong.1, unknown.1, "no client enumeration");
    // A secret client cannot authenticate with an assertion-less Basic of another method's client.
    let method_confusion =
        auth.post_token(Some(("order-svc", "anything")), &[("grant_type", "client_credentials")]).await;
    assert_eq!(method_confusion.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_replayed_client_assertion_is_refused() {
    let auth = TestAuth::start().await;
    let assertion = auth.assertion(|_| {});
    assert_eq!(auth.post_with_assertion(&assertion).await.0, StatusCode::OK);
    let (status, body) = auth.post_with_assertion(&assertion).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
}

#[tokio::test]
async fn expired_long_lived_misaddressed_or_impersonating_assertions_are_refused() {
    let auth = TestAuth::start().await;
    let now = estate_testkit::idp::now();
    type Adjust = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Adjust)> = vec![
        ("expired", Box::new(move |c| c["exp"] = json!(now - 120))),
        ("lives an hour", Box::new(move |c| c["exp"] = json!(now + 3600))),
        ("wrong audience", Box::new(|c| c["aud"] = json!("https://other.example/token"))),
        ("sub is another client", Box::new(|c| c["sub"] = json!("inventory-reader"))),
        (
            "no jti",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
    ];
    for (name, adjust) in cases {
        let (status, _) = auth.post_with_assertion(&auth.assertion(adjust)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
    }
}

#[tokio::test]
async fn an_assertion_signed_with_another_key_is_refused() {
    let auth = TestAuth::start().await;
    let thief = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let now = estate_testkit::idp::now();
    let claims = json!({"iss": "order-svc", "sub": "order-svc", "aud": auth.token_endpoint(), "jti": "x", "iat": now, "exp": now + 60});
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_der(&thief.serialize_der()),
    )
    .unwrap();
    assert_eq!(auth.post_with_assertion(&forged).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn scope_escalation_is_invalid_scope() {
    let auth = TestAuth::start().await;
    let reader = Some(("inventory-reader", READER_SECRET.as_str()));
    for scope in ["inventory:reserve", "inventory:read inventory:reserve", "admin:*", "inventory:*", "nonsense"] {
        let (status, body) = auth.post_token(reader, &[("grant_type", "client_credentials"), ("scope", scope)]).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")), "{scope}");
    }
    let (status, _) =
        auth.post_token(reader, &[("grant_type", "client_credentials"), ("scope", "inventory:read")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_audience_outside_the_registration_is_invalid_target() {
    let auth = TestAuth::start().await;
    let reader = Some(("inventory-reader", READER_SECRET.as_str()));
    let (status, body) =
        auth.post_token(reader, &[("grant_type", "client_credentials"), ("resource", "payment-api")]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_target")));
}

#[tokio::test]
async fn malformed_requests_get_rfc6749_errors_not_crashes() {
    let auth = TestAuth::start().await;
    let reader = Some(("inventory-reader", READER_SECRET.as_str()));
    let repeated = auth
        .post_token(reader, &[("grant_type", "client_credentials"), ("scope", "inventory:read"), ("scope", "x")])
        .await;
    assert_eq!(repeated.1["error"], "invalid_request");
    let password = auth.post_token(reader, &[("grant_type", "password"), ("username", "a"), ("password", "b")]).await;
    assert_eq!(password.1["error"], "unsupported_grant_type");
    let no_grant = auth.post_token(reader, &[]).await;
    assert_eq!(no_grant.1["error"], "invalid_request");
    let json_body =
        auth.http.post(auth.token_endpoint()).json(&json!({"grant_type": "client_credentials"})).send().await.unwrap();
    assert_eq!(json_body.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body.headers()["cache-control"], "no-store");
}

// ------------------------------------------------------------------ token exchange (FLOW-TX)

#[tokio::test]
async fn flow_tx_exchange_narrows_audience_and_scope_names_the_actor_and_lives_at_most_60_seconds() {
    let auth = TestAuth::start().await;
    let subject = auth.alice_token("orders:write payments:authorize").await;
    let exchanged = auth.exchange_as_order(&subject, "payment-api", "payments:authorize").await.unwrap();
    let token = auth.verifier("payment-api").await.verify(&exchanged).await.unwrap();
    assert_eq!(token.subject().as_str(), "alice-app", "the user stays the subject");
    assert_eq!(token.audiences(), ["payment-api"]);
    assert_eq!(token.scopes().to_string(), "payments:authorize");
    assert_eq!(token.actor().unwrap().sub().as_str(), "order-svc");
    assert_eq!(token.client_id().unwrap().as_str(), "order-svc");
    assert!(token.expires_at() - token.issued_at() <= 60, "exchanged TTL ≤ 60 s");
    // The exchanged token is not valid for the subject's original audience.
    assert!(auth.verifier("order-api").await.verify(&exchanged).await.is_err());
}

#[tokio::test]
async fn flow_tx_a_client_not_allowed_to_act_is_refused() {
    let auth = TestAuth::start().await;
    let subject = auth.alice_token("orders:write payments:authorize").await;
    // Has the grant, but no policy lets it act.
    let (status, body) = auth
        .exchange(Some(("payment-svc", PAYMENT_SECRET.as_str())), &subject, "payment-api", "payments:authorize")
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unauthorized_client")));
    // Does not even have the grant.
    let (_, body) = auth
        .exchange(Some(("inventory-reader", READER_SECRET.as_str())), &subject, "payment-api", "payments:authorize")
        .await;
    assert_eq!(body["error"], "unauthorized_client");
    // The allowed actor, towards an audience outside its policy.
    assert!(auth.exchange_as_order(&subject, "inventory-api", "inventory:reserve").await.is_err());
}

#[tokio::test]
async fn flow_tx_an_exchange_never_adds_scopes() {
    let auth = TestAuth::start().await;
    let subject = auth.alice_token("orders:write payments:authorize").await;
    // In the policy but not in the subject token.
    let error = auth.exchange_as_order(&subject, "payment-api", "payments:refund").await.unwrap_err();
    assert!(error.contains("invalid_scope"), "{error}");
    // In the subject token but not in the policy.
    let error = auth.exchange_as_order(&subject, "payment-api", "orders:write").await.unwrap_err();
    assert!(error.contains("invalid_scope"), "{error}");
}

#[tokio::test]
async fn flow_tx_forged_foreign_or_wrong_audience_subject_tokens_are_refused() {
    let auth = TestAuth::start().await;
    // Signed by another issuer.
    let idp = TestIdp::start().await.unwrap();
    let foreign = idp.mint(&idp.access_claims("alice-app", "order-api", "payments:authorize")).unwrap();
    assert!(
        auth.exchange_as_order(&foreign, "payment-api", "payments:authorize")
            .await
            .unwrap_err()
            .contains("invalid_grant")
    );
    // Tampered.
    let real = auth.alice_token("orders:write payments:authorize").await;
    let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    let tampered = parts.join(".");
    assert!(auth.exchange_as_order(&tampered, "payment-api", "payments:authorize").await.is_err());
    // A genuine token, but for an audience no policy lets order-svc exchange.
    let (_, body) = auth
        .post_token(
            Some(("alice-app", ALICE_SECRET.as_str())),
            &[("grant_type", "client_credentials"), ("scope", "payments:authorize"), ("resource", "inventory-api")],
        )
        .await;
    let inventory_token = body["access_token"].as_str().unwrap();
    assert!(auth.exchange_as_order(inventory_token, "payment-api", "payments:authorize").await.is_err());
}

#[tokio::test]
async fn flow_tx_an_exchanged_token_cannot_be_exchanged_again_by_an_actor_without_policy() {
    let auth = TestAuth::start().await;
    let subject = auth.alice_token("orders:write payments:authorize").await;
    let exchanged = auth.exchange_as_order(&subject, "payment-api", "payments:authorize").await.unwrap();
    // Its audience is payment-api; no policy accepts payment-api subject tokens.
    assert!(auth.exchange_as_order(&exchanged, "payment-api", "payments:authorize").await.is_err());
}

// ------------------------------------------------------------------ a third-party client library

/// The `oauth2` crate, unchanged, with our reqwest (one TLS stack) as its transport.
#[tokio::test]
async fn third_party_oauth2_crate_runs_client_credentials_against_the_server() {
    use oauth2::basic::BasicClient;
    use oauth2::{ClientId, ClientSecret, TokenResponse, TokenUrl};

    let auth = TestAuth::start().await;
    let transport = common::transport(auth.http.clone());
    let client = BasicClient::new(ClientId::new("inventory-reader".into()))
        .set_client_secret(ClientSecret::new(READER_SECRET.as_str().into()))
        .set_token_uri(TokenUrl::new(auth.token_endpoint()).unwrap());

    let token = client
        .exchange_client_credentials()
        .add_scope(oauth2::Scope::new("inventory:read".into()))
        .request_async(&transport)
        .await
        .unwrap();
    assert!(token.expires_in().unwrap().as_secs() <= 300);
    let verified = auth.verifier("inventory-api").await.verify(token.access_token().secret()).await.unwrap();
    assert_eq!(verified.subject().as_str(), "inventory-reader");

    // The same library gets the standard error for a scope it may not have.
    let refused = client
        .exchange_client_credentials()
        .add_scope(oauth2::Scope::new("inventory:reserve".into()))
        .request_async(&transport)
        .await
        .unwrap_err();
    assert!(format!("{refused:?}").contains("invalid_scope"), "{refused:?}");
}

// ------------------------------------------------------------------ rate limits (PC-09)

#[tokio::test]
async fn pc09_guessing_a_client_secret_is_cut_off_with_429_and_retry_after() {
    let auth = TestAuth::start_with("[service.rate_limits]\nper_client_per_minute = 3\nper_ip_per_minute = 1000").await;
    for _ in 0..3 {
        let (status, _) =
            auth.post_token(Some(("inventory-reader", "guess")), &[("grant_type", "client_credentials")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The budget is spent: even the right secret waits now.
    let response = auth
        .http
        .post(auth.token_endpoint())
        .basic_auth("inventory-reader", Some(READER_SECRET.as_str()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "slow_down");
    // Another client's budget is untouched.
    let (status, _) =
        auth.post_token(Some(("alice-app", ALICE_SECRET.as_str())), &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn pc09_one_address_cannot_spray_many_client_ids() {
    let auth = TestAuth::start_with("[service.rate_limits]\nper_client_per_minute = 1000\nper_ip_per_minute = 5").await;
    for i in 0..5 {
        let id = format!("client-{i}");
        let (status, _) = auth.post_token(Some((&id, "x")), &[("grant_type", "client_credentials")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) =
        auth.post_token(Some(("alice-app", ALICE_SECRET.as_str())), &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}
