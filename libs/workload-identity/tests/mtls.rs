//! PC-01 over real sockets: an mTLS listener (the service kit's, with the
//! east-west policy) refuses plain HTTP, missing, foreign and expired client
//! certificates; an allowed workload gets in; a valid but unauthorised one
//! gets 403 (gRPC: PERMISSION_DENIED); clients verify the server's SPIFFE ID.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use estate_service_kit::Server;
use estate_service_kit::config::NoServiceSettings;
use estate_service_kit::management::Readiness;
use estate_service_kit::tls::ServerTls;
use estate_testkit::{Leaf, LeafSpec, TestPki, Validity};
use estate_workload_identity::tls::{Svid, client_config, server_config};
use estate_workload_identity::{EastWestPolicy, Peer, RotatingIdentity, SpiffeId, enforce};
use reqwest::StatusCode;
use tokio::sync::oneshot;

fn id(sa: &str) -> SpiffeId {
    SpiffeId::workload("estate.local", "estate", sa).unwrap()
}

fn svid(leaf: &Leaf) -> Arc<RotatingIdentity> {
    RotatingIdentity::new(Svid { chain: leaf.chain().unwrap(), key: leaf.private_key().unwrap() }).unwrap()
}

const POLICY: &str = r#"
[[allow]]
caller = "spiffe://estate.local/ns/estate/sa/order"
methods = ["GET", "POST"]
paths = ["/v1/payments/*", "/estate.payment.v1.Payments/Authorize"]
"#;

struct Payment {
    port: u16,
    pki: TestPki,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

/// "payment": an mTLS API listener enforcing the policy.
async fn payment() -> Payment {
    let pki = TestPki::new("estate").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = estate_testkit::kit::config::<NoServiceSettings>(&pki, dir.path()).unwrap();

    // The payment SVID also names localhost so that plain webpki clients can reach
    // the handshake at all (the negative cases below); workloads check the SPIFFE ID.
    let spec = LeafSpec { dns: vec!["localhost".into()], ..LeafSpec::spiffe(id("payment").as_str()) };
    let api_tls = server_config(svid(&pki.issue(&spec).unwrap()), &[pki.ca_der()]).unwrap();
    let policy = EastWestPolicy::from_toml(POLICY).unwrap();
    let router = Router::new()
        .route("/v1/payments/{id}", get(|Peer(caller): Peer| async move { caller.to_string() }))
        .route("/estate.payment.v1.Payments/Authorize", post(|| async { "ok" }))
        .route("/estate.payment.v1.Payments/Refund", post(|| async { "ok" }))
        .layer(from_fn_with_state(policy, enforce));
    let server =
        Server::bind_with_api_tls("payment", &config, router, Readiness::default(), Some(ServerTls::new(api_tls)))
            .await
            .unwrap();
    let port = server.api_addr().port();
    let (stop, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(server.run_until(async move {
        let _ = stop_rx.await;
    }));
    Payment { port, pki, _dir: dir, _stop: stop }
}

/// A workload client presenting `leaf` and expecting to talk to `expected`.
fn workload_client(pki: &TestPki, leaf: &Leaf, expected: SpiffeId) -> reqwest::Client {
    let tls = client_config(svid(leaf), &[pki.ca_der()], expected).unwrap();
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(5)).build().unwrap()
}

fn url(payment: &Payment, path: &str) -> String {
    format!("https://localhost:{}{path}", payment.port)
}

#[tokio::test]
async fn pc01_the_allowed_workload_gets_in_and_the_handler_knows_who_it_is() {
    let payment = payment().await;
    let order = payment.pki.issue(&LeafSpec::spiffe(id("order").as_str())).unwrap();
    let client = workload_client(&payment.pki, &order, id("payment"));
    let response = client.get(url(&payment, "/v1/payments/42")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), id("order").as_str());
}

