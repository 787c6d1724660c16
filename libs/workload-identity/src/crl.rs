//! Certificate revocation for east-west mTLS (PC-12: cut off a compromised
//! workload's SPIFFE ID without redeploying its peers).
//!
//! The trust bundle's CA publishes a CRL (OpenBao's PKI engine rebuilds it on
//! every revocation). Each workload keeps the current CRLs in a [`CrlSet`],
//! refreshed every few seconds, and both of its verifiers — the listener's
//! client-certificate verifier and the client's server verifier — refuse a
//! leaf certificate whose serial is listed, after the usual chain checks. The
//! CRL's own signature is checked against the issuing CA (webpki, the same
//! code rustls uses). Before a CRL is loaded, and for certificates of a CA
//! without a CRL, the status is unknown and the certificate is accepted:
//! revocation narrows access, its absence must not stop the estate.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{
    CertRevocationList, ExpirationPolicy, KeyUsage, OwnedCertRevocationList, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};

/// The CRLs a workload currently knows (empty until loaded).
#[derive(Default)]
pub struct CrlSet {
    crls: ArcSwap<Vec<CertRevocationList<'static>>>,
}

impl std::fmt::Debug for CrlSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlSet").field("crls", &self.crls.load().len()).finish()
    }
}

/// A CRL that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("certificate revocation list: {0}")]
pub struct CrlError(String);

impl CrlSet {
    /// An empty set, shared.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replace the CRLs with these PEM or DER documents (all or nothing).
    pub fn replace(&self, documents: &[Vec<u8>]) -> Result<(), CrlError> {
        use rustls_pki_types::CertificateRevocationListDer;
        use rustls_pki_types::pem::PemObject;
        let mut parsed = Vec::new();
        for document in documents {
            let ders: Vec<CertificateRevocationListDer<'static>> = if document.starts_with(b"-----") {
                CertificateRevocationListDer::pem_slice_iter(document)
                    .collect::<Result<_, _>>()
                    .map_err(|e| CrlError(e.to_string()))?
            } else {
                vec![CertificateRevocationListDer::from(document.clone())]
            };
            for der in ders {
                let crl = OwnedCertRevocationList::from_der(der.as_ref()).map_err(|e| CrlError(format!("{e:?}")))?;
                parsed.push(CertRevocationList::from(crl));
            }
        }
        self.crls.store(Arc::new(parsed));
        Ok(())
    }

    /// How many CRLs are loaded.
    pub fn len(&self) -> usize {
        self.crls.load().len()
    }

    /// Whether none is loaded.
    pub fn is_empty(&self) -> bool {
        self.crls.load().is_empty()
    }

    /// Whether a loaded CRL of `leaf`'s issuer lists its serial. For
    /// connections established before the revocation (the handshake check
    /// cannot see them): checked on every request by the east-west policy.
    pub fn lists(&self, leaf: &CertificateDer<'_>) -> bool {
        let crls = self.crls.load();
        if crls.is_empty() {
            return false;
        }
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else { return false };
        // webpki keeps the issuer Name without its outer SEQUENCE header.
        let Some(issuer) = der_contents(cert.tbs_certificate.issuer.as_raw()) else { return false };
        let serial = cert.tbs_certificate.raw_serial();
        crls.iter().any(|crl| crl.issuer() == issuer && crl.find_serial(serial).is_ok_and(|found| found.is_some()))
    }

    /// `Err(Revoked)` when `end_entity` (chaining to `roots`) is revoked by a
    /// loaded CRL; called after the chain was verified by the caller.
    pub(crate) fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        roots: &RootCertStore,
        now: UnixTime,
        provider: &CryptoProvider,
        usage: KeyUsage,
    ) -> Result<(), rustls::Error> {
        let crls = self.crls.load();
        if crls.is_empty() {
            return Ok(());
        }
        let refs: Vec<&CertRevocationList<'static>> = crls.iter().collect();
        let Ok(options) = RevocationOptionsBuilder::new(&refs) else { return Ok(()) };
        let options = options
            .with_depth(RevocationCheckDepth::EndEntity)
            .with_status_policy(UnknownStatusPolicy::Allow)
            .with_expiration_policy(ExpirationPolicy::Ignore)
            .build();
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        match cert.verify_for_usage(
            provider.signature_verification_algorithms.all,
            &roots.roots,
            intermediates,
            now,
            usage,
            Some(options),
            None,
        ) {
            Ok(_) => Ok(()),
            Err(webpki::Error::CertRevoked) => {
                Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked))
            }
            Err(error) => {
                tracing::warn!(?error, "revocation check failed");
                Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
            }
        }
    }
}

/// The contents of a DER TLV (what follows the tag and length).
fn der_contents(tlv: &[u8]) -> Option<&[u8]> {
    let (&first_len, rest) = tlv.get(1..)?.split_first()?;
    let (len, rest) = if first_len < 0x80 {
        (usize::from(first_len), rest)
    } else {
        let octets = usize::from(first_len & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let len = rest[..octets].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[octets..])
    };
    (rest.len() == len).then_some(rest)
}

/// rustls' client-certificate verifier (the chain), then the CRLs.
#[derive(Debug)]
pub(crate) struct RevocationAwareClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) crls: Arc<CrlSet>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for RevocationAwareClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.crls.check(end_entity, intermediates, &self.roots, now, &self.provider, KeyUsage::client_auth())?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Refresh `crls` from OpenBao's PKI engine `mount` every `every` (the first
/// fetch is done by the caller); a failed fetch keeps the last CRL.
pub fn spawn_openbao_crl_refresh(crls: &Arc<CrlSet>, openbao: estate_secrets::OpenBao, mount: String, every: Duration) {
    let weak = Arc::downgrade(crls);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every.max(Duration::from_secs(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(crls) = weak.upgrade() else { return };
            if let Err(error) = load_from_openbao(&crls, &openbao, &mount).await {
                tracing::warn!(%error, "CRL refresh failed; keeping the last CRL");
            }
        }
    });
}

/// Fetch the PKI engine's CRL into `crls`.
pub async fn load_from_openbao(
    crls: &CrlSet,
    openbao: &estate_secrets::OpenBao,
    mount: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let pem = openbao.pki_crl_pem(mount).await?;
    crls.replace(&[pem.into_bytes()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::der_contents;

    #[test]
    fn der_contents_strip_short_and_long_headers_and_refuse_bad_lengths() {
        assert_eq!(der_contents(&[0x30, 0x02, 1, 2]), Some(&[1u8, 2][..]));
        let long: Vec<u8> = [0x30, 0x81, 0x80].into_iter().chain(std::iter::repeat_n(7, 0x80)).collect();
        assert_eq!(der_contents(&long).map(<[u8]>::len), Some(0x80));
        assert_eq!(der_contents(&[0x30, 0x03, 1, 2]), None);
        assert_eq!(der_contents(&[0x30]), None);
        assert_eq!(der_contents(&[0x30, 0x80]), None);
    }
}
