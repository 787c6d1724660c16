//! A headless user login at the estate's authorization server: the
//! authorization-code flow with PKCE (S256) through the real login page and
//! its CSRF cookie, as a browser would do it. For suites and the demo that
//! need real user tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use serde_json::Value;

use crate::TestkitError;

/// What to log in as, where.
pub struct Login<'a> {
    /// The authorization server's base URL (`https://localhost:port`).
    pub base_url: &'a str,
    /// A public client registered for the code flow.
    pub client_id: &'a str,
    /// One of its redirect URIs.
    pub redirect_uri: &'a str,
    /// Requested scopes (space-separated).
    pub scope: &'a str,
    /// User name.
    pub username: &'a str,
    /// Password.
    pub password: &'a str,
}

fn failed(step: &str, detail: impl Into<String>) -> TestkitError {
    TestkitError::failed(format!("login: {step}"), detail.into())
}

/// Log in and redeem the code; the token response (`access_token`, …).
/// `ca_pem` is the CA of the server's TLS certificate.
pub async fn authorization_code(login: &Login<'_>, ca_pem: &str) -> Result<Value, TestkitError> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())?;
    let http = reqwest::Client::builder().tls_certs_only([ca]).redirect(reqwest::redirect::Policy::none()).build()?;
    authorization_code_with(login, &http).await
}

/// [`authorization_code`] with the caller's client (e.g. one resolving the
/// server's name to a forwarded port); it must not follow redirects.
pub async fn authorization_code_with(login: &Login<'_>, http: &reqwest::Client) -> Result<Value, TestkitError> {
    let verifier: String = {
        let bytes: [u8; 32] = rand::rng().random();
        URL_SAFE_NO_PAD.encode(bytes)
    };
    let challenge =
        URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref());
    let params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", login.client_id),
        ("redirect_uri", login.redirect_uri),
        ("scope", login.scope),
        ("state", "estate-login"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    let url = reqwest::Url::parse_with_params(&format!("{}/authorize", login.base_url), &params)
        .map_err(|e| failed("url", e.to_string()))?;
    let page = http.get(url).send().await?;
    if page.status() != reqwest::StatusCode::OK {
        return Err(failed("login page", page.status().to_string()));
    }
    let cookie = page
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| failed("login page", "no CSRF cookie"))?
        .to_owned();
    let csrf = cookie.split_once('=').map(|(_, v)| v.to_owned()).unwrap_or_default();
    let mut form = params.clone();
    form.push(("csrf", &csrf));
    form.push(("username", login.username));
    form.push(("password", login.password));
    let submitted =
        http.post(format!("{}/authorize", login.base_url)).header("cookie", &cookie).form(&form).send().await?;
    let location = submitted
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| failed("submit", format!("no redirect ({})", submitted.status())))?;
    let location = reqwest::Url::parse(location).map_err(|e| failed("redirect", e.to_string()))?;
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| failed("redirect", "no code"))?;
    let token = http
        .post(format!("{}/token", login.base_url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", login.client_id),
            ("code", &code),
            ("redirect_uri", login.redirect_uri),
            ("code_verifier", &verifier),
        ])
        .send()
        .await?;
    if token.status() != reqwest::StatusCode::OK {
        return Err(failed("token", token.status().to_string()));
    }
    Ok(token.json().await?)
}
