//! The testkit's infrastructure is real, isolated and cleaned up.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::sync::Arc;
use std::time::Duration;

use estate_testkit::{LeafSpec, SiemAuth, TestOpenBao, TestPki, TestPostgres, TestSiem, Validity, process_exists};
use rustls_pki_types::ServerName;
use sqlx::Connection;
use sqlx::postgres::PgSslMode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- PKI

#[test]
fn pki_issues_spiffe_leaf_with_uri_san_only() {
    let pki = TestPki::new("t").unwrap();
    let leaf = pki.issue(&LeafSpec::spiffe("spiffe://estate.local/ns/estate/sa/order")).unwrap();
    let der = leaf.chain().unwrap().remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san.value.general_names.iter().map(|n| n.to_string()).collect();
    assert_eq!(names, ["URI(spiffe://estate.local/ns/estate/sa/order)"]);
    assert!(cert.issuer().to_string().contains(estate_testkit::pki::DEV_CA_MARKER));
}

#[test]
fn pki_expired_and_not_yet_valid_variants() {
    let pki = TestPki::new("t").unwrap();
    let now = x509_parser::time::ASN1Time::now();
    for (validity, expect_valid) in
        [(Validity::Expired, false), (Validity::NotYetValid, false), (Validity::For(Duration::from_secs(60)), true)]
    {
        let leaf = pki.issue(&LeafSpec::spiffe("spiffe://estate.local/ns/x/sa/y").with_validity(validity)).unwrap();
        let der = leaf.chain().unwrap().remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        assert_eq!(cert.validity().is_valid_at(now), expect_valid, "{validity:?}");
    }
}

// ---------------------------------------------------------------- Postgres

#[tokio::test]
async fn postgres_is_real_and_answers_over_verified_tls() {
    let pg = TestPostgres::start().await.unwrap();
    let pool = pg.admin_pool().await.unwrap();
    let version: String = sqlx::query_scalar("SELECT version()").fetch_one(&pool).await.unwrap();
    assert!(version.starts_with("PostgreSQL "), "{version}");
    let ssl: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(&pool).await.unwrap();
    assert!(ssl, "the session is encrypted");
}

#[tokio::test]
async fn postgres_refuses_unencrypted_logins() {
    let pg = TestPostgres::start().await.unwrap();
    if pg.ca_pem().is_none() {
        return; // external or container server: TLS policy is not ours to assert
    }
    let plain = pg.admin_options().ssl_mode(PgSslMode::Disable);
    let error = sqlx::PgConnection::connect_with(&plain).await.unwrap_err().to_string();
    assert!(error.contains("no pg_hba.conf entry") || error.contains("no encryption"), "{error}");
}

#[tokio::test]
async fn postgres_refuses_wrong_password() {
    let pg = TestPostgres::start().await.unwrap();
    let wrong = pg.options_for("postgres", "not-the-password");
    let error = sqlx::PgConnection::connect_with(&wrong).await.unwrap_err().to_string();
    assert!(error.contains("password authentication failed"), "{error}");
}

#[tokio::test]
async fn postgres_clusters_are_isolated_and_stopped_on_drop() {
    let (a, b) = tokio::join!(TestPostgres::start(), TestPostgres::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port(), b.port());
    let Some(pid) = a.postmaster_pid() else { return };
    assert!(process_exists(pid));
    drop(a);
    assert!(!process_exists(pid), "postmaster {pid} left running");
    // The other cluster is unaffected.
    let pool = b.admin_pool().await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.unwrap();
    assert_eq!(one, 1);
}

// ---------------------------------------------------------------- OpenBao

