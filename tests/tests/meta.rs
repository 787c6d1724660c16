//! Meta-tests over the served OpenAPI documents (issue 9): they read what
//! the services *expose*, so a new route cannot slip in without its proofs.
//!
//! - API9: the documented operations are exactly the gateway's table plus
//!   the declared east-west-only operations — nothing undocumented is
//!   routed, nothing documented is forgotten.
//! - API1/PC-07: every operation with a path id has a BOLA probe here, and
//!   each probe shows another user gets 404 while the owner gets through.
//! - API3/PC-07: every write operation has a mass-assignment probe, and each
//!   shows privileged fields are refused (or, for bodiless operations,
//!   change nothing).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::collections::BTreeSet;

use estate_tests::{Estate, GATEWAY_ROUTES};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Documented, deliberately not routed by the gateway: order calls them east-west.
const EAST_WEST_ONLY: [(&str, &str); 2] = [("POST", "/v1/payments"), ("POST", "/v1/payments/{id}/refund")];

/// Operations with a path id and their BOLA probe (below).
const BOLA_PROBED: [(&str, &str); 6] = [
    ("GET", "/v1/orders/{id}"),
    ("PATCH", "/v1/orders/{id}"),
    ("POST", "/v1/orders/{id}/cancel"),
    ("POST", "/v1/orders/{id}/refund"),
    ("GET", "/v1/payments/{id}"),
    ("POST", "/v1/payments/{id}/refund"),
];

/// Write operations and their mass-assignment probe (below).
const MASS_ASSIGNMENT_PROBED: [(&str, &str); 6] = [
    ("POST", "/v1/orders"),
    ("PATCH", "/v1/orders/{id}"),
    ("POST", "/v1/orders/{id}/cancel"),
    ("POST", "/v1/orders/{id}/refund"),
    ("POST", "/v1/payments"),
    ("POST", "/v1/webhooks"),
];

fn set(ops: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    ops.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect()
}

