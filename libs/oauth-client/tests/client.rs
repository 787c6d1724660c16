//! The OAuth client against a real HTTPS token endpoint (the test IdP), with
//! the tokens it gets checked by the real verifier.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::convert::Infallible;
use std::time::Duration;

use estate_oauth_client::{
    ACCESS_TOKEN_TYPE, BearerLayer, ClientAuth, ClientCredentialsSource, OAuthClient, OAuthError, TOKEN_EXCHANGE_GRANT,
    TokenSource,
};
use estate_testkit::{IdpClient, TestIdp};
use estate_tokens::{Scope, Verifier, VerifierConfig};
use secrecy::{ExposeSecret, SecretString};
use tower::{Service, ServiceBuilder, ServiceExt};

static SECRET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect());

fn secret_client(idp: &TestIdp, secret: &str) -> OAuthClient {
    let auth = ClientAuth::SecretBasic { client_id: "order-svc".into(), secret: SecretString::from(secret.to_owned()) };
    OAuthClient::new(&idp.token_endpoint(), auth, Some(&idp.ca_pem())).unwrap()
}

async fn idp_with_secret_client() -> TestIdp {
    let idp = TestIdp::start().await.unwrap();
    idp.register_client("order-svc", IdpClient::Secret(SECRET.as_str().into()));
    idp
}

async fn verifier_for(idp: &TestIdp, audience: &str) -> Verifier {
    let mut config = VerifierConfig::new(idp.issuer(), &[audience]);
    config.ca_pem = Some(idp.ca_pem());
    Verifier::new(config).await.unwrap()
}

#[tokio::test]
async fn flow_cc_client_secret_basic_gets_a_verifiable_token() {
    let idp = idp_with_secret_client().await;
    let issued = secret_client(&idp, SECRET.as_str())
        .client_credentials("inventory:reserve", Some("inventory-api"))
        .await
        .unwrap();
    let token = verifier_for(&idp, "inventory-api").await.verify(issued.access_token.expose_secret()).await.unwrap();
    assert_eq!(token.subject().as_str(), "order-svc");
    assert!(token.scopes().contains(Scope::InventoryReserve));
}

#[tokio::test]
async fn flow_cc_a_wrong_secret_is_refused() {
    let idp = idp_with_secret_client().await;
    let error = secret_client(&idp, "wrong").client_credentials("inventory:reserve", None).await.unwrap_err();
    assert!(matches!(error, OAuthError::Refused { status: 401, ref code } if code == "invalid_client"), "{error:?}");
}

#[tokio::test]
async fn flow_cc_private_key_jwt_assertion_is_well_formed_and_accepted() {
    let idp = TestIdp::start().await.unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let public = jsonwebtoken::DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).unwrap();
    idp.register_client("order-svc", IdpClient::PublicKey(public, jsonwebtoken::Algorithm::ES256));
    let auth =
        ClientAuth::private_key_jwt("order-svc", "order-key-1", &SecretString::from(key.serialize_pem())).unwrap();
    let client = OAuthClient::new(&idp.token_endpoint(), auth, Some(&idp.ca_pem())).unwrap();
    client.client_credentials("inventory:read", Some("inventory-api")).await.unwrap();

    // RFC 7523 §3: what the server received.
    let form = idp.last_token_form().unwrap();
    assert_eq!(form["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    let header = jsonwebtoken::decode_header(&form["client_assertion"]).unwrap();
    assert_eq!(header.kid.as_deref(), Some("order-key-1"));
    let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(&form["client_assertion"]).unwrap();
    assert_eq!(claims["iss"], "order-svc");
    assert_eq!(claims["sub"], "order-svc");
    assert_eq!(claims["aud"], idp.token_endpoint());
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 60, "short-lived");
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 32), "unique jti for replay detection");
    assert!(!form.contains_key("client_secret"));
}

