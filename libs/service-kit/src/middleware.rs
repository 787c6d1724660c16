//! The HTTP middleware stack every Estate listener runs, outermost first:
//!
//! 1. [`request_context`]: a request id (a well-formed incoming
//!    `X-Request-Id` is kept, anything else replaced) and W3C trace context
//!    (`traceparent` continued or started), both put in a tracing span, the
//!    request's extensions and the response headers;
//! 2. [`audit_refusals`]: a refused request (4xx) that no handler audited
//!    gets a generic audit event, so every refusal leaves a trace in the SIEM;
//! 3. metrics ([`crate::metrics`]);
//! 4. [`security_headers`] on every response;
//! 5. [`crate::problem::problem_for_bare_errors`]: every error is problem+json;
//! 6. a whole-request timeout (503);
//! 7. a body-size limit (413 before the body is read when `Content-Length`
//!    says it is too big, and while streaming otherwise).

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::metrics::{HttpMetrics, record_http_metrics};
use crate::problem::problem_for_bare_errors;
use crate::telemetry::TraceParent;

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `traceparent` (W3C Trace Context).
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Per-request identifiers, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id echoed in `X-Request-Id`.
    pub request_id: String,
    /// This hop's trace context (outbound calls continue it through
    /// `telemetry::outbound_trace_headers` / `PropagateTraceLayer`).
    pub trace: TraceParent,
}

/// Limits of the common stack.
#[derive(Debug, Clone, Copy)]
pub struct StackLimits {
    /// Largest request body in bytes.
    pub body_bytes: usize,
    /// Whole-request timeout.
    pub request_timeout: Duration,
}

/// Where the stack finds the service's audit log once the service attached
/// it ([`crate::Server::observe_audit`]); empty, refusals are not audited.
pub type AuditSlot = std::sync::Arc<std::sync::OnceLock<estate_audit::AuditLog>>;

/// Wrap `router` in the common stack.
pub fn apply_stack(router: Router, limits: StackLimits, metrics: HttpMetrics, audit: AuditSlot) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(from_fn(request_context))
            .layer(from_fn_with_state(audit, audit_refusals))
            .layer(from_fn_with_state(metrics, record_http_metrics))
            .layer(from_fn(security_headers))
            .layer(from_fn(problem_for_bare_errors))
            .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, limits.request_timeout))
            .layer(RequestBodyLimitLayer::new(limits.body_bytes))
            // axum's extractors have their own (2 MiB) default; align it.
            .layer(DefaultBodyLimit::max(limits.body_bytes)),
    )
}

/// A request id we accept from a client: short, and only characters that
/// cannot break a log line or a header.
fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| s.to_owned())
}

/// Middleware: request id + trace context + request span.
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let request_id =
        headers.get(&X_REQUEST_ID).and_then(acceptable_request_id).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let incoming = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    let trace = incoming.map_or_else(TraceParent::new_root, |parent| parent.child());
    let started = std::time::SystemTime::now();
    let method = request.method().as_str().to_owned();
    let matched = request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());

    // Only safe, explicit fields: never headers or bodies (CONVENTIONS §9).
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
        trace_id = %trace.trace_id(),
        span_id = %trace.span_id(),
        // The verified mTLS peer (SPIFFE ID), recorded by the east-west policy.
        peer = tracing::field::Empty,
    );
    request.extensions_mut().insert(RequestContext { request_id: request_id.clone(), trace });

    let handled = async move {
        let mut response = next.run(request).await;
        let status = response.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), "request failed");
        } else {
            tracing::info!(status = status.as_u16(), "request handled");
        }
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(X_REQUEST_ID.clone(), value);
        }
        let route = route_of(&response, matched);
        crate::otlp::record(crate::otlp::SpanRecord {
            trace_id: trace.trace_id_bytes(),
            span_id: trace.span_id_bytes(),
            parent_span_id: incoming.map(|parent| parent.span_id_bytes()),
            method,
            route,
            status: status.as_u16(),
            start: started,
            end: std::time::SystemTime::now(),
        });
        response
    };
    // The trace is also the task's current trace, so outbound clients
    // (`telemetry::outbound_trace_headers`, `PropagateTraceLayer`) continue it.
    crate::telemetry::with_trace(trace, handled.instrument(span)).await
}

/// The route a response was for: the handler's label (the gateway's route
/// table), else the router's matched template, else `unmatched` — never the raw path.
fn route_of(response: &Response, matched: Option<String>) -> String {
    response
        .extensions()
        .get::<crate::metrics::RouteLabel>()
        .map(|label| label.0.clone())
        .or(matched)
        .unwrap_or_else(|| "unmatched".to_owned())
}

