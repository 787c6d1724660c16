//! Certificates rotate under traffic with zero failed requests, and renew
//! themselves from OpenBao's PKI engine.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Extension;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use estate_secrets::OpenBao;
use estate_secrets::bootstrap::spiffe_id;
use estate_secrets::testing;
use estate_service_kit::Server;
use estate_service_kit::config::NoServiceSettings;
use estate_service_kit::management::Readiness;
use estate_service_kit::serve::ConnectionInfo;
use estate_service_kit::tls::ServerTls;
use estate_testkit::{LeafSpec, TestOpenBao, TestPki};
use estate_workload_identity::tls::{Svid, client_config, server_config};
use estate_workload_identity::{EastWestPolicy, RotatingIdentity, SpiffeId, enforce, spawn_openbao_renewal};
use rustls_pki_types::pem::PemObject;
use tokio::sync::oneshot;

fn id(sa: &str) -> SpiffeId {
    SpiffeId::workload("estate.local", "estate", sa).unwrap()
}

fn fresh_svid(pki: &TestPki, sa: &str) -> Svid {
    let leaf = pki.issue(&LeafSpec::spiffe(id(sa).as_str())).unwrap();
    Svid { chain: leaf.chain().unwrap(), key: leaf.private_key().unwrap() }
}

const POLICY: &str = r#"
[[allow]]
caller = "spiffe://estate.local/ns/estate/sa/order"
methods = ["GET"]
paths = ["/v1/payments/*"]
"#;

