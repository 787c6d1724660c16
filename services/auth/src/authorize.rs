//! The authorization endpoint: `GET /authorize` validates the request and
//! shows a login form; `POST /authorize` checks the form and answers with a
//! redirect carrying a single-use code.
//!
//! Rules (OAuth 2.1, RFC 9700 security BCP):
//! - the client and its redirect URI are checked **first**, by exact match;
//!   if either is wrong nothing is redirected (an error page instead), so the
//!   endpoint is no open redirector;
//! - `response_type=code` only; PKCE with `S256` is mandatory, `plain` refused;
//! - the form is protected by a double-submit CSRF token (a `__Host-` cookie,
//!   `SameSite=Strict`, equal to a hidden field, compared in constant time);
//! - passwords are argon2id; unknown users cost the same and get the same
//!   answer; failures count per username (existing or not) and lock it after
//!   `max_failures`; attempts per IP are rate limited (429);
//! - the code is 256 random bits, stored hashed, valid 60 s, single use, and
//!   the redirect names the issuer (`iss`, RFC 9207).

use std::net::IpAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, State};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use estate_service_kit::serve::ConnectionInfo;
use estate_tokens::{Scope, Scopes};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use subtle::ConstantTimeEq;

use crate::clients::{FormParams, sha256};
use crate::endpoints::AuthState;
use crate::grants::unix_now;
use crate::settings::GrantType;
use crate::store::CodeRecord;
use estate_audit::{Action, AuditEvent, Outcome};

const CSRF_COOKIE: &str = "__Host-estate-csrf";
const CODE_TTL_SECS: i64 = 60;

/// A validated authorization request.
struct AuthorizeRequest {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    code_challenge: String,
    scopes: Scopes,
    openid: bool,
    nonce: Option<String>,
    audiences: Vec<String>,
}

