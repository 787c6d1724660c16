//! OTLP/HTTP export of request spans, when `[telemetry] otlp_endpoint` is
//! set (nothing is exported, and nothing is started, otherwise).
//!
//! Every request a listener serves becomes one server span whose trace id,
//! span id and parent span id are exactly those of the request's
//! `traceparent` (the ids in the JSON logs and the audit events), named
//! `METHOD route-template`, with the HTTP method, route template, status and
//! the service name — never the raw path, headers or bodies. Spans go
//! through a bounded queue (a full queue drops and counts, it never blocks a
//! request) to a background task that posts batches as protobuf
//! (`ExportTraceServiceRequest`, the official OTLP messages) to
//! `<endpoint>/v1/traces` over HTTPS.

use std::path::PathBuf;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// `[telemetry]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL (`https://collector:4318`); absent: no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Extra CA (PEM file) for the collector's TLS.
    #[serde(default)]
    pub otlp_ca_file: Option<PathBuf>,
}

/// One finished request span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// This hop's span id.
    pub span_id: [u8; 8],
    /// The caller's span id, when the request carried a `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Response status.
    pub status: u16,
    /// Start and end.
    pub start: SystemTime,
    /// End.
    pub end: SystemTime,
}

const QUEUE: usize = 4096;
const BATCH: usize = 512;

static SINK: RwLock<Option<mpsc::Sender<SpanRecord>>> = RwLock::new(None);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Queue a finished span (no-op unless export is on).
pub fn record(span: SpanRecord) {
    if let Ok(sink) = SINK.read()
        && let Some(sink) = sink.as_ref()
        && sink.try_send(span).is_err()
    {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Spans dropped because the queue was full.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Start exporting for `service` as configured (inside a tokio runtime).
/// Returns the background task's handle (it ends when [`shutdown`] closes
/// the queue and the last batch is sent), or `None` when export is off.
pub fn start(service: &str, config: &TelemetryConfig) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(endpoint) = &config.otlp_endpoint else { return Ok(None) };
    if !endpoint.starts_with("https://") {
        anyhow::bail!("telemetry.otlp_endpoint must be https");
    }
    let mut http = reqwest::Client::builder()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if let Some(file) = &config.otlp_ca_file {
        http = http.tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(file)?)?]);
    }
    let http = http.build()?;
    let (tx, mut rx) = mpsc::channel(QUEUE);
    match SINK.write() {
        Ok(mut sink) if sink.is_none() => *sink = Some(tx),
        _ => anyhow::bail!("OTLP export started twice"),
    }
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let service = service.to_owned();
    Ok(Some(tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let closed = tokio::select! {
                received = rx.recv() => match received {
                    Some(span) => { batch.push(span); false }
                    None => true,
                },
                _ = tick.tick() => false,
            };
            if !batch.is_empty() && (closed || batch.len() >= BATCH || rx.is_empty()) {
                let body = encode(&service, &std::mem::take(&mut batch));
                match http.post(&url).header("content-type", "application/x-protobuf").body(body).send().await {
                    Ok(response) if response.status().is_success() => {}
                    Ok(response) => tracing::warn!(status = response.status().as_u16(), "OTLP export refused"),
                    Err(error) => tracing::warn!(error = %error.without_url(), "OTLP export failed"),
                }
            }
            if closed {
                return;
            }
        }
    })))
}

/// Stop accepting spans: the exporter sends what it holds and ends (await
/// the handle [`start`] returned).
pub fn shutdown() {
    if let Ok(mut sink) = SINK.write() {
        sink.take();
    }
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The OTLP request for `spans` of `service`.
pub fn encode(service: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let spans = spans
        .iter()
        .map(|s| Span {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            name: format!("{} {}", s.method, s.route),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: nanos(s.start),
            end_time_unix_nano: nanos(s.end),
            attributes: vec![
                attribute("http.request.method", any_value::Value::StringValue(s.method.clone())),
                attribute("http.route", any_value::Value::StringValue(s.route.clone())),
                attribute("http.response.status_code", any_value::Value::IntValue(i64::from(s.status))),
            ],
            status: Some(Status {
                code: if s.status >= 500 { status::StatusCode::Error } else { status::StatusCode::Unset } as i32,
                message: String::new(),
            }),
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", any_value::Value::StringValue(service.to_owned()))],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "estate-service-kit".into(),
                    ..InstrumentationScope::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}
