//! Authorization code + PKCE with the login page, refresh-token rotation,
//! and the attacks on them: each refused, each next to the working case.
//! The "browser" here is reqwest without redirects, carrying the CSRF cookie.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{BFF_SECRET, GATEWAY_SECRET, TestAuth, WEB_REDIRECT};
use estate_testkit::{ServiceRoles, TestPostgres};
use estate_tokens::{Scope, Verifier, VerifierConfig};
use reqwest::StatusCode;
use serde_json::Value;

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk.and-some-more-entropy";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref())
}

struct Browser {
    http: reqwest::Client,
    base: String,
}

/// What the login page gave us.
struct LoginForm {
    cookie: String,
    csrf: String,
    hidden: Vec<(String, String)>,
}

impl Browser {
    fn new(auth: &TestAuth) -> Self {
        let ca = reqwest::Certificate::from_pem(auth.pki.ca_pem().as_bytes()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self { http, base: auth.base_url.clone() }
    }

    fn params(client_id: &str, redirect_uri: &str, scope: &str, challenge: &str) -> Vec<(String, String)> {
        [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", scope),
            ("state", "xyz-state"),
            ("nonce", "n-0S6_WzA2Mj"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    async fn get_authorize(&self, params: &[(String, String)]) -> reqwest::Response {
        let url = reqwest::Url::parse_with_params(&format!("{}/authorize", self.base), params).unwrap();
        self.http.get(url).send().await.unwrap()
    }

    async fn open_login(&self, params: &[(String, String)]) -> LoginForm {
        let response = self.get_authorize(params).await;
        assert_eq!(response.status(), StatusCode::OK);
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            set_cookie.contains("Secure") && set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict")
        );
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let csrf = cookie.split_once('=').unwrap().1.to_owned();
        LoginForm { cookie, csrf, hidden: params.to_vec() }
    }

    async fn submit(&self, form: &LoginForm, username: &str, password: &str) -> reqwest::Response {
        let mut fields = form.hidden.clone();
        fields.push(("csrf".into(), form.csrf.clone()));
        fields.push(("username".into(), username.into()));
        fields.push(("password".into(), password.into()));
        self.http
            .post(format!("{}/authorize", self.base))
            .header("cookie", &form.cookie)
            .form(&fields)
            .send()
            .await
            .unwrap()
    }

    /// Log in and return the redirect's query parameters.
    async fn login(&self, params: &[(String, String)], username: &str, password: &str) -> Vec<(String, String)> {
        let form = self.open_login(params).await;
        let response = self.submit(&form, username, password).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap());
        redirect_query(&response)
    }
}

fn redirect_query(response: &reqwest::Response) -> Vec<(String, String)> {
    let location = response.headers()["location"].to_str().unwrap();
    let url = reqwest::Url::parse(location).unwrap();
    url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn setup() -> (TestPostgres, TestAuth, ServiceRoles, String) {
    setup_with("").await
}

async fn setup_with(extra: &str) -> (TestPostgres, TestAuth, ServiceRoles, String) {
    let pg = TestPostgres::start().await.unwrap();
    let (auth, roles) = TestAuth::start_with_database_and(&pg, extra).await;
    let alice = TestAuth::create_user(&roles, "alice", "correct horse battery staple").await;
    (pg, auth, roles, alice)
}

async fn redeem(auth: &TestAuth, code: &str, verifier: &str, redirect_uri: &str) -> (StatusCode, Value) {
    auth.post_token(
        None,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "web-app"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn code_for_alice(auth: &TestAuth) -> String {
    let browser = Browser::new(auth);
    let params = Browser::params("web-app", WEB_REDIRECT, "openid orders:read orders:write", &challenge(VERIFIER));
    let query = browser.login(&params, "alice", "correct horse battery staple").await;
    get(&query, "code").unwrap().to_owned()
}

// ------------------------------------------------------------------ the working flow

#[tokio::test]
async fn code_flow_with_pkce_issues_an_access_token_a_refresh_token_and_an_id_token() {
    let (_pg, auth, _roles, alice) = setup().await;
    let browser = Browser::new(&auth);
    let params = Browser::params("web-app", WEB_REDIRECT, "openid orders:read", &challenge(VERIFIER));
    let query = browser.login(&params, "alice", "correct horse battery staple").await;
    assert_eq!(get(&query, "state"), Some("xyz-state"));
    assert_eq!(get(&query, "iss"), Some(auth.issuer.as_str()), "RFC 9207 iss");
    let (status, body) = redeem(&auth, get(&query, "code").unwrap(), VERIFIER, WEB_REDIRECT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    estate_testkit::evidence::allowed("authorization code + PKCE redeemed for tokens");

    let access = auth.verifier("order-api").await.verify(body["access_token"].as_str().unwrap()).await.unwrap();
    assert_eq!(access.subject().as_str(), alice, "sub is the user's stable id");
    assert_eq!(access.client_id().unwrap().as_str(), "web-app");
    assert!(access.scopes().contains(Scope::OrdersRead));
    assert!(!access.scopes().contains(Scope::OrdersWrite));
    assert!(body["refresh_token"].as_str().is_some_and(|t| t.len() >= 43));

    // The ID token: for the client, with the nonce, and never usable as an access token.
    let id_token = body["id_token"].as_str().unwrap();
    let mut config = VerifierConfig::new(auth.issuer.clone(), &["web-app"]);
    config.ca_pem = Some(auth.pki.ca_pem());
    config.require_at_jwt_typ = false;
    let id = Verifier::new(config).await.unwrap().verify(id_token).await.unwrap();
    assert_eq!(id.subject().as_str(), alice);
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(id_token).unwrap();
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert!(auth.verifier("web-app").await.verify(id_token).await.is_err(), "ID token refused as an access token");
}

#[tokio::test]
async fn a_confidential_client_must_also_authenticate_to_redeem_its_code() {
    let (_pg, auth, _roles, _) = setup().await;
    let browser = Browser::new(&auth);
    let redirect = "https://bff.example/cb";
    let query = browser
        .login(
            &Browser::params("web-bff", redirect, "orders:read", &challenge(VERIFIER)),
            "alice",
            "correct horse battery staple",
        )
        .await;
    let code = get(&query, "code").unwrap();
    let form =
        [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect), ("code_verifier", VERIFIER)];
    // Claiming to be the public client does not work for a confidential client's code.
    let (status, _) = auth.post_token(None, &[form.as_slice(), &[("client_id", "web-bff")]].concat()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = auth.post_token(Some(("web-bff", BFF_SECRET.as_str())), &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

// ------------------------------------------------------------------ PKCE

#[tokio::test]
async fn a_wrong_or_missing_pkce_verifier_is_refused() {
    let (_pg, auth, _roles, _) = setup().await;
    let code = code_for_alice(&auth).await;
    let (status, body) = redeem(&auth, &code, "wrong-verifier-wrong-verifier-wrong-verifier-123", WEB_REDIRECT).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let code = code_for_alice(&auth).await;
    let (status, body) = auth
        .post_token(
            None,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "web-app"),
                ("code", &code),
                ("redirect_uri", WEB_REDIRECT),
            ],
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
}

#[tokio::test]
async fn pkce_plain_or_no_challenge_is_refused_at_the_authorization_endpoint() {
    let (_pg, auth, _roles, _) = setup().await;
    let browser = Browser::new(&auth);
    let mut plain = Browser::params("web-app", WEB_REDIRECT, "orders:read", VERIFIER);
    plain.retain(|(k, _)| k != "code_challenge_method");
    plain.push(("code_challenge_method".into(), "plain".into()));
    let mut none = Browser::params("web-app", WEB_REDIRECT, "orders:read", "");
    none.retain(|(k, _)| k != "code_challenge");
    for params in [plain, none] {
        let response = browser.get_authorize(&params).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let query = redirect_query(&response);
        assert_eq!(get(&query, "error"), Some("invalid_request"));
        assert_eq!(get(&query, "state"), Some("xyz-state"));
        assert!(get(&query, "code").is_none());
    }
}

// ------------------------------------------------------------------ codes

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_what_it_issued() {
    let (_pg, auth, _roles, _) = setup().await;
    let code = code_for_alice(&auth).await;
    let (status, first) = redeem(&auth, &code, VERIFIER, WEB_REDIRECT).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = redeem(&auth, &code, VERIFIER, WEB_REDIRECT).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));

    let introspection = auth
        .http
        .post(format!("{}/introspect", auth.base_url))
        .basic_auth("gateway", Some(GATEWAY_SECRET.as_str()))
        .form(&[("token", first["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(introspection["active"], false, "the first access token was revoked");
    let (status, _) = auth
        .post_token(
            None,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "web-app"),
                ("refresh_token", first["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the refresh family was revoked");
}

#[tokio::test]
async fn a_code_is_bound_to_its_redirect_uri_and_expires() {
    let (pg, auth, _roles, _) = setup().await;
    let code = code_for_alice(&auth).await;
    let (status, _) = redeem(&auth, &code, VERIFIER, "https://app.example/other").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "redirect URI mismatch");

    let code = code_for_alice(&auth).await;
    sqlx::query("UPDATE auth.authorization_code SET expires_at = now() - interval '1 second'")
        .execute(&pg.admin_pool().await.unwrap())
        .await
        .unwrap();
    let (status, body) = redeem(&auth, &code, VERIFIER, WEB_REDIRECT).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "expired");
}

#[tokio::test]
async fn an_unregistered_redirect_uri_or_client_gets_an_error_page_never_a_redirect() {
    let (_pg, auth, _roles, _) = setup().await;
    let browser = Browser::new(&auth);
    for params in [
        Browser::params("web-app", "https://evil.example/callback", "orders:read", &challenge(VERIFIER)),
        Browser::params("web-app", "https://app.example/callback/../evil", "orders:read", &challenge(VERIFIER)),
        Browser::params("nobody", WEB_REDIRECT, "orders:read", &challenge(VERIFIER)),
        Browser::params("inventory-reader", WEB_REDIRECT, "orders:read", &challenge(VERIFIER)),
    ] {
        let response = browser.get_authorize(&params).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get("location").is_none(), "open redirect");
    }
}

#[tokio::test]
async fn scope_escalation_at_the_authorization_endpoint_is_invalid_scope() {
    let (_pg, auth, _roles, _) = setup().await;
    let browser = Browser::new(&auth);
    let response =
        browser.get_authorize(&Browser::params("web-app", WEB_REDIRECT, "admin:*", &challenge(VERIFIER))).await;
    assert_eq!(get(&redirect_query(&response), "error"), Some("invalid_scope"));
}

// ------------------------------------------------------------------ the login form

#[tokio::test]
async fn wrong_passwords_and_unknown_users_get_the_same_answer() {
    let (_pg, auth, _roles, _) = setup().await;
    let browser = Browser::new(&auth);
    let params = Browser::params("web-app", WEB_REDIRECT, "orders:read", &challenge(VERIFIER));
    let form = browser.open_login(&params).await;
    let wrong = browser.submit(&form, "alice", "wrong").await;
    let unknown = browser.submit(&form, "mallory", "wrong").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let (wrong, unknown) = (wrong.text().await.unwrap(), unknown.text().await.unwrap());
    assert_eq!(wrong, unknown.replace("mallory", "alice"), "no user enumeration");
    assert!(wrong.contains("Wrong username or password."));
}

#[tokio::test]
async fn the_login_form_refuses_a_missing_or_forged_csrf_token() {
    let (_pg, auth, _roles, _) = setup().await;
    let browser = Browser::new(&auth);
    let params = Browser::params("web-app", WEB_REDIRECT, "orders:read", &challenge(VERIFIER));
    let mut form = browser.open_login(&params).await;
    form.csrf = "forged".into();
    assert_eq!(browser.submit(&form, "alice", "correct horse battery staple").await.status(), StatusCode::FORBIDDEN);
    let mut form = browser.open_login(&params).await;
    form.cookie = "__Host-estate-csrf=other".into();
    assert_eq!(browser.submit(&form, "alice", "correct horse battery staple").await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn pc09_repeated_failures_lock_the_username_even_for_the_right_password() {
    let (_pg, auth, _roles, _) = setup_with(
        "[service.login]\nmax_failures = 3\nfailure_window_secs = 600\nlockout_secs = 120\nper_ip_per_minute = 1000",
    )
    .await;
    let browser = Browser::new(&auth);
    let params = Browser::params("web-app", WEB_REDIRECT, "orders:read", &challenge(VERIFIER));
    let form = browser.open_login(&params).await;
    for _ in 0..2 {
        assert_eq!(browser.submit(&form, "alice", "guess").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        browser.submit(&form, "alice", "guess").await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "third failure locks"
    );
    let locked = browser.submit(&form, "alice", "correct horse battery staple").await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
}

#[tokio::test]
async fn pc09_one_address_is_throttled_across_usernames() {
    let (_pg, auth, _roles, _) = setup_with(
        "[service.login]\nmax_failures = 100\nfailure_window_secs = 600\nlockout_secs = 120\nper_ip_per_minute = 4",
    )
    .await;
    let browser = Browser::new(&auth);
    let form = browser.open_login(&Browser::params("web-app", WEB_REDIRECT, "orders:read", &challenge(VERIFIER))).await;
    for i in 0..4 {
        assert_eq!(browser.submit(&form, &format!("user{i}"), "x").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        browser.submit(&form, "alice", "correct horse battery staple").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn reflected_parameters_are_escaped_in_the_login_page() {
    let (_pg, auth, _roles, _) = setup().await;
    let browser = Browser::new(&auth);
    let mut params = Browser::params("web-app", WEB_REDIRECT, "orders:read", &challenge(VERIFIER));
    params.retain(|(k, _)| k != "state");
    params.push(("state".into(), "\"><script>alert(1)</script>".into()));
    let response = browser.get_authorize(&params).await;
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let body = response.text().await.unwrap();
    assert!(!body.contains("<script>"), "reflected XSS");
    assert!(body.contains("&quot;&gt;&lt;script&gt;"));
}

// ------------------------------------------------------------------ refresh tokens

async fn tokens_for_alice(auth: &TestAuth) -> Value {
    let code = code_for_alice(auth).await;
    let (status, body) = redeem(auth, &code, VERIFIER, WEB_REDIRECT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn refresh(auth: &TestAuth, token: &str, scope: Option<&str>) -> (StatusCode, Value) {
    let mut form = vec![("grant_type", "refresh_token"), ("client_id", "web-app"), ("refresh_token", token)];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    auth.post_token(None, &form).await
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_whole_family() {
    let (_pg, auth, _roles, _) = setup().await;
    let first = tokens_for_alice(&auth).await;
    let r1 = first["refresh_token"].as_str().unwrap();
    let (status, second) = refresh(&auth, r1, None).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2, "rotated");

    // An attacker replays the old one: refused, and the family dies ...
    let (status, body) = refresh(&auth, r1, None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    // ... so the legitimate newest token is refused too.
    let (status, _) = refresh(&auth, r2, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_refresh_can_narrow_scopes_but_never_widen_them() {
    let (_pg, auth, _roles, _) = setup().await;
    let tokens = tokens_for_alice(&auth).await; // orders:read orders:write
    let (status, body) = refresh(&auth, tokens["refresh_token"].as_str().unwrap(), Some("payments:authorize")).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));
    let tokens = tokens_for_alice(&auth).await;
    let (status, body) = refresh(&auth, tokens["refresh_token"].as_str().unwrap(), Some("orders:read")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["scope"], "orders:read");
}

// ------------------------------------------------------------------ a third-party OIDC library

/// The `openidconnect` crate, unchanged: discovery, the authorization URL
/// with PKCE and nonce, the code exchange, and ID-token verification against
/// our JWKS — the way any OIDC relying party would use Estate.
#[tokio::test]
async fn third_party_openidconnect_crate_runs_discovery_and_code_flow_with_pkce() {
    use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
    use openidconnect::{
        AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl,
        Scope as OidcScope, TokenResponse,
    };

    let (_pg, auth, _roles, alice) = setup().await;
    let transport = common::transport(auth.http.clone());
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(auth.issuer.clone()).unwrap(), &transport).await.unwrap();
    let client = CoreClient::from_provider_metadata(metadata, ClientId::new("web-app".into()), None)
        .set_redirect_uri(RedirectUrl::new(WEB_REDIRECT.into()).unwrap());

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf_state, nonce) = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(OidcScope::new("orders:read".into()))
        .set_pkce_challenge(challenge)
        .url();
    assert!(url.as_str().starts_with(&format!("{}/authorize?", auth.issuer)));

    // The user logs in at the URL the library built.
    let params: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let query = Browser::new(&auth).login(&params, "alice", "correct horse battery staple").await;
    assert_eq!(get(&query, "state"), Some(csrf_state.secret().as_str()));

    let tokens = client
        .exchange_code(AuthorizationCode::new(get(&query, "code").unwrap().to_owned()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&transport)
        .await
        .unwrap();
    let id_token = tokens.id_token().expect("an ID token for scope openid");
    let claims = id_token.claims(&client.id_token_verifier(), &nonce).unwrap();
    assert_eq!(claims.subject().as_str(), alice);
    let access = auth.verifier("order-api").await.verify(tokens.access_token().secret()).await.unwrap();
    assert!(access.scopes().contains(Scope::OrdersRead));
}
