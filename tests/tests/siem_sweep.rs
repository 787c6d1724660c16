//! The estate-wide audit sweep (PC-10, issue 9): every service ships its
//! audit events to one real SIEM (rsyslog over TLS). A run of refused
//! requests across the estate — at the edge, at the services, east-west —
//! each produces its event, with who and why, and no event carries a
//! token, password or secret the estate handed out.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_tests::{Estate, Options, USERS};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn wait_for(estate: &Estate, expected: &[(&str, &str, &str)]) -> Vec<Value> {
    estate.siem_events(expected).await
}

#[tokio::test]
async fn pc10_every_refusal_across_the_estate_reaches_the_siem_and_no_secret_does() {
    let estate = Estate::start_with(Options { siem: true, ..Options::default() }).await;
    let alice = estate.user_token("alice").await;
    let bob = estate.user_token("bob").await;
    let admin = estate.admin_token().await;

    // A legitimate checkout (token exchange, leases) and its order.
    let (status, _, order) = estate
        .edge_call(
            Method::POST,
            "/v1/orders",
            Some(&alice),
            Some(&json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }] })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = order["id"].as_str().unwrap();

    // Refusals, one per layer.
    assert_eq!(estate.edge_call(Method::GET, "/v1/orders", None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(estate.edge_call(Method::GET, "/v1/orders", Some(&admin), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        estate.edge_call(Method::GET, &format!("/v1/orders/{id}"), Some(&bob), None).await.0,
        StatusCode::NOT_FOUND
    );
    let as_order = estate.workload_client("order", "payment");
    let authorize = json!({ "order_id": uuid::Uuid::new_v4(), "amount_cents": 100, "currency": "EUR" });
    let response =
        as_order.post(estate.payment_url("/v1/payments")).bearer_auth(&alice).json(&authorize).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let as_gateway = estate.workload_client("gateway", "payment");
    let response =
        as_gateway.post(estate.payment_url("/v1/payments")).bearer_auth(&alice).json(&authorize).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = as_gateway
        .post(estate.payment_url("/v1/webhooks"))
        .bearer_auth(&alice)
        .json(&json!({ "url": "https://169.254.169.254/latest/meta-data/" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (http, url) = estate.order_management("/admin/v1/checkout");
    assert_eq!(
        http.put(&url).bearer_auth(&admin).json(&json!({ "enabled": true })).send().await.unwrap().status(),
        StatusCode::OK
    );

    let events = wait_for(
        &estate,
        &[
            ("auth", "token_exchanged", ""),
            ("gateway", "authentication_failed", "gateway_token_missing"),
            ("gateway", "access_denied", "gateway_insufficient_scope"),
            ("order", "access_denied", "order_not_found"),
            ("payment", "access_denied", "payment_actor_not_order"),
            ("payment", "policy_denied", "route_not_allowed_for_workload"),
            ("payment", "access_denied", "webhook_destination_refused"),
            ("order", "admin_action", "checkout_enabled"),
            ("order", "secret_leased", "database_credentials"),
        ],
    )
    .await;
    // Who, for the user-facing refusals.
    let bola = events.iter().find(|e| e["event"]["reason"] == "order_not_found").unwrap();
    assert!(bola["user"]["id"].is_string() && bola["estate"]["jti"].is_string(), "{bola}");
    let denied = events.iter().find(|e| e["event"]["reason"] == "route_not_allowed_for_workload").unwrap();
    assert_eq!(denied["estate"]["peer"], "spiffe://estate.local/ns/estate/sa/gateway");

    // The sweep: nothing handed out appears in any event.
    let raw: Vec<String> = estate.siem.as_ref().unwrap().events().unwrap().iter().map(|e| e.msg.clone()).collect();
    let mut secrets: Vec<String> = vec![alice.clone(), bob.clone(), admin.clone()];
    secrets.extend(USERS.iter().map(|(_, password)| (*password).to_owned()));
    secrets.extend(estate.secrets.iter().cloned());
    // Each token's signature part alone is a secret too.
    secrets.extend([&alice, &bob, &admin].iter().map(|t| t.rsplit('.').next().unwrap().to_owned()));
    for secret in &secrets {
        assert!(!raw.iter().any(|line| line.contains(secret.as_str())), "a secret reached the SIEM");
    }
    assert!(raw.len() >= 9, "{} events", raw.len());
}

/// Every refused request at the edge — whatever layer refused it — leaves an
/// audit event in the SIEM that carries the request's own trace id, so an
/// analyst can go from any refusal a client saw to who and why.
#[tokio::test]
async fn pc10_every_refused_edge_request_leaves_an_audit_event_with_its_trace() {
    let options = Options { siem: true, checkouts_per_minute: Some(1), ..Options::default() };
    let estate = Estate::start_with(options).await;
    let alice = estate.user_token("alice").await;
    let bob = estate.user_token("bob").await;
    let admin = estate.admin_token().await;
    let line = json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }] });

    let (status, _, order) = estate.edge_call(Method::POST, "/v1/orders", Some(&alice), Some(&line)).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = order["id"].as_str().unwrap();
    let mine = format!("/v1/orders/{id}");
    assert_eq!(estate.edge_call(Method::GET, &mine, Some(&alice), None).await.0, StatusCode::OK);

    let mut forged = alice.clone();
    forged.push('x');
    let too_big = json!({ "lines": [{ "sku": "x".repeat(estate_tests::GATEWAY_BODY_LIMIT), "quantity": 1 }] });
    /// method, path, token, body, expected status
    type Refusal<'a> = (Method, String, Option<&'a str>, Option<Value>, StatusCode);
    let refusals: Vec<Refusal> = vec![
        (Method::GET, "/v1/orders".into(), None, None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/v1/orders".into(), Some(&forged), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/v1/orders".into(), Some(&admin), None, StatusCode::FORBIDDEN),
        (Method::GET, mine.clone(), Some(&bob), None, StatusCode::NOT_FOUND),
        (Method::PATCH, mine.clone(), Some(&bob), Some(json!({ "delivery_note": "mine now" })), StatusCode::NOT_FOUND),
        (Method::POST, format!("{mine}/cancel"), Some(&bob), Some(json!({})), StatusCode::NOT_FOUND),
        (Method::GET, "/v1/internal/orders".into(), Some(&alice), None, StatusCode::NOT_FOUND),
        (Method::DELETE, mine.clone(), Some(&alice), None, StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, "/v1/orders/not-a-uuid".into(), Some(&alice), None, StatusCode::BAD_REQUEST),
        (Method::POST, "/v1/orders".into(), Some(&alice), Some(too_big), StatusCode::PAYLOAD_TOO_LARGE),
        (
            Method::POST,
            "/v1/orders".into(),
            Some(&alice),
            Some(json!({ "lines": [{ "sku": "TEA-01", "quantity": 1, "unit_price_cents": 1 }] })),
            StatusCode::BAD_REQUEST,
        ),
        (Method::POST, "/v1/orders".into(), Some(&alice), Some(line.clone()), StatusCode::TOO_MANY_REQUESTS),
    ];
    for (method, path, token, body, expected) in refusals {
        let shown = format!("{method} {path}");
        let (status, _, _) = estate.edge_call(method, &path, token, body.as_ref()).await;
        assert_eq!(status, expected, "{shown}");
    }
    estate.assert_edge_refusals_audited().await;
}
