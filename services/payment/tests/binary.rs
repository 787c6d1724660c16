//! The `payment` binary starts against its real dependencies, serves the
//! management listener over TLS and the API only over east-west mTLS, and
//! stops cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_testkit::{ServiceFixture, spiffe_id};

const POLICY: &str = r#"
[[allow]]
caller = "spiffe://estate.local/ns/estate/sa/order"
methods = ["POST"]
paths = ["/v1/payments", "/v1/payments/*/refund"]
"#;

#[tokio::test]
async fn binary_serves_health_and_mtls_api_and_exits_0_on_sigterm() {
    let fx = ServiceFixture::start("payments").await.unwrap();
    estate_payment::migrator().run(&fx.owner).await.unwrap();
    let mut settings = fx.platform_settings("payments", "payment", "payment-api", POLICY).unwrap();
    // The provider is not called at start.
    settings["psp"] = serde_json::json!({ "url": "https://127.0.0.1:9" });
    settings["order_spiffe_id"] = spiffe_id("order").into();
    settings["order_client_id"] = "order-svc".into();

    let order = estate_testkit::LeafSpec::spiffe(&spiffe_id("order"));
    let leaf = fx.pki.issue(&order).unwrap();
    let tls = estate_workload_identity::tls::client_config_from_pem(
        leaf.cert_pem(),
        leaf.key_pem(),
        &fx.pki.ca_pem(),
        spiffe_id("payment").parse().unwrap(),
    )
    .unwrap();
    let client = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();
    // Order is admitted to the payment routes only: an unknown path is refused by the policy.
    estate_testkit::binary::assert_service_binary_lifecycle_with(
        env!("CARGO_BIN_EXE_payment"),
        &fx.pki,
        &estate_testkit::binary::service_toml(&settings),
        &client,
        403,
    )
    .await;
}
