//! A gateway in front of one mTLS upstream (with an SVID for `order`, the
//! gateway's SPIFFE ID admitted by its policy), tokens from a test IdP.
//! Shared by the gateway's tests and its benchmark.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, reason = "a test fixture")]

use std::net::SocketAddr;

use estate_service_kit::management::Readiness;
use estate_service_kit::{Server, Service};
use estate_testkit::{LeafSpec, TestIdp, TestPki, spiffe_id};
use estate_workload_identity::tls::{Svid, server_config};
use estate_workload_identity::{EastWestPolicy, RotatingIdentity};
use serde_json::{Value, json};

/// The running pair.
pub(crate) struct Pair {
    /// Token issuer.
    pub(crate) idp: TestIdp,
    /// The workloads' CA.
    pub(crate) workloads: TestPki,
    /// The edge's CA.
    pub(crate) edge: TestPki,
    /// The upstream's address.
    pub(crate) upstream: SocketAddr,
    /// The gateway's public address.
    pub(crate) gateway: SocketAddr,
    /// The gateway's SVID (the benchmark calls the upstream directly with it).
    pub(crate) gateway_svid: estate_testkit::Leaf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Start `upstream` (served for GET on `paths`) behind a gateway routing
/// those paths with `upstream_settings` merged into its upstream entry.
pub(crate) async fn start(upstream: axum::Router, paths: &[&str], upstream_settings: Value) -> Pair {
    start_with_idp(TestIdp::start().await.unwrap(), upstream, paths, upstream_settings).await
}

/// The same, with tokens from `idp`.
pub(crate) async fn start_with_idp(
    idp: TestIdp,
    upstream: axum::Router,
    paths: &[&str],
    upstream_settings: Value,
) -> Pair {
    let workloads = TestPki::new("gateway-workloads").unwrap();
    let dir = tempfile::tempdir().unwrap();

    let leaf = workloads.issue(&LeafSpec::spiffe(&spiffe_id("order"))).unwrap();
    let identity =
        RotatingIdentity::new(Svid { chain: leaf.chain().unwrap(), key: leaf.private_key().unwrap() }).unwrap();
    let tls = estate_service_kit::tls::ServerTls::new(server_config(identity, &[workloads.ca_der()]).unwrap());
    let quoted: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    let policy = EastWestPolicy::from_toml(&format!(
        "[[allow]]\ncaller = \"{}\"\nmethods = [\"GET\"]\npaths = [{}]\n",
        spiffe_id("gateway"),
        quoted.join(", ")
    ))
    .unwrap();
    let router = upstream.layer(axum::middleware::from_fn_with_state(policy, estate_workload_identity::enforce));
    let config = estate_testkit::kit::config::<estate_service_kit::NoServiceSettings>(&workloads, dir.path()).unwrap();
    let server = Server::bind_with_api_tls("order", &config, router, Readiness::default(), Some(tls)).await.unwrap();
    let upstream_addr = server.api_addr();
    tokio::spawn(server.run_until(std::future::pending()));

    let gateway_svid = workloads.issue(&LeafSpec::spiffe(&spiffe_id("gateway"))).unwrap();
    let files = gateway_svid.write_to(dir.path(), "gateway").unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, workloads.ca_pem()).unwrap();
    let idp_ca = dir.path().join("idp-ca.pem");
    std::fs::write(&idp_ca, idp.ca_pem()).unwrap();
    let mut entry = json!({
        "name": "order",
        "url": format!("https://127.0.0.1:{}", upstream_addr.port()),
        "spiffe_id": spiffe_id("order"),
        "audience": "order-api",
    });
    for (key, value) in upstream_settings.as_object().into_iter().flatten() {
        entry[key] = value.clone();
    }
    let routes: Vec<Value> = paths
        .iter()
        .map(|p| json!({ "path": p, "methods": ["GET"], "upstream": "order", "scope": "orders:read" }))
        .collect();
    let settings = json!({
        "identity": { "bundle_file": bundle, "svid": { "source": "files", "cert_file": files.cert, "key_file": files.key } },
        "issuer": idp.issuer(),
        "issuer_ca_file": idp_ca,
        "upstreams": [entry],
        "routes": routes,
    });
    let edge = TestPki::new("gateway-edge").unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let mut config =
        estate_testkit::kit::config_with(&edge, edge_dir.path(), serde_json::from_value(settings).unwrap()).unwrap();
    config.audit.stdout = false;
    let gateway = estate_gateway::Application::build(config).await.unwrap();
    let gateway_addr = gateway.api_addr();
    tokio::spawn(gateway.run_until(std::future::pending()));
    Pair { idp, workloads, edge, upstream: upstream_addr, gateway: gateway_addr, gateway_svid, _dirs: (dir, edge_dir) }
}

impl Pair {
    /// A token for the upstream's audience with `orders:read`.
    pub(crate) fn token(&self) -> String {
        self.idp.mint(&self.idp.access_claims("alice", "order-api", "orders:read")).unwrap()
    }

    /// `https://localhost:<gateway><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.gateway.port())
    }
}
