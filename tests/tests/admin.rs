//! API5 (broken function-level authorization): order's admin API lives on
//! the management listener only and needs an `admin:*` token. A user's
//! token is refused there, no token is refused, and the API listener does
//! not serve admin paths at all; the operations console's token works and
//! its action is audited.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_tests::Estate;
use reqwest::StatusCode;
use serde_json::json;

async fn checkout(estate: &Estate, token: &str) -> StatusCode {
    let body = json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }] });
    estate.place_order(token, &uuid::Uuid::new_v4().to_string(), &body).await.0
}

#[tokio::test]
async fn api5_user_tokens_cannot_reach_admin_functions_and_the_admin_token_can() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let (http, url) = estate.order_management("/admin/v1/checkout");
    let pause = json!({ "enabled": false });

    // A user's token (orders:* scopes, even payments) is not an admin token.
    let response = http.put(&url).bearer_auth(&alice).json(&pause).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
    estate_testkit::evidence::refused("a user's token at the admin API");
    // No token at all.
    assert_eq!(http.put(&url).json(&pause).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // The API listener has no admin routes, whoever asks.
    let admin = estate.admin_token().await;
    let response = estate
        .gateway()
        .put(estate.order_url("/admin/v1/checkout"))
        .bearer_auth(&admin)
        .json(&pause)
        .send()
        .await
        .unwrap();
    assert!(matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::FORBIDDEN), "{}", response.status());
    assert_eq!(checkout(&estate, &alice).await, StatusCode::CREATED, "nothing was switched");

    // The operations console pauses checkout, and resumes it.
    let response = http.put(&url).bearer_auth(&admin).json(&pause).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(checkout(&estate, &alice).await, StatusCode::SERVICE_UNAVAILABLE);
    let state = http.get(&url).bearer_auth(&admin).send().await.unwrap().json::<serde_json::Value>().await.unwrap();
    assert_eq!(state, json!({ "enabled": false }));
    let response = http.put(&url).bearer_auth(&admin).json(&json!({ "enabled": true })).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(checkout(&estate, &alice).await, StatusCode::CREATED);
}
