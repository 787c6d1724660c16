//! rustls configurations for east-west mTLS.
//!
//! - [`server_config`]: presents the workload's SVID and *requires* a client
//!   certificate chaining to the trust bundle (no anonymous east-west calls).
//! - [`client_config`]: presents the workload's SVID and accepts only a server
//!   whose certificate chains to the bundle **and** carries the expected SPIFFE
//!   ID. Host names play no part: an attacker with any valid certificate from
//!   the same CA still cannot impersonate `payment` to `order`.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::crl::{CrlSet, RevocationAwareClientVerifier};
use crate::identity::RotatingIdentity;
use crate::spiffe::SpiffeId;

/// A workload's certificate chain and private key.
pub struct Svid {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum IdentityTlsError {
    /// The bundle is empty or unparseable.
    #[error("trust bundle: {0}")]
    Bundle(String),
    /// rustls refused the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(bundle: &[CertificateDer<'static>]) -> Result<RootCertStore, IdentityTlsError> {
    let mut roots = RootCertStore::empty();
    for cert in bundle {
        roots.add(cert.clone()).map_err(|e| IdentityTlsError::Bundle(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(IdentityTlsError::Bundle("no CA certificates".into()));
    }
    Ok(roots)
}

/// A server config that presents `identity` (rotating) and requires a client
/// SVID from `bundle`.
pub fn server_config(
    identity: Arc<RotatingIdentity>,
    bundle: &[CertificateDer<'static>],
) -> Result<ServerConfig, IdentityTlsError> {
    server_config_with_crls(identity, bundle, CrlSet::new())
}

/// [`server_config`], refusing client certificates revoked by `crls`.
pub fn server_config_with_crls(
    identity: Arc<RotatingIdentity>,
    bundle: &[CertificateDer<'static>],
    crls: Arc<CrlSet>,
) -> Result<ServerConfig, IdentityTlsError> {
    let roots = Arc::new(roots(bundle)?);
    let inner = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| IdentityTlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(RevocationAwareClientVerifier { inner, roots, crls, provider: provider() });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // No session resumption: a resumed TLS 1.3 session carries the client
    // certificate of its first handshake, so a workload whose SVID was rotated
    // away (or revoked) could go on being that identity for the ticket's
    // lifetime. Every east-west connection proves a current certificate; the
    // cost is one full handshake per connection, amortised by HTTP/2 reuse.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client config that presents `identity` (rotating) and accepts only
/// `expected_server`. Connect with any server name (e.g. the host); it is not
/// what is checked.
pub fn client_config(
    identity: Arc<RotatingIdentity>,
    bundle: &[CertificateDer<'static>],
    expected_server: SpiffeId,
) -> Result<ClientConfig, IdentityTlsError> {
    client_config_with_crls(identity, bundle, expected_server, CrlSet::new())
}

/// [`client_config`], refusing server certificates revoked by `crls`.
pub fn client_config_with_crls(
    identity: Arc<RotatingIdentity>,
    bundle: &[CertificateDer<'static>],
    expected_server: SpiffeId,
    crls: Arc<CrlSet>,
) -> Result<ClientConfig, IdentityTlsError> {
    let verifier =
        SpiffeServerVerifier { roots: roots(bundle)?, expected: expected_server, provider: provider(), crls };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        // The one custom verifier in the estate; reviewed, tested both ways.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Nor on the client side: a resumed session skips the server's SPIFFE ID check.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// [`client_config`] from PEM text: a workload certificate chain and key,
/// and the bundle (tools and tests that hold files rather than a rotating
/// identity).
pub fn client_config_from_pem(
    chain_pem: &str,
    key_pem: &str,
    bundle_pem: &str,
    expected_server: SpiffeId,
) -> Result<ClientConfig, IdentityTlsError> {
    use rustls_pki_types::pem::PemObject;
    let parse = |e: rustls_pki_types::pem::Error| IdentityTlsError::Bundle(e.to_string());
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(parse)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(parse)?;
    let bundle = CertificateDer::pem_slice_iter(bundle_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(parse)?;
    client_config(RotatingIdentity::new(Svid { chain, key })?, &bundle, expected_server)
}

/// Chain to the bundle (webpki, validity period, EKU) + the expected SPIFFE ID.
struct SpiffeServerVerifier {
    roots: RootCertStore,
    expected: SpiffeId,
    provider: Arc<CryptoProvider>,
    crls: Arc<CrlSet>,
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier").field("expected", &self.expected).finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let presented = SpiffeId::from_certificate(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))?;
        if presented != self.expected {
            tracing::warn!(expected = %self.expected, presented = %presented, "server presented another workload identity");
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName));
        }
        self.crls.check(
            end_entity,
            intermediates,
            &self.roots,
            now,
            &self.provider,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
