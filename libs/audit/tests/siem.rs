//! PC-10 against the real rsyslog receiver of the test kit.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::collections::HashSet;
use std::time::Duration;

use estate_audit::{Action, AuditEvent, AuditLog, Identifier, Outcome, SiemTarget, TraceId, chain};
use estate_testkit::{SiemAuth, TestSiem};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

fn log_for(siem: &TestSiem, buffer: usize) -> AuditLog {
    AuditLog::new("order", false, Some(target_for(siem, buffer))).unwrap()
}

fn target_for(siem: &TestSiem, buffer: usize) -> SiemTarget {
    SiemTarget {
        address: format!("127.0.0.1:{}", siem.port()),
        server_name: "localhost".into(),
        ca_pem: siem.ca_pem(),
        buffer,
        spool_dir: None,
        client_cert: None,
    }
}

fn id(value: &str) -> Identifier {
    Identifier::new(value).unwrap()
}

fn denied(n: u64) -> AuditEvent {
    AuditEvent::new(Action::AccessDenied, Outcome::Failure).reason("not_owner").count(n)
}

/// Received records, deduplicated by `event.id`, in arrival order.
fn unique_records(siem: &TestSiem) -> Vec<Value> {
    let mut seen = HashSet::new();
    siem.events()
        .unwrap()
        .into_iter()
        .map(|e| e.msg_json().unwrap())
        .filter(|r| seen.insert(r["event"]["id"].as_str().unwrap().to_owned()))
        .collect()
}

