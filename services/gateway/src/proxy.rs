//! The forwarding handler: everything the gateway does to a request, in the
//! order it does it — cheapest refusal first.
//!
//! 1. route table lookup (404; 405 with `Allow` for a routed path — within
//!    the client IP's budget of the default rate class, so route probing is
//!    rate-limited too);
//! 2. CORS preflight for configured origins only;
//! 3. rate limit per client IP (429 + `Retry-After`, audited);
//! 4. body size from `Content-Length` (413 before reading), then while reading;
//! 5. bearer token verified for the upstream's audience (401), route scope (403);
//! 6. rate limits per subject and per OAuth client;
//! 7. forward over mTLS with an allowlist of request headers (client-sent
//!    identity and internal headers never pass), the token unchanged, a
//!    fresh `traceparent` and the request id; bounded in-flight calls (503)
//!    and time (504);
//! 8. answer with the upstream's status, body and an allowlist of headers,
//!    plus CORS for an allowed origin.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use estate_audit::{Action, AuditEvent, Outcome};
use estate_service_kit::Problem;
use estate_service_kit::metrics::{Rejection, RouteLabel, UpstreamTime};
use estate_service_kit::middleware::{RequestContext, X_REQUEST_ID};
use estate_service_kit::serve::ConnectionInfo;
use estate_tokens::{AuthRejection, TokenError, VerifiedToken, Verifier, bearer_token};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use tokio::sync::Semaphore;

use crate::limits::{Dimension, Limits};
use crate::routes::{Lookup, RouteTable};

/// One upstream service.
pub struct Upstream {
    /// Name (logs).
    pub name: String,
    /// Base URL.
    pub base: String,
    /// mTLS client presenting the gateway's SVID, accepting only this upstream's.
    pub http: reqwest::Client,
    /// Verifies tokens for this upstream's audience.
    pub verifier: Verifier,
    /// Bounded in-flight calls.
    pub permits: Arc<Semaphore>,
    /// Per-call time limit.
    pub timeout: Duration,
}

/// The gateway's state.
pub struct Gateway {
    /// Routes.
    pub table: RouteTable,
    /// Upstreams, by index.
    pub upstreams: Vec<Upstream>,
    /// Rate limits.
    pub limits: Limits,
    /// Allowed CORS origins (exact match).
    pub cors_origins: Vec<String>,
    /// Audit log.
    pub audit: estate_audit::AuditLog,
}

/// Request headers forwarded upstream; everything else is dropped —
/// including `X-User-Id`, `X-Forwarded-*`, `Forwarded`, `X-Internal-*`,
/// `X-Spiffe-Id`, cookies and hop-by-hop headers.
const FORWARDED_REQUEST_HEADERS: [HeaderName; 8] = [
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::USER_AGENT,
    HeaderName::from_static("idempotency-key"),
];

/// Response headers passed back; the gateway's own stack adds the security headers.
const FORWARDED_RESPONSE_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::ETAG,
    header::LOCATION,
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
    header::ALLOW,
];

/// The request headers that go upstream.
pub fn upstream_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in &FORWARDED_REQUEST_HEADERS {
        for value in incoming.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

fn problem(status: StatusCode) -> Response {
    Problem::new(status).into_response()
}

fn too_many(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Problem::new(StatusCode::TOO_MANY_REQUESTS)
        .with_header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
        .into_response()
}

impl Gateway {
    fn audit_limit(&self, dimension: Dimension, ip: Option<std::net::IpAddr>, token: Option<&VerifiedToken>) {
        let reason = match dimension {
            Dimension::Ip => "gateway_limit_ip",
            Dimension::Subject => "gateway_limit_subject",
            Dimension::Client => "gateway_limit_client",
        };
        let mut event = AuditEvent::new(Action::RateLimited, Outcome::Failure).reason(reason).source(ip);
        if let Some(token) = token {
            event = event.caller(
                token.subject().as_str(),
                token.client_id().map(|c| c.as_str()),
                token.jti().map(|j| j.as_str()),
            );
        }
        self.audit.emit(event);
    }

    fn audit_auth(&self, action: Action, reason: &'static str, ip: Option<std::net::IpAddr>) {
        self.audit.emit(AuditEvent::new(action, Outcome::Failure).reason(reason).source(ip));
    }

    fn cors_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.cors_origins.iter().any(|allowed| allowed == text).then(|| origin.clone())
    }
}

fn with_cors(mut response: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after, x-request-id"));
    }
    response
}

