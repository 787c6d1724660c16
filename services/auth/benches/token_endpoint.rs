//! Client-credentials tokens per second from the real server over TLS with
//! keep-alive connections. Run with `cargo xtask bench auth`.
//!
//! Server and load generator share this process and the machine's cores, so
//! the figure is a floor: the TLS client work is paid on the same CPUs.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, reason = "a benchmark binary")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use estate_auth::Application;
use estate_service_kit::Service;
use estate_service_kit::config::Config;
use estate_testkit::{TestPki, free_port};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

static SECRET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()));
const REQUESTS: usize = 20_000;
const CONCURRENCY: usize = 64;

fn sha256_hex(secret: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn load(name: &str, http: &reqwest::Client, url: &str, forms: Vec<Vec<(String, String)>>, basic: bool) {
    let forms = Arc::new(std::sync::Mutex::new(forms));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, url, forms) = (http.clone(), url.to_owned(), forms.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let Some(form) = forms.lock().unwrap().pop() else { return done };
                let mut request = http.post(&url).form(&form);
                if basic {
                    request = request.basic_auth("reader", Some(SECRET.as_str()));
                }
                let response = request.send().await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.unwrap();
                done += 1;
            }
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "  {name:<28} {total} tokens in {:.2} s = {:>7.0} tokens/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let pki = TestPki::new("bench").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = pki.localhost_server().unwrap().write_to(dir.path(), "server").unwrap();
        let client_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pub_path = dir.path().join("svc.pub.pem");
        std::fs::write(&pub_path, client_key.public_key_pem()).unwrap();
        let port = free_port().unwrap();
        let issuer = format!("https://localhost:{port}");
        let toml = format!(
            r#"
            [api]
            bind = "127.0.0.1:{port}"
            [management]
            bind = "127.0.0.1:0"
            [log]
            filter = "warn"
            [tls]
            cert = "{cert}"
            key = "file:{key}"
            [service]
            issuer = "{issuer}"
            dev_generated_signing_key = true
            [service.rate_limits]
            per_client_per_minute = 100000000
            per_ip_per_minute = 100000000
            [[service.clients]]
            client_id = "reader"
            auth = {{ method = "client_secret_basic", secret_sha256 = "{digest}" }}
            grant_types = ["client_credentials"]
            scopes = ["inventory:read"]
            audiences = ["inventory-api"]
            [[service.clients]]
            client_id = "svc"
            auth = {{ method = "private_key_jwt", public_key_file = "{pub_key}" }}
            grant_types = ["client_credentials"]
            scopes = ["inventory:read"]
            audiences = ["inventory-api"]
            "#,
            cert = files.cert.display(),
            key = files.key.display(),
            digest = sha256_hex(SECRET.as_str()),
            pub_key = pub_path.display(),
        );
        let path = dir.path().join("auth.toml");
        std::fs::write(&path, toml).unwrap();
        let config = Config::from_figment(Config::<estate_auth::settings::AuthSettings>::figment(Some(&path))).unwrap();
        let app = Application::build(config).await.unwrap();
        tokio::spawn(app.run_until(std::future::pending()));

        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap()])
            .http1_only()
            .pool_max_idle_per_host(CONCURRENCY)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = format!("{issuer}/token");
        let cc = || vec![("grant_type".to_owned(), "client_credentials".to_owned())];

        // Warm-up: open the keep-alive connections.
        load("warm-up", &http, &url, (0..CONCURRENCY * 4).map(|_| cc()).collect(), true).await;

        println!("client_credentials over TLS, HTTP/1.1 keep-alive, {CONCURRENCY} connections, {REQUESTS} requests:");
        load("client_secret_basic", &http, &url, (0..REQUESTS).map(|_| cc()).collect(), true).await;

        // Assertions are signed before the clock starts: the server's work is what we measure.
        let key = EncodingKey::from_ec_der(&client_key.serialize_der());
        let now = estate_testkit::idp::now();
        let forms: Vec<Vec<(String, String)>> = (0..REQUESTS)
            .map(|i| {
                let claims = json!({"iss": "svc", "sub": "svc", "aud": url, "jti": format!("bench-{i}"), "iat": now, "exp": now + 120});
                let assertion = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
                let mut form = cc();
                form.push(("client_assertion_type".into(), "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
                form.push(("client_assertion".into(), assertion));
                form
            })
            .collect();
        load("private_key_jwt", &http, &url, forms, false).await;
    });
}
