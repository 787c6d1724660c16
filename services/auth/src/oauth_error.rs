//! Token endpoint errors as RFC 6749 §5.2 says: JSON `{"error": …}` with a
//! registered code, `Cache-Control: no-store`; `invalid_client` is 401 with a
//! `WWW-Authenticate` challenge. Descriptions are fixed strings chosen here,
//! never echoes of input or internals.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// An OAuth error code (RFC 6749 §5.2, RFC 8693 §2.2.2, RFC 8707 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthError {
    /// Malformed request: missing, repeated or unsupported parameter.
    InvalidRequest(&'static str),
    /// Client authentication failed (401).
    InvalidClient,
    /// The grant (subject token, code, refresh token) is invalid.
    InvalidGrant(&'static str),
    /// The client may not use this grant, or may not act for this subject.
    UnauthorizedClient(&'static str),
    /// Grant type not supported.
    UnsupportedGrantType,
    /// Scope unknown or beyond what is allowed.
    InvalidScope,
    /// Audience/resource not allowed.
    InvalidTarget,
    /// Too many requests (429).
    SlowDown(u64),
    /// Something broke on our side; details are logged.
    ServerError,
}

impl OAuthError {
    fn code(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidScope => "invalid_scope",
            OAuthError::InvalidTarget => "invalid_target",
            OAuthError::SlowDown(_) => "slow_down",
            OAuthError::ServerError => "server_error",
        }
    }

    fn description(self) -> Option<&'static str> {
        match self {
            OAuthError::InvalidRequest(d) | OAuthError::InvalidGrant(d) | OAuthError::UnauthorizedClient(d) => Some(d),
            _ => None,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = match self {
            OAuthError::InvalidClient => StatusCode::UNAUTHORIZED,
            OAuthError::SlowDown(_) => StatusCode::TOO_MANY_REQUESTS,
            OAuthError::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut body = json!({ "error": self.code() });
        if let Some(description) = self.description() {
            body["error_description"] = json!(description);
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        match self {
            OAuthError::InvalidClient => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"estate\""));
            }
            OAuthError::SlowDown(seconds) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            _ => {}
        }
        response
    }
}
