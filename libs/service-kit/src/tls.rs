//! Server TLS for every Estate listener (ARCHITECTURE §6: every listener is TLS).
//!
//! One crypto provider for the whole tree: aws-lc-rs, passed explicitly to
//! every rustls builder through [`crypto_provider`] rather than installed as a
//! process-wide default, so nothing depends on who initialised what first.
//!
//! The active [`rustls::ServerConfig`] sits behind an [`ArcSwap`]
//! ([`ServerTls`]): each new connection reads the current one, so certificates
//! can rotate without a restart and without touching connections in flight.
//! Client-certificate (mTLS/SPIFFE) verification plugs in here too: it is a
//! different `ServerConfig` in the same slot.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret;

use crate::config::{Mode, TlsConfig};
use crate::secret::{SecretError, resolve_local};

/// Text that marks a development CA in a certificate's issuer. Production
/// refuses server certificates whose issuer carries it.
pub const DEV_CA_MARKER: &str = "Estate Development";

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Neither files nor `dev_self_signed` were configured.
    #[error("no server certificate: set tls.cert and tls.key (or tls.dev_self_signed in development)")]
    NotConfigured,
    /// The certificate file could not be read or parsed.
    #[error("cannot load certificate chain {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The private key could not be read or parsed.
    #[error("cannot load private key: {0}")]
    Key(String),
    /// Reading the key's secret reference failed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// rustls refused the combination.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Production mode found a development certificate.
    #[error("production mode refuses a certificate issued by a development CA ({0})")]
    DevCertificateInProduction(String),
    /// Generating a development certificate failed.
    #[error("cannot generate development certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The crypto provider every rustls config in Estate is built with.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain and its private key, ready for rustls.
pub struct CertifiedKey {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl CertifiedKey {
    /// From PEM text (chain leaf first, then key).
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Certificate { path: "<pem>".into(), reason: e.to_string() })?;
        if chain.is_empty() {
            return Err(TlsError::Certificate { path: "<pem>".into(), reason: "no certificate".into() });
        }
        // The parse error of a key never includes key bytes.
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
        Ok(Self { chain, key })
    }

    /// Load what [`TlsConfig`] points at, or generate a self-signed
    /// certificate in development mode when asked to.
    pub fn load(config: &TlsConfig, mode: Mode) -> Result<Self, TlsError> {
        let loaded = match (&config.cert, &config.key) {
            (Some(cert_path), Some(key_ref)) => {
                let chain_pem = std::fs::read(cert_path).map_err(|e| TlsError::Certificate {
                    path: cert_path.display().to_string(),
                    reason: e.to_string(),
                })?;
                let key_pem = resolve_local(key_ref)?;
                Self::from_pem(&chain_pem, key_pem.expose_secret())?
            }
            _ if config.dev_self_signed && mode == Mode::Development => Self::self_signed()?,
            _ => return Err(TlsError::NotConfigured),
        };
        if mode == Mode::Production {
            loaded.refuse_dev_issuer()?;
        }
        Ok(loaded)
    }

    /// A throwaway certificate for `localhost`/`127.0.0.1`, for development.
    pub fn self_signed() -> Result<Self, TlsError> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{DEV_CA_MARKER} self-signed"));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        Self::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
    }

    fn refuse_dev_issuer(&self) -> Result<(), TlsError> {
        let Some(leaf) = self.chain.first() else { return Err(TlsError::NotConfigured) };
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| TlsError::Certificate { path: "<leaf>".into(), reason: e.to_string() })?;
        let issuer = cert.issuer().to_string();
        if issuer.contains(DEV_CA_MARKER) {
            return Err(TlsError::DevCertificateInProduction(issuer));
        }
        Ok(())
    }

    /// A rustls server config presenting this certificate, TLS 1.2+ only,
    /// offering HTTP/2 and HTTP/1.1 via ALPN, no client certificates.
    pub fn into_server_config(self) -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The swappable server config a listener reads for every new connection.
#[derive(Clone)]
pub struct ServerTls(Arc<ArcSwap<ServerConfig>>);

impl ServerTls {
    /// Start with `config`.
    pub fn new(config: ServerConfig) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(config)))
    }

    /// The config new connections use right now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.0.load_full()
    }

    /// Replace the config; connections already established keep theirs.
    pub fn rotate(&self, config: ServerConfig) {
        self.0.store(Arc::new(config));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_refused_in_production() {
        let config = TlsConfig { dev_self_signed: true, ..TlsConfig::default() };
        assert!(matches!(CertifiedKey::load(&config, Mode::Production), Err(TlsError::NotConfigured)));
        assert!(CertifiedKey::load(&config, Mode::Development).is_ok());
    }

    #[test]
    fn dev_issuer_is_refused_in_production() {
        let key = CertifiedKey::self_signed().unwrap();
        assert!(matches!(key.refuse_dev_issuer(), Err(TlsError::DevCertificateInProduction(_))));
    }

    #[test]
    fn garbage_pem_is_an_error_not_a_panic() {
        assert!(CertifiedKey::from_pem(b"nonsense", b"nonsense").is_err());
        assert!(CertifiedKey::from_pem(b"", b"").is_err());
    }
}