#[tokio::test]
async fn flow_cc_an_assertion_signed_with_another_key_is_refused() {
    let idp = TestIdp::start().await.unwrap();
    let registered = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let public = jsonwebtoken::DecodingKey::from_ec_pem(registered.public_key_pem().as_bytes()).unwrap();
    idp.register_client("order-svc", IdpClient::PublicKey(public, jsonwebtoken::Algorithm::ES256));
    let thief = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let auth = ClientAuth::private_key_jwt("order-svc", "k", &SecretString::from(thief.serialize_pem())).unwrap();
    let client = OAuthClient::new(&idp.token_endpoint(), auth, Some(&idp.ca_pem())).unwrap();
    assert!(matches!(client.client_credentials("inventory:read", None).await, Err(OAuthError::Refused { .. })));
}

#[tokio::test]
async fn flow_cc_single_flight_100_concurrent_callers_make_one_token_request() {
    let idp = idp_with_secret_client().await;
    let source =
        ClientCredentialsSource::new(secret_client(&idp, SECRET.as_str()), "inventory:reserve", Some("inventory-api"));
    let tokens = futures::future::join_all((0..100).map(|_| source.token())).await;
    let first = tokens[0].as_ref().unwrap().expose_secret().to_owned();
    assert!(tokens.iter().all(|t| t.as_ref().unwrap().expose_secret() == first), "everyone got the same token");
    assert_eq!(idp.token_requests(), 1);
}

#[tokio::test]
async fn flow_cc_token_is_cached_until_shortly_before_expiry() {
    let idp = idp_with_secret_client().await;
    let source = ClientCredentialsSource::new(secret_client(&idp, SECRET.as_str()), "inventory:reserve", None);
    source.token().await.unwrap();
    source.token().await.unwrap();
    assert_eq!(idp.token_requests(), 1, "a 300 s token is reused");

    // A token with less than the refresh margin (≥ 1 s) left is replaced
    // before use: with a 1 s lifetime every call refreshes.
    idp.set_token_ttl(1);
    let short = ClientCredentialsSource::new(secret_client(&idp, SECRET.as_str()), "inventory:reserve", None);
    short.token().await.unwrap();
    short.token().await.unwrap();
    assert_eq!(idp.token_requests(), 3);
}

