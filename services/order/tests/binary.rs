//! The `order` binary starts against its real dependencies, serves the
//! management listener over TLS and the API only over east-west mTLS, and
//! stops cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_testkit::{ServiceFixture, spiffe_id};

const POLICY: &str = r#"
[[allow]]
caller = "spiffe://estate.local/ns/estate/sa/gateway"
methods = ["GET", "POST"]
paths = ["/v1/orders"]
"#;

#[tokio::test]
async fn binary_serves_health_and_mtls_api_and_exits_0_on_sigterm() {
    let fx = ServiceFixture::start("orders").await.unwrap();
    estate_order::migrator().run(&fx.owner).await.unwrap();
    let mut settings = fx.platform_settings("orders", "order", "order-api", POLICY).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key_file = fx.dir.path().join("order-svc.key.pem");
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    // Upstreams and the token endpoint are not called at start.
    settings["oauth"] = serde_json::json!({
        "token_endpoint": fx.idp.token_endpoint(),
        "client_id": "order-svc",
        "key": format!("file:{}", key_file.display()),
        "kid": "order-key",
        "ca_file": settings["tokens"]["ca_file"],
    });
    settings["inventory"] = serde_json::json!({ "url": "https://127.0.0.1:9", "spiffe_id": spiffe_id("inventory") });
    settings["payment"] = serde_json::json!({ "url": "https://127.0.0.1:9", "spiffe_id": spiffe_id("payment") });

    let leaf = fx.pki.issue(&estate_testkit::LeafSpec::spiffe(&spiffe_id("gateway"))).unwrap();
    let tls = estate_workload_identity::tls::client_config_from_pem(
        leaf.cert_pem(),
        leaf.key_pem(),
        &fx.pki.ca_pem(),
        spiffe_id("order").parse().unwrap(),
    )
    .unwrap();
    let client = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();
    // The gateway is admitted to the order routes only: an unknown path is refused by the policy.
    estate_testkit::binary::assert_service_binary_lifecycle_with(
        env!("CARGO_BIN_EXE_order"),
        &fx.pki,
        &estate_testkit::binary::service_toml(&settings),
        &client,
        403,
    )
    .await;
}
