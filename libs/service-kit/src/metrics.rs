//! Prometheus metrics, owned by the service instance (no global registry, so
//! parallel tests and several services in one process never share counters).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the HTTP metrics. `route` is the matched route template (never
/// the raw path, whose ids would explode cardinality and leak identifiers).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    listener: &'static str,
    method: String,
    route: String,
    status: u16,
    /// Why the request was refused (empty when it was not): rejections by reason.
    reason: &'static str,
}

/// A response extension for handlers that route by themselves (a fallback
/// handler, the gateway): the route template to label the request with.
#[derive(Clone, Debug)]
pub struct RouteLabel(pub String);

/// A response extension naming why a request was refused (`no_route`,
/// `rate_limited_ip`, `invalid_token` …): counted per reason.
#[derive(Clone, Copy, Debug)]
pub struct Rejection(pub &'static str);

/// A response extension: how long the upstream call behind this response
/// took (`estate_upstream_duration_seconds`).
#[derive(Clone, Copy, Debug)]
pub struct UpstreamTime(pub std::time::Duration);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    route: String,
}

/// HTTP request metrics of one listener.
#[derive(Clone)]
pub struct HttpMetrics {
    listener: &'static str,
    requests: Family<HttpLabels, Counter>,
    duration: Family<HttpLabels, Histogram>,
    upstream: Family<UpstreamLabels, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new("api")
    }
}

impl HttpMetrics {
    fn new(listener: &'static str) -> Self {
        Self {
            listener,
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_25, 2.0, 16))),
            upstream: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_25, 2.0, 16))),
        }
    }
}

/// Audit delivery counters, read on each scrape from the service's
/// [`estate_audit::AuditLog`] once one is attached.
#[derive(Default)]
struct AuditCollector(crate::middleware::AuditSlot);

impl std::fmt::Debug for AuditCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditCollector").field("attached", &self.0.get().is_some()).finish()
    }
}

impl prometheus_client::collector::Collector for AuditCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        let Some(log) = self.0.get() else { return Ok(()) };
        let counters = log.counters();
        for (name, help, value) in [
            ("estate_audit_records_sent", "Audit records written to the SIEM (resends included)", &counters.sent),
            ("estate_audit_records_dropped", "Audit records lost because the SIEM buffer was full", &counters.dropped),
        ] {
            let counter = ConstCounter::new(value.load(std::sync::atomic::Ordering::SeqCst));
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}

/// The registry of one service instance.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    api: HttpMetrics,
    management: HttpMetrics,
    audit: Arc<AuditCollector>,
}

impl Metrics {
    /// A registry with the HTTP metrics of both listeners registered.
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::with_labels(
            [(std::borrow::Cow::Borrowed("service"), std::borrow::Cow::Owned(service.to_owned()))].into_iter(),
        );
        let api = HttpMetrics::new("api");
        let management = HttpMetrics { listener: "management", ..api.clone() };
        registry.register("estate_http_requests", "HTTP requests handled", api.requests.clone());
        registry.register("estate_http_request_duration_seconds", "HTTP request handling time", api.duration.clone());
        registry.register(
            "estate_upstream_duration_seconds",
            "Time of the upstream call behind a forwarded request",
            api.upstream.clone(),
        );
        let audit = Arc::new(AuditCollector::default());
        registry.register_collector(Box::new(audit.clone()));
        Self { registry: Arc::new(registry), api, management, audit }
    }

    /// Export `log`'s delivery counters (`estate_audit_records_sent_total`,
    /// `estate_audit_records_dropped_total` — alert on any increase of the
    /// latter). The first log attached wins.
    pub fn observe_audit(&self, log: &estate_audit::AuditLog) {
        let _ = self.audit.0.set(log.clone());
    }

    /// The slot `observe_audit` fills: the request stack audits refusals
    /// into it ([`crate::middleware::audit_refusals`]).
    pub fn audit_slot(&self) -> crate::middleware::AuditSlot {
        self.audit.0.clone()
    }

    /// Metrics recorder for the API listener.
    pub fn api(&self) -> HttpMetrics {
        self.api.clone()
    }

    /// Metrics recorder for the management listener.
    pub fn management(&self) -> HttpMetrics {
        self.management.clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Middleware: count and time each request.
pub async fn record_http_metrics(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let matched = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map(|label| label.0.clone())
        .or(matched)
        .unwrap_or_else(|| "unmatched".to_owned());
    let reason = response.extensions().get::<Rejection>().map_or("", |r| r.0);
    if let Some(UpstreamTime(elapsed)) = response.extensions().get::<UpstreamTime>() {
        metrics.upstream.get_or_create(&UpstreamLabels { route: route.clone() }).observe(elapsed.as_secs_f64());
    }
    let labels = HttpLabels { listener: metrics.listener, method, route, status: response.status().as_u16(), reason };
    metrics.requests.get_or_create(&labels).inc();
    metrics.duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}
