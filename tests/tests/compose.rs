//! `infra/compose/compose.yaml`, brought up for real without a container
//! runtime (decision 0026, `estate_tests::rehearsal`): every compose service
//! in namespaces of its own, with compose's volumes, networks, commands and
//! read-only roots; the test talks to the estate through the two published
//! ports only, as a browser on the Docker host would.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{Duration, Instant};

use estate_testkit::login::Login;
use estate_tests::observed;
use estate_tests::rehearsal::Compose;
use reqwest::StatusCode;
use serde_json::Value;

/// Up, with a client of the published ports (the estate CA from the `certs`
/// volume; auth.estate.local and api.estate.local resolve to the ports).
async fn up() -> (Compose, reqwest::Client) {
    let compose_file = estate_testkit::workspace_root().join("infra/compose/compose.yaml");
    let compose = Compose::up(&compose_file).await.unwrap_or_else(|error| panic!("{error}"));
    let ca = std::fs::read(compose.volume("certs").join("ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .resolve("auth.estate.local", compose.published(443).expect("auth is published on 443"))
        .resolve("api.estate.local", compose.published(8443).expect("the gateway is published on 8443"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    (compose, client)
}

/// The JSON at `url` once it answers 200 (the services start after compose
/// says they did); fails after 60 s with what the services logged.
async fn when_serving(compose: &Compose, client: &reqwest::Client, url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get(url).send().await {
            Ok(response) if response.status() == StatusCode::OK => return response.json().await.unwrap(),
            outcome if Instant::now() > deadline => panic!(
                "{url}: {outcome:?}\nevents: {:?}\nauth: {}\ngateway: {}",
                compose.events(),
                compose.log("auth"),
                compose.log("gateway")
            ),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pc06_compose_up_serves_the_estate_on_the_published_ports_only() {
    let (mut compose, client) = up().await;
    let discovery = when_serving(&compose, &client, "https://auth.estate.local/.well-known/openid-configuration").await;
    assert_eq!(discovery["issuer"], "https://auth.estate.local");
    // `auth-keys` put the signing keys in OpenBao.
    let jwks = when_serving(&compose, &client, "https://auth.estate.local/jwks").await;
    assert!(!jwks["keys"].as_array().unwrap().is_empty(), "{jwks}");
    // Only auth (443) and the gateway (8443) are published.
    assert_eq!(compose.published_ports(), vec![443, 8443]);

    // Through the gateway: no token, no orders.
    let response = client.get("https://api.estate.local/v1/orders").send().await.unwrap();
    observed("compose: GET /v1/orders without a token", response.status());
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["content-type"], "application/problem+json");

    // The demo user `demo-users` imported, with the password `demo-data`
    // generated: a login through the real login page, then her orders through
    // the gateway (mTLS to order, order's leased database login, RLS).
    let password = std::fs::read_to_string(compose.volume("secrets").join("demo-users/alice")).unwrap();
    let login = estate_testkit::login::Login {
        base_url: "https://auth.estate.local",
        client_id: "web-app",
        redirect_uri: "https://app.estate.local/callback",
        scope: "openid orders:read orders:write payments:authorize",
        username: "alice",
        password: password.trim(),
    };
    let tokens = estate_testkit::login::authorization_code_with(&login, &client).await.unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    let response = client.get("https://api.estate.local/v1/orders").bearer_auth(token).send().await.unwrap();
    observed("compose: GET /v1/orders as alice", response.status());
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.text().await);

    // A checkout: every east-west hop of the compose network — gateway →
    // order (mTLS, token relay), order → inventory (client credentials, gRPC
    // over mTLS), order → payment (token exchange), payment → the PSP
    // simulator on the egress network — with the demo catalogue's prices.
    let response = client
        .post("https://api.estate.local/v1/orders")
        .bearer_auth(token)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&serde_json::json!({ "lines": [{ "sku": "TEA-01", "quantity": 2 }] }))
        .send()
        .await
        .unwrap();
    observed("compose: POST /v1/orders as alice", response.status());
    let status = response.status();
    let order: Value = response.json().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{order}\norder: {}\npayment: {}",
        compose.log("order"),
        compose.log("payment")
    );
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(order["total_cents"], 900, "2 × 4.50 EUR from the demo catalogue: {order}");
    let wrong = Login { password: "not-alices-password", ..login };
    assert!(estate_testkit::login::authorization_code_with(&wrong, &client).await.is_err());

    // The SIEM container received the audit events over TLS — the one-shots'
    // (signing keys, demo users) as well as the services': alice's login and
    // the refused call.
    let siem = compose.volume("siem-events").join("events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = std::fs::read_to_string(&siem).unwrap_or_default();
        let actions = ["key_rotated", "user_created", "login_succeeded", "gateway_token_missing", "wrong_credentials"];
        if actions.iter().all(|action| events.contains(&format!("\\\"{action}\\\""))) {
            break;
        }
        assert!(Instant::now() < deadline, "SIEM events so far:\n{events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let events = compose.down();
    assert!(!events.iter().any(|e| e.starts_with("exited") && !e.ends_with(" 0")), "{events:?}");
}