/// Why a request was refused, and whether the refusal may go to the redirect URI.
enum Refusal {
    /// Client or redirect URI not trustworthy: show an error page, redirect nowhere.
    Page(&'static str),
    /// Tell the client, at its registered redirect URI.
    Redirect { redirect_uri: String, state: Option<String>, error: &'static str },
}

impl AuthState {
    fn validate_authorize(&self, params: &FormParams) -> Result<AuthorizeRequest, Refusal> {
        let page = |_| Refusal::Page("The request is malformed.");
        let client_id = params.single("client_id").map_err(page)?.ok_or(Refusal::Page("No client_id."))?;
        let client = self
            .clients
            .get(client_id)
            .filter(|c| c.may_use(GrantType::AuthorizationCode))
            .ok_or(Refusal::Page("Unknown client."))?;
        let redirect_uri = params.single("redirect_uri").map_err(page)?.ok_or(Refusal::Page("No redirect_uri."))?;
        if !client.has_redirect_uri(redirect_uri) {
            return Err(Refusal::Page("The redirect URI is not registered for this client."));
        }
        // From here on the redirect URI is trusted: errors go back to the client.
        let state = params.single("state").ok().flatten().map(str::to_owned);
        let redirect = |error| Refusal::Redirect { redirect_uri: redirect_uri.to_owned(), state: state.clone(), error };
        if params.single("response_type").map_err(|_| redirect("invalid_request"))? != Some("code") {
            return Err(redirect("unsupported_response_type"));
        }
        // PKCE S256 is mandatory; `plain` is refused (OAuth 2.1 §4.1.1).
        if params.single("code_challenge_method").map_err(|_| redirect("invalid_request"))? != Some("S256") {
            return Err(redirect("invalid_request"));
        }
        let code_challenge = params
            .single("code_challenge")
            .map_err(|_| redirect("invalid_request"))?
            .filter(|c| c.len() == 43 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            .ok_or_else(|| redirect("invalid_request"))?;
        let mut scopes = Scopes::empty();
        let mut openid = false;
        for name in params.single("scope").map_err(|_| redirect("invalid_scope"))?.unwrap_or("").split(' ') {
            match name {
                "" => {}
                "openid" => openid = true,
                other => {
                    let scope = other.parse::<Scope>().map_err(|_| redirect("invalid_scope"))?;
                    if !client.scopes().contains(scope) {
                        return Err(redirect("invalid_scope"));
                    }
                    scopes.insert(scope);
                }
            }
        }
        if scopes.is_empty() && !openid {
            return Err(redirect("invalid_scope"));
        }
        let requested: Vec<String> = params.all("resource").into_iter().map(str::to_owned).collect();
        if requested.iter().any(|r| !client.audiences().contains(r)) {
            return Err(redirect("invalid_target"));
        }
        let audiences = if requested.is_empty() { client.audiences().to_vec() } else { requested };
        let nonce = params.single("nonce").ok().flatten().filter(|n| n.len() <= 255).map(str::to_owned);
        Ok(AuthorizeRequest {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            state,
            code_challenge: code_challenge.to_owned(),
            scopes,
            openid,
            nonce,
            audiences,
        })
    }
}

/// `GET /authorize`: the login form.
pub async fn show(State(state): State<Arc<AuthState>>, Query(pairs): Query<Vec<(String, String)>>) -> Response {
    let params = FormParams::new(pairs);
    match state.validate_authorize(&params) {
        Ok(_) => {
            let csrf = random_token();
            login_page(&params, &csrf, None, StatusCode::OK, Some(&csrf))
        }
        Err(refusal) => refuse(refusal, &state.issuer_url),
    }
}

/// `POST /authorize`: check the form; on success redirect with a code.
pub async fn submit(
    State(state): State<Arc<AuthState>>,
    connection: Option<Extension<ConnectionInfo>>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let Ok(Form(pairs)) = form else { return error_page(StatusCode::BAD_REQUEST, "The request is malformed.") };
    let params = FormParams::new(pairs);
    let request = match state.validate_authorize(&params) {
        Ok(request) => request,
        Err(refusal) => return refuse(refusal, &state.issuer_url),
    };
    // CSRF: the hidden field must equal the cookie set with the form.
    let cookie = csrf_cookie(&headers);
    let field = params.single("csrf").ok().flatten();
    let csrf_ok = matches!((cookie, field), (Some(c), Some(f)) if bool::from(c.as_bytes().ct_eq(f.as_bytes())));
    if !csrf_ok {
        state.audit.emit(
            AuditEvent::new(Action::AuthenticationFailed, Outcome::Failure)
                .reason("csrf_rejected")
                .client(&request.client_id),
        );
        return error_page(StatusCode::FORBIDDEN, "The form expired. Go back and try again.");
    }
    let ip: Option<IpAddr> = connection.map(|Extension(c)| c.remote_addr.ip());
    if let Err(exceeded) = state.login_limits.check(None, ip) {
        state.audit.emit(AuditEvent::new(Action::RateLimited, Outcome::Failure).reason("login_ip_budget").source(ip));
        return with_retry_after(
            login_page(
                &params,
                field.unwrap_or_default(),
                Some("Too many attempts. Try again later."),
                StatusCode::TOO_MANY_REQUESTS,
                None,
            ),
            exceeded.retry_after_secs,
        );
    }
    let username = params.single("username").ok().flatten().unwrap_or_default();
    let password = params.single("password").ok().flatten().unwrap_or_default();
    let csrf = field.unwrap_or_default();
    match state.login(username, password).await {
        Ok(Login::Success(subject)) => match state.issue_code(&request, &subject).await {
            Ok(code) => {
                redirect_with(&request.redirect_uri, &[("code", &code)], request.state.as_deref(), &state.issuer_url)
            }
            Err(()) => error_page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong. Try again."),
        },
        Ok(Login::Failed) => {
            login_page(&params, csrf, Some("Wrong username or password."), StatusCode::UNAUTHORIZED, None)
        }
        Ok(Login::Locked(retry_after)) => with_retry_after(
            login_page(&params, csrf, Some("Too many attempts. Try again later."), StatusCode::TOO_MANY_REQUESTS, None),
            retry_after,
        ),
        Err(()) => error_page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong. Try again."),
    }
}

enum Login {
    Success(String),
    Failed,
    Locked(u64),
}

impl AuthState {
    async fn login(&self, username: &str, password: &str) -> Result<Login, ()> {
        let fail = |error: crate::store::StoreError| tracing::error!(%error, "login store failed");
        if username.is_empty() || username.len() > 255 || username.chars().any(char::is_control) {
            return Ok(Login::Failed);
        }
        if let Some(retry_after) = self.store.locked_for(username).await.map_err(fail)? {
            self.audit.emit(
                AuditEvent::new(Action::LoginFailed, Outcome::Failure).reason("username_locked").user_name(username),
            );
            return Ok(Login::Locked(retry_after));
        }
        let user = self.store.find_user(username).await.map_err(fail)?;
        // Argon2 is slow on purpose: keep it off the async workers.
        let passwords = self.passwords.clone();
        let (password, stored) = (password.to_owned(), user.as_ref().map(|(_, hash)| hash.clone()));
        let ok = tokio::task::spawn_blocking(move || passwords.verify(&password, stored.as_deref()))
            .await
            .map_err(|_| tracing::error!("password verification task failed"))?;
        let disabled = match &user {
            Some((id, _)) if ok => self.store.principal_disabled(&id.to_string()).await.map_err(fail)?,
            _ => false,
        };
        if disabled {
            // The same answer as a wrong password: a disabled account is not confirmed to anyone.
            self.audit.emit(
                AuditEvent::new(Action::LoginFailed, Outcome::Failure).reason("user_disabled").user_name(username),
            );
            return Ok(Login::Failed);
        }
        match user {
            Some((id, _)) if ok => {
                self.store.clear_login_failures(username).await.map_err(fail)?;
                self.audit.emit(
                    AuditEvent::new(Action::LoginSucceeded, Outcome::Success).user(&id.to_string()).user_name(username),
                );
                Ok(Login::Success(id.to_string()))
            }
            _ => {
                let login = &self.login_settings;
                let locked = self
                    .store
                    .record_login_failure(username, login.max_failures, login.failure_window_secs, login.lockout_secs)
                    .await
                    .map_err(fail)?;
                let reason = if locked { "wrong_credentials_now_locked" } else { "wrong_credentials" };
                self.audit
                    .emit(AuditEvent::new(Action::LoginFailed, Outcome::Failure).reason(reason).user_name(username));
                Ok(if locked { Login::Locked(login.lockout_secs) } else { Login::Failed })
            }
        }
    }

    async fn issue_code(&self, request: &AuthorizeRequest, subject: &str) -> Result<String, ()> {
        let code = random_token();
        let record = CodeRecord {
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            subject: subject.to_owned(),
            scope: request.scopes.to_string(),
            audiences: request.audiences.clone(),
            nonce: request.nonce.clone(),
            openid: request.openid,
            auth_time: unix_now(),
            expires_at: unix_now() + CODE_TTL_SECS,
            expired: false,
        };
        self.store.insert_code(&sha256(code.as_bytes()), &record).await.map_err(|error| {
            tracing::error!(%error, "storing authorization code failed");
        })?;
        Ok(code)
    }
}

/// 256 random bits, base64url.
fn random_token() -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    // The system RNG does not fail on supported platforms; an all-zero token would be refused anyway.
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn csrf_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(CSRF_COOKIE)?.strip_prefix('='))
}

fn refuse(refusal: Refusal, issuer: &str) -> Response {
    match refusal {
        Refusal::Page(message) => error_page(StatusCode::BAD_REQUEST, message),
        Refusal::Redirect { redirect_uri, state, error } => {
            redirect_with(&redirect_uri, &[("error", error)], state.as_deref(), issuer)
        }
    }
}

/// 303 to `redirect_uri` with `params`, `state` and `iss` (RFC 9207) added.
fn redirect_with(redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>, issuer: &str) -> Response {
    let mut location = redirect_uri.to_owned();
    let mut separator = if location.contains('?') { '&' } else { '?' };
    let mut push = |name: &str, value: &str| {
        location.push(separator);
        location.push_str(name);
        location.push('=');
        location.push_str(&form_encode(value));
        separator = '&';
    };
    for (name, value) in params {
        push(name, value);
    }
    if let Some(state) = state {
        push("state", state);
    }
    push("iss", issuer);
    match HeaderValue::from_str(&location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => error_page(StatusCode::BAD_REQUEST, "The request is malformed."),
    }
}

fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Headers for our HTML: nothing may load, frame or be cached.
fn html(status: StatusCode, body: String, set_csrf: Option<&str>) -> Response {
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(token) = set_csrf
        && let Ok(cookie) =
            HeaderValue::from_str(&format!("{CSRF_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"))
    {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

fn error_page(status: StatusCode, message: &str) -> Response {
    html(
        status,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Estate</title></head>\
             <body><main><h1>Cannot continue</h1><p>{}</p></main></body></html>",
            escape(message)
        ),
        None,
    )
}

/// The authorization parameters carried through the form.
const CARRIED: [&str; 9] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "resource",
];

fn login_page(
    params: &FormParams,
    csrf: &str,
    error: Option<&str>,
    status: StatusCode,
    set_csrf: Option<&str>,
) -> Response {
    let mut hidden = String::new();
    for name in CARRIED {
        for value in params.all(name) {
            hidden.push_str(&format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape(value)));
        }
    }
    let error = error.map(|e| format!("<p role=\"alert\">{}</p>", escape(e))).unwrap_or_default();
    html(
        status,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in — Estate</title></head>\
             <body><main><h1>Sign in</h1>{error}<form method=\"post\" action=\"/authorize\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{hidden}\
             <p><label>Username <input name=\"username\" autocomplete=\"username\" required></label></p>\
             <p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
             <p><button type=\"submit\">Sign in</button></p></form></main></body></html>",
            csrf = escape(csrf)
        ),
        set_csrf,
    )
}

/// HTML-escape text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaping_covers_attribute_breakouts() {
        assert_eq!(
            escape(r#""><script>alert('x')</script>&"#),
            "&quot;&gt;&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;"
        );
    }

    #[test]
    fn csrf_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; __Host-estate-csrf=tok; b=2"));
        assert_eq!(csrf_cookie(&headers), Some("tok"));
    }
}
