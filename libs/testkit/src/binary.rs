//! Running a service binary the way an operator does: a config file, TLS
//! certificates on disk, JSON logs on stdout, SIGTERM to stop.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{READY_TIMEOUT, TestPki, TestkitError};

/// A service process started from its binary.
pub struct ServiceProcess {
    child: Child,
    api_addr: std::net::SocketAddr,
    management_addr: std::net::SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
    raw: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl ServiceProcess {
    /// Start `exe` with a generated config: both listeners on free loopback
    /// ports, a server certificate from `pki`, and `service_toml` as the
    /// body of its `[service]` section. Returns once the service has
    /// logged its `listening` event (read from its stdout, not guessed).
    pub async fn spawn(exe: &Path, pki: &TestPki, service_toml: &str) -> Result<Self, TestkitError> {
        Self::spawn_with(exe, pki, service_toml, "").await
    }

    /// The same with more top-level sections (`top_level_toml`, e.g. `[telemetry]`).
    pub async fn spawn_with(
        exe: &Path,
        pki: &TestPki,
        service_toml: &str,
        top_level_toml: &str,
    ) -> Result<Self, TestkitError> {
        Self::spawn_logged(exe, pki, service_toml, top_level_toml, None).await
    }

    /// The same, with every stdout line also appended to `log_file`.
    pub async fn spawn_logged(
        exe: &Path,
        pki: &TestPki,
        service_toml: &str,
        top_level_toml: &str,
        log_file: Option<&Path>,
    ) -> Result<Self, TestkitError> {
        let dir = tempfile::Builder::new().prefix("estate-svc-").tempdir().map_err(TestkitError::io("tempdir"))?;
        let files = pki.localhost_server()?.write_to(dir.path(), "server")?;
        let config = format!(
            "mode = \"development\"\n\
             [api]\nbind = \"127.0.0.1:0\"\n\
             [management]\nbind = \"127.0.0.1:0\"\n\
             [tls]\ncert = \"{}\"\nkey = \"file:{}\"\n\
             {}\n\
             [service]\n{}\n",
            files.cert.display(),
            files.key.display(),
            top_level_toml,
            service_toml
        );
        let config_path = dir.path().join("service.toml");
        std::fs::write(&config_path, config).map_err(TestkitError::io("write config"))?;
        Self::spawn_config(exe, &config_path, log_file, dir).await
    }

    /// Start `exe` with the complete configuration file `config_path`
    /// (whose listeners may be on port 0); `dir` lives as long as the process.
    pub async fn spawn_config(
        exe: &Path,
        config_path: &Path,
        log_file: Option<&Path>,
        dir: TempDir,
    ) -> Result<Self, TestkitError> {
        let mut log = match log_file {
            Some(path) => Some(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(TestkitError::io(format!("open {}", path.display())))?,
            ),
            None => None,
        };
        let mut command = Command::new(exe);
        // Hermetic: the service sees only this config, not ESTATE_* settings of whoever runs the tests.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ESTATE_") {
                command.env_remove(&key);
            }
        }
        let mut child = command
            .arg("--config")
            .arg(config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(TestkitError::io(format!("spawn {}", exe.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| TestkitError::failed("spawn", "no stdout"))?;

        // Read log lines for the whole life of the process (a full pipe would block it).
        let logs = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (listening_tx, listening_rx) = tokio::sync::oneshot::channel();
        let sink = logs.clone();
        let raw_sink = raw.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut listening_tx = Some(listening_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(file) = log.as_mut() {
                    use tokio::io::AsyncWriteExt;
                    let _ = file.write_all(format!("{line}\n").as_bytes()).await;
                }
                if let Ok(mut raw) = raw_sink.lock() {
                    raw.push(line.clone());
                }
                let Ok(json) = serde_json::from_str::<Value>(&line) else { continue };
                if json["message"] == "listening"
                    && let Some(tx) = listening_tx.take()
                {
                    let _ = tx.send(json.clone());
                }
                if let Ok(mut logs) = sink.lock() {
                    logs.push(json);
                }
            }
        });

        let listening = tokio::time::timeout(READY_TIMEOUT, listening_rx)
            .await
            .map_err(|_| TestkitError::failed("service start", "no `listening` log line in time"))?
            .map_err(|_| TestkitError::failed("service start", "exited before listening (see stderr)"))?;
        let addr = |field: &str| {
            listening[field]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| TestkitError::failed("service start", format!("no {field} in `listening`")))
        };
        Ok(Self { api_addr: addr("api_addr")?, management_addr: addr("management_addr")?, child, logs, raw, _dir: dir })
    }

    /// The API listener.
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.api_addr
    }

    /// The management listener.
    pub fn management_addr(&self) -> std::net::SocketAddr {
        self.management_addr
    }

    /// Every JSON log line so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Every stdout line so far, exactly as written (JSON or not).
    pub fn raw_logs(&self) -> Vec<String> {
        self.raw.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Send SIGTERM and wait for the exit code.
    pub async fn terminate(mut self) -> Result<Option<i32>, TestkitError> {
        let pid = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| TestkitError::failed("terminate", "already exited"))?;
        kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| TestkitError::failed("SIGTERM", e.to_string()))?;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .map_err(|_| TestkitError::failed("terminate", "did not exit within 30 s of SIGTERM"))?
            .map_err(TestkitError::io("wait"))?;
        Ok(status.code())
    }
}

