//! The management listener: health and metrics, on a port of its own
//! (API8: management is never reachable through the public API listener).
//!
//! - `GET /health/live`: the process is up (Kubernetes liveness).
//! - `GET /health/ready`: every registered [`ReadinessCheck`] passes and the
//!   service is not draining (Kubernetes readiness); 503 otherwise. Check
//!   names are shown, their error texts only logged.
//! - `GET /metrics`: Prometheus text format, behind a bearer token when one is
//!   configured (always, in production).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::metrics::Metrics;
use crate::problem::Problem;

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A dependency whose health decides readiness (a database, OpenBao, ...).
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Short name shown in the readiness response, e.g. `postgres`.
    fn name(&self) -> &'static str;
    /// `Ok` when the dependency is usable; the error is logged, not shown.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Readiness state: the registered checks and whether the service is draining.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Vec<Box<dyn ReadinessCheck>>>,
    draining: Arc<AtomicBool>,
}

impl Readiness {
    /// Readiness decided by these checks.
    pub fn new(checks: Vec<Box<dyn ReadinessCheck>>) -> Self {
        Self { checks: Arc::new(checks), draining: Arc::default() }
    }

    /// From now on report not-ready, so load balancers stop sending traffic.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    async fn evaluate(&self) -> (bool, Vec<serde_json::Value>) {
        let mut all_ok = !self.draining.load(Ordering::SeqCst);
        let mut results = Vec::with_capacity(self.checks.len());
        for check in self.checks.iter() {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                Ok(Ok(())) => true,
                Ok(Err(reason)) => {
                    tracing::warn!(check = check.name(), %reason, "readiness check failed");
                    false
                }
                Err(_) => {
                    tracing::warn!(check = check.name(), "readiness check timed out");
                    false
                }
            };
            all_ok &= outcome;
            results.push(json!({ "name": check.name(), "ok": outcome }));
        }
        (all_ok, results)
    }
}

#[derive(Clone)]
struct ManagementState {
    readiness: Readiness,
    metrics: Metrics,
    metrics_token: Option<Arc<SecretSlice<u8>>>,
}

/// The management router (before the common middleware stack is applied).
pub fn router(readiness: Readiness, metrics: Metrics, metrics_token: Option<SecretSlice<u8>>) -> Router {
    let state = ManagementState { readiness, metrics, metrics_token: metrics_token.map(Arc::new) };
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(serve_metrics))
        .with_state(state)
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

async fn ready(State(state): State<ManagementState>) -> Response {
    let (ok, checks) = state.readiness.evaluate().await;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "status": if ok { "ready" } else { "not_ready" }, "checks": checks });
    (status, Json(body)).into_response()
}

async fn serve_metrics(State(state): State<ManagementState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.metrics_token
        && !bearer_matches(&headers, expected.expose_secret())
    {
        return Problem::new(StatusCode::UNAUTHORIZED)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"metrics\""))
            .into_response();
    }
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

/// Constant-time comparison of the presented bearer token with the expected one.
fn bearer_matches(headers: &HeaderMap, expected: &[u8]) -> bool {
    let Some(presented) = headers.get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")) else {
        return false;
    };
    // ct_eq on slices of different lengths returns false without leaking which byte differed.
    presented.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;
    use tower::ServiceExt;

    struct Fixed(Result<(), String>);
    impl ReadinessCheck for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            let result = self.0.clone();
            Box::pin(async move { result })
        }
    }

    async fn get_status(app: Router, path: &str, auth: Option<&str>) -> StatusCode {
        let mut request = Request::get(path);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap().status()
    }

    #[tokio::test]
    async fn ready_reflects_failing_dependency() {
        let ok = router(Readiness::new(vec![Box::new(Fixed(Ok(())))]), Metrics::new("t"), None);
        assert_eq!(get_status(ok, "/health/ready", None).await, StatusCode::OK);
        let failing = router(Readiness::new(vec![Box::new(Fixed(Err("db down".into())))]), Metrics::new("t"), None);
        assert_eq!(get_status(failing, "/health/ready", None).await, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn draining_service_is_not_ready_but_live() {
        let readiness = Readiness::new(vec![]);
        let app = router(readiness.clone(), Metrics::new("t"), None);
        readiness.start_draining();
        assert_eq!(get_status(app.clone(), "/health/ready", None).await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get_status(app, "/health/live", None).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_need_the_token_when_configured() {
        let app = router(Readiness::default(), Metrics::new("t"), Some(SecretSlice::from(b"s3cret".to_vec())));
        assert_eq!(get_status(app.clone(), "/metrics", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(get_status(app.clone(), "/metrics", Some("Bearer wrong")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(get_status(app.clone(), "/metrics", Some("Bearer s3cre")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(get_status(app, "/metrics", Some("Bearer s3cret")).await, StatusCode::OK);
    }
}
