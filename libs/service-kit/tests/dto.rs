//! API3 / non-negotiable 5: a write body must be JSON, parse strictly (no
//! unknown or privileged fields) and pass validation; every refusal is a
//! problem that names the field and rule, never the value or parser text.
#![cfg(feature = "dto")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use axum::Router;
use axum::routing::post;
use estate_service_kit::dto::Dto;
use estate_testkit::kit::TestServer;
use serde::Deserialize;
use serde_json::{Value, json};
use validator::Validate;

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    #[validate(length(min = 1, max = 50), nested)]
    lines: Vec<Line>,
    #[validate(length(max = 200))]
    delivery_note: Option<String>,
}

// (validator's `length` on a list needs its items to be `Serialize`.)
#[derive(Debug, Deserialize, serde::Serialize, Validate)]
#[serde(deny_unknown_fields)]
struct Line {
    #[validate(length(min = 1, max = 64))]
    sku: String,
    #[validate(range(min = 1, max = 100))]
    quantity: u32,
}

struct Api {
    url: String,
    http: reqwest::Client,
    _server: TestServer,
}

async fn api() -> Api {
    let router = Router::new().route(
        "/v1/orders",
        post(|Dto(order): Dto<NewOrder>| async move {
            format!("{} lines, first {}x{}", order.lines.len(), order.lines[0].quantity, order.lines[0].sku)
        }),
    );
    let server = TestServer::serve("order", router).await.unwrap();
    Api { url: server.url("/v1/orders"), http: server.pki.https_client().unwrap(), _server: server }
}

async fn post_json(api: &Api, body: &Value) -> (u16, String, String) {
    let response = api.http.post(&api.url).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn api3_a_valid_body_reaches_the_handler() {
    let api = api().await;
    let (status, _, body) = post_json(&api, &json!({"lines": [{"sku": "TEA-01", "quantity": 2}]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "1 lines, first 2xTEA-01");
}

#[tokio::test]
async fn api3_privileged_or_unknown_fields_are_refused_without_echo() {
    let api = api().await;
    for body in [
        json!({"lines": [{"sku": "TEA-01", "quantity": 2}], "status": "paid"}),
        json!({"lines": [{"sku": "TEA-01", "quantity": 2, "price": 1}]}),
        json!({"lines": [{"sku": "TEA-01", "quantity": 2}], "customer_id": "someone-else-4242"}),
        json!({"lines": "not-a-list-9797"}),
        json!({}),
    ] {
        let (status, content_type, text) = post_json(&api, &body).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert_eq!(content_type, "application/problem+json");
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["type"], estate_service_kit::dto::MALFORMED_BODY);
        for leaked in ["paid", "someone-else-4242", "not-a-list-9797", "price", "line ", "column"] {
            assert!(!text.contains(leaked), "{leaked:?} echoed: {text}");
        }
    }
}

#[tokio::test]
async fn api3_rule_violations_name_the_field_and_rule_but_not_the_value() {
    let api = api().await;
    let body = json!({"lines": [{"sku": "TEA-01", "quantity": 7777}, {"sku": "", "quantity": 1}], "delivery_note": "x".repeat(201)});
    let (status, content_type, text) = post_json(&api, &body).await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(content_type, "application/problem+json");
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["type"], estate_service_kit::dto::INVALID_BODY);
    assert_eq!(
        problem["errors"],
        json!([
            {"field": "delivery_note", "code": "length"},
            {"field": "lines[0].quantity", "code": "range"},
            {"field": "lines[1].sku", "code": "length"},
        ])
    );
    assert!(!text.contains("7777") && !text.contains("xxxx"), "a value was echoed: {text}");
}

#[tokio::test]
async fn api3_non_json_and_broken_json_are_refused() {
    let api = api().await;
    let form = api.http.post(&api.url).body("lines=1").header("content-type", "application/x-www-form-urlencoded");
    assert_eq!(form.send().await.unwrap().status(), 415);
    let broken = api.http.post(&api.url).body("{\"lines\": [").header("content-type", "application/json");
    let response = broken.send().await.unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "the body is not valid JSON");
}