/// The lifecycle every service binary must show (issue #2 acceptance):
/// it starts; `/health/live` answers on the management port over TLS; the API
/// port speaks TLS (and refuses plain HTTP) and answers with problem+json and
/// security headers; SIGTERM makes it drain and exit 0.
#[allow(clippy::expect_used, reason = "an assertion helper: failing loudly is its job")]
pub async fn assert_service_binary_lifecycle(exe: &str, service_toml: &str) {
    let pki = TestPki::new("binary-test").expect("test CA");
    let client = pki.https_client().expect("client");
    assert_service_binary_lifecycle_with(exe, &pki, service_toml, &client, 404).await;
}

/// The same for a service whose API listener needs east-west mTLS: the API
/// check goes through `api_client` (presenting an SVID from `pki`) and
/// expects `api_status` for an unknown path (404, or 403 where the east-west
/// policy does not admit the caller to it).
#[allow(clippy::expect_used, reason = "an assertion helper: failing loudly is its job")]
pub async fn assert_service_binary_lifecycle_with(
    exe: &str,
    pki: &TestPki,
    service_toml: &str,
    api_client: &reqwest::Client,
    api_status: u16,
) {
    let service = ServiceProcess::spawn(Path::new(exe), pki, service_toml).await.expect("service starts");
    let client = pki.https_client().expect("client");

    let live = client
        .get(format!("https://localhost:{}/health/live", service.management_addr().port()))
        .send()
        .await
        .expect("management listener answers over TLS");
    assert_eq!(live.status(), 200);
    assert_eq!(live.json::<Value>().await.expect("json")["status"], "live");

    let ready = client
        .get(format!("https://localhost:{}/health/ready", service.management_addr().port()))
        .send()
        .await
        .expect("readiness answers");
    assert_eq!(ready.status(), 200);

    let api = api_client
        .get(format!("https://localhost:{}/no-such-route", service.api_addr().port()))
        .send()
        .await
        .expect("API listener answers over TLS");
    assert_eq!(api.status(), api_status);
    assert_eq!(api.headers()["content-type"], "application/problem+json");
    assert!(api.headers().contains_key("strict-transport-security"));

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain =
        reqwest::Client::new().get(format!("http://127.0.0.1:{}/health/live", service.api_addr().port())).send().await;
    assert!(plain.is_err(), "plain HTTP was served");

    let logs_before_stop = service.logs();
    assert!(logs_before_stop.iter().any(|l| l["message"] == "request handled"), "JSON request logs");

    let code = service.terminate().await.expect("terminates");
    assert_eq!(code, Some(0), "clean exit on SIGTERM");
}

/// The body of a `[service]` section from JSON settings (for
/// [`ServiceProcess::spawn`]): one `key = value` line per top-level key,
/// nested objects as inline tables. JSON string escapes are valid TOML.
pub fn service_toml(settings: &Value) -> String {
    fn inline(value: &Value) -> String {
        match value {
            Value::Object(map) => {
                let fields: Vec<String> = map
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| format!("{} = {}", Value::String(k.clone()), inline(v)))
                    .collect();
                format!("{{ {} }}", fields.join(", "))
            }
            Value::Array(items) => format!("[{}]", items.iter().map(inline).collect::<Vec<_>>().join(", ")),
            other => other.to_string(),
        }
    }
    match settings {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{} = {}\n", Value::String(k.clone()), inline(v)))
            .collect(),
        _ => String::new(),
    }
}