#[tokio::test]
async fn flow_cc_backs_off_while_the_server_fails_and_recovers() {
    let idp = idp_with_secret_client().await;
    idp.set_down(true);
    let source = ClientCredentialsSource::new(secret_client(&idp, SECRET.as_str()), "inventory:reserve", None);
    assert!(matches!(source.token().await, Err(OAuthError::Refused { status: 503, .. })));
    // Straight after a failure: no new request, an immediate error.
    assert!(matches!(source.token().await, Err(OAuthError::BackingOff)));
    assert_eq!(idp.token_requests(), 1);

    idp.set_down(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match source.token().await {
            Ok(_) => break,
            Err(OAuthError::BackingOff) if tokio::time::Instant::now() < deadline => tokio::task::yield_now().await,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(idp.token_requests(), 2, "exactly one retry after the backoff");
}

#[tokio::test]
async fn flow_cc_serves_the_still_valid_token_when_refresh_fails() {
    let idp = idp_with_secret_client().await;
    idp.set_token_ttl(1); // due for refresh at once, valid for a second
    let source = ClientCredentialsSource::new(secret_client(&idp, SECRET.as_str()), "inventory:reserve", None);
    let first = source.token().await.unwrap();
    idp.set_down(true);
    let during_outage = source.token().await.unwrap();
    assert_eq!(first.expose_secret(), during_outage.expose_secret());
}

#[tokio::test]
async fn flow_tx_exchange_sends_rfc8693_parameters_and_gets_an_act_token() {
    let idp = idp_with_secret_client().await;
    let user_token = idp.mint(&idp.access_claims("alice", "order-api", "orders:write payments:authorize")).unwrap();
    let exchanged = secret_client(&idp, SECRET.as_str())
        .exchange(&SecretString::from(user_token.clone()), "payment-api", "payments:authorize")
        .await
        .unwrap();
    assert_eq!(exchanged.issued_token_type.as_deref(), Some(ACCESS_TOKEN_TYPE));

    let form = idp.last_token_form().unwrap();
    assert_eq!(form["grant_type"], TOKEN_EXCHANGE_GRANT);
    assert_eq!(form["subject_token"], user_token);
    assert_eq!(form["subject_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(form["requested_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(form["audience"], "payment-api");
    assert_eq!(form["scope"], "payments:authorize");

    let token = verifier_for(&idp, "payment-api").await.verify(exchanged.access_token.expose_secret()).await.unwrap();
    assert_eq!(token.subject().as_str(), "alice");
    assert_eq!(token.actor().unwrap().sub().as_str(), "order-svc");
}

/// A downstream service that echoes the `Authorization` it got, answering
/// with gRPC status `grpc_status` (trailers-only, as tonic does for errors).
fn echo(
    grpc_status: &'static str,
) -> impl Service<http::Request<()>, Response = http::Response<()>, Error = Infallible, Future = impl Send> + Clone + Send
{
    tower::service_fn(move |request: http::Request<()>| async move {
        let mut response = http::Response::new(());
        if let Some(value) = request.headers().get(http::header::AUTHORIZATION) {
            assert!(value.is_sensitive());
            response.headers_mut().insert("x-echo", value.clone());
        }
        response.headers_mut().insert("grpc-status", http::HeaderValue::from_static(grpc_status));
        Ok::<_, Infallible>(response)
    })
}

#[tokio::test]
async fn bearer_layer_puts_the_token_on_every_request_and_marks_it_sensitive() {
    let idp = idp_with_secret_client().await;
    let source = ClientCredentialsSource::new(secret_client(&idp, SECRET.as_str()), "inventory:reserve", None);
    let expected = format!("Bearer {}", source.token().await.unwrap().expose_secret());
    let mut service = ServiceBuilder::new().layer(BearerLayer::new(source)).service(echo("0"));
    for _ in 0..3 {
        let response = service.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
        assert_eq!(response.headers()["x-echo"].to_str().unwrap(), expected);
    }
    assert_eq!(idp.token_requests(), 1);
}

#[tokio::test]
async fn pc12_a_cached_token_refused_as_unauthenticated_is_not_sent_again() {
    let idp = idp_with_secret_client().await;
    let source = ClientCredentialsSource::new(secret_client(&idp, SECRET.as_str()), "inventory:reserve", None);
    // Downstream refuses the token (e.g. revoked): the next call fetches a new one.
    let mut refusing = ServiceBuilder::new().layer(BearerLayer::new(source.clone())).service(echo("16"));
    let first = refusing.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
    let second = refusing.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
    assert_eq!(idp.token_requests(), 2);
    assert_ne!(first.headers()["x-echo"], second.headers()["x-echo"]);
    // Accepted tokens stay cached.
    let mut accepting = ServiceBuilder::new().layer(BearerLayer::new(source)).service(echo("0"));
    for _ in 0..3 {
        accepting.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
    }
    assert_eq!(idp.token_requests(), 3);
}

#[tokio::test]
async fn flow_relay_forwards_the_callers_own_token_unchanged() {
    let idp = TestIdp::start().await.unwrap();
    let user_token = idp.mint(&idp.access_claims("alice", "order-api", "payments:refund")).unwrap();
    let verified = verifier_for(&idp, "order-api").await.verify(&user_token).await.unwrap();
    let mut service = ServiceBuilder::new()
        .layer(BearerLayer::new(estate_oauth_client::RelayedToken::new(verified)))
        .service(echo("0"));
    let response = service.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
    assert_eq!(response.headers()["x-echo"].to_str().unwrap(), format!("Bearer {user_token}"));
    assert_eq!(idp.token_requests(), 0, "relay never asks the authorization server");
}
