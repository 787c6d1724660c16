//! Typed, layered configuration (CONVENTIONS §12).
//!
//! Layers, later wins:
//! 1. built-in defaults (safe ones: loopback binds, small limits);
//! 2. a TOML file (`--config PATH` or `ESTATE_CONFIG`);
//! 3. environment variables `ESTATE_<SECTION>__<KEY>`, e.g.
//!    `ESTATE_API__BIND=0.0.0.0:8443`.
//!
//! The result is loaded once in `main` and passed down; nothing in the tree
//! reads the environment afterwards.
//!
//! Secrets never appear as values in configuration, only as [`SecretRef`]s
//! (`file:/run/secrets/tls.key`, `openbao:kv/data/order#metrics_token`), so a
//! config file can be committed, printed and diffed safely.
//!
//! [`Mode::Production`] refuses development conveniences at startup (see
//! [`Config::check_mode`]): a service that is accidentally deployed with dev
//! settings fails closed instead of running insecurely.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The environment-variable prefix of every Estate setting.
pub const ENV_PREFIX: &str = "ESTATE_";

/// Errors while loading or checking configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers could not be merged into the typed config.
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// Production mode found a development-only setting.
    #[error("production mode refuses development settings: {}", .0.join("; "))]
    DevSettingsInProduction(Vec<String>),
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        Self::Invalid(Box::new(err))
    }
}

/// Whether development conveniences are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local runs and tests: self-signed certificates and open metrics allowed.
    #[default]
    Development,
    /// Refuses every development setting at startup.
    Production,
}

/// The whole configuration of one service: the sections every service shares,
/// plus the service's own section `[service]` of type `S`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config<S> {
    /// development or production.
    #[serde(default)]
    pub mode: Mode,
    /// The public (or east-west) API listener.
    #[serde(default = "ListenerConfig::default_api")]
    pub api: ListenerConfig,
    /// The management listener: health, metrics.
    #[serde(default)]
    pub management: ManagementConfig,
    /// Certificates for both listeners.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Request limits applied by the middleware stack.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// `[telemetry]`: OTLP export of request spans.
    #[serde(default)]
    pub telemetry: crate::otlp::TelemetryConfig,
    /// Where audit events go.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The service's own settings.
    pub service: S,
}

/// Audit event sinks (see `estate-audit`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Write records as JSON lines to stdout (for Kubernetes log collectors).
    pub stdout: bool,
    /// Deliver records to a SIEM over syslog/TLS.
    #[serde(default)]
    pub siem: Option<SiemConfig>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { stdout: true, siem: None }
    }
}

/// A SIEM receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiemConfig {
    /// `host:port`.
    pub address: String,
    /// The DNS name its certificate must carry.
    pub server_name: String,
    /// CA that signed it (PEM file).
    pub ca_file: PathBuf,
    /// Records held while it is unreachable.
    #[serde(default = "default_siem_buffer")]
    pub buffer: usize,
    /// Keep undelivered records on disk here (survives a crash during an outage).
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Client certificate (PEM chain, leaf first) for a SIEM that requires
    /// mutual TLS; with `key_file`. Read at start: a rotated file takes
    /// effect on restart (a workload identity passed in code rotates live).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_siem_buffer() -> usize {
    10_000
}

/// One TCP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to bind; port 0 picks a free port (tests).
    pub bind: SocketAddr,
}

impl ListenerConfig {
    fn default_api() -> Self {
        Self { bind: SocketAddr::from(([127, 0, 0, 1], 8443)) }
    }
}

/// The management listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementConfig {
    /// Address to bind.
    pub bind: SocketAddr,
    /// Bearer token that `/metrics` requires. Required in production; when
    /// absent in development, metrics are open on the (loopback) listener.
    #[serde(default)]
    pub metrics_token: Option<SecretRef>,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self { bind: SocketAddr::from(([127, 0, 0, 1], 9443)), metrics_token: None }
    }
}

/// Server certificates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key (a secret, hence a reference).
    #[serde(default)]
    pub key: Option<SecretRef>,
    /// Generate a throwaway self-signed certificate at startup. Development
    /// only: production refuses it.
    #[serde(default)]
    pub dev_self_signed: bool,
}