#[tokio::test]
async fn pc01_a_valid_workload_not_allowed_for_the_route_gets_403_and_headers_change_nothing() {
    let payment = payment().await;
    let inventory = payment.pki.issue(&LeafSpec::spiffe(id("inventory").as_str())).unwrap();
    let client = workload_client(&payment.pki, &inventory, id("payment"));
    let response = client
        .get(url(&payment, "/v1/payments/42"))
        .header("x-spiffe-id", id("order").as_str())
        .header("x-forwarded-client-cert", format!("URI={}", id("order")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    estate_testkit::evidence::refused("a workload not allowed for the route");
    assert_eq!(response.headers()["content-type"], "application/problem+json");

    // The allowed workload on a route it is not allowed: also refused.
    let order = payment.pki.issue(&LeafSpec::spiffe(id("order").as_str())).unwrap();
    let refund = workload_client(&payment.pki, &order, id("payment"))
        .post(url(&payment, "/estate.payment.v1.Payments/Refund"))
        .send()
        .await
        .unwrap();
    assert_eq!(refund.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn pc01_grpc_calls_from_a_disallowed_workload_get_permission_denied() {
    let payment = payment().await;
    let inventory = payment.pki.issue(&LeafSpec::spiffe(id("inventory").as_str())).unwrap();
    let response = workload_client(&payment.pki, &inventory, id("payment"))
        .post(url(&payment, "/estate.payment.v1.Payments/Authorize"))
        .header("content-type", "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "7");
    let order = payment.pki.issue(&LeafSpec::spiffe(id("order").as_str())).unwrap();
    let allowed = workload_client(&payment.pki, &order, id("payment"))
        .post(url(&payment, "/estate.payment.v1.Payments/Authorize"))
        .header("content-type", "application/grpc")
        .send()
        .await
        .unwrap();
    assert!(allowed.headers().get("grpc-status").is_none());
}

/// One HTTP/1.1 GET over a fresh TLS connection; how the handshake went and the status line.
async fn get_over(tls: Arc<rustls::ClientConfig>, port: u16) -> (Option<rustls::HandshakeKind>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    stream.write_all(b"GET /v1/payments/42 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    // Reading the whole response also takes in any session tickets the server sent.
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let kind = stream.get_ref().1.handshake_kind();
    (kind, String::from_utf8_lossy(&response).lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn pc01_east_west_sessions_are_never_resumed_so_every_connection_shows_a_current_certificate() {
    let payment = payment().await;
    let order = payment.pki.issue(&LeafSpec::spiffe(id("order").as_str())).unwrap();
    // A client that *wants* to resume (as an attacker holding a ticket from
    // before its certificate was revoked or rotated would).
    let mut tls = client_config(svid(&order), &[payment.pki.ca_der()], id("payment")).unwrap();
    tls.resumption = rustls::client::Resumption::in_memory_sessions(16);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = Arc::new(tls);

    let (first, status) = get_over(tls.clone(), payment.port).await;
    assert_eq!(first, Some(rustls::HandshakeKind::Full));
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (second, status) = get_over(tls, payment.port).await;
    assert_eq!(
        second,
        Some(rustls::HandshakeKind::Full),
        "the server resumed a session instead of checking the certificate"
    );
    assert_eq!(status, "HTTP/1.1 200 OK", "the legitimate call still works");
}

#[tokio::test]
async fn pc01_a_workload_client_never_resumes_so_every_connection_checks_the_servers_spiffe_id() {
    use tokio::io::AsyncWriteExt;
    // A server that offers resumption (rustls' default session cache).
    let pki = TestPki::new("estate").unwrap();
    let spec = LeafSpec { dns: vec!["localhost".into()], ..LeafSpec::spiffe(id("payment").as_str()) };
    let leaf = pki.issue(&spec).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain().unwrap(), leaf.private_key().unwrap())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                let _ = tls.shutdown().await;
            }
        }
    });

    let order = pki.issue(&LeafSpec::spiffe(id("order").as_str())).unwrap();
    let mut tls = client_config(svid(&order), &[pki.ca_der()], id("payment")).unwrap();
    tls.alpn_protocols.clear();
    let tls = Arc::new(tls);
    let (first, status) = get_over(tls.clone(), port).await;
    assert_eq!((first, status.as_str()), (Some(rustls::HandshakeKind::Full), "HTTP/1.1 200 OK"));
    let (second, _) = get_over(tls, port).await;
    assert_eq!(second, Some(rustls::HandshakeKind::Full), "the client resumed instead of verifying the server again");
}

#[tokio::test]
async fn pc01_plain_http_and_tls_without_a_client_certificate_are_refused() {
    let payment = payment().await;
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{}/v1/payments/42", payment.port)).send().await;
    assert!(plain.is_err(), "plain HTTP answered");
    let anonymous = payment.pki.https_client().unwrap().get(url(&payment, "/v1/payments/42")).send().await;
    assert!(anonymous.is_err(), "TLS without a client certificate was served");
}

#[tokio::test]
async fn pc01_a_certificate_from_another_ca_or_an_expired_one_is_refused() {
    let payment = payment().await;
    let rogue_ca = TestPki::new("rogue").unwrap();
    let rogue_order = rogue_ca.issue(&LeafSpec::spiffe(id("order").as_str())).unwrap();
    let rogue = workload_client(&payment.pki, &rogue_order, id("payment"));
    assert!(rogue.get(url(&payment, "/v1/payments/42")).send().await.is_err(), "foreign CA accepted");

    let expired = payment.pki.issue(&LeafSpec::spiffe(id("order").as_str()).with_validity(Validity::Expired)).unwrap();
    let stale = workload_client(&payment.pki, &expired, id("payment"));
    assert!(stale.get(url(&payment, "/v1/payments/42")).send().await.is_err(), "expired certificate accepted");
}

#[tokio::test]
async fn pc01_a_client_refuses_a_server_with_another_spiffe_id() {
    let payment = payment().await;
    let order = payment.pki.issue(&LeafSpec::spiffe(id("order").as_str())).unwrap();
    // Order meant to call inventory; the server at that address is payment.
    let confused = workload_client(&payment.pki, &order, id("inventory"));
    assert!(confused.get(url(&payment, "/v1/payments/42")).send().await.is_err());
}

/// PC-10: a refused east-west call is an audit event at the SIEM, naming the workload.
#[tokio::test]
async fn pc10_a_policy_denial_reaches_the_siem_with_the_callers_identity() {
    use estate_testkit::{SiemAuth, TestSiem};
    let siem = TestSiem::start(SiemAuth::ServerOnly).await.unwrap();
    let audit = estate_audit::AuditLog::new(
        "payment",
        false,
        Some(estate_audit::SiemTarget {
            address: format!("127.0.0.1:{}", siem.port()),
            server_name: "localhost".into(),
            ca_pem: siem.ca_pem(),
            buffer: 100,
            spool_dir: None,
            client_cert: None,
        }),
    )
    .unwrap();
    let pki = TestPki::new("estate").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = estate_testkit::kit::config::<NoServiceSettings>(&pki, dir.path()).unwrap();
    let spec = LeafSpec { dns: vec!["localhost".into()], ..LeafSpec::spiffe(id("payment").as_str()) };
    let api_tls = server_config(svid(&pki.issue(&spec).unwrap()), &[pki.ca_der()]).unwrap();
    let policy = EastWestPolicy::from_toml(POLICY).unwrap().with_audit(audit);
    let router =
        Router::new().route("/v1/payments/{id}", get(|| async { "ok" })).layer(from_fn_with_state(policy, enforce));
    let server =
        Server::bind_with_api_tls("payment", &config, router, Readiness::default(), Some(ServerTls::new(api_tls)))
            .await
            .unwrap();
    let port = server.api_addr().port();
    tokio::spawn(server.run_until(std::future::pending()));

    let inventory = pki.issue(&LeafSpec::spiffe(id("inventory").as_str())).unwrap();
    let response = workload_client(&pki, &inventory, id("payment"))
        .get(format!("https://localhost:{port}/v1/payments/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let events = siem.wait_for_events(1, Duration::from_secs(30)).await.unwrap();
    let record = events[0].msg_json().unwrap();
    assert_eq!(record["event"]["action"], "policy_denied");
    assert_eq!(record["estate"]["peer"], id("inventory").as_str());
    assert_eq!(record["event"]["reason"], "route_not_allowed_for_workload");
}