#[tokio::test]
async fn openbao_is_real_unsealed_and_requires_a_token() {
    let bao = TestOpenBao::start().await.unwrap();
    let client = bao.http_client().unwrap();
    let health: serde_json::Value =
        client.get(format!("{}/v1/sys/health", bao.addr())).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["initialized"], true);
    assert_eq!(health["sealed"], false);

    // KV v2 at secret/ in dev mode: write then read with the root token ...
    let url = format!("{}/v1/secret/data/estate-test", bao.addr());
    let write = client
        .post(&url)
        .header("X-Vault-Token", bao.root_token())
        .json(&serde_json::json!({ "data": { "k": "v" } }))
        .send()
        .await
        .unwrap();
    assert!(write.status().is_success(), "{}", write.status());
    let read: serde_json::Value =
        client.get(&url).header("X-Vault-Token", bao.root_token()).send().await.unwrap().json().await.unwrap();
    assert_eq!(read["data"]["data"]["k"], "v");

    // ... and without a token or with a wrong one, nothing.
    assert_eq!(client.get(&url).send().await.unwrap().status(), 403);
    assert_eq!(client.get(&url).header("X-Vault-Token", "wrong").send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn openbao_refuses_clients_that_do_not_trust_its_ca() {
    let bao = TestOpenBao::start().await.unwrap();
    let other = TestPki::new("other").unwrap().https_client().unwrap();
    assert!(other.get(format!("{}/v1/sys/health", bao.addr())).send().await.is_err());
}

#[tokio::test]
async fn openbao_servers_run_in_parallel_and_stop_on_drop() {
    let (a, b) = tokio::join!(TestOpenBao::start(), TestOpenBao::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.addr(), b.addr());
    let pid = a.pid().unwrap();
    assert!(process_exists(pid));
    drop(a);
    assert!(!process_exists(pid), "bao {pid} left running");
    drop(b);
}

// ---------------------------------------------------------------- SIEM

/// Send RFC 5424 messages with RFC 5425 octet-counting framing over TLS.
async fn send_syslog(siem: &TestSiem, client: rustls::ClientConfig, messages: &[String]) -> std::io::Result<()> {
    let tcp = TcpStream::connect(("127.0.0.1", siem.port())).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let mut tls = TlsConnector::from(Arc::new(client)).connect(name, tcp).await?;
    for msg in messages {
        tls.write_all(format!("{} {msg}", msg.len()).as_bytes()).await?;
    }
    tls.flush().await?;
    // rsyslog never sends close_notify; shutting down our side is enough.
    tls.shutdown().await
}

fn syslog_line(msg_id: &str, body: &str) -> String {
    format!("<134>1 2026-12-04T10:00:00.000Z host estate-test 1 {msg_id} [estate@32473 seq=\"1\"] {body}")
}

#[tokio::test]
async fn siem_receives_structured_syslog_over_tls() {
    let siem = TestSiem::start(SiemAuth::ServerOnly).await.unwrap();
    let client = siem.pki().rustls_client_config().unwrap();
    send_syslog(&siem, client, &[syslog_line("AUTHN_FAILURE", r#"{"event":{"action":"login"}}"#)]).await.unwrap();
    let events = siem.wait_for_events(1, WAIT).await.unwrap();
    assert_eq!(events[0].app_name, "estate-test");
    assert_eq!(events[0].msg_id, "AUTHN_FAILURE");
    assert_eq!(events[0].structured_data, r#"[estate@32473 seq="1"]"#);
    assert_eq!(events[0].msg_json().unwrap()["event"]["action"], "login");
}

#[tokio::test]
async fn siem_refuses_clients_that_do_not_trust_it() {
    let siem = TestSiem::start(SiemAuth::ServerOnly).await.unwrap();
    let stranger = TestPki::new("stranger").unwrap().rustls_client_config().unwrap();
    assert!(send_syslog(&siem, stranger, &[syslog_line("X", "{}")]).await.is_err());
}

#[tokio::test]
async fn siem_mutual_tls_needs_a_client_certificate() {
    let siem = TestSiem::start(SiemAuth::Mutual).await.unwrap();

    // Without a client certificate: the message never arrives.
    let anonymous = siem.pki().rustls_client_config().unwrap();
    let _ = send_syslog(&siem, anonymous, &[syslog_line("ANON", "{}")]).await;

    // With one from the receiver's CA: it does.
    let leaf = siem.client_leaf("spiffe://estate.local/ns/estate/sa/order").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(siem.pki().ca_der()).unwrap();
    let with_cert =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(leaf.chain().unwrap(), leaf.private_key().unwrap())
            .unwrap();
    send_syslog(&siem, with_cert, &[syslog_line("MTLS", "{}")]).await.unwrap();

    let events = siem.wait_for_events(1, WAIT).await.unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.msg_id.as_str()).collect();
    assert_eq!(ids, ["MTLS"], "the anonymous message must not be accepted");
}

#[tokio::test]
async fn siem_restarts_on_the_same_port_and_stops_on_drop() {
    let mut siem = TestSiem::start(SiemAuth::ServerOnly).await.unwrap();
    let port = siem.port();
    let first_pid = siem.pid().unwrap();
    siem.stop();
    assert!(!process_exists(first_pid));
    let refused = TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "nothing listens during the outage");

    siem.restart().await.unwrap();
    assert_eq!(siem.port(), port);
    let client = siem.pki().rustls_client_config().unwrap();
    send_syslog(&siem, client, &[syslog_line("AFTER", "{}")]).await.unwrap();
    siem.wait_for_events(1, WAIT).await.unwrap();

    let pid = siem.pid().unwrap();
    drop(siem);
    assert!(!process_exists(pid), "rsyslogd {pid} left running");
}