async fn wait_unique(siem: &TestSiem, count: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let records = unique_records(siem);
        if records.len() >= count {
            return records;
        }
        assert!(std::time::Instant::now() < deadline, "{} of {count} records arrived", records.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pc10_auth_failures_denials_and_admin_actions_arrive_as_structured_events() {
    let siem = TestSiem::start(SiemAuth::ServerOnly).await.unwrap();
    let log = log_for(&siem, 1000);
    let trace = TraceId::new("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    log.emit(
        AuditEvent::new(Action::AuthenticationFailed, Outcome::Failure)
            .reason("invalid_token")
            .client_id(id("web"))
            .source_ip("203.0.113.7".parse().unwrap())
            .trace_id(trace.clone()),
    );
    log.emit(
        AuditEvent::new(Action::AccessDenied, Outcome::Failure)
            .reason("insufficient_scope")
            .subject(id("alice"))
            .jti(id("6f1c2d4e-0000-4000-8000-000000000001"))
            .trace_id(trace),
    );
    log.emit(
        AuditEvent::new(Action::AdminAction, Outcome::Success)
            .reason("support_order_lookup")
            .subject(id("admin-1"))
            .peer(id("spiffe://estate.local/ns/estate/sa/admin-console")),
    );
    let events = siem.wait_for_events(3, WAIT).await.unwrap();
    assert!(events.iter().all(|e| e.app_name == "estate-order" && e.msg_id == "AUDIT"));
    let records: Vec<Value> = events.iter().map(|e| e.msg_json().unwrap()).collect();

    assert_eq!(records[0]["event"]["action"], "authentication_failed");
    assert_eq!(records[0]["event"]["outcome"], "failure");
    assert_eq!(records[0]["event"]["reason"], "invalid_token");
    assert_eq!(records[0]["source"]["ip"], "203.0.113.7");
    assert_eq!(records[0]["trace"]["id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(records[0]["estate"]["client_id"], "web");

    assert_eq!(records[1]["event"]["action"], "access_denied");
    assert_eq!(records[1]["user"]["id"], "alice");
    assert_eq!(records[1]["estate"]["jti"], "6f1c2d4e-0000-4000-8000-000000000001");

    assert_eq!(records[2]["event"]["action"], "admin_action");
    assert_eq!(records[2]["event"]["category"][0], "iam");
    assert_eq!(records[2]["estate"]["peer"], "spiffe://estate.local/ns/estate/sa/admin-console");
    assert!(records.iter().all(|r| r["event"]["id"].as_str().is_some() && r["@timestamp"].as_str().is_some()));

    let lines: Vec<&str> = events.iter().map(|e| e.msg.as_str()).collect();
    assert_eq!(chain::verify(lines).unwrap().records, 3);
}

#[tokio::test]
async fn pc10_a_siem_requiring_mutual_tls_gets_events_only_from_certified_clients() {
    let siem = TestSiem::start(SiemAuth::Mutual).await.unwrap();

    // Attack: a client without a certificate is cut off during the handshake;
    // what it wrote is never recorded.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(siem.pki().ca_der()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", siem.port())).await.unwrap();
    let server_name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(server_name, tcp).await.unwrap();
    let forged = "<86>1 2026-12-04T00:00:00Z host estate-order - AUDIT - {\"forged\":true}";
    let _ = tls.write_all(format!("{} {forged}", forged.len()).as_bytes()).await;
    let _ = tls.flush().await;
    let mut buf = [0u8; 64];
    // Bounded, not a sleep: the receiver must close the connection by itself.
    let read = tokio::time::timeout(WAIT, tls.read(&mut buf)).await.expect("the receiver kept an uncertified client");
    assert!(matches!(read, Ok(0) | Err(_)), "the receiver answered an uncertified client: {read:?}");

    // A sink without a certificate gets nothing through either.
    let uncertified = log_for(&siem, 100);
    uncertified.emit(denied(1));

    // Legitimate: with the client certificate the events arrive.
    let leaf = siem.client_leaf("spiffe://estate.local/ns/estate/sa/order").unwrap();
    let target = SiemTarget {
        client_cert: Some(estate_audit::sink::client_cert_from_pem(leaf.cert_pem(), leaf.key_pem()).unwrap()),
        ..target_for(&siem, 100)
    };
    let certified = AuditLog::new("order", false, Some(target)).unwrap();
    certified.emit(denied(2));
    let records = wait_unique(&siem, 1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["estate"]["count"], 2, "only the certified client's event");
    assert!(siem.events().unwrap().iter().all(|e| !e.msg.contains("forged")));
}

#[tokio::test]
async fn a_client_key_that_is_not_pem_is_refused_without_echoing_it() {
    // A PEM-shaped non-key, assembled at run time (no key marker in the source).
    const LABEL: &str = "PRIVATE KEY";
    let err = estate_audit::sink::client_cert_from_pem("", "not a key").err().unwrap().to_string();
    assert!(!err.contains("not a key"));
    let leaf = estate_testkit::TestPki::new("k").unwrap().localhost_server().unwrap();
    let err = estate_audit::sink::client_cert_from_pem(
        leaf.cert_pem(),
        &format!("-----BEGIN {LABEL}-----\nc2VjcmV0\n-----END {LABEL}-----\n"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(!err.contains("c2VjcmV0"), "{err}");
}

#[tokio::test]
async fn pc10_a_siem_outage_loses_nothing_and_keeps_the_order() {
    let mut siem = TestSiem::start(SiemAuth::ServerOnly).await.unwrap();
    let log = log_for(&siem, 1000);
    for n in 0..5 {
        log.emit(denied(n));
    }
    wait_unique(&siem, 5).await;

    siem.stop();
    for n in 5..25 {
        log.emit(denied(n));
    }
    siem.restart().await.unwrap();
    for n in 25..30 {
        log.emit(denied(n));
    }

    let records = wait_unique(&siem, 30).await;
    let counts: Vec<u64> = records.iter().map(|r| r["estate"]["count"].as_u64().unwrap()).collect();
    assert_eq!(counts, (0..30).collect::<Vec<_>>(), "all 30, exactly once after dedupe, in order");
    let lines: Vec<String> = siem.events().unwrap().into_iter().map(|e| e.msg).collect();
    assert_eq!(chain::verify(lines.iter().map(String::as_str)).unwrap().records, 30);
}

#[tokio::test]
async fn pc10_a_full_buffer_is_never_a_silent_loss() {
    let mut siem = TestSiem::start(SiemAuth::ServerOnly).await.unwrap();
    let log = log_for(&siem, 5);
    siem.stop();
    for n in 0..50 {
        log.emit(denied(n));
    }
    // Let the sender trim its buffer while the SIEM is down.
    let deadline = std::time::Instant::now() + WAIT;
    while log.counters().dropped.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing was dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    siem.restart().await.unwrap();
    log.emit(denied(50));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let records = unique_records(&siem);
        if let Some(overflow) = records.iter().find(|r| r["event"]["action"] == "audit_overflow") {
            assert!(overflow["estate"]["count"].as_u64().unwrap() >= 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no overflow event arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `audit-verify` (behind `cargo xtask audit-verify`) on a log the real SIEM
/// received: intact passes; one deleted, reordered or edited line fails.
#[tokio::test]
async fn audit_verify_detects_deleted_reordered_and_edited_lines() {
    let siem = TestSiem::start(SiemAuth::ServerOnly).await.unwrap();
    let log = log_for(&siem, 1000);
    for n in 0..6 {
        log.emit(denied(n));
    }
    wait_unique(&siem, 6).await;
    let lines: Vec<String> = siem.events().unwrap().into_iter().map(|e| e.raw.to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let run = |lines: &[String]| {
        let path = dir.path().join("received.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_audit-verify")).arg(&path).output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, out) = run(&lines);
    assert_eq!(code, Some(0), "{out}");

    let mut deleted = lines.clone();
    deleted.remove(2);
    let mut reordered = lines.clone();
    reordered.swap(2, 3);
    let mut edited = lines.clone();
    edited[2] = edited[2].replace("not_owner", "granted");
    for (name, tampered) in [("deleted", deleted), ("reordered", reordered), ("edited", edited)] {
        let (code, out) = run(&tampered);
        assert_eq!(code, Some(1), "{name}: {out}");
        assert!(out.starts_with("TAMPERED"), "{name}: {out}");
    }
}

/// PC-10: records spooled to disk during an outage survive the process dying;
/// the next process delivers them, in order, once the SIEM is back.
#[tokio::test]
async fn pc10_records_spooled_during_an_outage_survive_a_crash() {
    let mut siem = TestSiem::start(SiemAuth::ServerOnly).await.unwrap();
    let spool = tempfile::tempdir().unwrap();
    let target = SiemTarget {
        address: format!("127.0.0.1:{}", siem.port()),
        server_name: "localhost".into(),
        ca_pem: siem.ca_pem(),
        buffer: 1000,
        spool_dir: Some(spool.path().to_path_buf()),
        client_cert: None,
    };
    siem.stop();

    // The first process: its own runtime, dropped while the SIEM is down — a crash.
    let first = target.clone();
    let spool_file = spool.path().join("audit.spool");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let log = AuditLog::new("order", false, Some(first)).unwrap();
            for n in 0..10 {
                log.emit(denied(n));
            }
            let deadline = std::time::Instant::now() + WAIT;
            while std::fs::read_to_string(&spool_file).unwrap_or_default().matches(" AUDIT ").count() < 10 {
                assert!(std::time::Instant::now() < deadline, "records were not spooled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        drop(runtime);
    })
    .join()
    .unwrap();

    // The next process, same spool, SIEM back.
    siem.restart().await.unwrap();
    let log = AuditLog::new("order", false, Some(target)).unwrap();
    log.emit(denied(10));
    let records = wait_unique(&siem, 11).await;
    let counts: Vec<u64> = records.iter().map(|r| r["estate"]["count"].as_u64().unwrap()).collect();
    assert_eq!(counts, (0..11).collect::<Vec<_>>(), "the crashed process's records first, in order, none lost");
    let lines: Vec<String> = siem.events().unwrap().into_iter().map(|e| e.msg).collect();
    let verified = chain::verify(lines.iter().map(String::as_str)).unwrap();
    assert_eq!((verified.records, verified.instances), (11, 2));
}
