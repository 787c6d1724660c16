//! One request through two services shares one trace id in both services'
//! JSON logs: service A continues the caller's `traceparent` and passes a
//! child of it to service B, from the task's current trace (no context
//! threaded through the handler).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::{Router, extract::State};
use estate_service_kit::telemetry::outbound_trace_headers;
use estate_testkit::kit::TestServer;
use serde_json::Value;

/// Collects everything the JSON subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_through_two_services_shares_one_trace_id_in_both_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    // Service B: a plain endpoint.
    let b = TestServer::serve("service-b", Router::new().route("/b", get(|| async { "b" }))).await.unwrap();

    // Service A: calls B, propagating the trace.
    let a_router = Router::new()
        .route(
            "/a",
            get(|State((http, url)): State<(reqwest::Client, String)>| async move {
                // No explicit context passing: the handler's task carries the trace.
                http.get(url).headers(outbound_trace_headers()).send().await.unwrap().text().await.unwrap()
            }),
        )
        .with_state((b.pki.https_client().unwrap(), b.url("/b")));
    let a = TestServer::serve("service-a", a_router).await.unwrap();
    let client = a.pki.https_client().unwrap();
    let a_url = a.url("/a");

    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body = client.get(&a_url).header("traceparent", incoming).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "b");

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let handled: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "request handled")
        .collect();
    let trace_of = |path: &str| {
        handled
            .iter()
            .find(|l| l["span"]["path"] == path)
            .map(|l| {
                (l["span"]["trace_id"].as_str().unwrap().to_owned(), l["span"]["span_id"].as_str().unwrap().to_owned())
            })
            .unwrap_or_else(|| panic!("no log line for {path}: {text}"))
    };
    let (trace_a, span_a) = trace_of("/a");
    let (trace_b, span_b) = trace_of("/b");
    assert_eq!(trace_a, "4bf92f3577b34da6a3ce929d0e0e4736", "A continued the caller's trace");
    assert_eq!(trace_b, trace_a, "B continued A's trace");
    assert_ne!(span_a, span_b, "each hop has its own span");
}