#[tokio::test]
async fn certificates_rotate_on_both_sides_under_traffic_with_zero_failed_requests() {
    let pki = TestPki::new("estate").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = estate_testkit::kit::config::<NoServiceSettings>(&pki, dir.path()).unwrap();

    let server_identity = RotatingIdentity::new(fresh_svid(&pki, "payment")).unwrap();
    let client_identity = RotatingIdentity::new(fresh_svid(&pki, "order")).unwrap();
    let api_tls = ServerTls::new(server_config(server_identity.clone(), &[pki.ca_der()]).unwrap());
    // The handler reports which client certificate it saw (a digest of the leaf).
    let router = Router::new()
        .route(
            "/v1/payments/{id}",
            get(|Extension(info): Extension<ConnectionInfo>| async move {
                let leaf = info.peer_certificates.first().map(|c| c.as_ref().to_vec()).unwrap_or_default();
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &leaf);
                digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
            }),
        )
        .layer(from_fn_with_state(EastWestPolicy::from_toml(POLICY).unwrap(), enforce));
    let server =
        Server::bind_with_api_tls("payment", &config, router, Readiness::default(), Some(api_tls)).await.unwrap();
    let url = format!("https://localhost:{}/v1/payments/1", server.api_addr().port());
    let (stop, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(server.run_until(async move {
        let _ = stop_rx.await;
    }));

    let tls = client_config(client_identity.clone(), &[pki.ca_der()], id("payment")).unwrap();
    // No connection reuse and no session resumption (a resumed TLS 1.3 session
    // keeps the client authentication of the original handshake): every request
    // is a full handshake with the certificates of that moment.
    let mut full_handshakes = tls.clone();
    full_handshakes.resumption = rustls::client::Resumption::disabled();
    let fresh =
        reqwest::Client::builder().use_preconfigured_tls(full_handshakes).pool_max_idle_per_host(0).build().unwrap();
    // Kept-alive connections established before a rotation must keep working too.
    let pooled = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();

    const STREAMS: usize = 4;
    const PER_STREAM: usize = 150;
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut streams = Vec::new();
    for stream in 0..STREAMS {
        let client = if stream % 2 == 0 { fresh.clone() } else { pooled.clone() };
        let (url, failures, sent, seen) = (url.clone(), failures.clone(), sent.clone(), seen.clone());
        streams.push(tokio::spawn(async move {
            for _ in 0..PER_STREAM {
                match client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => {
                        let body = response.text().await.unwrap();
                        seen.lock().unwrap().insert(body);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Rotate both sides while the streams run.
    let mut rotations = 0;
    while sent.load(Ordering::SeqCst) < STREAMS * PER_STREAM * 9 / 10 {
        let target = (rotations + 1) * STREAMS * PER_STREAM / 6;
        while sent.load(Ordering::SeqCst) < target {
            tokio::task::yield_now().await;
        }
        server_identity.rotate(fresh_svid(&pki, "payment")).unwrap();
        client_identity.rotate(fresh_svid(&pki, "order")).unwrap();
        rotations += 1;
    }
    for stream in streams {
        stream.await.unwrap();
    }
    let total = sent.load(Ordering::SeqCst);
    let distinct = seen.lock().unwrap().len();
    println!("rotation under traffic: {total} requests, {rotations} rotations, {distinct} client certificates seen");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "failed requests during rotation");
    assert!(rotations >= 4);
    assert!(distinct > rotations / 2, "the server saw the rotated client certificates ({distinct})");
    drop(stop);
}

#[tokio::test]
async fn a_workload_certificate_renews_itself_from_openbao() {
    let bao = TestOpenBao::start().await.unwrap();
    let admin = testing::admin(&bao).unwrap();
    let credentials = testing::bootstrap(&admin, &["order"]).await.unwrap();
    let order = testing::login(&bao, &credentials[0]).await.unwrap();
    let first =
        order.issue_spiffe_certificate("pki", "order", &spiffe_id("order"), Duration::from_secs(3)).await.unwrap();
    let identity = RotatingIdentity::new(estate_workload_identity::svid_from_pem(&first).unwrap()).unwrap();
    let initial = identity.leaf().unwrap();

    spawn_openbao_renewal(&identity, order, "pki".into(), "order".into(), id("order"), Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut renewals = HashSet::new();
    while renewals.len() < 2 {
        assert!(Instant::now() < deadline, "no renewal seen");
        let leaf = identity.leaf().unwrap();
        if leaf != initial {
            renewals.insert(leaf.as_ref().to_vec());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let current = identity.leaf().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(current.as_ref()).unwrap();
    assert!(cert.validity().is_valid(), "the current certificate is valid");
    assert_eq!(SpiffeId::from_certificate(&identity.leaf().unwrap()).unwrap(), id("order"));
}

/// The issue's acceptance in one run: a steady stream of mTLS requests whose
/// handler queries the database, while the server's and the client's
/// certificates renew from OpenBao's PKI and the database login rotates
/// through OpenBao's database engine. Zero failed requests.
#[tokio::test]
async fn certificates_and_database_credentials_rotate_under_traffic_with_zero_failed_requests() {
    use estate_testkit::TestPostgres;

    let (bao, pg) = tokio::join!(TestOpenBao::start(), TestPostgres::start());
    let (bao, pg) = (bao.unwrap(), pg.unwrap());
    let admin = testing::admin(&bao).unwrap();
    let credentials = testing::bootstrap(&admin, &["payment", "order"]).await.unwrap();
    let payment = testing::login(&bao, &credentials[0]).await.unwrap();
    let order = testing::login(&bao, &credentials[1]).await.unwrap();
    // Postgres: payments schema; OpenBao leases 6 s logins in payments_app.
    pg.create_service_roles("payments").await.unwrap();
    testing::database(&admin, &bao, &pg, &[("payment", "payments")], Duration::from_secs(6)).await.unwrap();
    let base = pg.admin_options().username("nobody").password("nothing");
    let pool =
        estate_secrets::database::leased_pool(payment.clone(), "database", "payment-app", base, 4, None).await.unwrap();

    // Both identities from OpenBao, 4 s certificates renewing at two thirds.
    let ttl = Duration::from_secs(4);
    let issue = |client: &OpenBao, sa: &'static str| {
        let client = client.clone();
        async move { client.issue_spiffe_certificate("pki", sa, &spiffe_id(sa), ttl).await.unwrap() }
    };
    let first_server = issue(&payment, "payment").await;
    let bundle = vec![rustls_pki_types::CertificateDer::from_pem_slice(first_server.issuing_ca.as_bytes()).unwrap()];
    let server_identity =
        RotatingIdentity::new(estate_workload_identity::svid_from_pem(&first_server).unwrap()).unwrap();
    let client_identity =
        RotatingIdentity::new(estate_workload_identity::svid_from_pem(&issue(&order, "order").await).unwrap()).unwrap();
    spawn_openbao_renewal(&server_identity, payment.clone(), "pki".into(), "payment".into(), id("payment"), ttl);
    spawn_openbao_renewal(&client_identity, order.clone(), "pki".into(), "order".into(), id("order"), ttl);

    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("management").unwrap();
    let config = estate_testkit::kit::config::<NoServiceSettings>(&pki, dir.path()).unwrap();
    let api_tls = ServerTls::new(server_config(server_identity.clone(), &bundle).unwrap());
    let router = Router::new()
        .route(
            "/v1/payments/{id}",
            get(move || {
                let pool = pool.clone();
                async move {
                    sqlx::query_scalar::<_, String>("SELECT current_user::text")
                        .fetch_one(&pool)
                        .await
                        .map_err(|_| http::StatusCode::SERVICE_UNAVAILABLE)
                }
            }),
        )
        .layer(from_fn_with_state(EastWestPolicy::from_toml(POLICY).unwrap(), enforce));
    let server =
        Server::bind_with_api_tls("payment", &config, router, Readiness::default(), Some(api_tls)).await.unwrap();
    let url = format!("https://localhost:{}/v1/payments/1", server.api_addr().port());
    let (stop, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(server.run_until(async move {
        let _ = stop_rx.await;
    }));

    let mut tls = client_config(client_identity.clone(), &bundle, id("payment")).unwrap();
    tls.resumption = rustls::client::Resumption::disabled();
    let client = reqwest::Client::builder().use_preconfigured_tls(tls).pool_max_idle_per_host(0).build().unwrap();

    let (mut requests, mut failures) = (0usize, 0usize);
    let (mut logins, mut server_certs, mut client_certs) = (HashSet::new(), HashSet::new(), HashSet::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    while logins.len() < 3 || server_certs.len() < 3 || client_certs.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "rotations not seen: {} logins, {} / {} certificates",
            logins.len(),
            server_certs.len(),
            client_certs.len()
        );
        server_certs.insert(server_identity.leaf().unwrap().as_ref().to_vec());
        client_certs.insert(client_identity.leaf().unwrap().as_ref().to_vec());
        match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                logins.insert(response.text().await.unwrap());
            }
            _ => failures += 1,
        }
        requests += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "rotation under traffic with OpenBao: {requests} requests, {} database logins, {} server and {} client certificates",
        logins.len(),
        server_certs.len(),
        client_certs.len()
    );
    assert_eq!(failures, 0, "failed requests during rotation");
    drop(stop);
}

/// Mounted certificate files rewritten by an agent are picked up; a
/// mismatched pair is ignored until it is complete.
#[tokio::test]
async fn a_workload_certificate_follows_rewritten_files() {
    use std::os::unix::fs::PermissionsExt;
    let pki = TestPki::new("estate").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let write = |leaf: &estate_testkit::Leaf, key_pem: &str| {
        std::fs::write(&cert, leaf.cert_pem()).unwrap();
        let _ = std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600));
        std::fs::write(&key, key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    };
    let first = pki.issue(&LeafSpec::spiffe(id("order").as_str())).unwrap();
    write(&first, first.key_pem());
    let identity = RotatingIdentity::new(estate_workload_identity::read_svid_files(&cert, &key).unwrap()).unwrap();
    estate_workload_identity::spawn_file_reload(&identity, cert.clone(), key.clone(), Duration::from_millis(50));
    let initial = identity.leaf().unwrap();

    // A mismatched pair (new certificate, old key) is not taken.
    let second = pki.issue(&LeafSpec::spiffe(id("order").as_str())).unwrap();
    write(&second, first.key_pem());
    // Proving a non-event needs a window: six poll intervals, so the reloader
    // has looked at the changed files at least five times.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(identity.leaf().unwrap(), initial, "a mismatched pair was swapped in");

    // The complete pair is.
    write(&second, second.key_pem());
    let deadline = Instant::now() + Duration::from_secs(10);
    while identity.leaf().unwrap() == initial {
        assert!(Instant::now() < deadline, "the rewritten files were not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(identity.leaf().unwrap(), second.chain().unwrap()[0]);
}
