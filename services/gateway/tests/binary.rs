//! The `gateway` binary starts with a route table, serves TLS on both
//! listeners (an unrouted path is a problem+json 404) and stops cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_testkit::{LeafSpec, TestIdp, TestPki, spiffe_id};
use serde_json::json;

fn settings(dir: &std::path::Path, idp: &TestIdp) -> serde_json::Value {
    let workloads = TestPki::new("gateway-workloads").unwrap();
    let svid = workloads.issue(&LeafSpec::spiffe(&spiffe_id("gateway"))).unwrap().write_to(dir, "gateway").unwrap();
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, workloads.ca_pem()).unwrap();
    let idp_ca = dir.join("idp-ca.pem");
    std::fs::write(&idp_ca, idp.ca_pem()).unwrap();
    json!({
        "identity": { "bundle_file": bundle, "svid": { "source": "files", "cert_file": svid.cert, "key_file": svid.key } },
        "issuer": idp.issuer(),
        "issuer_ca_file": idp_ca,
        // The upstream is not called at start.
        "upstreams": [{ "name": "order", "url": "https://127.0.0.1:9", "spiffe_id": spiffe_id("order"), "audience": "order-api" }],
        "routes": [{ "path": "/v1/orders", "methods": ["GET"], "upstream": "order", "scope": "orders:read" }],
    })
}

#[tokio::test]
async fn binary_serves_health_and_tls_api_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start().await.unwrap();
    let settings = settings(dir.path(), &idp);
    estate_testkit::binary::assert_service_binary_lifecycle(
        env!("CARGO_BIN_EXE_gateway"),
        &estate_testkit::binary::service_toml(&settings),
    )
    .await;
}

/// OTLP export (issue 6): a request's span reaches the collector with the
/// request's own trace id and the caller's span as its parent, and a
/// stopping service still exits cleanly.
#[tokio::test]
async fn requests_are_exported_as_otlp_spans_with_the_requests_trace() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestIdp::start().await.unwrap();
    let otlp = estate_testkit::TestOtlp::start().await.unwrap();
    let otlp_ca = dir.path().join("otlp-ca.pem");
    std::fs::write(&otlp_ca, otlp.ca_pem()).unwrap();
    let telemetry =
        format!("[telemetry]\notlp_endpoint = \"{}\"\notlp_ca_file = \"{}\"", otlp.endpoint(), otlp_ca.display());
    let pki = TestPki::new("gateway-edge").unwrap();
    let service = estate_testkit::binary::ServiceProcess::spawn_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_gateway")),
        &pki,
        &estate_testkit::binary::service_toml(&settings(dir.path(), &idp)),
        &telemetry,
    )
    .await
    .unwrap();
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let response = pki
        .https_client()
        .unwrap()
        .get(format!("https://localhost:{}/v1/nowhere?secret=not-exported", service.api_addr().port()))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let spans = otlp.wait_for_trace(trace, std::time::Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!((spans[0].service.as_str(), spans[0].name.as_str()), ("gateway", "GET unrouted"));
    assert_eq!(spans[0].parent_span_id, parent);
    assert_ne!(spans[0].span_id, parent);
    assert_eq!(service.terminate().await.unwrap(), Some(0));
}
