//! An API fuzz pass with a real external tool (issue 9): schemathesis reads
//! order's and payment's OpenAPI documents (as served) and throws generated
//! valid and invalid requests at them through the gateway with a valid user
//! token. No request may produce a server error, and every answer must fit
//! the documented schema.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_tests::{Estate, Options};
use serde_json::Value;

async fn fuzz(estate: &Estate, name: &str, document: Value, token: &str, dir: &std::path::Path) {
    let schema = dir.join(format!("{name}.json"));
    std::fs::write(&schema, document.to_string()).unwrap();
    let ca = dir.join("edge-ca.pem");
    std::fs::write(&ca, estate.pki.ca_pem()).unwrap();
    let st = estate_testkit::schemathesis().unwrap();
    let output = tokio::process::Command::new(st)
        .arg("run")
        .arg(&schema)
        .args(["--url", &estate.edge_url("")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .arg("--tls-verify")
        .arg(&ca)
        .args(["--checks", "not_a_server_error,response_schema_conformance,content_type_conformance"])
        .args(["--max-examples", "25", "--seed", "7"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        // Its cache (crash manifests) goes to the throwaway dir, not the work tree.
        .current_dir(dir)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("{report}");
    assert!(
        output.status.success(),
        "schemathesis found problems in {name}:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The public part of a document: only what the gateway routes.
fn public(mut document: Value, routed: &[&str]) -> Value {
    if let Some(paths) = document["paths"].as_object_mut() {
        paths.retain(|path, _| routed.contains(&path.as_str()));
    }
    document
}

#[tokio::test]
async fn api_fuzz_schemathesis_finds_no_server_errors_through_the_gateway() {
    let estate = Estate::start_with(Options {
        checkouts_per_minute: Some(100_000),
        gateway_ip_per_minute: Some(100_000),
        ..Options::default()
    })
    .await;
    let alice = estate.user_token("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let (http, url) = estate.order_management("/openapi.json");
    let order: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    fuzz(&estate, "order", order, &alice, dir.path()).await;
    let (http, url) = estate.payment_management("/openapi.json");
    let payment: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    fuzz(&estate, "payment", public(payment, &["/v1/payments/{id}", "/v1/webhooks"]), &alice, dir.path()).await;
}
