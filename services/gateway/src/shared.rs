//! One rate-limit budget for every gateway replica, kept in Redis.
//!
//! The same GCRA as in process, computed atomically by a Lua script in Redis
//! with Redis's own clock, so replicas (and their clock skew) do not matter.
//! The connection is TLS (rustls, the estate's one crypto provider, the
//! configured CA) and authenticated (`AUTH` with a password read from a
//! secret reference). If Redis cannot be reached, each replica falls back to
//! its in-process limits (never to "unlimited") and says so in its log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use estate_service_kit::SecretRef;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::limits::Rate;

/// `[service.redis]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `host:port` of Redis's TLS port.
    pub address: String,
    /// The name its certificate carries.
    pub server_name: String,
    /// The CA that signed it (PEM file).
    pub ca_file: PathBuf,
    /// The password (`requirepass`), as a secret reference.
    pub password: SecretRef,
    /// Longest wait for Redis per check before falling back, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    250
}

/// GCRA: `KEYS[1]` the budget, `ARGV[1]` the emission interval and
/// `ARGV[2]` the burst tolerance (ms). Returns 0 (allowed) or the wait in ms.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return 0
";

/// Redis failed (the caller falls back).
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// I/O or TLS.
    #[error("redis connection: {0}")]
    Io(#[from] std::io::Error),
    /// An answer that is not what the protocol says.
    #[error("redis answered {0}")]
    Protocol(String),
    /// Too slow.
    #[error("redis timed out")]
    Timeout,
}

/// The shared limiter.
pub struct SharedLimits {
    address: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    password: SecretString,
    timeout: Duration,
    connection: Mutex<Option<BufReader<TlsStream<TcpStream>>>>,
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One RESP reply line: `+simple`, `-error` or `:integer`.
async fn reply(stream: &mut BufReader<TlsStream<TcpStream>>) -> Result<String, SharedError> {
    let mut line = String::new();
    let read = stream.read_line(&mut line).await?;
    if read == 0 {
        return Err(SharedError::Protocol("end of stream".into()));
    }
    let line = line.trim_end().to_owned();
    if line.starts_with('-') {
        // Error replies name the problem, never our data.
        return Err(SharedError::Protocol(line.chars().take(80).collect()));
    }
    Ok(line)
}

impl SharedLimits {
    /// From settings (the password resolved by the caller).
    pub fn new(settings: &RedisSettings, password: SecretString) -> anyhow::Result<Arc<Self>> {
        let pem = std::fs::read(&settings.ca_file)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(estate_service_kit::tls::crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(Self {
            address: settings.address.clone(),
            server_name: ServerName::try_from(settings.server_name.clone())?,
            connector: TlsConnector::from(Arc::new(config)),
            password,
            timeout: Duration::from_millis(settings.timeout_ms.clamp(10, 5000)),
            connection: Mutex::new(None),
        }))
    }

    async fn connect(&self) -> Result<BufReader<TlsStream<TcpStream>>, SharedError> {
        let tcp = TcpStream::connect(&self.address).await?;
        tcp.set_nodelay(true)?;
        let tls = self.connector.connect(self.server_name.clone(), tcp).await?;
        let mut stream = BufReader::new(tls);
        stream.get_mut().write_all(&command(&[b"AUTH", self.password.expose_secret().as_bytes()])).await?;
        let answer = reply(&mut stream).await?;
        if answer != "+OK" {
            return Err(SharedError::Protocol("AUTH refused".into()));
        }
        Ok(stream)
    }

    async fn run(&self, key: &str, rate: Rate) -> Result<Result<(), Duration>, SharedError> {
        let interval = rate.interval().as_millis().max(1);
        let tolerance = interval * u128::from(rate.requests.max(1) - 1);
        let request = command(&[
            b"EVAL",
            GCRA.as_bytes(),
            b"1",
            key.as_bytes(),
            interval.to_string().as_bytes(),
            tolerance.to_string().as_bytes(),
        ]);
        let mut slot = self.connection.lock().await;
        if slot.is_none() {
            *slot = Some(self.connect().await?);
        }
        let Some(stream) = slot.as_mut() else { return Err(SharedError::Protocol("no connection".into())) };
        let outcome = async {
            stream.get_mut().write_all(&request).await?;
            let answer = reply(stream).await?;
            let wait: u64 = answer
                .strip_prefix(':')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| SharedError::Protocol("not an integer".into()))?;
            Ok::<_, SharedError>(if wait == 0 { Ok(()) } else { Err(Duration::from_millis(wait)) })
        }
        .await;
        if outcome.is_err() {
            // A broken or desynchronised connection is not reused.
            *slot = None;
        }
        outcome
    }

    /// `Err(wait)` when the shared budget `key` is spent; `Err(SharedError)` when Redis failed.
    pub async fn check(&self, key: &str, rate: Rate) -> Result<Result<(), Duration>, SharedError> {
        tokio::time::timeout(self.timeout, self.run(key, rate)).await.unwrap_or(Err(SharedError::Timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        assert_eq!(command(&[b"AUTH", b"p w"]), b"*2\r\n$4\r\nAUTH\r\n$3\r\np w\r\n".to_vec());
    }
}
