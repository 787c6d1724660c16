//! The estate through its one public entry point: the gateway's route
//! table, token checks, header hygiene, limits and edge headers (PC-02,
//! PC-03, PC-08, PC-09, API2, API4, API8, API9), each with the refused and
//! the working case, and the flows end to end through it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use estate_tests::{APP_ORIGIN, Estate, GATEWAY_BODY_LIMIT, GATEWAY_ROUTES, Options};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn call(
    estate: &Estate,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    estate.edge_call(method, path, token, body).await
}

fn tea(quantity: u32) -> Value {
    json!({ "lines": [{ "sku": "TEA-01", "quantity": quantity }] })
}

fn concrete(pattern: &str) -> String {
    pattern.replace("{id}", &uuid::Uuid::new_v4().to_string())
}

#[tokio::test]
async fn flow_tx_and_relay_work_end_to_end_through_the_gateway() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let (status, _, order) = call(&estate, Method::POST, "/v1/orders", Some(&alice), Some(&tea(2))).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "confirmed");
    let id = order["id"].as_str().unwrap();
    let (status, _, fetched) = call(&estate, Method::GET, &format!("/v1/orders/{id}"), Some(&alice), None).await;
    assert_eq!((status, fetched["id"].as_str()), (StatusCode::OK, Some(id)));
    let (status, _, refunded) =
        call(&estate, Method::POST, &format!("/v1/orders/{id}/refund"), Some(&alice), None).await;
    assert_eq!((status, refunded["status"].as_str()), (StatusCode::OK, Some("refunded")));
    assert_eq!(estate.psp.refunds(), 1);
}

