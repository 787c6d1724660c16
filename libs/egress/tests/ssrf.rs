//! API7 (SSRF) against real servers on loopback: every refused destination
//! class, a name that resolves to 127.0.0.1, a redirect to the metadata
//! address, oversized and slow responses — and the legitimate call.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::net::IpAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use estate_egress::{EgressClient, EgressConfig, EgressError};
use estate_testkit::kit::TestServer;

/// A "merchant" endpoint (a third party: a real HTTPS server on loopback).
async fn merchant() -> TestServer {
    let router = Router::new()
        .route("/hook", post(|body: String| async move { format!("received {} bytes", body.len()) }))
        .route("/ok", get(|| async { "hello" }))
        .route(
            "/redirect",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "http://169.254.169.254/latest/meta-data/")]) }),
        )
        .route("/big", get(|| async { "x".repeat(200 * 1024) }))
        .route("/slow", get(std::future::pending::<&'static str>));
    TestServer::serve("merchant", router).await.unwrap()
}

/// The production posture: no exemptions.
fn strict(merchant: &TestServer) -> EgressClient {
    EgressClient::new(EgressConfig { ca_pem: Some(merchant.pki.ca_pem()), ..EgressConfig::default() }).unwrap()
}

/// Loopback exempted, as for a partner simulator in development.
fn exempting_loopback(merchant: &TestServer) -> EgressClient {
    EgressClient::new(EgressConfig {
        ca_pem: Some(merchant.pki.ca_pem()),
        exempt: vec![IpAddr::from([127, 0, 0, 1]), "::1".parse().unwrap()],
        timeout: Duration::from_millis(500),
        max_response_bytes: 64 * 1024,
        ..EgressConfig::default()
    })
    .unwrap()
}

fn class_of(result: Result<estate_egress::EgressResponse, EgressError>) -> &'static str {
    match result {
        Err(EgressError::Destination { class }) => class,
        other => panic!("expected a refused destination, got {other:?}"),
    }
}

#[tokio::test]
async fn api7_the_legitimate_webhook_is_delivered() {
    let merchant = merchant().await;
    let client = exempting_loopback(&merchant);
    let url = format!("https://localhost:{}/hook", merchant.api_addr.port());
    let response = client.post_json(&url, &serde_json::json!({"event": "payment.captured"})).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(String::from_utf8(response.body).unwrap(), "received 28 bytes");
}

#[tokio::test]
async fn api7_a_name_that_resolves_to_loopback_is_refused_although_a_server_answers_there() {
    let merchant = merchant().await;
    let client = strict(&merchant);
    let url = format!("https://localhost:{}/hook", merchant.api_addr.port());
    assert_eq!(class_of(client.post_json(&url, &serde_json::json!({})).await), "loopback");
}

#[tokio::test]
async fn api7_every_refused_address_class_is_refused_before_any_connection() {
    let merchant = merchant().await;
    let client = strict(&merchant);
    let port = merchant.api_addr.port();
    for (url, class) in [
        (format!("https://127.0.0.1:{port}/ok"), "loopback"),
        (format!("https://[::ffff:127.0.0.1]:{port}/ok"), "loopback"),
        (format!("https://[::1]:{port}/ok"), "loopback"),
        (format!("https://2130706433:{port}/ok"), "loopback"),
        (format!("https://0x7f.1:{port}/ok"), "loopback"),
        ("https://169.254.169.254/latest/meta-data/".into(), "link_local_metadata"),
        ("https://[::ffff:a9fe:a9fe]/latest/meta-data/".into(), "link_local_metadata"),
        ("https://[64:ff9b::a9fe:a9fe]/".into(), "link_local_metadata"),
        ("https://10.0.0.1/".into(), "private"),
        ("https://172.16.5.4/".into(), "private"),
        ("https://192.168.0.1/".into(), "private"),
        ("https://100.64.0.1/".into(), "shared_cgnat"),
        ("https://0.0.0.0/".into(), "this_network"),
        ("https://[fd00::1]/".into(), "unique_local"),
        ("https://[fe80::1]/".into(), "link_local"),
    ] {
        assert_eq!(class_of(client.get(&url).await), class, "{url}");
        estate_testkit::evidence::refused("an internal address class");
    }
}

#[tokio::test]
async fn api7_other_schemes_and_credentials_in_the_url_are_refused() {
    let merchant = merchant().await;
    let client = strict(&merchant);
    for url in ["http://example.com/hook", "file:///etc/passwd", "gopher://example.com/", "ftp://example.com/"] {
        assert!(matches!(client.get(url).await, Err(EgressError::Scheme)), "{url}");
    }
    assert!(matches!(client.get("https://user:pw@example.com/").await, Err(EgressError::Url(_))));
    assert!(matches!(client.get("/relative").await, Err(EgressError::Url(_))));
}

#[tokio::test]
async fn api7_a_redirect_to_the_metadata_address_is_not_followed() {
    let merchant = merchant().await;
    let client = exempting_loopback(&merchant);
    let url = format!("https://localhost:{}/redirect", merchant.api_addr.port());
    assert!(matches!(client.get(&url).await, Err(EgressError::Redirect(302))));
}

#[tokio::test]
async fn api7_oversized_and_slow_responses_end_the_call() {
    let merchant = merchant().await;
    let client = exempting_loopback(&merchant);
    let big = format!("https://localhost:{}/big", merchant.api_addr.port());
    assert!(matches!(client.get(&big).await, Err(EgressError::TooLarge(65536))));
    let slow = format!("https://localhost:{}/slow", merchant.api_addr.port());
    assert!(matches!(client.get(&slow).await, Err(EgressError::Timeout)), "the overall timeout applies");
    // And the client still works afterwards.
    assert_eq!(client.get(&format!("https://localhost:{}/ok", merchant.api_addr.port())).await.unwrap().body, b"hello");
}
