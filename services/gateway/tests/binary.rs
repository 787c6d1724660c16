//! The `gateway` binary starts with a route table, serves TLS on both
//! listeners (an unrouted path is a problem+json 404) and stops cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_testkit::{LeafSpec, TestIdp, TestPki, spiffe_id};
use serde_json::json;

#[tokio::test]
async fn binary_serves_health_and_tls_api_and_exits_0_on_sigterm() {
    let workloads = TestPki::new("gateway-workloads").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let svid =
        workloads.issue(&LeafSpec::spiffe(&spiffe_id("gateway"))).unwrap().write_to(dir.path(), "gateway").unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, workloads.ca_pem()).unwrap();
    let idp = TestIdp::start().await.unwrap();
    let idp_ca = dir.path().join("idp-ca.pem");
    std::fs::write(&idp_ca, idp.ca_pem()).unwrap();
    let settings = json!({
        "identity": { "bundle_file": bundle, "svid": { "source": "files", "cert_file": svid.cert, "key_file": svid.key } },
        "issuer": idp.issuer(),
        "issuer_ca_file": idp_ca,
        // The upstream is not called at start.
        "upstreams": [{ "name": "order", "url": "https://127.0.0.1:9", "spiffe_id": spiffe_id("order"), "audience": "order-api" }],
        "routes": [{ "path": "/v1/orders", "methods": ["GET"], "upstream": "order", "scope": "orders:read" }],
    });
    estate_testkit::binary::assert_service_binary_lifecycle(
        env!("CARGO_BIN_EXE_gateway"),
        &estate_testkit::binary::service_toml(&settings),
    )
    .await;
}
