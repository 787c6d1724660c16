//! `estate-service-kit`: the runtime every Estate service shares.
//!
//! A service provides its API [`axum::Router`], its `[service]` settings type
//! and its readiness checks; the kit provides everything else, the same way in
//! every service:
//!
//! | concern | module |
//! |---|---|
//! | typed layered config, secret references, production refuses dev settings | [`config`], [`secret`] |
//! | JSON logs, W3C trace context | [`telemetry`] |
//! | request id, security headers, timeouts, body limits | [`middleware`] |
//! | RFC 9457 problem+json errors | [`problem`] |
//! | TLS listeners (rustls, aws-lc-rs), rotation slot | [`tls`], [`serve`] |
//! | management listener: health, readiness, metrics | [`management`], [`metrics`] |
//! | two listeners, graceful shutdown | [`server`] |
//! | `main` | [`run_main`] |

pub mod config;
#[cfg(feature = "dto")]
pub mod dto;
pub mod health;
pub mod management;
pub mod metrics;
pub mod middleware;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod otlp;
pub mod problem;
pub mod secret;
pub mod serve;
pub mod server;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use config::{AuditConfig, Config, DevSettings, Mode, NoServiceSettings, SecretRef};

/// The audit log a service writes to, as its configuration says.
pub fn audit_log(service: &str, config: &AuditConfig) -> anyhow::Result<estate_audit::AuditLog> {
    let siem = match &config.siem {
        Some(siem) => Some(estate_audit::SiemTarget {
            address: siem.address.clone(),
            server_name: siem.server_name.clone(),
            ca_pem: std::fs::read_to_string(&siem.ca_file)
                .map_err(|e| anyhow::anyhow!("audit.siem.ca_file {}: {e}", siem.ca_file.display()))?,
            buffer: siem.buffer,
            spool_dir: siem.spool_dir.clone(),
            client_cert: match (&siem.cert_file, &siem.key_file) {
                (Some(cert), Some(key)) => Some(estate_audit::sink::client_cert_from_pem(
                    &std::fs::read_to_string(cert)
                        .map_err(|e| anyhow::anyhow!("audit.siem.cert_file {}: {e}", cert.display()))?,
                    &std::fs::read_to_string(key)
                        .map_err(|e| anyhow::anyhow!("audit.siem.key_file {}: {e}", key.display()))?,
                )?),
                (None, None) => None,
                _ => anyhow::bail!("audit.siem: cert_file and key_file go together"),
            },
        }),
        None => None,
    };
    Ok(estate_audit::AuditLog::new(service, config.stdout, siem)?)
}
pub use problem::Problem;
pub use server::Server;

/// What a service crate implements so that [`run_main`] can run it.
pub trait Service: Sized + Send + 'static {
    /// The service's name, as in logs, metrics and SPIFFE IDs.
    const NAME: &'static str;
    /// The `[service]` section of its configuration.
    type Settings: DeserializeOwned + Serialize + DevSettings + Send + 'static;

    /// Bind the listeners and connect to dependencies; serve nothing yet.
    fn build(config: Config<Self::Settings>) -> impl Future<Output = anyhow::Result<Self>> + Send;

    /// Serve until `shutdown` completes, then drain. `true` when drained in time.
    fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> impl Future<Output = bool> + Send;
}

/// The whole `main` of a service binary: read `--config PATH` (or
/// `ESTATE_CONFIG`), load config, start JSON logs, build, serve until SIGTERM
/// or SIGINT, drain. Exit code 0 on a clean stop, 1 on a startup failure, 2
/// when the grace period ran out. `<service> health [--config PATH]` instead
/// probes the running service's readiness ([`health`]).
pub fn run_main<A: Service>() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if health::is_command(&args) {
        let probed = config_path_from_args(args.into_iter().skip(1)).and_then(|path| {
            let path = path.or_else(|| std::env::var_os("ESTATE_CONFIG").map(PathBuf::from));
            health::probe::<A::Settings>(path.as_deref())
        });
        return match probed {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{}: not ready: {error:#}", A::NAME);
                ExitCode::FAILURE
            }
        };
    }
    match run::<A>() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(error) => {
            // Logging may not be up yet, so stderr: startup failures must be visible.
            eprintln!("{}: cannot start: {error:#}", A::NAME);
            ExitCode::FAILURE
        }
    }
}

fn run<A: Service>() -> anyhow::Result<bool> {
    let config_path = config_path_from_args(std::env::args().skip(1))?
        .or_else(|| std::env::var_os("ESTATE_CONFIG").map(PathBuf::from));
    let config = Config::<A::Settings>::load(config_path.as_deref())?;
    telemetry::init_json_logs(&config.log.filter)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let exporter = otlp::start(A::NAME, &config.telemetry)?;
        let app = A::build(config).await?;
        let drained = app.run_until(shutdown_signal()).await;
        if let Some(exporter) = exporter {
            otlp::shutdown();
            // The last batch, briefly; a collector that does not answer cannot hold up the exit.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), exporter).await;
        }
        Ok(drained)
    })
}

fn config_path_from_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<PathBuf>> {
    let mut path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => {
                path = Some(PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("--config needs a path"))?))
            }
            other => anyhow::bail!("unknown argument {other:?} (usage: [--config PATH])"),
        }
    }
    Ok(path)
}

/// Completes on SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = ctrl_c.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_siem_client_certificate_without_its_key_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, estate_testkit::TestPki::new("siem").unwrap().ca_pem()).unwrap();
        let siem = config::SiemConfig {
            address: "127.0.0.1:1".into(),
            server_name: "localhost".into(),
            ca_file: ca,
            buffer: 10,
            spool_dir: None,
            cert_file: Some(dir.path().join("client.pem")),
            key_file: None,
        };
        let err = audit_log("order", &AuditConfig { stdout: false, siem: Some(siem) }).err().unwrap();
        assert!(err.to_string().contains("cert_file and key_file go together"), "{err}");
    }
}