#[tokio::test]
async fn pc02_the_gateway_refuses_foreign_forged_unsigned_and_misaddressed_tokens() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let (status, _, _) = call(&estate, Method::GET, "/v1/orders", Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK, "the legitimate token");

    let parts: Vec<&str> = alice.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!("someone-else");
    let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);
    let unsigned = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#), parts[1]);
    let idp = estate_testkit::TestIdp::start().await.unwrap();
    let foreign = idp.mint(&idp.access_claims("alice", "order-api", "orders:read")).unwrap();
    let misaddressed = estate.ops_token("inventory-api").await;
    for (label, token) in [
        ("tampered", tampered),
        ("alg none", unsigned),
        ("another issuer", foreign),
        ("another audience", misaddressed),
    ] {
        let (status, headers, _) = call(&estate, Method::GET, "/v1/orders", Some(&token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{label}");
        assert!(headers["www-authenticate"].to_str().unwrap().contains("invalid_token"), "{label}");
    }
    let (status, headers, _) = call(&estate, Method::GET, "/v1/orders", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"estate\"");
    // A valid token without the route's scope.
    let admin = estate.admin_token().await;
    let (status, headers, _) = call(&estate, Method::GET, "/v1/orders", Some(&admin), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
}

#[tokio::test]
async fn api2_every_routed_operation_needs_a_valid_token_at_the_gateway() {
    let estate = Estate::start().await;
    for (path, methods, _, _) in GATEWAY_ROUTES {
        for method in methods {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, _, _) = call(&estate, method.clone(), &concrete(path), None, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn api9_routes_missing_from_the_table_are_unreachable_even_where_upstreams_serve_them() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let admin = estate.admin_token().await;
    // Served by payment (east-west, for order only) and by order's management listener, never routed.
    let unrouted = [
        (Method::POST, "/v1/payments".to_owned(), &alice),
        (Method::POST, concrete("/v1/payments/{id}/refund"), &alice),
        (Method::PUT, "/admin/v1/checkout".to_owned(), &admin),
        (Method::GET, "/openapi.json".to_owned(), &alice),
        (Method::GET, "/health/ready".to_owned(), &alice),
        (Method::GET, "/v1/orders/a/b".to_owned(), &alice),
        (Method::GET, "/v1/orders/x/%2e%2e".to_owned(), &alice),
    ];
    for (method, path, token) in unrouted {
        let body = json!({ "order_id": uuid::Uuid::new_v4(), "amount_cents": 1, "currency": "EUR" });
        let (status, _, _) = call(&estate, method.clone(), &path, Some(token), Some(&body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let (status, headers, _) = call(&estate, Method::DELETE, &concrete("/v1/orders/{id}"), Some(&alice), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers["allow"].to_str().unwrap().contains("GET"));
    assert_eq!(estate.count("payments.payments").await, 0);
    // Order's checkout switch is untouched: a routed call works.
    let (status, _, _) = call(&estate, Method::POST, "/v1/orders", Some(&alice), Some(&tea(1))).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn pc03_client_sent_identity_headers_change_nothing_and_services_revalidate() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let bob = estate.user_token("bob").await;
    let (_, _, bobs) = call(&estate, Method::POST, "/v1/orders", Some(&bob), Some(&tea(1))).await;
    let bob_sub = {
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(bob.split('.').nth(1).unwrap()).unwrap()).unwrap();
        claims["sub"].as_str().unwrap().to_owned()
    };
    let response = estate
        .edge()
        .get(estate.edge_url(&format!("/v1/orders/{}", bobs["id"].as_str().unwrap())))
        .bearer_auth(&alice)
        .header("x-user-id", &bob_sub)
        .header("x-forwarded-user", &bob_sub)
        .header("x-internal-admin", "true")
        .header("forwarded", "for=10.0.0.1;by=gateway")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "alice stays alice");
    // Straight to the service, bypassing the gateway: a forged token is refused there too.
    let forged = format!("{}.{}.c2lnbmF0dXJl", alice.split('.').next().unwrap(), alice.split('.').nth(1).unwrap());
    let response = estate.gateway().get(estate.order_url("/v1/orders")).bearer_auth(&forged).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    estate_testkit::evidence::refused("a forged token sent straight to order");
    let response = estate.gateway().get(estate.order_url("/v1/orders")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn pc08_oversize_bodies_are_413_at_the_gateway_and_at_the_service_and_bad_ids_400() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let huge =
        json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }], "delivery_note": "x".repeat(GATEWAY_BODY_LIMIT) });
    let (status, _, _) = call(&estate, Method::POST, "/v1/orders", Some(&alice), Some(&huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "declared length over the route limit");
    // Without a Content-Length (chunked): cut off at the limit.
    let chunks = futures::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let response = estate
        .edge()
        .post(estate.edge_url("/v1/orders"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // At the service itself (the gateway bypassed): its own cap.
    let body = vec![b' '; 2 * 1024 * 1024];
    let response = estate
        .gateway()
        .post(estate.order_url("/v1/orders"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, problem) = call(&estate, Method::GET, "/v1/orders/not-an-id", Some(&alice), None).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("https://estate.dev/problems/invalid-id"))
    );
    assert_eq!(estate.count("orders.orders").await, 0);
    let (status, _, _) = call(&estate, Method::POST, "/v1/orders", Some(&alice), Some(&tea(1))).await;
    assert_eq!(status, StatusCode::CREATED, "a normal body passes");
}

#[tokio::test]
async fn pc09_the_gateway_limits_each_client_address_with_retry_after() {
    let estate = Estate::start_with(Options { gateway_ip_per_minute: Some(5), ..Options::default() }).await;
    let alice = estate.user_token("alice").await;
    for _ in 0..5 {
        let (status, _, _) = call(&estate, Method::GET, "/v1/orders", Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, _) = call(&estate, Method::GET, "/v1/orders", Some(&alice), None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Not even an unauthenticated probe gets through to the token check.
    let (status, _, _) = call(&estate, Method::GET, "/v1/orders", None, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Nor a probe for routes that do not exist: scanning costs the same budget.
    let (status, _, _) = call(&estate, Method::GET, "/v1/internal/admin", None, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn pc09_probing_for_unknown_routes_spends_the_address_budget() {
    let estate = Estate::start_with(Options { gateway_ip_per_minute: Some(5), ..Options::default() }).await;
    for n in 0..5 {
        let (status, _, _) = call(&estate, Method::GET, &format!("/v1/probe-{n}"), None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, headers, _) = call(&estate, Method::GET, "/v1/probe-6", None, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the sixth probe of the minute");
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn api8_edge_headers_and_cors_for_explicit_origins_only() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let response = estate
        .edge()
        .get(estate.edge_url("/v1/orders"))
        .bearer_auth(&alice)
        .header("origin", APP_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    estate_testkit::evidence::allowed("an edge response with its security headers");
    let headers = response.headers();
    assert!(headers["strict-transport-security"].to_str().unwrap().contains("max-age="));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(headers["access-control-allow-origin"], APP_ORIGIN);
    assert!(!headers.contains_key("access-control-allow-credentials"));

    // Another origin: no CORS grant, and its preflight is refused.
    let response = estate
        .edge()
        .get(estate.edge_url("/v1/orders"))
        .bearer_auth(&alice)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!response.headers().contains_key("access-control-allow-origin"));
    let preflight = |origin: &'static str| {
        estate
            .edge()
            .request(Method::OPTIONS, estate.edge_url("/v1/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    estate_testkit::evidence::refused("a foreign origin's CORS preflight");
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
    let allowed = preflight(APP_ORIGIN).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(allowed.headers()["access-control-allow-origin"], APP_ORIGIN);
    assert_ne!(allowed.headers()["access-control-allow-origin"], "*");
}

async fn status_at(estate: &Estate, gateway: std::net::SocketAddr, token: &str) -> StatusCode {
    estate.edge().get(estate.edge_url_at(gateway, "/v1/orders")).bearer_auth(token).send().await.unwrap().status()
}

#[tokio::test]
async fn pc09_two_gateways_sharing_redis_enforce_one_combined_budget() {
    let estate =
        Estate::start_with(Options { gateway_ip_per_minute: Some(6), shared_limits: true, ..Options::default() }).await;
    let alice = estate.user_token("alice").await;
    let (first, second) = (estate.gateway_addr, estate.another_gateway().await);
    for gateway in [first, second, first, second, first, second] {
        assert_eq!(status_at(&estate, gateway, &alice).await, StatusCode::OK);
    }
    assert_eq!(status_at(&estate, second, &alice).await, StatusCode::TOO_MANY_REQUESTS, "the budget is shared");
    assert_eq!(status_at(&estate, first, &alice).await, StatusCode::TOO_MANY_REQUESTS);

    // Without Redis, each replica keeps its own budget: the same traffic passes twice.
    let alone = Estate::start_with(Options { gateway_ip_per_minute: Some(6), ..Options::default() }).await;
    let alice = alone.user_token("alice").await;
    let (first, second) = (alone.gateway_addr, alone.another_gateway().await);
    for _ in 0..6 {
        assert_eq!(status_at(&alone, first, &alice).await, StatusCode::OK);
    }
    assert_eq!(status_at(&alone, first, &alice).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status_at(&alone, second, &alice).await, StatusCode::OK, "a second replica has a budget of its own");
}

#[tokio::test]
async fn the_gateway_counts_rejections_by_reason_and_times_upstream_calls() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    call(&estate, Method::GET, "/v1/orders", Some(&alice), None).await;
    call(&estate, Method::GET, "/v1/orders", None, None).await;
    call(&estate, Method::GET, "/nowhere/at/all", Some(&alice), None).await;
    let metrics = estate
        .edge()
        .get(format!("https://localhost:{}/metrics", estate.gateway_management.port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |needle: &[&str]| metrics.lines().any(|l| needle.iter().all(|n| l.contains(n)) && !l.starts_with('#'));
    assert!(line(&["estate_http_requests_total", "route=\"/v1/orders\"", "status=\"200\""]), "{metrics}");
    assert!(line(&["estate_http_requests_total", "reason=\"token_missing\"", "status=\"401\""]), "{metrics}");
    assert!(line(&["estate_http_requests_total", "route=\"unrouted\"", "reason=\"no_route\""]), "{metrics}");
    assert!(line(&["estate_upstream_duration_seconds_count", "route=\"/v1/orders\""]), "{metrics}");
    assert!(!metrics.contains("/nowhere/at/all"), "raw paths never become labels");
}