/// Limits enforced by the common middleware stack.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes (API4 / PC-08).
    pub body_bytes: usize,
    /// Whole-request timeout in milliseconds.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// How long a TLS handshake may take, in milliseconds (slowloris guard).
    pub handshake_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            body_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            handshake_timeout_ms: 5_000,
        }
    }
}

impl LimitsConfig {
    /// The request timeout as a [`Duration`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    /// The shutdown grace period as a [`Duration`].
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
    /// The TLS handshake timeout as a [`Duration`].
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive, e.g. `info,estate=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info".to_owned() }
    }
}

/// Where a secret lives. Configuration holds these, never secret values.
///
/// Written as `file:/absolute/path` or `openbao:<mount>/<path>#<field>`.
/// A bare string is refused, so a secret pasted into a config file is an
/// error at startup rather than a leak waiting to happen.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretRef {
    /// A file, typically a Kubernetes Secret mounted with mode 0400.
    File(PathBuf),
    /// A field of a secret in OpenBao/Vault (resolved by `estate-secrets`).
    OpenBao {
        /// `<mount>/<path>`, e.g. `kv/data/order`.
        path: String,
        /// Field within the secret.
        field: String,
    },
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The reference is not secret, so showing it helps operators.
        write!(f, "SecretRef({self})")
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::OpenBao { path, field } => write!(f, "openbao:{path}#{field}"),
        }
    }
}

/// A string that is not a valid [`SecretRef`].
#[derive(Debug, thiserror::Error)]
#[error("not a secret reference (expected `file:/abs/path` or `openbao:mount/path#field`)")]
pub struct InvalidSecretRef;

impl FromStr for SecretRef {
    type Err = InvalidSecretRef;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("file:") {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(InvalidSecretRef);
            }
            return Ok(Self::File(path.to_path_buf()));
        }
        if let Some(rest) = s.strip_prefix("openbao:") {
            let (path, field) = rest.split_once('#').ok_or(InvalidSecretRef)?;
            if path.is_empty() || field.is_empty() || path.starts_with('/') {
                return Err(InvalidSecretRef);
            }
            return Ok(Self::OpenBao { path: path.to_owned(), field: field.to_owned() });
        }
        // Deliberately no echo of `s` in the error: it may be a pasted secret.
        Err(InvalidSecretRef)
    }
}

impl TryFrom<String> for SecretRef {
    type Error = InvalidSecretRef;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SecretRef> for String {
    fn from(r: SecretRef) -> Self {
        r.to_string()
    }
}

/// Development-only settings a service's own section may contain; production
/// mode refuses the config when this returns anything.
pub trait DevSettings {
    /// Human-readable names of the development settings in use.
    fn dev_settings(&self) -> Vec<String> {
        Vec::new()
    }
}

impl<S: DeserializeOwned + Serialize + DevSettings> Config<S> {
    /// Load defaults, then `file` (if any), then `ESTATE_*` variables from the
    /// process environment, then check the result against its [`Mode`].
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(file).merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"])))
    }

    /// The defaults and the file layer, for callers that add layers of their own.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Self::defaults()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
    }

    /// Extract and check a config from an already layered [`Figment`].
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Self = figment.extract()?;
        config.check_mode()?;
        Ok(config)
    }

    /// Every section's defaults, and an empty `[service]` table: a service
    /// whose settings have required fields (a database, an identity) fails
    /// to load with "missing field" instead of running on invented values.
    fn defaults() -> Defaults {
        Defaults {
            mode: Mode::default(),
            api: ListenerConfig::default_api(),
            management: ManagementConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            audit: AuditConfig::default(),
            telemetry: crate::otlp::TelemetryConfig::default(),
            service: EmptyTable {},
        }
    }

    /// Production refuses development settings (ARCHITECTURE §6). Checks that
    /// need file contents (e.g. a certificate issued by the dev CA) happen
    /// where the file is loaded, see [`crate::tls`].
    pub fn check_mode(&self) -> Result<(), ConfigError> {
        if self.mode != Mode::Production {
            return Ok(());
        }
        let mut found = self.service.dev_settings();
        if self.tls.dev_self_signed {
            found.push("tls.dev_self_signed = true".to_owned());
        }
        if self.tls.cert.is_none() || self.tls.key.is_none() {
            found.push("tls.cert and tls.key must be set".to_owned());
        }
        if self.management.metrics_token.is_none() {
            found.push("management.metrics_token is not set (metrics would be open)".to_owned());
        }
        if found.is_empty() { Ok(()) } else { Err(ConfigError::DevSettingsInProduction(found)) }
    }
}