async fn documented(estate: &Estate) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (http, url) in [estate.order_management("/openapi.json"), estate.payment_management("/openapi.json")] {
        let doc: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn api9_documents_equal_the_gateway_table_plus_the_east_west_operations() {
    let estate = Estate::start().await;
    let documented = documented(&estate).await;
    let routed: BTreeSet<(String, String)> = GATEWAY_ROUTES
        .iter()
        .flat_map(|(path, methods, _, _)| methods.iter().map(|m| ((*m).to_owned(), (*path).to_owned())))
        .collect();
    let east_west = set(&EAST_WEST_ONLY);
    assert!(routed.is_disjoint(&east_west), "an east-west operation is routed publicly");
    let expected: BTreeSet<_> = routed.union(&east_west).cloned().collect();
    assert_eq!(documented, expected, "documented vs gateway table + east-west");
}

#[tokio::test]
async fn api1_pc07_every_id_operation_has_a_bola_probe_and_each_refuses_another_user() {
    let estate = Estate::start().await;
    let with_id: BTreeSet<_> = documented(&estate).await.into_iter().filter(|(_, path)| path.contains('{')).collect();
    assert_eq!(with_id, set(&BOLA_PROBED), "an operation with a path id lacks a BOLA probe");

    let alice = estate.user_token("alice").await;
    let bob = estate.user_token("bob").await;
    let (_, order) = estate
        .place_order(
            &alice,
            &uuid::Uuid::new_v4().to_string(),
            &json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }] }),
        )
        .await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let payment_id: String =
        sqlx::query_scalar("SELECT id::text FROM payments.payments WHERE order_id = $1::text::uuid")
            .bind(&order_id)
            .fetch_one(&estate.admin)
            .await
            .unwrap();

    for (method, path) in BOLA_PROBED {
        let (client, url) = if path.starts_with("/v1/payments/") && method == "POST" {
            // East-west: order's workload relaying the user's token.
            (estate.workload_client("order", "payment"), estate.payment_url(&path.replace("{id}", &payment_id)))
        } else if path.starts_with("/v1/payments/") {
            (estate.edge(), estate.edge_url(&path.replace("{id}", &payment_id)))
        } else {
            (estate.edge(), estate.edge_url(&path.replace("{id}", &order_id)))
        };
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = client.request(method.clone(), &url).bearer_auth(&bob);
        if method == Method::PATCH {
            request = request.json(&json!({ "delivery_note": "bob was here" }));
        }
        let status = request.send().await.unwrap().status();
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: another user's object");
    }
    // The owner still reads both, unchanged.
    let (_, _, mine) = estate.edge_call(Method::GET, &format!("/v1/orders/{order_id}"), Some(&alice), None).await;
    assert_eq!((mine["status"].as_str(), mine.get("delivery_note")), (Some("confirmed"), None));
    let paid = estate
        .edge()
        .get(estate.edge_url(&format!("/v1/payments/{payment_id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), StatusCode::OK);
}

#[tokio::test]
async fn api3_pc07_every_write_operation_has_a_mass_assignment_probe_and_each_holds() {
    let estate = Estate::start().await;
    let writes: BTreeSet<_> = documented(&estate)
        .await
        .into_iter()
        .filter(|(method, _)| matches!(method.as_str(), "POST" | "PUT" | "PATCH"))
        .filter(|op| !set(&[("POST", "/v1/payments/{id}/refund")]).contains(op))
        .collect();
    // Payment's refund is bodiless and east-west; its probe is the cancel/refund one through order.
    assert_eq!(writes, set(&MASS_ASSIGNMENT_PROBED), "a write operation lacks a mass-assignment probe");

    let alice = estate.user_token("alice").await;
    let privileged = json!({ "status": "refunded", "customer_id": "bob", "total_cents": 1, "amount_cents": 1, "price": 0, "role": "admin" });
    let merged = |base: Value| {
        let mut body = base;
        for (key, value) in privileged.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    // POST /v1/orders
    let (status, _) = estate
        .place_order(&alice, "mass-assign-0001", &merged(json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }] })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, order) =
        estate.place_order(&alice, "mass-assign-0002", &json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }] })).await;
    let id = order["id"].as_str().unwrap();
    // PATCH /v1/orders/{id}
    let patched = estate
        .edge()
        .patch(estate.edge_url(&format!("/v1/orders/{id}")))
        .bearer_auth(&alice)
        .json(&merged(json!({ "delivery_note": "x" })))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::BAD_REQUEST);
    // POST /v1/orders/{id}/refund and /cancel take no body: one sent changes nothing but what the operation does.
    let body = json!({ "status": "confirmed", "total_cents": 0 });
    let (_, _, refunded) =
        estate.edge_call(Method::POST, &format!("/v1/orders/{id}/refund"), Some(&alice), Some(&body)).await;
    assert_eq!((refunded["status"].as_str(), refunded["total_cents"].as_i64()), (Some("refunded"), Some(450)));
    let (_, other) =
        estate.place_order(&alice, "mass-assign-0003", &json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }] })).await;
    let cancel = format!("/v1/orders/{}/cancel", other["id"].as_str().unwrap());
    let (_, _, cancelled) =
        estate.edge_call(Method::POST, &cancel, Some(&alice), Some(&json!({ "status": "confirmed" }))).await;
    assert_eq!(cancelled["status"], "cancelled");
    // POST /v1/payments (east-west): unknown fields refused before anything else is looked at.
    let as_order = estate.workload_client("order", "payment");
    let response = as_order
        .post(estate.payment_url("/v1/payments"))
        .bearer_auth(&alice)
        .json(&merged(json!({ "order_id": uuid::Uuid::new_v4(), "amount_cents": 100, "currency": "EUR" })))
        .send()
        .await
        .unwrap();
    assert!(matches!(response.status(), StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN), "{}", response.status());
    // POST /v1/webhooks
    let response = estate
        .workload_client("gateway", "payment")
        .post(estate.payment_url("/v1/webhooks"))
        .bearer_auth(&alice)
        .json(&merged(json!({ "url": estate.merchant.url() })))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(estate.count("payments.webhooks").await, 0);
}
