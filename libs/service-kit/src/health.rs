//! `<service> health [--config PATH]`: the service's own readiness probe, for
//! orchestrators that run a command in the container (compose's
//! `healthcheck`) — the images are distroless and carry no HTTP client.
//!
//! It asks `GET /health/ready` on the management listener of the running
//! service over loopback and exits 0 only on `200`. The listener must present
//! exactly the certificate the configuration names (`[tls] cert`): a probe
//! of our own process pins our own certificate instead of trusting a CA.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::config::{Config, DevSettings};

/// How long the whole probe may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `args` ask for the health probe.
pub fn is_command(args: &[String]) -> bool {
    args.first().is_some_and(|a| a == "health")
}

/// Probe the service configured at `config_path`: `Ok` when it is ready.
pub fn probe<S: serde::de::DeserializeOwned + serde::Serialize + DevSettings>(
    config_path: Option<&Path>,
) -> anyhow::Result<()> {
    let config = Config::<S>::load(config_path)?;
    let cert_path = config.tls.cert.as_deref().context("health needs [tls] cert: the certificate to expect")?;
    let pem = std::fs::read(cert_path).with_context(|| format!("{}", cert_path.display()))?;
    let leaf = first_certificate(&pem).with_context(|| format!("no certificate in {}", cert_path.display()))?;
    let addr = loopback(config.management.bind);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = runtime
        .block_on(async { tokio::time::timeout(TIMEOUT, ready_status(addr, leaf)).await })
        .context("timed out")??;
    if status != 200 {
        bail!("{addr}: /health/ready answered {status}");
    }
    Ok(())
}

fn first_certificate(pem: &[u8]) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem).next()?.ok()
}

/// The listener's address as seen from inside its host.
fn loopback(bind: SocketAddr) -> SocketAddr {
    match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bind.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bind.port()),
        _ => bind,
    }
}

async fn ready_status(addr: SocketAddr, leaf: CertificateDer<'static>) -> anyhow::Result<u16> {
    let provider = crate::tls::crypto_provider();
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { leaf, provider }))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
    let name = ServerName::try_from("localhost")?;
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.context("TLS")?;
    stream
        .write_all(b"GET /health/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .context("send")?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        let n = stream.read(&mut head[read..]).await.context("read")?;
        if n == 0 {
            break;
        }
        read += n;
    }
    // "HTTP/1.1 200 ..."
    let line = String::from_utf8_lossy(&head[..read]).into_owned();
    line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).with_context(|| format!("not HTTP: {line:?}"))
}

/// Accepts exactly one certificate (signatures still checked).
#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the configured certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_replaces_only_the_unspecified_address() {
        assert_eq!(loopback("0.0.0.0:9443".parse().unwrap()), "127.0.0.1:9443".parse().unwrap());
        assert_eq!(loopback("[::]:9443".parse().unwrap()), "[::1]:9443".parse().unwrap());
        assert_eq!(loopback("10.0.0.5:9443".parse().unwrap()), "10.0.0.5:9443".parse().unwrap());
    }
}