/// Mark a refusal with its reason (counted by the kit's metrics).
fn refused(mut response: Response, reason: &'static str) -> Response {
    response.extensions_mut().insert(Rejection(reason));
    response
}

/// The handler for every path: [`handle`], labelled for the metrics with the
/// route template (never the raw path).
pub async fn forward(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    // One lookup per request, shared by the handler and the metrics label.
    let lookup = gateway.table.lookup(request.method(), request.uri().path());
    let label = match &lookup {
        Lookup::Found(route) => route.pattern.clone(),
        _ => "unrouted".to_owned(),
    };
    let http1 = request.version() < http::Version::HTTP_2;
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    let mut response = handle(&gateway, request, lookup).await;
    // A refusal may leave the request body unread, and then the connection
    // cannot carry another request: say so (HTTP/1.1), or a client reusing it
    // for its next request sees the connection die under it.
    if http1 && has_body && response.extensions().get::<Rejection>().is_some() {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.extensions_mut().insert(RouteLabel(label));
    response
}

async fn handle(gateway: &Gateway, request: Request, lookup: Lookup<'_>) -> Response {
    let (parts, body) = request.into_parts();
    let ip = parts.extensions.get::<ConnectionInfo>().map(|c| c.remote_addr.ip());
    let origin = gateway.cors_origin(&parts.headers);

    // CORS preflight: answered here, for allowed origins and routed methods only.
    if parts.method == Method::OPTIONS && parts.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        let requested = parts
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .and_then(|m| m.parse::<Method>().ok());
        let routed = requested.is_some_and(|m| matches!(gateway.table.lookup(&m, parts.uri.path()), Lookup::Found(_)));
        return match (origin, routed) {
            (Some(origin), true) => {
                let mut response = StatusCode::NO_CONTENT.into_response();
                let headers = response.headers_mut();
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST, PATCH, PUT, DELETE"),
                );
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("authorization, content-type, idempotency-key"),
                );
                headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                response
            }
            _ => refused(problem(StatusCode::FORBIDDEN), "cors_preflight_refused"),
        };
    }

    // Probing for routes costs the same per-address budget as using them, so
    // a scanner's refusals (each audited) stop at its budget too.
    if !matches!(lookup, Lookup::Found(_))
        && let Some(ip) = ip
        && let Err(wait) = gateway.limits.check(crate::routes::DEFAULT_CLASS, Dimension::Ip, &ip.to_string()).await
    {
        gateway.audit_limit(Dimension::Ip, Some(ip), None);
        return refused(with_cors(too_many(wait), origin), "rate_limited_ip");
    }
    let route = match lookup {
        Lookup::Found(route) => route,
        Lookup::OtherMethods(methods) => {
            let allow = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            let mut response = Problem::new(StatusCode::METHOD_NOT_ALLOWED).into_response();
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return refused(with_cors(response, origin), "method_not_routed");
        }
        Lookup::NotFound => return refused(with_cors(problem(StatusCode::NOT_FOUND), origin), "no_route"),
    };
    let upstream = &gateway.upstreams[route.upstream];

    if let Some(ip) = ip
        && let Err(wait) = gateway.limits.check(&route.class, Dimension::Ip, &ip.to_string()).await
    {
        gateway.audit_limit(Dimension::Ip, Some(ip), None);
        return refused(with_cors(too_many(wait), origin), "rate_limited_ip");
    }

    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > route.body_limit as u64) {
        return refused(with_cors(problem(StatusCode::PAYLOAD_TOO_LARGE), origin), "body_too_large");
    }

    let token = match bearer_token(&parts.headers) {
        Ok(Some(token)) => token,
        Ok(None) => {
            gateway.audit_auth(Action::AuthenticationFailed, "gateway_token_missing", ip);
            return refused(
                with_cors(AuthRejection::Unauthenticated(TokenError::Missing).into_response(), origin),
                "token_missing",
            );
        }
        Err(error) => {
            gateway.audit_auth(Action::AuthenticationFailed, "gateway_token_malformed", ip);
            return refused(
                with_cors(AuthRejection::Unauthenticated(error).into_response(), origin),
                "token_malformed",
            );
        }
    };
    let verified = match upstream.verifier.verify(token).await {
        Ok(verified) => verified,
        Err(error) => {
            // A revoked token still being presented is worth its own alert (PC-12).
            let (audit_reason, metric) = if error == TokenError::Revoked {
                ("gateway_token_revoked", "token_revoked")
            } else {
                ("gateway_token_invalid", "token_invalid")
            };
            gateway.audit_auth(Action::AuthenticationFailed, audit_reason, ip);
            return refused(with_cors(AuthRejection::Unauthenticated(error).into_response(), origin), metric);
        }
    };
    if !verified.scopes().contains(route.scope) {
        gateway.audit.emit(
            AuditEvent::new(Action::AccessDenied, Outcome::Failure)
                .reason("gateway_insufficient_scope")
                .source(ip)
                .caller(
                    verified.subject().as_str(),
                    verified.client_id().map(|c| c.as_str()),
                    verified.jti().map(|j| j.as_str()),
                ),
        );
        return refused(
            with_cors(AuthRejection::InsufficientScope(route.scope).into_response(), origin),
            "insufficient_scope",
        );
    }
    for (dimension, key) in [
        (Dimension::Subject, Some(verified.subject().as_str())),
        (Dimension::Client, verified.client_id().map(|c| c.as_str())),
    ] {
        if let Some(key) = key
            && let Err(wait) = gateway.limits.check(&route.class, dimension, key).await
        {
            gateway.audit_limit(dimension, ip, Some(&verified));
            let reason = if dimension == Dimension::Subject { "rate_limited_subject" } else { "rate_limited_client" };
            return refused(with_cors(too_many(wait), origin), reason);
        }
    }

    // The body, within the route's limit (a chunked body is cut off at the limit).
    let Ok(bytes) = axum::body::to_bytes(body, route.body_limit).await else {
        return refused(with_cors(problem(StatusCode::PAYLOAD_TOO_LARGE), origin), "body_too_large");
    };

    let Ok(_permit) = upstream.permits.clone().try_acquire_owned() else {
        tracing::warn!(upstream = %upstream.name, "upstream concurrency limit reached");
        return refused(with_cors(problem(StatusCode::SERVICE_UNAVAILABLE), origin), "upstream_saturated");
    };
    let mut headers = upstream_headers(&parts.headers);
    headers.extend(estate_service_kit::telemetry::outbound_trace_headers());
    if let Some(context) = parts.extensions.get::<RequestContext>()
        && let Ok(value) = HeaderValue::from_str(&context.request_id)
    {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let call = upstream
        .http
        .request(parts.method.clone(), format!("{}{path_and_query}", upstream.base))
        .headers(headers)
        .body(bytes)
        .send();
    let sent = std::time::Instant::now();
    let answer = match tokio::time::timeout(upstream.timeout, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) if error.is_timeout() => {
            tracing::warn!(upstream = %upstream.name, "upstream timed out");
            return refused(with_cors(problem(StatusCode::GATEWAY_TIMEOUT), origin), "upstream_timeout");
        }
        Ok(Err(error)) => {
            tracing::warn!(upstream = %upstream.name, error = %error.without_url(), "upstream call failed");
            return refused(with_cors(problem(StatusCode::BAD_GATEWAY), origin), "upstream_failed");
        }
        Err(_) => {
            tracing::warn!(upstream = %upstream.name, "upstream timed out");
            return refused(with_cors(problem(StatusCode::GATEWAY_TIMEOUT), origin), "upstream_timeout");
        }
    };

    // The upstream audits its own refusals (with who and why); not twice.
    estate_audit::audited_elsewhere();
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        for name in &FORWARDED_RESPONSE_HEADERS {
            for value in answer.headers().get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    let mut response =
        response.body(Body::from_stream(answer.bytes_stream())).unwrap_or_else(|_| problem(StatusCode::BAD_GATEWAY));
    // Time to the upstream's answer head (the body streams on).
    response.extensions_mut().insert(UpstreamTime(sent.elapsed()));
    with_cors(response, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pc03_client_sent_identity_and_internal_headers_never_go_upstream() {
        let mut incoming = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer abc"),
            ("content-type", "application/json"),
            ("idempotency-key", "key-12345678"),
            ("x-user-id", "bob"),
            ("x-forwarded-user", "bob"),
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1;by=gateway"),
            ("x-internal-admin", "true"),
            ("x-spiffe-id", "spiffe://estate.local/ns/estate/sa/order"),
            ("x-forwarded-client-cert", "By=spiffe://x"),
            ("cookie", "session=1"),
            ("connection", "keep-alive, x-user-id"),
            ("transfer-encoding", "chunked"),
            ("host", "evil.example"),
        ] {
            incoming.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let outgoing = upstream_headers(&incoming);
        let names: Vec<&str> = outgoing.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["authorization", "content-type", "idempotency-key"]);
        assert_eq!(outgoing["authorization"], "Bearer abc", "the token is forwarded unchanged");
    }
}
