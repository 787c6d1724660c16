//! Requests per second and latency of one authenticated API call made
//! directly to an upstream (mTLS + JWT verified there) and through the
//! gateway (TLS + JWT verified at the edge, then mTLS + JWT verified at the
//! upstream), in one run. Run with `cargo xtask bench gateway`.
//!
//! Everything shares this process and the machine's cores: the figures
//! compare the two paths on the same hardware; they are not capacity claims.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, reason = "a benchmark binary")]

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::FromRef;
use estate_service_kit::management::Readiness;
use estate_service_kit::{Server, Service};
use estate_testkit::{LeafSpec, TestIdp, TestPki, spiffe_id};
use estate_tokens::scopes::OrdersRead;
use estate_tokens::{Scoped, Verifier, VerifierConfig};
use estate_workload_identity::tls::{Svid, client_config_from_pem, server_config};
use estate_workload_identity::{EastWestPolicy, RotatingIdentity};
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
    let idp = TestIdp::start().await.unwrap();
    let token = idp.mint(&idp.access_claims("alice", "order-api", "orders:read")).unwrap();
    let workloads = TestPki::new("bench-workloads").unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The upstream: mTLS with an SVID for `order`, verifying tokens itself.
    let leaf = workloads.issue(&LeafSpec::spiffe(&spiffe_id("order"))).unwrap();
    let identity =
        RotatingIdentity::new(Svid { chain: leaf.chain().unwrap(), key: leaf.private_key().unwrap() }).unwrap();
    let tls = estate_service_kit::tls::ServerTls::new(server_config(identity, &[workloads.ca_der()]).unwrap());
    let mut verifier = VerifierConfig::new(idp.issuer(), &["order-api"]);
    verifier.ca_pem = Some(idp.ca_pem());
    let policy = EastWestPolicy::from_toml(&format!(
        "[[allow]]\ncaller = \"{}\"\nmethods = [\"GET\"]\npaths = [\"/v1/ping\"]\n",
        spiffe_id("gateway")
    ))
    .unwrap();
    let router = axum::Router::new()
        .route("/v1/ping", axum::routing::get(ping))
        .with_state(UpstreamState(Verifier::new(verifier).await.unwrap()))
        .layer(axum::middleware::from_fn_with_state(policy, estate_workload_identity::enforce));
    let config = estate_testkit::kit::config::<estate_service_kit::NoServiceSettings>(&workloads, dir.path()).unwrap();
    let upstream = Server::bind_with_api_tls("order", &config, router, Readiness::default(), Some(tls)).await.unwrap();
    let upstream_port = upstream.api_addr().port();
    tokio::spawn(upstream.run_until(std::future::pending()));

    // The gateway, with an SVID for `gateway`, in front of it.
    let svid = workloads.issue(&LeafSpec::spiffe(&spiffe_id("gateway"))).unwrap();
    let files = svid.write_to(dir.path(), "gateway").unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, workloads.ca_pem()).unwrap();
    let idp_ca = dir.path().join("idp-ca.pem");
    std::fs::write(&idp_ca, idp.ca_pem()).unwrap();
    let settings = json!({
        "identity": { "bundle_file": bundle, "svid": { "source": "files", "cert_file": files.cert, "key_file": files.key } },
        "issuer": idp.issuer(),
        "issuer_ca_file": idp_ca,
        "upstreams": [{ "name": "order", "url": format!("https://127.0.0.1:{upstream_port}"), "spiffe_id": spiffe_id("order"), "audience": "order-api", "max_in_flight": 1024 }],
        "routes": [{ "path": "/v1/ping", "methods": ["GET"], "upstream": "order", "scope": "orders:read" }],
    });
    let edge = TestPki::new("bench-edge").unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let mut config =
        estate_testkit::kit::config_with(&edge, edge_dir.path(), serde_json::from_value(settings).unwrap()).unwrap();
    config.audit.stdout = false;
    let gateway = estate_gateway::Application::build(config).await.unwrap();
    let gateway_port = gateway.api_addr().port();
    tokio::spawn(gateway.run_until(std::future::pending()));

    // Clients: directly (presenting the gateway's SVID, as the gateway does) and at the edge.
    let direct_tls = client_config_from_pem(
        svid.cert_pem(),
        svid.key_pem(),
        &workloads.ca_pem(),
        spiffe_id("order").parse().unwrap(),
    )
    .unwrap();
    let direct = reqwest::Client::builder().use_preconfigured_tls(direct_tls).build().unwrap();
    let public = edge.https_client().unwrap();
    let direct_url = format!("https://127.0.0.1:{upstream_port}/v1/ping");
    let edge_url = format!("https://localhost:{gateway_port}/v1/ping");

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
