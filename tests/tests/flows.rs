//! The three token flows end to end, with the BOLA, mass-assignment,
//! idempotency, compensation, velocity and hostile-provider controls around
//! them (FLOW-CC, FLOW-TX, FLOW-RELAY, API1, API3, API6, API10).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_testkit::PspMode;
use estate_tests::Estate;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn send(
    estate: &Estate,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = estate.gateway().request(method, estate.order_url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    estate_tests::observed(&format!("{path} at order → {status}"), status);
    (status, response.json().await.unwrap_or(Value::Null))
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn tea(quantity: u32) -> Value {
    json!({ "lines": [{ "sku": "TEA-01", "quantity": quantity }] })
}

#[tokio::test]
async fn flow_tx_checkout_reserves_stock_exchanges_the_token_and_confirms_the_order() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let body = json!({ "lines": [{ "sku": "TEA-01", "quantity": 2 }, { "sku": "CUP-01", "quantity": 1 }], "delivery_note": "ring twice" });
    let (status, order) = estate.place_order(&alice, &key(), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["total_cents"], 2 * 450 + 1200, "priced from the price list");
    // Read DTO: nothing internal.
    for field in ["customer_id", "payment_id", "idempotency_key", "psp_reference"] {
        assert!(order.get(field).is_none(), "{field} leaked: {order}");
    }
    assert_eq!((estate.stock("TEA-01").await, estate.stock("CUP-01").await), (8, 4), "FLOW-CC reserved the stock");
    assert_eq!(estate.psp.authorizations(), 1);
    let (payment_status, authorized_by): (String, String) =
        sqlx::query_as("SELECT status, authorized_by FROM payments.payments WHERE order_id = $1::text::uuid")
            .bind(order["id"].as_str().unwrap())
            .fetch_one(&estate.admin)
            .await
            .unwrap();
    assert_eq!(
        (payment_status.as_str(), authorized_by.as_str()),
        ("authorized", estate_tests::spiffe("order").as_str())
    );

    let (status, fetched) =
        send(&estate, reqwest::Method::GET, &format!("/v1/orders/{}", order["id"].as_str().unwrap()), &alice, None)
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, order);
}

#[tokio::test]
async fn flow_relay_refund_and_cancel_relay_the_users_own_token_to_payment() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let (_, first) = estate.place_order(&alice, &key(), &tea(3)).await;
    let (_, second) = estate.place_order(&alice, &key(), &tea(2)).await;
    assert_eq!(estate.stock("TEA-01").await, 5);

    let id = first["id"].as_str().unwrap();
    let (status, refunded) =
        send(&estate, reqwest::Method::POST, &format!("/v1/orders/{id}/refund"), &alice, None).await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["status"], "refunded");
    assert_eq!(estate.psp.refunds(), 1);
    // Refunding twice: the order is no longer confirmed.
    let (status, _) = send(&estate, reqwest::Method::POST, &format!("/v1/orders/{id}/refund"), &alice, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(estate.psp.refunds(), 1);

    let id = second["id"].as_str().unwrap();
    let (status, cancelled) =
        send(&estate, reqwest::Method::POST, &format!("/v1/orders/{id}/cancel"), &alice, None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(estate.stock("TEA-01").await, 7, "a cancellation returns the stock, a refund does not");
}

#[tokio::test]
async fn api1_another_user_gets_404_on_every_order_route_and_sees_none_in_lists() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let bob = estate.user_token("bob").await;
    let (_, order) = estate.place_order(&alice, &key(), &tea(1)).await;
    let id = order["id"].as_str().unwrap();

    let attempts = [
        (reqwest::Method::GET, format!("/v1/orders/{id}"), None),
        (reqwest::Method::PATCH, format!("/v1/orders/{id}"), Some(json!({ "delivery_note": "mine now" }))),
        (reqwest::Method::POST, format!("/v1/orders/{id}/cancel"), None),
        (reqwest::Method::POST, format!("/v1/orders/{id}/refund"), None),
        (reqwest::Method::GET, format!("/v1/orders/{}", uuid::Uuid::new_v4()), None),
    ];
    for (method, path, body) in attempts {
        let (status, problem) = send(&estate, method.clone(), &path, &bob, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {problem}");
    }
    // A malformed id is a 400, answered without a lookup.
    let (status, problem) = send(&estate, reqwest::Method::GET, "/v1/orders/not-a-uuid", &bob, None).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("https://estate.dev/problems/invalid-id"))
    );
    let (_, page) = send(&estate, reqwest::Method::GET, "/v1/orders", &bob, None).await;
    assert_eq!(page["items"], json!([]));
    let (status, _) = send(&estate, reqwest::Method::GET, &format!("/v1/orders?after={id}"), &bob, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "another user's order is no cursor");

    // Nothing changed, and alice still has full access.
    let (status, mine) = send(&estate, reqwest::Method::GET, &format!("/v1/orders/{id}"), &alice, None).await;
    assert_eq!((status, mine["status"].as_str()), (StatusCode::OK, Some("confirmed")));
    assert!(mine.get("delivery_note").is_none());
    let (_, page) = send(&estate, reqwest::Method::GET, "/v1/orders", &alice, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(estate.psp.refunds(), 0);
}

