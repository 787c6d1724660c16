//! A service built on the kit, over real TLS: draining on shutdown, the
//! deadline, and what the management listener shows.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use estate_service_kit::Server;
use estate_service_kit::config::{Config, NoServiceSettings};
use estate_service_kit::management::Readiness;
use estate_testkit::TestPki;
use tokio::sync::{Notify, oneshot};

struct Fixture {
    _dir: tempfile::TempDir,
    pki: TestPki,
    config: Config<NoServiceSettings>,
}

fn fixture(grace: Duration) -> Fixture {
    let pki = TestPki::new("kit").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = estate_testkit::kit::config::<NoServiceSettings>(&pki, dir.path()).unwrap();
    config.limits.shutdown_grace_ms = u64::try_from(grace.as_millis()).unwrap();
    Fixture { _dir: dir, pki, config }
}

/// A route that parks until the test releases it, telling the test when it has started.
fn parking_router(started: Arc<Notify>, release: Arc<Notify>) -> Router {
    Router::new().route(
        "/slow",
        get(move || {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                "done"
            }
        }),
    )
}

/// Start `server`; returns its API port, a trigger that begins shutdown, and
/// the task that reports whether it drained in time.
fn start(server: Server) -> (u16, oneshot::Sender<()>, tokio::task::JoinHandle<bool>) {
    let port = server.api_addr().port();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async move {
        let _ = stop_rx.await;
    }));
    (port, stop_tx, running)
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let f = fixture(Duration::from_secs(20));
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let server =
        Server::bind("kit-test", &f.config, parking_router(started.clone(), release.clone()), Readiness::default())
            .await
            .unwrap();
    let (port, stop_tx, running) = start(server);

    let client = f.pki.https_client().unwrap();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.get(format!("https://localhost:{port}/slow")).send().await }
    });
    started.notified().await;
    stop_tx.send(()).unwrap();

    // A new connection is refused once shutdown began …
    let fresh = f.pki.https_client().unwrap();
    let mut refused = false;
    for _ in 0..200 {
        if fresh.get(format!("https://localhost:{port}/slow")).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "listener still accepts after shutdown");

    // … while the request in flight completes normally.
    release.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    assert!(running.await.unwrap(), "drained within the grace period");
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let f = fixture(Duration::from_millis(200));
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let server = Server::bind("kit-test", &f.config, parking_router(started.clone(), release), Readiness::default())
        .await
        .unwrap();
    let (port, stop_tx, running) = start(server);
    let client = f.pki.https_client().unwrap();
    let _stuck = tokio::spawn(async move { client.get(format!("https://localhost:{port}/slow")).send().await });
    started.notified().await;
    stop_tx.send(()).unwrap();
    assert!(!running.await.unwrap(), "a request that never finishes must not hold shutdown forever");
}

#[tokio::test]
async fn management_listener_is_separate_from_the_api() {
    let f = fixture(Duration::from_secs(5));
    let api = Router::new().route("/v1/thing", get(|| async { "thing" }));
    let server = Server::bind("kit-test", &f.config, api, Readiness::default()).await.unwrap();
    let mgmt_port = server.management_addr().port();
    let (api_port, stop_tx, running) = start(server);
    assert_ne!(api_port, mgmt_port);
    let client = f.pki.https_client().unwrap();
    let get = |port: u16, path: &str| client.get(format!("https://localhost:{port}{path}")).send();

    assert_eq!(get(api_port, "/v1/thing").await.unwrap().status(), 200);
    // API8: health and metrics are not reachable on the API listener …
    for path in ["/health/live", "/health/ready", "/metrics"] {
        assert_eq!(get(api_port, path).await.unwrap().status(), 404, "{path} on the API port");
    }
    // … and the API is not reachable on the management listener.
    assert_eq!(get(mgmt_port, "/v1/thing").await.unwrap().status(), 404);

    let metrics = get(mgmt_port, "/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("estate_http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/thing\""), "metrics label by route template");

    stop_tx.send(()).unwrap();
    assert!(running.await.unwrap());
}