/// The audit action and reason of a refusal no handler explained.
fn refusal(status: StatusCode) -> (estate_audit::Action, &'static str) {
    use estate_audit::Action;
    match status {
        StatusCode::UNAUTHORIZED => (Action::AuthenticationFailed, "unauthenticated"),
        StatusCode::FORBIDDEN => (Action::AccessDenied, "forbidden"),
        StatusCode::TOO_MANY_REQUESTS => (Action::RateLimited, "too_many_requests"),
        StatusCode::BAD_REQUEST => (Action::RequestRefused, "bad_request"),
        StatusCode::NOT_FOUND => (Action::RequestRefused, "not_found"),
        StatusCode::METHOD_NOT_ALLOWED => (Action::RequestRefused, "method_not_allowed"),
        StatusCode::CONFLICT => (Action::RequestRefused, "conflict"),
        StatusCode::PAYLOAD_TOO_LARGE => (Action::RequestRefused, "payload_too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (Action::RequestRefused, "unsupported_media_type"),
        StatusCode::UNPROCESSABLE_ENTITY => (Action::RequestRefused, "unprocessable"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (Action::RequestRefused, "header_fields_too_large"),
        _ => (Action::RequestRefused, "client_error"),
    }
}

/// Every refused request (4xx) leaves an audit event: handlers that refuse
/// emit their own, specific one (who and why); for the rest — an unknown
/// route, a malformed id, a body too big, a DTO the validator refused — this
/// layer emits `request_refused` (or `authentication_failed`,
/// `access_denied`, `rate_limited` by status) with the method, the matched
/// route template (never the raw path), the status and the client address,
/// in the request's trace.
pub async fn audit_refusals(
    axum::extract::State(audit): axum::extract::State<AuditSlot>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let matched = request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    let ip = request.extensions().get::<crate::serve::ConnectionInfo>().map(|c| c.remote_addr.ip());
    let (response, audited) = estate_audit::tracking(next.run(request)).await;
    let status = response.status();
    if status.is_client_error()
        && !audited
        && let Some(log) = audit.get()
    {
        let route = route_of(&response, matched);
        let (action, generic) = refusal(status);
        // The handler's own reason for the metrics, when it gave one.
        let reason = response.extensions().get::<crate::metrics::Rejection>().map_or(generic, |r| r.0);
        let event = estate_audit::AuditEvent::new(action, estate_audit::Outcome::Failure).reason(reason).http(
            &method,
            &route,
            status.as_u16(),
        );
        log.emit(if let Some(ip) = ip { event.source_ip(ip) } else { event });
    }
    response
}

/// The response headers every API response carries unless a handler set its
/// own (e.g. an HTML login page sets a different CSP).
fn default_security_headers() -> [(HeaderName, HeaderValue); 6] {
    [
        // Every Estate listener is TLS; browsers should never try plain HTTP.
        (header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=63072000; includeSubDomains")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        // API responses are data, not documents: nothing may load or frame them.
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'")),
        // Responses may carry personal data; no shared cache keeps them.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// Middleware: add [`default_security_headers`] where absent.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    insert_if_absent(response.headers_mut(), default_security_headers());
    response
}

fn insert_if_absent(headers: &mut HeaderMap, defaults: [(HeaderName, HeaderValue); 6]) {
    for (name, value) in defaults {
        headers.entry(name).or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    fn app() -> Router {
        app_with_audit(AuditSlot::default())
    }

    fn app_with_audit(audit: AuditSlot) -> Router {
        let router = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route("/echo", post(|body: axum::body::Bytes| async move { body.len().to_string() }))
            .route(
                "/slow",
                get(|| async {
                    std::future::pending::<()>().await;
                    "never"
                }),
            );
        apply_stack(
            router,
            StackLimits { body_bytes: 16, request_timeout: Duration::from_millis(50) },
            HttpMetrics::default(),
            audit,
        )
    }

    #[tokio::test]
    async fn responses_carry_security_headers_and_request_id() {
        let response = app().oneshot(Request::get("/ok").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        for (name, value) in default_security_headers() {
            assert_eq!(response.headers().get(&name), Some(&value), "{name}");
        }
        assert!(response.headers().contains_key(&X_REQUEST_ID));
    }

    #[tokio::test]
    async fn a_wellformed_request_id_is_kept_a_hostile_one_replaced() {
        let kept = app()
            .oneshot(Request::get("/ok").header("x-request-id", "abc-123").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(kept.headers()[&X_REQUEST_ID], "abc-123");
        let replaced = app()
            .oneshot(Request::get("/ok").header("x-request-id", "a b\"c{}").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_ne!(replaced.headers()[&X_REQUEST_ID], "a b\"c{}");
    }

    #[tokio::test]
    async fn oversize_body_is_413_problem() {
        let response = app().oneshot(Request::post("/echo").body(Body::from(vec![b'x'; 17])).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], crate::problem::PROBLEM_JSON);
        let ok = app().oneshot(Request::post("/echo").body(Body::from(vec![b'x'; 16])).unwrap()).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn slow_handler_times_out_as_503_problem() {
        let response = app().oneshot(Request::get("/slow").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], crate::problem::PROBLEM_JSON);
    }
}
