//! A real OpenBao dev server (`bao server -dev -dev-tls`) for one test.
//!
//! Dev mode is in-memory, unsealed and has a root token: right for tests,
//! refused by Estate's production mode. It listens with TLS on a random
//! loopback port; its self-generated CA is exposed so clients verify it.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use tempfile::TempDir;

use crate::process::ChildGuard;
use crate::{READY_TIMEOUT, TestkitError, ports, tools};

/// A running OpenBao dev server; stopped when dropped.
pub struct TestOpenBao {
    process: ChildGuard,
    addr: String,
    root_token: String,
    ca_pem: String,
    dir: TempDir,
}

impl TestOpenBao {
    /// Start a server and wait until `sys/health` says it is unsealed.
    pub async fn start() -> Result<Self, TestkitError> {
        let bao = tools::bao()?;
        let mut last_error = None;
        for _ in 0..ports::START_ATTEMPTS {
            match Self::try_start(&bao).await {
                Ok(server) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| TestkitError::failed("bao", "no attempt made")))
    }

    async fn try_start(bao: &PathBuf) -> Result<Self, TestkitError> {
        let dir = tempfile::Builder::new().prefix("estate-bao-").tempdir().map_err(TestkitError::io("tempdir"))?;
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).map_err(TestkitError::io("mkdir certs"))?;
        let port = ports::free_port_pair()?;
        let root_token = format!("{:032x}", rand::rng().random::<u128>());
        let log_path = dir.path().join("bao.log");
        let log = File::create(&log_path).map_err(TestkitError::io("create bao.log"))?;
        let log_err = log.try_clone().map_err(TestkitError::io("clone log handle"))?;
        let child = Command::new(bao)
            .arg("server")
            .arg("-dev")
            .arg(format!("-dev-root-token-id={root_token}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg("-dev-tls")
            .arg(format!("-dev-tls-cert-dir={}", certs.display()))
            .arg("-dev-no-store-token")
            // Keep the dev server away from the user's home and token helper.
            .env("HOME", dir.path())
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(TestkitError::io(format!("spawn {}", bao.display())))?;
        let mut process = ChildGuard::new(child);
        let addr = format!("https://127.0.0.1:{port}");

        let deadline = Instant::now() + READY_TIMEOUT;
        let not_ready =
            || TestkitError::NotReady { what: "OpenBao", seconds: READY_TIMEOUT.as_secs(), log: log_path.clone() };
        // The CA appears once the server has generated its TLS material.
        let ca_path = certs.join("vault-ca.pem");
        let ca_pem = loop {
            if let Some(status) = process.try_wait() {
                return Err(TestkitError::failed(
                    "bao server",
                    format!("exited early ({status}); see {}", log_path.display()),
                ));
            }
            if let Ok(pem) = std::fs::read_to_string(&ca_path)
                && pem.contains("END CERTIFICATE")
            {
                break pem;
            }
            if Instant::now() > deadline {
                return Err(not_ready());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let client =
            reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes())?]).build()?;
        // Readiness probe: poll the health endpoint until it reports unsealed.
        loop {
            if let Some(status) = process.try_wait() {
                return Err(TestkitError::failed(
                    "bao server",
                    format!("exited early ({status}); see {}", log_path.display()),
                ));
            }
            if let Ok(response) = client.get(format!("{addr}/v1/sys/health")).send().await
                && response.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(not_ready());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { process, addr, root_token, ca_pem, dir })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The root token (dev server only; services never get it).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The server's CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server's PID (for the no-leftover tests).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// A reqwest client that trusts this server's CA only.
    pub fn http_client(&self) -> Result<reqwest::Client, TestkitError> {
        Ok(reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes())?])
            .build()?)
    }

    /// The folder holding the log and certificates.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
