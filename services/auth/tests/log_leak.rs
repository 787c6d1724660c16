//! The log-leak test: run the real `auth` binary, drive flows that carry
//! real client secrets, wrong secrets, access tokens and exchanged tokens,
//! then read every line it wrote. None may contain any of them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::path::Path;

use estate_testkit::binary::ServiceProcess;
use estate_testkit::{SiemAuth, TestPki, TestSiem};
use serde_json::Value;

fn sha256_hex(secret: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn secret() -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn no_secret_or_token_appears_in_any_log_line() {
    let (reader, alice, order, gateway) = (secret(), secret(), secret(), secret());
    let wrong = format!("wrong-{}", secret());
    let service = format!(
        r#"issuer = "https://localhost"
dev_generated_signing_key = true
[[service.clients]]
client_id = "inventory-reader"
auth = {{ method = "client_secret_basic", secret_sha256 = "{}" }}
grant_types = ["client_credentials"]
scopes = ["inventory:read"]
audiences = ["inventory-api"]
[[service.clients]]
client_id = "alice-app"
auth = {{ method = "client_secret_basic", secret_sha256 = "{}" }}
grant_types = ["client_credentials"]
scopes = ["payments:authorize"]
audiences = ["order-api"]
[[service.clients]]
client_id = "order-svc"
auth = {{ method = "client_secret_basic", secret_sha256 = "{}" }}
grant_types = ["token_exchange"]
[[service.clients]]
client_id = "gateway"
auth = {{ method = "client_secret_basic", secret_sha256 = "{}" }}
grant_types = []
may_introspect = true
[[service.exchange]]
actor = "order-svc"
subject_audiences = ["order-api"]
audiences = ["payment-api"]
scopes = ["payments:authorize"]
"#,
        sha256_hex(&reader),
        sha256_hex(&alice),
        sha256_hex(&order),
        sha256_hex(&gateway)
    );
    // The SIEM receives the audit events over TLS.
    let siem = TestSiem::start(SiemAuth::ServerOnly).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let siem_ca = dir.path().join("siem-ca.pem");
    std::fs::write(&siem_ca, siem.ca_pem()).unwrap();
    let service = format!(
        "{service}\n[audit.siem]\naddress = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nca_file = \"{}\"\n",
        siem.port(),
        siem_ca.display()
    );
    let pki = TestPki::new("leak").unwrap();
    let process = ServiceProcess::spawn(Path::new(env!("CARGO_BIN_EXE_auth")), &pki, &service).await.unwrap();
    let http = pki.https_client().unwrap();
    let url = |path: &str| format!("https://localhost:{}{path}", process.api_addr().port());
    let post = |path: &'static str, client: (&'static str, String), form: Vec<(&'static str, String)>| {
        let (http, url) = (http.clone(), url(path));
        async move {
            let response = http.post(url).basic_auth(client.0, Some(client.1)).form(&form).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (_, reader_token) =
        post("/token", ("inventory-reader", reader.clone()), vec![("grant_type", "client_credentials".into())]).await;
    let reader_token = reader_token["access_token"].as_str().unwrap().to_owned();
    // The failure arrives with a caller's trace: the audit event must carry it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = http
        .post(url("/token"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .basic_auth("inventory-reader", Some(wrong.clone()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (_, subject) =
        post("/token", ("alice-app", alice.clone()), vec![("grant_type", "client_credentials".into())]).await;
    let subject = subject["access_token"].as_str().unwrap().to_owned();
    let (_, exchanged) = post(
        "/token",
        ("order-svc", order.clone()),
        vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange".into()),
            ("subject_token", subject.clone()),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token".into()),
            ("audience", "payment-api".into()),
        ],
    )
    .await;
    let exchanged = exchanged["access_token"].as_str().expect("exchange worked").to_owned();
    post("/introspect", ("gateway", gateway.clone()), vec![("token", reader_token.clone())]).await;
    post("/revoke", ("inventory-reader", reader.clone()), vec![("token", reader_token.clone())]).await;

    // PC-10: the SIEM got the security events, chained, with who/what but no secrets.
    let events = siem.wait_for_events(5, std::time::Duration::from_secs(30)).await.unwrap();
    let records: Vec<Value> = events.iter().map(|e| e.msg_json().unwrap()).collect();
    let actions: Vec<&str> = records.iter().map(|r| r["event"]["action"].as_str().unwrap()).collect();
    for expected in ["token_issued", "authentication_failed", "token_exchanged", "token_revoked"] {
        assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
    }
    let failed = records.iter().find(|r| r["event"]["action"] == "authentication_failed").unwrap();
    assert_eq!(failed["estate"]["client_id"], "inventory-reader");
    assert_eq!(failed["event"]["reason"], "invalid_client");
    assert!(failed["source"]["ip"].as_str().is_some());
    assert_eq!(failed["trace"]["id"], trace_id, "the audit event joins the request's trace");
    let exchange = records.iter().find(|r| r["event"]["action"] == "token_exchanged").unwrap();
    assert_eq!(exchange["user"]["id"], "alice-app");
    assert_eq!(exchange["estate"]["client_id"], "order-svc");
    assert!(exchange["estate"]["jti"].as_str().is_some());
    let received: Vec<String> = events.iter().map(|e| e.msg.clone()).collect();
    estate_audit::chain::verify(received.iter().map(String::as_str)).unwrap();

    let mut lines = process.raw_logs();
    lines.extend(siem.events().unwrap().into_iter().map(|e| e.raw.to_string()));
    assert_eq!(process.terminate().await.unwrap(), Some(0));

    // Not vacuous: the flows were logged (issuance with its jti, the failed authentication).
    assert!(lines.iter().any(|l| l.contains("token issued") && l.contains("\"jti\"")), "no issuance logged");
    assert!(lines.iter().any(|l| l.contains("client authentication failed")), "no failure logged");
    let signature = |token: &str| token.rsplit('.').next().unwrap().to_owned();
    let forbidden = [
        ("reader secret", reader),
        ("alice secret", alice),
        ("order secret", order),
        ("gateway secret", gateway),
        ("wrong secret", wrong),
        ("reader token", reader_token.clone()),
        ("reader token signature", signature(&reader_token)),
        ("subject token", subject.clone()),
        ("subject token signature", signature(&subject)),
        ("exchanged token", exchanged.clone()),
        ("exchanged token signature", signature(&exchanged)),
    ];
    for line in &lines {
        for (what, value) in &forbidden {
            assert!(!line.contains(value.as_str()), "{what} leaked into a log line: {line}");
        }
    }
    println!(
        "log-leak check: {} log lines and SIEM events, {} forbidden values, no leak",
        lines.len(),
        forbidden.len()
    );
}
