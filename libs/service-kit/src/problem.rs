//! RFC 9457 problem details: the one error body every Estate API returns.
//!
//! A [`Problem`] carries what a client may know: a stable `type` URI, a
//! title, the status and an optional human `detail` that the code chose to
//! disclose. Internal causes are logged (with the trace id), never put here.
//!
//! [`problem_for_bare_errors`] is a middleware that turns every *bare* error
//! response — plain text or untyped (axum's own 404/405/413, tower-http's
//! timeouts, extractor rejections that leak parser messages) — into a generic
//! problem, so no text of the framework or a parser leaves a service. Typed
//! bodies a handler wrote on purpose (problem+json, RFC 6749 token errors, an
//! HTML error page) pass.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// `Content-Type` of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    #[serde(rename = "type")]
    type_uri: String,
    title: String,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// Extension member: which input fields failed which rule.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
    #[serde(skip)]
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// One invalid input field: its path (`lines[0].quantity`) and the rule it
/// broke (`range`, `length` …) — both chosen in code, never the value sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Path of the field in the request body.
    pub field: String,
    /// The rule's code.
    pub code: String,
}

/// Problem type of a path id that is not an id at all (answered without
/// looking anything up; a well-formed id that is missing or foreign is 404).
pub const INVALID_ID: &str = "https://estate.dev/problems/invalid-id";

impl Problem {
    /// 400 for a malformed path id.
    pub fn invalid_id() -> Self {
        Self::typed(StatusCode::BAD_REQUEST, INVALID_ID, "Invalid id")
            .with_detail("the id in the path is not well-formed")
    }

    /// A problem of the given status with its canonical title and
    /// `type: about:blank` (RFC 9457 §4.2.1).
    pub fn new(status: StatusCode) -> Self {
        Self {
            type_uri: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// A problem with a specific type URI and title.
    pub fn typed(status: StatusCode, type_uri: impl Into<String>, title: impl Into<String>) -> Self {
        Self { type_uri: type_uri.into(), title: title.into(), ..Self::new(status) }
    }

    /// Add a detail that is safe to show to the client.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Add the fields that failed validation.
    pub fn with_field_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// Add a response header (e.g. `WWW-Authenticate`, `Retry-After`).
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        // Serializing this struct cannot fail; fall back to a constant anyway
        // rather than panic (CONVENTIONS §11).
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        response
    }
}

/// Headers of a bare error response worth keeping when its body is replaced.
const KEPT_HEADERS: [header::HeaderName; 4] =
    [header::WWW_AUTHENTICATE, header::RETRY_AFTER, header::ALLOW, header::CONTENT_LANGUAGE];

/// Middleware: replace the body of every 4xx/5xx response that is not already
/// problem+json with a generic problem of the same status.
pub async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Bare means what frameworks emit: plain text (extractor rejections with
    // parser messages, tower-http's timeouts) or no body type at all (axum's
    // 404/405). A typed body was written on purpose by a handler —
    // problem+json, RFC 6749 §5.2 JSON at a token endpoint, an HTML error page
    // — and is kept.
    let bare = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_none_or(|mime| mime.trim().eq_ignore_ascii_case("text/plain"));
    if !bare {
        return response;
    }
    let (parts, _body) = response.into_parts();
    let mut problem = Problem::new(status);
    for name in KEPT_HEADERS {
        for value in parts.headers.get_all(&name) {
            problem = problem.with_header(name.clone(), value.clone());
        }
    }
    let mut replaced = problem.into_response();
    // Keep what other layers already attached (request id, security headers).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH && !replaced.headers().contains_key(name) {
            replaced.headers_mut().append(name.clone(), value.clone());
        }
    }
    *replaced.extensions_mut() = parts.extensions;
    replaced.map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn problem_has_rfc9457_shape() {
        let response = Problem::new(StatusCode::NOT_FOUND).with_detail("no such order").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let json = body_json(response).await;
        assert_eq!(json["type"], "about:blank");
        assert_eq!(json["title"], "Not Found");
        assert_eq!(json["status"], 404);
        assert_eq!(json["detail"], "no such order");
    }

    #[tokio::test]
    async fn bare_errors_become_problems_without_their_text() {
        let app = Router::new()
            .route("/leak", get(|| async { (StatusCode::BAD_REQUEST, "serde: missing field `price` at line 1") }))
            .layer(axum::middleware::from_fn(problem_for_bare_errors));
        let response = app.oneshot(Request::get("/leak").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let json = body_json(response).await;
        assert!(!json.to_string().contains("serde"), "{json}");
        assert_eq!(json["status"], 400);
    }

    #[tokio::test]
    async fn deliberate_json_error_bodies_are_kept() {
        let oauth_error =
            || async { (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": "invalid_scope"}))) };
        let app =
            Router::new().route("/oauth", get(oauth_error)).layer(axum::middleware::from_fn(problem_for_bare_errors));
        let response = app.oneshot(Request::get("/oauth").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body_json(response).await["error"], "invalid_scope");
    }

    #[tokio::test]
    async fn deliberate_html_error_pages_are_kept() {
        let page = || async { (StatusCode::UNAUTHORIZED, axum::response::Html("<p>Wrong username or password.</p>")) };
        let app = Router::new().route("/login", get(page)).layer(axum::middleware::from_fn(problem_for_bare_errors));
        let response = app.oneshot(Request::get("/login").body(Body::empty()).unwrap()).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("Wrong username"));
    }

    #[tokio::test]
    async fn unrouted_paths_are_problem_404() {
        let app = Router::new().layer(axum::middleware::from_fn(problem_for_bare_errors));
        let response = app.oneshot(Request::get("/nope").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
