//! The simulator as its binary: it serves the provider contract over TLS with
//! the CA it writes, and its health check says so — and fails before it does.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn serves_the_provider_contract_with_the_ca_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("psp-ca.pem");
    let port = estate_testkit::free_port().unwrap();
    let args = |command: &str| {
        let bind = format!("127.0.0.1:{port}");
        [command, "--bind", &bind, "--name", "psp.example.com", "--ca-out", ca.to_str().unwrap()].map(String::from)
    };
    let health = || Command::new(env!("CARGO_BIN_EXE_psp-simulator")).args(args("health")).output().unwrap();
    assert!(!health().status.success(), "not healthy before it runs");

    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_psp-simulator"))
        .args(args("serve"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Healthy once it listens with the CA it wrote (the compose healthcheck).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !health().status.success() {
        assert!(Instant::now() < deadline, "{}", String::from_utf8_lossy(&health().stderr));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pem = std::fs::read(&ca).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .resolve("psp.example.com", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let answer: serde_json::Value = http
        .post(format!("https://psp.example.com:{port}/v1/authorizations"))
        .json(&serde_json::json!({ "reference": "0b9e-41", "amount_cents": 900, "currency": "EUR" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "authorized");
    assert_eq!(answer["amount_cents"], 900);
    assert_eq!(answer["id"], "psp_0b9e41");
    // A client trusting anything else does not get in.
    let stranger = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            estate_testkit::TestPki::new("x").unwrap().ca_pem().as_bytes(),
        )
        .unwrap()])
        .resolve("psp.example.com", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    assert!(stranger.post(format!("https://psp.example.com:{port}/v1/authorizations")).send().await.is_err());
    server.start_kill().unwrap();
    let _ = server.wait().await;
}
