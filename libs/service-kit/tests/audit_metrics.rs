//! PC-10: an audit loss is never silent — besides the `audit_overflow` event
//! in the chain, `/metrics` counts dropped records (alert on any increase).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::time::{Duration, Instant};

use axum::Router;
use estate_audit::{Action, AuditEvent, AuditLog, Outcome, SiemTarget};
use estate_testkit::kit::TestServer;
use estate_testkit::{SiemAuth, TestSiem};

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
}

#[tokio::test]
async fn pc10_dropped_audit_records_show_on_the_metrics_endpoint() {
    let mut siem = TestSiem::start(SiemAuth::ServerOnly).await.unwrap();
    let target = SiemTarget {
        address: format!("127.0.0.1:{}", siem.port()),
        server_name: "localhost".into(),
        ca_pem: siem.ca_pem(),
        buffer: 5,
        spool_dir: None,
        client_cert: None,
    };
    let log = AuditLog::new("order", false, Some(target)).unwrap();

    let server = TestServer::serve_with("order", Router::new(), |server| server.observe_audit(&log)).await.unwrap();
    let url = format!("https://localhost:{}/metrics", server.management_addr.port());
    let http = server.pki.https_client().unwrap();
    let scrape = || async { http.get(&url).send().await.unwrap().text().await.unwrap() };

    // Delivered: counted as sent, nothing dropped.
    log.emit(AuditEvent::new(Action::AdminAction, Outcome::Success).reason("support_order_lookup"));
    siem.wait_for_events(1, Duration::from_secs(30)).await.unwrap();
    let metrics = scrape().await;
    assert!(counter(&metrics, "estate_audit_records_sent_total") >= 1);
    assert_eq!(counter(&metrics, "estate_audit_records_dropped_total"), 0);

    // An outage longer than the buffer: the drops show up.
    siem.stop();
    for n in 0..50 {
        log.emit(AuditEvent::new(Action::AccessDenied, Outcome::Failure).reason("not_owner").count(n));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dropped = counter(&scrape().await, "estate_audit_records_dropped_total");
        if dropped > 0 {
            assert!(dropped <= 50);
            break;
        }
        assert!(Instant::now() < deadline, "no drop was counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
