//! Requests per second and latency of one authenticated API call made
//! directly to an upstream (mTLS + JWT verified there) and through the
//! gateway (TLS + JWT verified at the edge, then mTLS + JWT verified at the
//! upstream), in one run. Run with `cargo xtask bench gateway`.
//!
//! Everything shares this process and the machine's cores: the figures
//! compare the two paths on the same hardware; they are not capacity claims.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, reason = "a benchmark binary")]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::FromRef;
use estate_testkit::spiffe_id;
use estate_tokens::scopes::OrdersRead;
use estate_tokens::{Scoped, Verifier, VerifierConfig};
use estate_workload_identity::tls::client_config_from_pem;
use serde_json::{Value, json};

const REQUESTS: usize = 20_000;
const CONCURRENCY: usize = 32;

#[derive(Clone)]
struct UpstreamState(Verifier);

impl FromRef<UpstreamState> for Verifier {
    fn from_ref(state: &UpstreamState) -> Verifier {
        state.0.clone()
    }
}

async fn ping(Scoped(token, ..): Scoped<OrdersRead>) -> Json<Value> {
    Json(json!({ "pong": true, "sub": token.subject().as_str() }))
}

async fn load(name: &str, http: &reqwest::Client, url: &str, token: &str) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let (http, url, token) = (http.clone(), url.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for _ in (worker..REQUESTS).step_by(CONCURRENCY) {
                let sent = Instant::now();
                let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.unwrap();
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "  {name:<22} {:>7.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} requests, {CONCURRENCY} concurrent)",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies.len(),
    );
}

#[tokio::main]
async fn main() {
    // The upstream verifies tokens itself (same issuer), as every estate service does.
    let idp = estate_testkit::TestIdp::start().await.unwrap();
    let mut config = VerifierConfig::new(idp.issuer(), &["order-api"]);
    config.ca_pem = Some(idp.ca_pem());
    let verifier = Verifier::new(config).await.unwrap();
    let router = axum::Router::new().route("/v1/ping", axum::routing::get(ping)).with_state(UpstreamState(verifier));
    let pair = common::start_with_idp(idp, router, &["/v1/ping"], json!({ "max_in_flight": 1024 })).await;
    let token = pair.token();
    let direct_tls = client_config_from_pem(
        pair.gateway_svid.cert_pem(),
        pair.gateway_svid.key_pem(),
        &pair.workloads.ca_pem(),
        spiffe_id("order").parse().unwrap(),
    )
    .unwrap();
    let direct = reqwest::Client::builder().use_preconfigured_tls(direct_tls).build().unwrap();
    let public = pair.edge.https_client().unwrap();
    let direct_url = format!("https://127.0.0.1:{}/v1/ping", pair.upstream.port());
    let edge_url = pair.url("/v1/ping");

    println!("gateway benchmark: GET with a JWT (ES256, verified-token cache on), {REQUESTS} requests per path");
    // Warm both paths (connections, JWKS, caches), then measure.
    for (http, url) in [(&direct, &direct_url), (&public, &edge_url)] {
        for _ in 0..200 {
            http.get(url.as_str()).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
        }
    }
    load("direct to upstream", &direct, &direct_url, &token).await;
    load("through the gateway", &public, &edge_url, &token).await;
}
