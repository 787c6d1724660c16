//! API7 (SSRF) through the payment service's webhooks: every internal
//! destination class is refused at registration — IP literals, a host name
//! that resolves to 127.0.0.1, IPv6 forms, other schemes — and a redirect
//! from a legitimate merchant to the metadata address is never followed;
//! the legitimate merchant gets its events without internals.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::time::Duration;

use estate_testkit::MerchantMode;
use estate_tests::Estate;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn register(estate: &Estate, token: &str, url: &str) -> (StatusCode, Value) {
    let response = estate
        .workload_client("gateway", "payment")
        .post(estate.payment_url("/v1/webhooks"))
        .bearer_auth(token)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn checkout(estate: &Estate, token: &str) -> Value {
    let (status, order) = estate
        .place_order(
            token,
            &uuid::Uuid::new_v4().to_string(),
            &json!({ "lines": [{ "sku": "TEA-01", "quantity": 1 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    order
}

#[tokio::test]
async fn api7_webhook_registration_refuses_every_internal_destination() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let port = estate.merchant.port();
    let refused = [
        (format!("https://127.0.0.1:{port}/hooks/estate"), "loopback"),
        (format!("https://localhost:{port}/hooks/estate"), "loopback"),
        ("https://10.0.0.7/hook".to_owned(), "private"),
        ("https://192.168.1.1/hook".to_owned(), "private"),
        ("https://100.64.0.1/hook".to_owned(), "shared_cgnat"),
        ("https://169.254.169.254/latest/meta-data/".to_owned(), "link_local_metadata"),
        ("https://[::1]/hook".to_owned(), "loopback"),
        ("https://[::ffff:127.0.0.1]/hook".to_owned(), "loopback"),
        ("https://[fd00::1]/hook".to_owned(), "unique_local"),
        ("https://2130706433/hook".to_owned(), "loopback"),
        (format!("http://127.0.0.2:{port}/hooks/estate"), "scheme"),
        ("file:///etc/passwd".to_owned(), "scheme"),
        (format!("https://user:pw@127.0.0.2:{port}/hooks/estate"), "url"),
    ];
    for (url, class) in refused {
        let (status, problem) = register(&estate, &alice, &url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        let code = problem["errors"][0]["code"].as_str().unwrap_or_default();
        assert_eq!(code, class, "{url}");
    }
    assert_eq!(estate.count("payments.webhooks").await, 0);

    // The legitimate merchant registers and receives events, without internals.
    let (status, hook) = register(&estate, &alice, &estate.merchant.url()).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let order = checkout(&estate, &alice).await;
    let deliveries = estate.merchant.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 1);
    let event = &deliveries[0].body;
    assert_eq!(event["event"], "payment.authorized");
    assert_eq!(event["order_id"], order["id"]);
    let text = event.to_string();
    assert!(!text.contains("psp_") && !text.contains("4242") && !text.contains("customer"), "{text}");
    assert!(deliveries[0].headers.get("authorization").is_none(), "no credentials go out with a webhook");
}

#[tokio::test]
async fn api7_a_redirect_from_the_merchant_is_never_followed() {
    let estate = Estate::start().await;
    let alice = estate.user_token("alice").await;
    let (status, _) = register(&estate, &alice, &estate.merchant.url()).await;
    assert_eq!(status, StatusCode::CREATED);
    estate.merchant.set_mode(MerchantMode::RedirectToMetadata);
    checkout(&estate, &alice).await;
    let deliveries = estate.merchant.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 1, "one attempt, the redirect not followed");
    // Bob cannot register over alice's quota or see her hooks; his own works.
    let bob = estate.user_token("bob").await;
    let (status, _) = register(&estate, &bob, &estate.merchant.url()).await;
    assert_eq!(status, StatusCode::CREATED, "per-customer registrations");
}
