//! The log-leak test: run the real `auth` binary, drive flows that carry
//! real client secrets, wrong secrets, access tokens and exchanged tokens,
//! then read every line it wrote. None may contain any of them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::path::Path;

use estate_testkit::TestPki;
use estate_testkit::binary::ServiceProcess;
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
    let (status, _) =
        post("/token", ("inventory-reader", wrong.clone()), vec![("grant_type", "client_credentials".into())]).await;
    assert_eq!(status, 401);
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

    let lines = process.raw_logs();
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
    println!("log-leak check: {} log lines, {} forbidden values, no leak", lines.len(), forbidden.len());
}
