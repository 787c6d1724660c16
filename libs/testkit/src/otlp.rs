//! An OTLP/HTTP trace receiver for tests: a real HTTPS server that accepts
//! `POST /v1/traces` (protobuf `ExportTraceServiceRequest`, decoded with
//! the official OTLP messages) and keeps the spans it received. It stands in
//! for a tracing backend (a product the estate does not own).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use tokio::sync::Notify;

use crate::TestkitError;
use crate::kit::TestServer;

/// A received span.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of its resource.
    pub service: String,
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex (empty for a root).
    pub parent_span_id: String,
    /// Name.
    pub name: String,
}

#[derive(Default)]
struct Inner {
    spans: Mutex<Vec<ReceivedSpan>>,
    arrived: Notify,
}

/// The running receiver.
pub struct TestOtlp {
    server: TestServer,
    inner: Arc<Inner>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn receive(State(inner): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else { return StatusCode::BAD_REQUEST };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                });
            }
        }
    }
    if let Ok(mut spans) = inner.spans.lock() {
        spans.extend(received);
    }
    inner.arrived.notify_waiters();
    StatusCode::OK
}

impl TestOtlp {
    /// Start on a free loopback port (HTTPS, its own CA).
    pub async fn start() -> Result<Self, TestkitError> {
        let inner = Arc::new(Inner::default());
        let router = axum::Router::new().route("/v1/traces", axum::routing::post(receive)).with_state(inner.clone());
        Ok(Self { server: TestServer::serve("otlp", router).await?, inner })
    }

    /// The OTLP/HTTP base URL.
    pub fn endpoint(&self) -> String {
        self.server.url("")
    }

    /// Its CA (PEM).
    pub fn ca_pem(&self) -> String {
        self.server.pki.ca_pem()
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.inner.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Wait until a span of `trace_id` arrived (or `timeout` passed).
    pub async fn wait_for_trace(&self, trace_id: &str, timeout: std::time::Duration) -> Vec<ReceivedSpan> {
        let wait = async {
            loop {
                let notified = self.inner.arrived.notified();
                if self.spans().iter().any(|s| s.trace_id == trace_id) {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}
