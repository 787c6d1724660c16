//! Structured JSON logs and W3C trace context.
//!
//! Every log line is one JSON object on stdout (what Kubernetes log
//! collectors expect). Request spans carry `request_id` and `trace_id`, so a
//! line can be joined with the same request in other services and in the SIEM.
//!
//! Spans are created with explicit, safe fields only: headers, bodies and
//! tokens are never recorded (CONVENTIONS §9).

use std::fmt;
use std::future::Future;

use http::{HeaderMap, HeaderValue};

use rand::Rng;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Install the process-wide JSON subscriber. Call once, from `main`.
pub fn init_json_logs(filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)?;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_span_events(FmtSpan::NONE)
        .flatten_event(true)
        .with_target(true)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install log subscriber: {e}"))
}

/// A W3C Trace Context `traceparent` (version 00).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    sampled: bool,
}

impl TraceParent {
    /// Start a new trace (this service is the first hop).
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        let mut trace_id: [u8; 16] = rng.random();
        let mut parent_id: [u8; 8] = rng.random();
        // All-zero ids are invalid (W3C §3.2.2.3/4); practically unreachable, but cheap to exclude.
        trace_id[0] |= 1;
        parent_id[0] |= 1;
        Self { trace_id, parent_id, sampled: true }
    }

    /// Parse a `traceparent` header; `None` for anything malformed, which the
    /// caller then replaces with a new root (never trusted half-parsed).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?;
        let parent_id: [u8; 8] = decode_hex(parent)?;
        let [flags]: [u8; 1] = decode_hex(flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, parent_id, sampled: flags & 1 == 1 })
    }

    /// The same trace, with a new span id for this hop.
    pub fn child(&self) -> Self {
        let mut parent_id: [u8; 8] = rand::rng().random();
        parent_id[0] |= 1;
        Self { parent_id, ..*self }
    }

    /// The trace id's bytes.
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The span (parent) id's bytes.
    pub fn span_id_bytes(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> String {
        encode_hex(&self.trace_id)
    }

    /// The 16-hex-digit span (parent) id.
    pub fn span_id(&self) -> String {
        encode_hex(&self.parent_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace_id(), self.span_id(), u8::from(self.sampled))
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// Run `future` with `trace` as the current trace context: outbound calls made
/// inside it (by [`outbound_trace_headers`] or a [`PropagateTraceLayer`]
/// client) continue this trace. The request middleware does this for every
/// request; code that spawns tasks wraps them itself (task-locals do not
/// follow `tokio::spawn`).
pub async fn with_trace<F: Future>(trace: TraceParent, future: F) -> F::Output {
    // Audit events emitted inside carry the same `trace.id` as the logs.
    match estate_audit::TraceId::new(&trace.trace_id()) {
        Some(id) => CURRENT.scope(trace, estate_audit::with_trace_id(id, future)).await,
        None => CURRENT.scope(trace, future).await,
    }
}

/// `tokio::spawn` that carries the current trace (and the audit trace id)
/// into the task: task-locals do not follow a spawn by themselves. Use it for
/// work that must finish even if the request that started it goes away.
pub fn spawn_traced<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match current_trace() {
        Some(trace) => tokio::spawn(with_trace(trace, future)),
        None => tokio::spawn(future),
    }
}

/// The trace context of the request this task is serving, if any.
pub fn current_trace() -> Option<TraceParent> {
    CURRENT.try_with(|t| *t).ok()
}

/// Headers for an outbound call made while serving a request: `traceparent`
/// with the current trace and a new span id; empty outside a request. For
/// reqwest: `client.get(url).headers(outbound_trace_headers())`.
pub fn outbound_trace_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = current_trace().and_then(|t| HeaderValue::from_str(&t.child().to_string()).ok()) {
        headers.insert(crate::middleware::TRACEPARENT.clone(), value);
    }
    headers
}

/// A tower layer for HTTP clients (a tonic `Channel`, a hyper client) that
/// adds the current `traceparent` to every request that does not carry one:
/// `ServiceBuilder::new().layer(PropagateTraceLayer).service(channel)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateTraceLayer;

impl<S> tower::Layer<S> for PropagateTraceLayer {
    type Service = PropagateTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PropagateTrace { inner }
    }
}

/// The service made by [`PropagateTraceLayer`].
#[derive(Debug, Clone)]
pub struct PropagateTrace<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for PropagateTrace<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The header is read here, synchronously, inside the caller's task.
        for (name, value) in &outbound_trace_headers() {
            if !request.headers().contains_key(name) {
                request.headers_mut().insert(name.clone(), value.clone());
            }
        }
        self.inner.call(request)
    }
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    // W3C requires lowercase hex of exactly the right length.
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_w3c_example() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(s).unwrap();
        assert_eq!(tp.to_string(), s);
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn child_keeps_the_trace_and_changes_the_span() {
        let root = TraceParent::new_root();
        let child = root.child();
        assert_eq!(root.trace_id(), child.trace_id());
        assert_ne!(root.span_id(), child.span_id());
    }

    #[tokio::test]
    async fn the_layer_adds_the_current_trace_to_outbound_requests_and_nothing_outside_a_request() {
        use tower::{Layer, ServiceExt};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let client = PropagateTraceLayer.layer(tower::service_fn(move |req: http::Request<()>| {
            let value = req.headers().get("traceparent").map(|v| v.to_str().unwrap_or_default().to_owned());
            record.lock().map(|mut s| s.push(value)).ok();
            async { Ok::<_, std::convert::Infallible>(()) }
        }));
        let trace = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();

        with_trace(trace, client.clone().oneshot(http::Request::new(()))).await.unwrap();
        client.clone().oneshot(http::Request::new(())).await.unwrap();
        let explicit = "00-11111111111111111111111111111111-2222222222222222-01";
        let request = http::Request::builder().header("traceparent", explicit).body(()).unwrap();
        with_trace(trace, client.oneshot(request)).await.unwrap();

        let seen = seen.lock().unwrap().clone();
        let inside = TraceParent::parse(seen[0].as_deref().unwrap()).unwrap();
        assert_eq!(inside.trace_id(), trace.trace_id(), "same trace");
        assert_ne!(inside.span_id(), trace.span_id(), "new span for the outbound hop");
        assert_eq!(seen[1], None, "no trace outside a request");
        assert_eq!(seen[2].as_deref(), Some(explicit), "an explicit header is kept");
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad:?} parsed");
        }
    }
}
