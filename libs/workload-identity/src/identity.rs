//! A workload's own certificate, swappable while it serves and calls.
//!
//! [`RotatingIdentity`] is the rustls certificate resolver on both sides of
//! east-west mTLS: every new handshake picks up the current SVID, connections
//! already established keep theirs, nothing restarts and no request fails.
//! [`spawn_openbao_renewal`] keeps it fresh from OpenBao's PKI engine,
//! renewing at two thirds of each certificate's lifetime.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::spiffe::SpiffeId;
use crate::tls::{IdentityTlsError, Svid};

/// The current SVID of this workload.
pub struct RotatingIdentity {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for RotatingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("RotatingIdentity").finish_non_exhaustive()
    }
}

fn certified(svid: Svid) -> Result<CertifiedKey, IdentityTlsError> {
    Ok(CertifiedKey::from_der(svid.chain, svid.key, &rustls::crypto::aws_lc_rs::default_provider())?)
}

impl RotatingIdentity {
    /// Start with `svid`.
    pub fn new(svid: Svid) -> Result<Arc<Self>, IdentityTlsError> {
        Ok(Arc::new(Self { current: ArcSwap::from_pointee(certified(svid)?) }))
    }

    /// Use `svid` for every handshake from now on (its key must match its certificate).
    pub fn rotate(&self, svid: Svid) -> Result<(), IdentityTlsError> {
        self.current.store(Arc::new(certified(svid)?));
        Ok(())
    }

    /// The current leaf certificate.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }
}

impl ResolvesServerCert for RotatingIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ResolvesClientCert for RotatingIdentity {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Keep `identity` fresh from OpenBao's PKI engine: issue a certificate for
/// `spiffe_id` valid `ttl`, swap it in, renew at two thirds of its lifetime;
/// retry with backoff on failure (the current certificate keeps serving).
pub fn spawn_openbao_renewal(
    identity: &Arc<RotatingIdentity>,
    openbao: estate_secrets::OpenBao,
    pki_mount: String,
    pki_role: String,
    spiffe_id: SpiffeId,
    ttl: Duration,
) {
    let weak = Arc::downgrade(identity);
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let issued = openbao.issue_spiffe_certificate(&pki_mount, &pki_role, spiffe_id.as_str(), ttl).await;
            let Some(identity) = weak.upgrade() else { return };
            let wait =
                match issued.map_err(|e| e.to_string()).and_then(|c| svid_from_pem(&c).map_err(|e| e.to_string())) {
                    Ok(svid) => match identity.rotate(svid) {
                        Ok(()) => {
                            tracing::info!(spiffe_id = %spiffe_id, "workload certificate renewed");
                            backoff = Duration::from_secs(1);
                            ttl.mul_f64(2.0 / 3.0)
                        }
                        Err(error) => {
                            tracing::warn!(%error, "renewed certificate unusable; keeping the current one");
                            backoff
                        }
                    },
                    Err(error) => {
                        tracing::warn!(%error, "certificate renewal failed; keeping the current one");
                        backoff
                    }
                };
            drop(identity);
            backoff = (backoff * 2).min(Duration::from_secs(60));
            tokio::time::sleep(wait).await;
        }
    });
}

/// An SVID from OpenBao's PEM answer.
pub fn svid_from_pem(issued: &estate_secrets::pki::IssuedCertificate) -> Result<Svid, IdentityTlsError> {
    use secrecy::ExposeSecret;
    let chain = CertificateDer::pem_slice_iter(issued.certificate.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityTlsError::Bundle(e.to_string()))?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.private_key.expose_secret().as_bytes())
        .map_err(|e| IdentityTlsError::Bundle(e.to_string()))?;
    Ok(Svid { chain, key })
}

/// Keep `identity` in step with certificate and key files that another agent
/// rewrites (cert-manager, SPIRE, Istio mounts): check their modification
/// times every `interval`, and swap in the new pair once both parse and the
/// key matches the certificate. A half-written or mismatched pair is ignored
/// (the current certificate keeps serving) and picked up when complete.
pub fn spawn_file_reload(
    identity: &Arc<RotatingIdentity>,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
    interval: Duration,
) {
    let weak = Arc::downgrade(identity);
    tokio::spawn(async move {
        let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut seen = (modified(&cert_path), modified(&key_path));
        loop {
            tokio::time::sleep(interval).await;
            let Some(identity) = weak.upgrade() else { return };
            let now = (modified(&cert_path), modified(&key_path));
            if now == seen {
                continue;
            }
            match read_svid_files(&cert_path, &key_path).and_then(|svid| identity.rotate(svid)) {
                Ok(()) => {
                    seen = now;
                    tracing::info!(cert = %cert_path.display(), "workload certificate reloaded from files");
                }
                Err(error) => {
                    tracing::warn!(%error, "certificate files changed but are not usable yet; keeping the current pair")
                }
            }
        }
    });
}

/// Read a PEM certificate chain and key (the key file must be owner-only).
pub fn read_svid_files(cert_path: &std::path::Path, key_path: &std::path::Path) -> Result<Svid, IdentityTlsError> {
    use secrecy::ExposeSecret;
    let chain_pem =
        std::fs::read(cert_path).map_err(|e| IdentityTlsError::Bundle(format!("{}: {e}", cert_path.display())))?;
    let key_pem =
        estate_service_kit::secret::read_file_secret(key_path).map_err(|e| IdentityTlsError::Bundle(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityTlsError::Bundle(e.to_string()))?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.expose_secret())
        .map_err(|e| IdentityTlsError::Bundle(e.to_string()))?;
    Ok(Svid { chain, key })
}
