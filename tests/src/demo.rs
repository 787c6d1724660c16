//! The guided walkthrough of `cargo xtask demo` (issue 10): against a
//! running estate, a user logs in, places an order and gets a refund — the
//! three token flows, hop by hop — and then every attack of the list is
//! tried and shown refused, with the SIEM event it left. Each step is an
//! [`Outcome`]; the demo fails (non-zero exit) if any attack succeeded or any
//! legitimate step failed.
//!
//! Everything shown is read from the running system: token claims are
//! decoded from real tokens (never the signature), hops from the services'
//! own logs (`request handled` with the peer's SPIFFE ID, by trace
//! id), refusals from the responses and the SIEM's received events.

#![allow(clippy::print_stdout, reason = "the narrator talks on the terminal")]

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Estate, spiffe};

/// One step of the walkthrough.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The control (checklist ID and name).
    pub control: &'static str,
    /// What was tried.
    pub step: &'static str,
    /// Legitimate (must work) or an attack (must be refused).
    pub attack: bool,
    /// What came back.
    pub result: String,
    /// Whether it came out as it must.
    pub ok: bool,
}

/// Terminal output: headings, details and results, coloured unless `plain`.
#[derive(Debug, Clone, Copy)]
pub struct Narrator {
    /// No ANSI colours (`--ci`, or `NO_COLOR`, or not a terminal).
    pub plain: bool,
}

impl Narrator {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.plain { text.to_owned() } else { format!("\x1b[{code}m{text}\x1b[0m") }
    }

    /// A section heading.
    pub fn heading(&self, text: &str) {
        println!("\n{}", self.paint("1;36", &format!("━━ {text}")));
    }

    /// A line of narration.
    pub fn say(&self, text: &str) {
        println!("  {text}");
    }

    /// A key and a value, indented.
    pub fn detail(&self, key: &str, value: &str) {
        println!("    {} {value}", self.paint("2", &format!("{key:<14}")));
    }

    fn outcome(&self, outcome: &Outcome) {
        let mark = match (outcome.ok, outcome.attack) {
            (true, true) => self.paint("32", "✔ refused"),
            (true, false) => self.paint("32", "✔ works"),
            (false, true) => self.paint("1;31", "✘ NOT REFUSED"),
            (false, false) => self.paint("1;31", "✘ FAILED"),
        };
        println!("  {mark}  {}", outcome.result);
    }

    /// The summary table; `true` when every step came out as it must.
    pub fn summary(&self, outcomes: &[Outcome]) -> bool {
        self.heading("Summary: control → step → result");
        println!("  {:<28} {:<48} result", "control", "step");
        for outcome in outcomes {
            let result = match (outcome.ok, outcome.attack) {
                (true, true) => self.paint("32", "refused"),
                (true, false) => self.paint("32", "works"),
                (false, true) => self.paint("1;31", "NOT REFUSED"),
                (false, false) => self.paint("1;31", "FAILED"),
            };
            println!("  {:<28} {:<48} {result}", outcome.control, outcome.step);
        }
        let failed = outcomes.iter().filter(|o| !o.ok).count();
        if failed == 0 {
            println!(
                "\n  {}",
                self.paint("1;32", &format!("all {} steps as they must be: every attack refused", outcomes.len()))
            );
        } else {
            println!("\n  {}", self.paint("1;31", &format!("{failed} step(s) did not come out as they must")));
        }
        failed == 0
    }
}

/// Decode a JWT's header and claims (never its signature).
pub fn decode(token: &str) -> (Value, Value) {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let mut part = || {
        parts
            .next()
            .and_then(|p| b64.decode(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null)
    };
    let header = part();
    (header, part())
}

fn show_token(narrator: &Narrator, token: &str, claims_shown: &[&str]) {
    let (header, claims) = decode(token);
    narrator.detail("header", &format!("alg={} kid={} typ={}", header["alg"], header["kid"], header["typ"]));
    for name in claims_shown {
        if !claims[*name].is_null() {
            narrator.detail(name, &claims[*name].to_string());
        }
    }
    if let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) {
        narrator.detail("lifetime", &format!("{} s", exp - iat));
    }
    narrator.detail("signature", "(not shown)");
}

/// Wait (≤ 10 s) for a SIEM event that `matches`; the newest such event.
async fn siem_event(estate: &Estate, matches: impl Fn(&Value) -> bool) -> Option<Value> {
    let siem = estate.siem.as_ref()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = siem.events().ok()?;
        if let Some(event) = events.iter().rev().filter_map(|e| e.msg_json()).find(|e| matches(e)) {
            return Some(event);
        }
        if Instant::now() >= deadline {
            return None;
        }
        let _ = siem.wait_for_events(events.len() + 1, Duration::from_millis(500)).await;
    }
}

