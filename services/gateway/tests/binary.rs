//! The `gateway` binary starts, serves TLS on both listeners and stops cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

#[tokio::test]
async fn binary_serves_health_and_tls_api_and_exits_0_on_sigterm() {
    estate_testkit::binary::assert_service_binary_lifecycle(env!("CARGO_BIN_EXE_gateway"), "").await;
}
