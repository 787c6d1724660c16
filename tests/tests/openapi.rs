//! API9 (improper inventory): each REST service serves its OpenAPI document
//! on the management listener, generated from the same router that serves
//! the API. These meta-tests read the documents: every documented operation
//! is served (an unauthenticated call gets 401, not 404), the documents list
//! exactly the operations the estate means to expose, every operation
//! declares its bearer scope, and admin operations appear only in the
//! management listener's admin document.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::collections::BTreeSet;

use estate_tests::Estate;
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

fn set(ops: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    ops.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect()
}

async fn fetch(client: &reqwest::Client, url: &str) -> Value {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.json().await.unwrap()
}

/// Every documented operation answers 401 without a token (so it is served
/// and authenticated), and declares a bearer scope.
async fn assert_served(doc: &Value, client: &reqwest::Client, base: &str) {
    for (method, path) in operations(doc) {
        let operation = &doc["paths"][&path][method.to_lowercase()];
        let scopes =
            operation["security"][0]["bearer"].as_array().unwrap_or_else(|| panic!("{method} {path}: no bearer scope"));
        assert!(!scopes.is_empty(), "{method} {path}");
        let concrete = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
        let response = client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), format!("{base}{concrete}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} is documented but not served (or not authenticated)"
        );
    }
}

#[tokio::test]
async fn api9_order_and_payment_documents_match_what_is_served() {
    let estate = Estate::start().await;

    let (http, url) = estate.order_management("/openapi.json");
    let order_doc = fetch(&http, &url).await;
    assert_eq!(
        operations(&order_doc),
        set(&[
            ("GET", "/v1/orders"),
            ("POST", "/v1/orders"),
            ("GET", "/v1/orders/{id}"),
            ("PATCH", "/v1/orders/{id}"),
            ("POST", "/v1/orders/{id}/cancel"),
            ("POST", "/v1/orders/{id}/refund"),
        ])
    );
    assert!(order_doc["components"]["securitySchemes"]["bearer"].is_object());
    assert_served(&order_doc, &estate.gateway(), &estate.order_url("")).await;

    let (admin_http, admin_url) = estate.order_management("/admin/openapi.json");
    let admin_doc = fetch(&admin_http, &admin_url).await;
    assert_eq!(operations(&admin_doc), set(&[("GET", "/admin/v1/checkout"), ("PUT", "/admin/v1/checkout")]));
    assert_served(&admin_doc, &admin_http, &format!("https://localhost:{}", estate.order_management.port())).await;

    let (http, url) = estate.payment_management("/openapi.json");
    let payment_doc = fetch(&http, &url).await;
    assert_eq!(
        operations(&payment_doc),
        set(&[
            ("POST", "/v1/payments"),
            ("GET", "/v1/payments/{id}"),
            ("POST", "/v1/payments/{id}/refund"),
            ("POST", "/v1/webhooks"),
        ])
    );
    let as_order = estate.workload_client("order", "payment");
    let money: Value = serde_json::json!({ "paths": {
        "/v1/payments": payment_doc["paths"]["/v1/payments"],
        "/v1/payments/{id}/refund": payment_doc["paths"]["/v1/payments/{id}/refund"],
    }});
    assert_served(&money, &as_order, &estate.payment_url("")).await;
    let hooks: Value = serde_json::json!({ "paths": {
        "/v1/webhooks": payment_doc["paths"]["/v1/webhooks"],
        "/v1/payments/{id}": payment_doc["paths"]["/v1/payments/{id}"],
    }});
    assert_served(&hooks, &estate.workload_client("gateway", "payment"), &estate.payment_url("")).await;
}

#[tokio::test]
async fn api9_undocumented_routes_and_documents_are_not_served_on_the_api_listener() {
    let estate = Estate::start().await;
    let gateway = estate.gateway();
    let id = uuid::Uuid::new_v4();
    let undocumented = [
        (Method::DELETE, format!("/v1/orders/{id}")),
        (Method::PUT, format!("/v1/orders/{id}")),
        (Method::GET, format!("/v1/orders/{id}/cancel")),
        (Method::GET, "/v1/payments".to_owned()),
        (Method::GET, "/openapi.json".to_owned()),
        (Method::GET, "/admin/openapi.json".to_owned()),
        (Method::GET, "/admin/v1/checkout".to_owned()),
        (Method::GET, "/internal/debug".to_owned()),
    ];
    for (method, path) in undocumented {
        let response = gateway.request(method.clone(), estate.order_url(&path)).send().await.unwrap();
        let status = response.status();
        assert!(
            matches!(status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::METHOD_NOT_ALLOWED),
            "{method} {path}: {status}"
        );
    }
}
