//! The `inventory` binary starts against its real dependencies, serves the
//! management listener over TLS and the API only over east-west mTLS, and
//! stops cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

mod common;

#[tokio::test]
async fn binary_serves_health_and_mtls_api_and_exits_0_on_sigterm() {
    let infra = common::Infra::start().await;
    let order = reqwest::Client::builder()
        .use_preconfigured_tls(common::svid_tls(&infra.fx.pki, common::ORDER))
        .build()
        .unwrap();
    // Order is admitted to the gRPC methods only: an unknown path is refused by the policy.
    estate_testkit::binary::assert_service_binary_lifecycle_with(
        env!("CARGO_BIN_EXE_inventory"),
        &infra.fx.pki,
        &estate_testkit::binary::service_toml(&infra.settings),
        &order,
        403,
    )
    .await;
}