#[tokio::test]
async fn api3_price_status_owner_and_total_cannot_be_assigned() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let smuggled = [
        json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }], "status": "confirmed" }),
        json!({ "lines": [{ "sku": "TEA-01", "quantity": 1, "unit_price_cents": 1 }] }),
        json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }], "total_cents": 1 }),
        json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }], "customer_id": "bob" }),
    ];
    for body in smuggled {
        let (status, problem) = estate.place_order(&alice, &key(), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
    }
    let invalid = [
        json!({ "lines": [] }),
        json!({ "lines": [{ "sku": "TEA-01", "quantity": 0 }] }),
        json!({ "lines": [{ "sku": "NO-SUCH", "quantity": 1 }] }),
    ];
    for body in invalid {
        let (status, problem) = estate.place_order(&alice, &key(), &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {problem}");
        assert!(problem["errors"].is_array(), "{problem}");
    }
    // The error names the position the client sent, not a sorted one.
    let mixed = json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }, { "sku": "AAA-404", "quantity": 1 }] });
    let (_, problem) = estate.place_order(&alice, &key(), &mixed).await;
    assert_eq!(problem["errors"][0]["field"], "lines[1].sku", "{problem}");
    assert_eq!(estate.count("orders.orders").await, 0, "no order from a refused body");

    let (_, order) = estate.place_order(&alice, &key(), &tea(1)).await;
    let path = format!("/v1/orders/{}", order["id"].as_str().unwrap());
    let (status, _) = send(
        &estate,
        reqwest::Method::PATCH,
        &path,
        &alice,
        Some(json!({ "delivery_note": "x", "status": "refunded" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, patched) =
        send(&estate, reqwest::Method::PATCH, &path, &alice, Some(json!({ "delivery_note": "leave at the door" })))
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (patched["delivery_note"].as_str(), patched["status"].as_str()),
        (Some("leave at the door"), Some("confirmed"))
    );
}

#[tokio::test]
async fn idempotency_concurrent_duplicates_make_one_order_one_reservation_one_payment() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let key = key();
    let body = tea(2);
    let attempts = (0..8).map(|_| estate.place_order(&alice, &key, &body));
    let results = futures::future::join_all(attempts).await;
    let ids: std::collections::HashSet<String> = results
        .iter()
        .map(|(status, body)| {
            assert!(matches!(*status, StatusCode::CREATED | StatusCode::OK), "{status}: {body}");
            body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one order");
    assert_eq!(estate.count("orders.orders").await, 1);
    assert_eq!(estate.stock("TEA-01").await, 8, "one reservation");
    assert_eq!(estate.count("inventory.reservations").await, 1);
    assert_eq!(estate.psp.authorizations(), 1, "one payment");
    // A later retry is answered from the stored order, without spending budget.
    for _ in 0..6 {
        let (status, again) = estate.place_order(&alice, &key, &body).await;
        assert_eq!(status, StatusCode::OK);
        assert!(ids.contains(again["id"].as_str().unwrap()));
    }
    // The same key for a different order is refused, not served the old one.
    let (status, _) = estate.place_order(&alice, &key, &tea(3)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Without a key there is no checkout.
    let response =
        estate.gateway().post(estate.order_url("/v1/orders")).bearer_auth(&alice).json(&tea(1)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn flow_tx_a_declined_payment_releases_the_stock_and_fails_the_order() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    estate.psp.set_mode(PspMode::Decline);
    let (status, order) = estate.place_order(&alice, &key(), &tea(4)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (order["status"].as_str(), order["failure_reason"].as_str()),
        (Some("failed"), Some("payment_declined"))
    );
    assert_eq!(estate.stock("TEA-01").await, 10, "compensation released the stock");
    // Out of stock: nothing reserved, nothing charged.
    estate.psp.set_mode(PspMode::Approve);
    let (_, order) =
        estate.place_order(&alice, &key(), &json!({ "lines": [{ "sku": "TEA-02", "quantity": 3 }] })).await;
    assert_eq!(order["failure_reason"], "out_of_stock");
    assert_eq!(estate.psp.authorizations(), 1);
}

#[tokio::test]
async fn api10_hostile_provider_answers_are_refused_without_side_effects() {
    let estate = Estate::start_with_checkouts_per_minute(Some(100)).await;
    let alice = estate.user_token("alice").await;
    let hostile = [
        PspMode::ExtraField,
        PspMode::WrongAmount,
        PspMode::FullCardNumber,
        PspMode::InjectedReference,
        PspMode::Oversized,
        PspMode::RedirectToMetadata,
        PspMode::ServerError,
        PspMode::NotJson,
    ];
    for mode in hostile {
        estate.psp.set_mode(mode);
        let (status, order) = estate.place_order(&alice, &key(), &tea(1)).await;
        assert_eq!(status, StatusCode::CREATED, "{mode:?}");
        assert_eq!(order["failure_reason"], "payment_unavailable", "{mode:?}: {order}");
        assert_eq!(estate.stock("TEA-01").await, 10, "{mode:?}: stock released");
    }
    let authorized: i64 = sqlx::query_scalar("SELECT count(*) FROM payments.payments WHERE status <> 'failed'")
        .fetch_one(&estate.admin)
        .await
        .unwrap();
    assert_eq!(authorized, 0, "no hostile answer became a payment");
    estate_testkit::evidence::refused("hostile provider answers: none became a payment");
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payments.payments WHERE card_last4 IS NOT NULL OR psp_reference IS NOT NULL",
    )
    .fetch_one(&estate.admin)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn api6_checkouts_per_user_are_rate_limited_and_other_users_are_not() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let bob = estate.user_token("bob").await;
    for _ in 0..5 {
        let (status, _) =
            estate.place_order(&alice, &key(), &json!({ "lines": [{ "sku": "CUP-01", "quantity": 1 }] })).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let response = estate
        .gateway()
        .post(estate.order_url("/v1/orders"))
        .bearer_auth(&alice)
        .header("idempotency-key", key())
        .json(&tea(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let (status, _) = estate.place_order(&bob, &key(), &tea(1)).await;
    assert_eq!(status, StatusCode::CREATED, "the limit is per user");
}

#[tokio::test]
async fn flow_tx_and_relay_payment_refuses_user_tokens_wrong_peers_and_foreign_payments() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let bob = estate.user_token("bob").await;
    let (_, order) = estate.place_order(&alice, &key(), &tea(1)).await;
    let payment_id: String =
        sqlx::query_scalar("SELECT id::text FROM payments.payments WHERE order_id = $1::text::uuid")
            .bind(order["id"].as_str().unwrap())
            .fetch_one(&estate.admin)
            .await
            .unwrap();
    let authorize = json!({ "order_id": uuid::Uuid::new_v4(), "amount_cents": 100, "currency": "EUR" });

    // The user's own token, even from order's workload: not an exchanged token → 403.
    let as_order = estate.workload_client("order", "payment");
    let response =
        as_order.post(estate.payment_url("/v1/payments")).bearer_auth(&alice).json(&authorize).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // No token → 401.
    let response = as_order.post(estate.payment_url("/v1/payments")).json(&authorize).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Another workload (the gateway) may not call payment at all → 403 by policy.
    let as_gateway = estate.workload_client("gateway", "payment");
    let response =
        as_gateway.post(estate.payment_url("/v1/payments")).bearer_auth(&alice).json(&authorize).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let refund = format!("/v1/payments/{payment_id}/refund");
    let response = as_gateway.post(estate.payment_url(&refund)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Bob relaying his own token for alice's payment: not found.
    let response = as_order.post(estate.payment_url(&refund)).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(estate.psp.refunds(), 0);
    assert_eq!(estate.count("payments.payments").await, 1, "no payment from a refused call");
    estate_testkit::evidence::refused("user tokens, wrong peers and foreign payments at payment");
    // Reading a payment through the gateway: the owner only.
    let as_gateway = estate.workload_client("gateway", "payment");
    let read = estate.payment_url(&format!("/v1/payments/{payment_id}"));
    let response = as_gateway.get(&read).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "api1: bob reads alice's payment");
    let view: Value = as_gateway.get(&read).bearer_auth(&alice).send().await.unwrap().json().await.unwrap();
    assert_eq!((view["status"].as_str(), view["card_last4"].as_str()), (Some("authorized"), Some("4242")));
    assert!(view.get("psp_reference").is_none() && view.get("customer_id").is_none(), "{view}");
    // The legitimate relay: alice's token via order's workload.
    let response = as_order.post(estate.payment_url(&refund)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(estate.psp.refunds(), 1);
}

fn subject_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn api4_order_pages_are_capped_and_cursors_walk_the_whole_list() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let sub = subject_of(&alice);
    // 60 orders, written directly (the checkout velocity limit would take an hour).
    for i in 0..60 {
        sqlx::query(
            "INSERT INTO orders.orders (id, customer_id, status, total_cents, idempotency_key, failure_reason) \
             VALUES ($1, $2, 'failed', 0, $3, 'out_of_stock')",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(&sub)
        .bind(format!("seeded-key-{i:04}"))
        .execute(&estate.admin)
        .await
        .unwrap();
    }
    let (status, page) = send(&estate, reqwest::Method::GET, "/v1/orders?limit=1000", &alice, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 50, "capped at 50");
    let after = page["next_after"].as_str().unwrap();
    let (_, rest) =
        send(&estate, reqwest::Method::GET, &format!("/v1/orders?limit=50&after={after}"), &alice, None).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 10);
    assert!(rest.get("next_after").is_none());
    let mut ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 60, "every order exactly once");
    for bad in ["/v1/orders?limit=abc", "/v1/orders?limit=-1", "/v1/orders?page=2", "/v1/orders?after=1%20OR%201=1"] {
        let (status, problem) = send(&estate, reqwest::Method::GET, bad, &alice, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }
}