/// The `[service]` section of a service that has no settings of its own yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoServiceSettings {}

impl DevSettings for NoServiceSettings {}

/// The default layer of a [`Config`].
#[derive(Serialize)]
struct Defaults {
    mode: Mode,
    api: ListenerConfig,
    management: ManagementConfig,
    tls: TlsConfig,
    limits: LimitsConfig,
    log: LogConfig,
    audit: AuditConfig,
    telemetry: crate::otlp::TelemetryConfig,
    service: EmptyTable,
}

#[derive(Serialize)]
struct EmptyTable {}

#[cfg(test)]
#[allow(clippy::result_large_err, reason = "figment::Jail closures return figment::Error")]
mod tests {
    use super::*;

    type TestConfig = Config<NoServiceSettings>;

    #[test]
    fn defaults_are_development_on_loopback() {
        let config = TestConfig::from_figment(TestConfig::figment(None)).unwrap();
        assert_eq!(config.mode, Mode::Development);
        assert!(config.api.bind.ip().is_loopback());
        assert!(config.management.bind.ip().is_loopback());
    }

    #[test]
    fn file_then_env_layering() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "order.toml",
                "[api]\nbind = \"127.0.0.1:1111\"\n[limits]\nbody_bytes = 10\nrequest_timeout_ms = 1\nshutdown_grace_ms = 1\nhandshake_timeout_ms = 1\n",
            )?;
            jail.set_env("ESTATE_API__BIND", "127.0.0.1:2222");
            let config = TestConfig::load(Some(Path::new("order.toml"))).unwrap();
            assert_eq!(config.api.bind.port(), 2222, "env overrides the file");
            assert_eq!(config.limits.body_bytes, 10, "file overrides the defaults");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("x.toml", "[api]\nbind = \"127.0.0.1:1\"\nbnid = \"oops\"\n")?;
            assert!(TestConfig::load(Some(Path::new("x.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn a_mistyped_environment_override_fails_closed() {
        figment::Jail::expect_with(|jail| {
            // A typo must not silently leave the default in force.
            jail.set_env("ESTATE_API__BNID", "0.0.0.0:1");
            assert!(TestConfig::load(None).is_err());
            Ok(())
        });
    }

    #[test]
    fn secret_values_are_refused_and_not_echoed() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("x.toml", "[tls]\nkey = \"hunter2-super-secret\"\n")?;
            let err = TestConfig::load(Some(Path::new("x.toml"))).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "error echoes the secret: {err}");
            Ok(())
        });
    }

    #[test]
    fn secret_refs_parse() {
        assert_eq!("file:/run/secrets/k".parse::<SecretRef>().unwrap(), SecretRef::File("/run/secrets/k".into()));
        assert_eq!(
            "openbao:kv/data/order#token".parse::<SecretRef>().unwrap(),
            SecretRef::OpenBao { path: "kv/data/order".into(), field: "token".into() }
        );
        for bad in ["file:relative", "openbao:kv/data/x", "openbao:#f", "plain", ""] {
            assert!(bad.parse::<SecretRef>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn production_refuses_dev_settings() {
        let mut config = TestConfig::from_figment(TestConfig::figment(None)).unwrap();
        config.mode = Mode::Production;
        config.tls.dev_self_signed = true;
        let err = config.check_mode().unwrap_err().to_string();
        assert!(err.contains("dev_self_signed"), "{err}");
        assert!(err.contains("metrics_token"), "{err}");
    }

    #[test]
    fn production_accepts_real_settings() {
        let mut config = TestConfig::from_figment(TestConfig::figment(None)).unwrap();
        config.mode = Mode::Production;
        config.tls.cert = Some("/run/secrets/tls.crt".into());
        config.tls.key = Some("file:/run/secrets/tls.key".parse().unwrap());
        config.management.metrics_token = Some("file:/run/secrets/metrics".parse().unwrap());
        config.check_mode().unwrap();
    }
}
