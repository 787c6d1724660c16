//! The axum extractors answer per RFC 6750 and run handlers only for callers
//! that passed.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use axum::{Router, extract::FromRef};
use estate_testkit::TestIdp;
use estate_tokens::{Caller, Scoped, Verifier, VerifierConfig, scopes};
use http::{StatusCode, header};
use tower::ServiceExt;

#[derive(Clone)]
struct AppState {
    verifier: Verifier,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

async fn app() -> (TestIdp, Router) {
    let idp = TestIdp::start().await.unwrap();
    let mut config = VerifierConfig::new(idp.issuer(), &["order-api"]);
    config.ca_pem = Some(idp.ca_pem());
    let verifier = Verifier::new(config).await.unwrap();
    let router = Router::new()
        .route("/me", get(|Caller(token): Caller| async move { token.subject().to_string() }))
        .route(
            "/orders",
            get(|Scoped(token, _): Scoped<scopes::OrdersRead>| async move { token.subject().to_string() }),
        )
        .route(
            "/maybe",
            get(|caller: Option<Caller>| async move {
                caller.map_or_else(|| "anonymous".to_owned(), |Caller(t)| t.subject().to_string())
            }),
        )
        .with_state(AppState { verifier });
    (idp, router)
}

async fn call(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, Option<String>, String) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    (status, challenge, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn no_token_is_401_with_a_bare_bearer_challenge() {
    let (_idp, app) = app().await;
    let (status, challenge, _) = call(&app, "/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"estate\""));
}

#[tokio::test]
async fn an_invalid_token_is_401_invalid_token_without_details() {
    let (idp, app) = app().await;
    let mut claims = idp.access_claims("alice", "payment-api", "orders:read");
    claims["aud"] = serde_json::json!("payment-api");
    let (status, challenge, body) = call(&app, "/me", Some(&idp.mint(&claims).unwrap())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"estate\", error=\"invalid_token\""));
    assert!(!body.contains("audience"), "the reason is logged, not returned: {body}");
}

#[tokio::test]
async fn a_valid_token_reaches_the_handler() {
    let (idp, app) = app().await;
    let token = idp.mint(&idp.access_claims("alice", "order-api", "orders:read")).unwrap();
    let (status, _, body) = call(&app, "/me", Some(&token)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "alice"));
}

#[tokio::test]
async fn a_missing_scope_is_403_insufficient_scope() {
    let (idp, app) = app().await;
    let token = idp.mint(&idp.access_claims("alice", "order-api", "orders:write orders:readx")).unwrap();
    let (status, challenge, _) = call(&app, "/orders", Some(&token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer realm=\"estate\", error=\"insufficient_scope\", scope=\"orders:read\"")
    );
    let token = idp.mint(&idp.access_claims("alice", "order-api", "orders:read")).unwrap();
    assert_eq!(call(&app, "/orders", Some(&token)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_optional_caller_is_none_without_a_token_but_never_anonymous_with_a_bad_one() {
    let (idp, app) = app().await;
    assert_eq!(call(&app, "/maybe", None).await.2, "anonymous");
    assert_eq!(call(&app, "/maybe", Some("not.a.token")).await.0, StatusCode::UNAUTHORIZED);
    let token = idp.mint(&idp.access_claims("alice", "order-api", "")).unwrap();
    assert_eq!(call(&app, "/maybe", Some(&token)).await.2, "alice");
}