fn describe_event(event: &Value) -> String {
    let mut text = format!("{}/{} {}", event["service"]["name"], event["event"]["action"], event["event"]["reason"]);
    for (label, value) in
        [("user", &event["user"]["id"]), ("peer", &event["estate"]["peer"]), ("client", &event["estate"]["client_id"])]
    {
        if let Some(value) = value.as_str() {
            text.push_str(&format!(" {label}={value}"));
        }
    }
    text.replace('"', "")
}

/// The SIEM event of the last edge call (by its trace id), shown.
async fn show_edge_event(estate: &Estate, narrator: &Narrator) {
    let Some(trace) = estate.last_edge_trace() else { return };
    match siem_event(estate, |e| e["trace"]["id"] == trace.as_str() && e["event"]["outcome"] == "failure").await {
        Some(event) => narrator.detail("SIEM", &describe_event(&event)),
        None => narrator.detail("SIEM", "(no event yet)"),
    }
}

/// The hops of one request, from the services' logs (`request handled`
/// lines of the trace, with the peer the east-west policy recorded):
/// service ← peer SPIFFE ID, method, path.
fn hops(estate: &Estate, trace: &str) -> Vec<String> {
    let Some(dir) = estate.log_dir() else { return Vec::new() };
    let mut hops = Vec::new();
    for service in ["order", "inventory", "payment"] {
        let Ok(text) = std::fs::read_to_string(dir.join(format!("{service}.log"))) else { continue };
        for line in text.lines() {
            let Ok(log) = serde_json::from_str::<Value>(line) else { continue };
            let span = &log["span"];
            if log["message"] == "request handled" && span["trace_id"] == trace && span["peer"].is_string() {
                hops.push(format!(
                    "{service:<9} ← {} {} {}",
                    span["peer"].as_str().unwrap_or("-"),
                    span["method"].as_str().unwrap_or("-"),
                    span["path"].as_str().unwrap_or("-")
                ));
            }
        }
    }
    hops
}

fn show_hops(estate: &Estate, narrator: &Narrator, trace: &str) {
    for hop in hops(estate, trace) {
        narrator.detail("hop", &hop);
    }
}

fn record(narrator: &Narrator, outcomes: &mut Vec<Outcome>, outcome: Outcome) {
    narrator.outcome(&outcome);
    outcomes.push(outcome);
}

fn legit(control: &'static str, step: &'static str, ok: bool, result: String) -> Outcome {
    Outcome { control, step, attack: false, result, ok }
}

fn attack(control: &'static str, step: &'static str, ok: bool, result: String) -> Outcome {
    Outcome { control, step, attack: true, result, ok }
}

