//! HTTP endpoints. Handlers only translate: parse the request, call the
//! client registry and the issuer, map the result.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};

use axum::Extension;
use estate_service_kit::serve::ConnectionInfo;

use crate::clients::{ClientRegistry, FormParams};
use crate::grants::Issuer;
use crate::oauth_error::OAuthError;
use crate::rate_limit::TokenRateLimits;
use estate_audit::{Action, AuditEvent, Outcome};

/// Everything the endpoints need.
pub struct AuthState {
    /// Issues tokens.
    pub issuer: Issuer,
    /// Authenticates clients.
    pub clients: ClientRegistry,
    /// The RFC 8414 / OIDC discovery document.
    pub metadata: Value,
    /// Token endpoint budgets.
    pub limits: Arc<TokenRateLimits>,
    /// Login attempts per IP.
    pub login_limits: Arc<TokenRateLimits>,
    /// Login lockout settings.
    pub login_settings: crate::settings::LoginSettings,
    /// Users, codes, refresh tokens.
    pub store: Arc<crate::store::Store>,
    /// Password hashing.
    pub passwords: Arc<crate::passwords::Passwords>,
    /// The issuer identifier (for `iss` on redirects).
    pub issuer_url: String,
    /// Security events.
    pub audit: estate_audit::AuditLog,
    /// The last revocation list served, and when it was built.
    pub revocation_cache: std::sync::Mutex<Option<(std::time::Instant, axum::body::Bytes)>>,
}

/// The public router.
pub fn router(state: Arc<AuthState>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(crate::authorize::show).post(crate::authorize::submit))
        .route("/token", post(token))
        .route("/introspect", post(introspect))
        .route("/revoke", post(revoke))
        .route("/revocations", get(revocations))
        .with_state(state)
}

/// The discovery metadata for `issuer`: only what this server really supports.
pub fn metadata(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{issuer}/jwks"),
        "grant_types_supported": [
            "authorization_code", "refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"
        ],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "scopes_supported": std::iter::once("openid").chain(estate_tokens::Scope::ALL.iter().map(|s| s.as_str())).collect::<Vec<_>>(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

async fn discovery(State(state): State<Arc<AuthState>>) -> Response {
    let mut response = Json(state.metadata.clone()).into_response();
    // Public, rarely changing: clients may cache it (overrides the kit's no-store).
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

async fn jwks(State(state): State<Arc<AuthState>>) -> Response {
    let mut response = Json(state.issuer.keys().jwks()).into_response();
    // Short enough that a newly published key is seen well before it signs.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

async fn token(
    State(state): State<Arc<AuthState>>,
    connection: Option<Extension<ConnectionInfo>>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let Ok(Form(pairs)) = form else {
        return OAuthError::InvalidRequest("expected an application/x-www-form-urlencoded body").into_response();
    };
    let form = FormParams::new(pairs);
    // PC-09: spend the budgets before any signature or digest work.
    let claimed = ClientRegistry::claimed_client_id(&headers, &form);
    let ip = connection.map(|Extension(c)| c.remote_addr.ip());
    if let Err(exceeded) = state.limits.check(claimed.as_deref(), ip) {
        state.audit.emit(
            AuditEvent::new(Action::RateLimited, Outcome::Failure)
                .reason(if exceeded.budget == "ip" {
                    "token_endpoint_ip_budget"
                } else {
                    "token_endpoint_client_budget"
                })
                .client(claimed.as_deref().unwrap_or_default())
                .source(ip),
        );
        return OAuthError::SlowDown(exceeded.retry_after_secs).into_response();
    }
    match handle_token(&state, &headers, &form, ip).await {
        Ok(response) => {
            let mut response = Json(response).into_response();
            response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(error) => error.into_response(),
    }
}

async fn handle_token(
    state: &AuthState,
    headers: &HeaderMap,
    form: &FormParams,
    ip: Option<std::net::IpAddr>,
) -> Result<crate::grants::TokenResponse, OAuthError> {
    let grant_type = form.single("grant_type")?.ok_or(OAuthError::InvalidRequest("grant_type missing"))?;
    let client = state.clients.authenticate(headers, form).await.inspect_err(|error| {
        tracing::info!(grant_type, "client authentication failed");
        if *error == OAuthError::InvalidClient {
            state.audit.emit(
                AuditEvent::new(Action::AuthenticationFailed, Outcome::Failure)
                    .reason("invalid_client")
                    .client(ClientRegistry::claimed_client_id(headers, form).as_deref().unwrap_or_default())
                    .source(ip),
            );
        }
    })?;
    match grant_type {
        "client_credentials" => state.issuer.client_credentials(client, form),
        "urn:ietf:params:oauth:grant-type:token-exchange" => state.issuer.exchange(client, form).await,
        "authorization_code" => state.issuer.authorization_code(client, form).await,
        "refresh_token" => state.issuer.refresh(client, form).await,
        _ => Err(OAuthError::UnsupportedGrantType),
    }
}

/// Parse the form and authenticate the calling client (introspection, revocation).
async fn authenticated<'a>(
    state: &'a AuthState,
    headers: &HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<(&'a crate::clients::Client, FormParams), OAuthError> {
    let Ok(Form(pairs)) = form else {
        return Err(OAuthError::InvalidRequest("expected an application/x-www-form-urlencoded body"));
    };
    let form = FormParams::new(pairs);
    let client = state.clients.authenticate(headers, &form).await?;
    Ok((client, form))
}

/// RFC 7662. Only registered clients allowed to introspect get an answer.
async fn introspect(
    State(state): State<Arc<AuthState>>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let result = async {
        let (client, form) = authenticated(&state, &headers, form).await?;
        if !client.may_introspect() {
            return Err(OAuthError::UnauthorizedClient("client may not introspect"));
        }
        let token = form.single("token")?.ok_or(OAuthError::InvalidRequest("token missing"))?;
        state.issuer.introspect(token).await
    }
    .await;
    match result {
        Ok(body) => {
            let mut response = Json(body).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => error.into_response(),
    }
}

/// The revocation list every verifier polls (PC-12; wire form in
/// `estate_tokens::revocation`). Public like the JWKS: it names nobody, only
/// SHA-256 digests of token ids, subjects and client ids. Built at most once
/// a second, however often it is asked for.
async fn revocations(State(state): State<Arc<AuthState>>) -> Response {
    let cached = state.revocation_cache.lock().ok().and_then(|slot| {
        slot.as_ref().filter(|(at, _)| at.elapsed() < std::time::Duration::from_secs(1)).map(|(_, body)| body.clone())
    });
    let body = match cached {
        Some(body) => body,
        None => match state.issuer.revocation_list().await {
            Ok(list) => {
                let body = axum::body::Bytes::from(list.to_string());
                if let Ok(mut slot) = state.revocation_cache.lock() {
                    *slot = Some((std::time::Instant::now(), body.clone()));
                }
                body
            }
            Err(error) => return error.into_response(),
        },
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// RFC 7009. 200 with an empty body whether or not the token was valid.
async fn revoke(
    State(state): State<Arc<AuthState>>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let result = async {
        let (client, form) = authenticated(&state, &headers, form).await?;
        let token = form.single("token")?.ok_or(OAuthError::InvalidRequest("token missing"))?;
        state.issuer.revoke(client, token).await
    }
    .await;
    match result {
        Ok(()) => http::StatusCode::OK.into_response(),
        Err(error) => error.into_response(),
    }
}
