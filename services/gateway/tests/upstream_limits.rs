//! API4 at the edge: an upstream that does not answer costs the gateway at
//! most its timeout (504), at most `max_in_flight` calls wait on it at once
//! (503 beyond, at once), and oversized or overlong request heads are
//! refused before routing (431).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

mod common;

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::{Mutex, mpsc};

#[tokio::test]
async fn api4_a_hanging_upstream_costs_a_timeout_and_one_slot_never_more() {
    let (arrived_tx, arrived) = mpsc::unbounded_channel::<()>();
    let arrived = Arc::new(Mutex::new(arrived));
    let upstream = axum::Router::new()
        .route(
            "/v1/hang",
            axum::routing::get(move || {
                let arrived_tx = arrived_tx.clone();
                async move {
                    let _ = arrived_tx.send(());
                    std::future::pending::<()>().await
                }
            }),
        )
        .route("/v1/ok", axum::routing::get(|| async { "ok" }));
    let pair =
        common::start(upstream, &["/v1/hang", "/v1/ok"], json!({ "timeout_ms": 1500, "max_in_flight": 1 })).await;
    let (http, token) = (pair.edge.https_client().unwrap(), pair.token());

    let hanging = {
        let (http, url, token) = (http.clone(), pair.url("/v1/hang"), token.clone());
        tokio::spawn(async move { http.get(url).bearer_auth(token).send().await.unwrap().status() })
    };
    // Once the upstream holds the one slot, the next call is refused at once.
    arrived.lock().await.recv().await.unwrap();
    let refused = http.get(pair.url("/v1/ok")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The hanging call ends with the gateway's timeout, and frees the slot.
    assert_eq!(hanging.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    let served = http.get(pair.url("/v1/ok")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
}

#[tokio::test]
async fn api4_oversized_or_overlong_request_heads_are_refused() {
    let upstream = axum::Router::new().route("/v1/ok", axum::routing::get(|| async { "ok" }));
    let pair = common::start(upstream, &["/v1/ok"], json!({})).await;
    let token = pair.token();
    let ca = reqwest::Certificate::from_pem(pair.edge.ca_pem().as_bytes()).unwrap();
    let http1 = reqwest::Client::builder().tls_certs_only([ca]).http1_only().build().unwrap();

    let big = "a".repeat(70 * 1024);
    let response = http1.get(pair.url("/v1/ok")).bearer_auth(&token).header("x-padding", &big).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let mut many = http1.get(pair.url("/v1/ok")).bearer_auth(&token);
    for i in 0..80 {
        many = many.header(format!("x-field-{i}"), "1");
    }
    assert_eq!(many.send().await.unwrap().status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // HTTP/2 (ALPN): an oversized header list never reaches a handler.
    let http2 = pair.edge.https_client().unwrap();
    let outcome = http2.get(pair.url("/v1/ok")).bearer_auth(&token).header("x-padding", &big).send().await;
    assert!(outcome.map(|r| r.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).unwrap_or(true));

    let normal = http1.get(pair.url("/v1/ok")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(normal.status(), StatusCode::OK);
}