/// The whole walkthrough. Every step runs even when an earlier one failed.
pub async fn walkthrough(estate: &Estate, narrator: &Narrator) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let out = &mut outcomes;

    narrator.heading("1. A user logs in: authorization code + PKCE, driven headlessly");
    let login = estate.login_with("alice", &estate.password("alice")).await;
    let alice = login.as_ref().ok().and_then(|l| l["access_token"].as_str()).unwrap_or_default().to_owned();
    if !alice.is_empty() {
        narrator.say("alice's access token (an at+jwt signed by the auth server; claims decoded):");
        show_token(narrator, &alice, &["iss", "sub", "aud", "scope", "client_id"]);
    }
    record(
        narrator,
        out,
        legit(
            "PC-02 OAuth2/OIDC",
            "log in (code + PKCE)",
            !alice.is_empty(),
            login.map_or_else(|e| e, |_| "access, refresh and ID token issued".to_owned()),
        ),
    );
    let bob = estate.user_token("bob").await;

    narrator.heading("2. Place an order: three token flows, hop by hop");
    let (status, _, order) = estate
        .edge_call(
            Method::POST,
            "/v1/orders",
            Some(&alice),
            Some(&json!({ "lines": [{ "sku": "TEA-01", "quantity": 2 }] })),
        )
        .await;
    let checkout_trace = estate.last_edge_trace().unwrap_or_default();
    let order_id = order["id"].as_str().unwrap_or_default().to_owned();
    narrator.detail("order", &format!("{order_id} status={} total={}", order["status"], order["total_cents"]));
    record(
        narrator,
        out,
        legit(
            "FLOW-CC/FLOW-TX checkout",
            "POST /v1/orders through the gateway",
            status == StatusCode::CREATED && order["status"] == "confirmed",
            format!("{status}, order {}", order["status"]),
        ),
    );
    narrator.say("who called whom, as each service saw it (mTLS peer SPIFFE ID, from the services' logs):");
    narrator.detail("gateway", &format!("← the browser, with alice's token; calls order as {}", spiffe("gateway")));
    show_hops(estate, narrator, &checkout_trace);

    narrator.say("the tokens order uses on those hops (the same requests, made here with order's client key):");
    match order_tokens(estate, &alice).await {
        Ok((cc, exchanged)) => {
            narrator.say("client credentials → inventory (order's own token, no user):");
            show_token(narrator, &cc, &["sub", "aud", "scope", "client_id"]);
            narrator.say("token exchange (RFC 8693) → payment (alice's token narrowed, order as actor):");
            show_token(narrator, &exchanged, &["sub", "aud", "scope", "act"]);
            let (_, claims) = decode(&exchanged);
            record(
                narrator,
                out,
                legit(
                    "FLOW-TX token exchange",
                    "exchanged token: aud payment-api, act order-svc",
                    claims["aud"] == "payment-api" && claims["act"]["sub"] == "order-svc",
                    format!("aud={} act={}", claims["aud"], claims["act"]),
                ),
            );
        }
        Err(error) => record(narrator, out, legit("FLOW-TX token exchange", "exchange as order-svc", false, error)),
    }

    let (status, _, refunded) =
        estate.edge_call(Method::POST, &format!("/v1/orders/{order_id}/refund"), Some(&alice), None).await;
    let refund_trace = estate.last_edge_trace().unwrap_or_default();
    narrator.say("refund: order relays alice's own token to payment (token relay):");
    show_hops(estate, narrator, &refund_trace);
    record(
        narrator,
        out,
        legit(
            "FLOW-RELAY token relay",
            "POST /v1/orders/{id}/refund",
            status == StatusCode::OK && refunded["status"] == "refunded",
            format!("{status}, order {}", refunded["status"]),
        ),
    );

    narrator.heading("3. Attacks — each must be refused, and leave its trace in the SIEM");
    let parts: Vec<&str> = alice.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let unsigned =
        format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"at+jwt"}"#), parts.get(1).copied().unwrap_or_default());
    let expired = estate.expired_copy(&alice).await;
    let misaddressed = estate.ops_token("inventory-api").await;
    let mine = format!("/v1/orders/{order_id}");
    let edge_attacks: [EdgeAttack<'_>; 7] = [
        ("API1 BOLA", "bob reads alice's order", Method::GET, &mine, &bob, None, StatusCode::NOT_FOUND),
        (
            "PC-02 token validation",
            "alg: none token",
            Method::GET,
            "/v1/orders",
            &unsigned,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "PC-02 token validation",
            "expired token (real signature)",
            Method::GET,
            "/v1/orders",
            &expired,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "PC-02 audience",
            "token for another audience",
            Method::GET,
            "/v1/orders",
            &misaddressed,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "API3 mass assignment",
            "order with our own unit price",
            Method::POST,
            "/v1/orders",
            &alice,
            Some(json!({ "lines": [{ "sku": "TEA-01", "quantity": 1, "unit_price_cents": 1 }] })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "API3 mass assignment",
            "PATCH status to \"paid\"",
            Method::PATCH,
            &mine,
            &alice,
            Some(json!({ "status": "paid" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "API7 SSRF",
            "webhook to 169.254.169.254",
            Method::POST,
            "/v1/webhooks",
            &alice,
            Some(json!({ "url": "https://169.254.169.254/latest/meta-data/" })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for attack in edge_attacks {
        edge_attack(estate, narrator, out, attack).await;
    }

    narrator.say(&format!("direct call to order's API (https://{}) without a workload certificate:", estate.order));
    let direct = direct_without_mtls(estate).await;
    narrator.detail("response", &direct.clone().unwrap_or_else(|e| e));
    record(
        narrator,
        out,
        attack(
            "PC-01 mTLS STRICT",
            "call a service without mTLS",
            direct.is_err(),
            direct.unwrap_or_else(|e| format!("no TLS session: {e}")),
        ),
    );

    narrator.say("inventory's Reserve called with payment's SVID (only order may):");
    let (grpc_status, event) = wrong_workload_at_inventory(estate).await;
    if let Some(event) = &event {
        narrator.detail("SIEM", &describe_event(event));
    }
    record(
        narrator,
        out,
        attack(
            "PC-01 per-route policy",
            "inventory called by the wrong workload",
            grpc_status.as_deref() == Some("7"),
            format!("grpc-status {} (PERMISSION_DENIED is 7)", grpc_status.unwrap_or_else(|| "none".into())),
        ),
    );

    narrator.say("operator runs `auth revoke user alice` (runbook docs/runbooks/revoke-user-tokens.md):");
    let revoked = estate.auth_operator(&["revoke", "user", "alice"]).await;
    narrator.detail("auth CLI", &revoked.clone().unwrap_or_else(|e| e));
    let started = Instant::now();
    let mut status = StatusCode::OK;
    while started.elapsed() < Duration::from_secs(10) {
        status = estate.edge_call(Method::GET, "/v1/orders", Some(&alice), None).await.0;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    show_edge_event(estate, narrator).await;
    record(
        narrator,
        out,
        attack(
            "PC-12 revocation",
            "use a revoked token",
            status == StatusCode::UNAUTHORIZED,
            format!("{status} after {:.1} s", started.elapsed().as_secs_f64()),
        ),
    );
    let (status, _, _) = estate.edge_call(Method::GET, "/v1/orders", Some(&bob), None).await;
    record(
        narrator,
        out,
        legit("PC-12 revocation", "others keep working (bob)", status == StatusCode::OK, status.to_string()),
    );

    narrator.say("password guessing against bob's login:");
    let mut last = String::new();
    let mut throttled = false;
    for attempt in 1..=8 {
        last = match estate.login_with("bob", &format!("guess-{attempt}")).await {
            Ok(_) => "a guess logged in".to_owned(),
            Err(reason) => reason,
        };
        if last.contains("429") {
            narrator.detail("attempt", &format!("{attempt}: {last}"));
            throttled = true;
            break;
        }
    }
    if let Some(event) = siem_event(estate, |e| e["event"]["action"] == "login_failed").await {
        narrator.detail("SIEM", &describe_event(&event));
    }
    record(narrator, out, attack("PC-09 rate limits", "login brute force", throttled, last));
    outcomes
}

/// An attack at the edge: control, step, method, path, token, body, the refusal it must get.
type EdgeAttack<'a> = (&'static str, &'static str, Method, &'a str, &'a str, Option<Value>, StatusCode);

/// An attack at the edge: the call, its response and its SIEM event.
async fn edge_attack(
    estate: &Estate,
    narrator: &Narrator,
    out: &mut Vec<Outcome>,
    (control, step, method, path, token, body, expected): EdgeAttack<'_>,
) {
    let (status, _, problem) = estate.edge_call(method.clone(), path, Some(token), body.as_ref()).await;
    narrator.say(&format!("{step}: {method} {path}"));
    show_edge_event(estate, narrator).await;
    let detail = problem["detail"].as_str().map(|d| format!(": {d}")).unwrap_or_default();
    record(narrator, out, attack(control, step, status == expected, format!("{status}{detail}")));
}

/// order's two token requests, made with order's own client key: client
/// credentials for inventory and the exchange of `user_token` for payment.
async fn order_tokens(estate: &Estate, user_token: &str) -> Result<(String, String), String> {
    use secrecy::ExposeSecret as _;
    let pem = std::fs::read_to_string(&estate.order_key_file).map_err(|e| e.to_string())?;
    let auth = estate_oauth_client::ClientAuth::private_key_jwt("order-svc", "order-key", &pem.into())
        .map_err(|e| e.to_string())?;
    let client =
        estate_oauth_client::OAuthClient::new(&format!("{}/token", estate.auth_url), auth, Some(estate.auth_ca()))
            .map_err(|e| e.to_string())?;
    let cc = client.client_credentials("inventory:reserve", Some("inventory-api")).await.map_err(|e| e.to_string())?;
    let exchanged = client
        .exchange(&user_token.to_owned().into(), "payment-api", "payments:authorize")
        .await
        .map_err(|e| e.to_string())?;
    Ok((cc.access_token.expose_secret().to_owned(), exchanged.access_token.expose_secret().to_owned()))
}

/// A TLS client that trusts the workloads' CA but presents no certificate.
#[allow(
    clippy::disallowed_methods,
    reason = "the attacker's client: it skips the host name check only to get to the server's refusal"
)]
async fn direct_without_mtls(estate: &Estate) -> Result<String, String> {
    let ca = reqwest::Certificate::from_pem(estate.bundle.as_bytes()).map_err(|e| e.to_string())?;
    // The server's certificate names a SPIFFE ID, not a host: skip the host
    // name check so the handshake gets as far as the server's demand for
    // a client certificate — which this client cannot meet.
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .danger_accept_invalid_hostnames(true)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("https://{}/v1/orders", estate.order);
    match client.get(url).send().await {
        Ok(response) => Ok(format!("answered {}", response.status())),
        Err(error) => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(inner) = source {
                text = inner.to_string();
                source = inner.source();
            }
            Err(text)
        }
    }
}

/// `Reserve` at inventory with payment's SVID: the grpc-status and the
/// policy event.
async fn wrong_workload_at_inventory(estate: &Estate) -> (Option<String>, Option<Value>) {
    let client = estate.workload_client("payment", "inventory");
    let response = client
        .post(format!("https://{}/estate.inventory.v1.Inventory/Reserve", estate.inventory))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0u8; 5])
        .send()
        .await;
    let status =
        response.ok().and_then(|r| r.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned));
    let event = siem_event(estate, |e| {
        e["service"]["name"] == "inventory"
            && e["event"]["action"] == "policy_denied"
            && e["estate"]["peer"] == spiffe("payment")
    })
    .await;
    (status, event)
}
