//! `configure --init-dir DIR` (instead of `--token-file`): a fresh OpenBao
//! is initialised — one key share, for a single-host deployment such as
//! compose; a production OpenBao uses auto-unseal and an operator's token —
//! its unseal key and root token kept in DIR (0400: a volume only the
//! bootstrap mounts), and a sealed one (after a restart) is unsealed with
//! the kept key. Returns the root token's file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::certs::write_file;

async fn call(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> Result<Value> {
    let mut request = http.request(method, &url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.with_context(|| format!("OpenBao at {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("OpenBao answered {status} at {url}");
    }
    response.json().await.with_context(|| format!("OpenBao's answer at {url}"))
}

/// Wait until OpenBao answers at all (any HTTP status: sealed and
/// uninitialised are answers) — an orchestrator starts the bootstrap as soon
/// as OpenBao's process has started, not once it listens. Fails after 60 s
/// with the last error.
pub(crate) async fn wait_until_answering(address: &str, ca_pem: &[u8]) -> Result<()> {
    let ca = reqwest::Certificate::from_pem(ca_pem).context("OpenBao CA")?;
    let http = reqwest::Client::builder().tls_certs_only([ca]).https_only(true).build()?;
    let url = format!("{}/v1/sys/health", address.trim_end_matches('/'));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match http.get(&url).send().await {
            Ok(_) => return Ok(()),
            Err(error) if std::time::Instant::now() >= deadline => {
                return Err(error).with_context(|| format!("OpenBao at {url} did not answer within 60 s"));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

pub(crate) async fn init_and_unseal(address: &str, ca_pem: &[u8], dir: &Path) -> Result<PathBuf> {
    let ca = reqwest::Certificate::from_pem(ca_pem).context("OpenBao CA")?;
    let http = reqwest::Client::builder().tls_certs_only([ca]).https_only(true).build()?;
    let (key_file, token_file) = (dir.join("unseal-key"), dir.join("root-token"));
    let url = |path: &str| format!("{}/v1/{path}", address.trim_end_matches('/'));
    let init = call(&http, reqwest::Method::GET, url("sys/init"), None).await?;
    if init["initialized"] != true {
        let answer = call(
            &http,
            reqwest::Method::PUT,
            url("sys/init"),
            Some(json!({ "secret_shares": 1, "secret_threshold": 1 })),
        )
        .await?;
        let key = answer["keys"][0].as_str().context("no unseal key in OpenBao's answer")?;
        let token = answer["root_token"].as_str().context("no root token in OpenBao's answer")?;
        write_file(&key_file, key, 0o400)?;
        write_file(&token_file, token, 0o400)?;
    } else if !key_file.exists() || !token_file.exists() {
        bail!("OpenBao is initialised, but not by this bootstrap ({} has no keys): give --token-file", dir.display());
    }
    let status = call(&http, reqwest::Method::GET, url("sys/seal-status"), None).await?;
    if status["sealed"] == true {
        let key = std::fs::read_to_string(&key_file).context("unseal key")?;
        let unsealed = call(&http, reqwest::Method::PUT, url("sys/unseal"), Some(json!({ "key": key.trim() }))).await?;
        if unsealed["sealed"] != false {
            bail!("OpenBao is still sealed after the unseal key was given");
        }
    }
    // Unsealed is not yet serving: wait until this node is the active one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let health = http.get(url("sys/health")).send().await.map(|r| r.status());
        if health.is_ok_and(|status| status == reqwest::StatusCode::OK) {
            return Ok(token_file);
        }
        if std::time::Instant::now() >= deadline {
            bail!("OpenBao did not become active within 60 s of unsealing");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
