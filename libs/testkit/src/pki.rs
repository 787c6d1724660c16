//! A test certificate authority: rcgen keys and certificates generated at run
//! time (nothing committed), including the broken variants negative tests
//! need: expired, not yet valid, issued by another CA.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::TestkitError;

/// Marker in every test CA's name; `estate-service-kit` refuses certificates
/// whose issuer contains it when running in production mode.
pub const DEV_CA_MARKER: &str = "Estate Development";

/// A certificate authority for one test.
pub struct TestPki {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// When a leaf certificate is valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From a minute ago for this long.
    For(Duration),
    /// Expired an hour ago.
    Expired,
    /// Valid only from an hour from now.
    NotYetValid,
}

/// What a leaf certificate says.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Subject common name (informational; identity is in the SANs).
    pub common_name: String,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// URI SANs, e.g. SPIFFE IDs.
    pub uris: Vec<String>,
    /// Validity window.
    pub validity: Validity,
}

impl LeafSpec {
    /// A server certificate for `localhost` and `127.0.0.1`, valid one hour.
    pub fn localhost_server() -> Self {
        Self {
            common_name: "localhost".into(),
            dns: vec!["localhost".into()],
            ips: vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2])],
            uris: Vec::new(),
            validity: Validity::For(Duration::from_secs(3600)),
        }
    }

    /// A workload certificate whose only identity is `spiffe_id` (URI SAN),
    /// valid one hour.
    pub fn spiffe(spiffe_id: &str) -> Self {
        Self {
            common_name: spiffe_id.rsplit('/').next().unwrap_or("workload").to_owned(),
            dns: Vec::new(),
            ips: Vec::new(),
            uris: vec![spiffe_id.to_owned()],
            validity: Validity::For(Duration::from_secs(3600)),
        }
    }

    /// The same, with another validity.
    pub fn with_validity(mut self, validity: Validity) -> Self {
        self.validity = validity;
        self
    }
}

/// An issued leaf certificate and its key, as PEM.
pub struct Leaf {
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
}

/// Where [`Leaf::write_to`] put the files.
#[derive(Debug, Clone)]
pub struct LeafFiles {
    /// The certificate (leaf only).
    pub cert: PathBuf,
    /// The private key, mode 0400.
    pub key: PathBuf,
    /// The issuing CA certificate.
    pub ca: PathBuf,
}

impl TestPki {
    /// A new CA named after `name`, valid one day.
    pub fn new(name: &str) -> Result<Self, TestkitError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, format!("{DEV_CA_MARKER} CA ({name})"));
        params.distinguished_name.push(DnType::OrganizationName, "Estate tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(1);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Ok(Self { issuer: CertifiedIssuer::self_signed(params, key)? })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issue a leaf certificate (usable as TLS server and client).
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf, TestkitError> {
        let mut params = CertificateParams::new(spec.dns.clone())?;
        for ip in &spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for uri in &spec.uris {
            let uri = uri.clone().try_into().map_err(|_| TestkitError::failed("URI SAN", "not IA5"))?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        params.distinguished_name.push(DnType::CommonName, spec.common_name.clone());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        let hour = time::Duration::hours(1);
        (params.not_before, params.not_after) = match spec.validity {
            Validity::For(d) => {
                let d = time::Duration::try_from(d).map_err(|_| TestkitError::failed("validity", "too long"))?;
                (now - time::Duration::minutes(1), now + d)
            }
            Validity::Expired => (now - hour * 2, now - hour),
            Validity::NotYetValid => (now + hour, now + hour * 2),
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), ca_pem: self.ca_pem() })
    }

    /// Shorthand: a `localhost` server certificate.
    pub fn localhost_server(&self) -> Result<Leaf, TestkitError> {
        self.issue(&LeafSpec::localhost_server())
    }

    /// A reqwest client that trusts this CA and nothing else.
    pub fn https_client(&self) -> Result<reqwest::Client, TestkitError> {
        let ca = reqwest::Certificate::from_pem(self.ca_pem().as_bytes())?;
        Ok(reqwest::Client::builder().tls_certs_only([ca]).build()?)
    }

    /// A rustls client config that trusts this CA and nothing else.
    pub fn rustls_client_config(&self) -> Result<rustls::ClientConfig, TestkitError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).map_err(|e| TestkitError::failed("root store", e.to_string()))?;
        Ok(rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TestkitError::failed("rustls versions", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
    }
}

impl Leaf {
    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM (test material, generated for this run).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate chain for rustls.
    pub fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TestkitError> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TestkitError::failed("parse certificate", e.to_string()))
    }

    /// The private key for rustls.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, TestkitError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TestkitError::failed("parse key", e.to_string()))
    }

    /// Write `<stem>.crt`, `<stem>.key` (0400) and `<stem>-ca.crt` into `dir`.
    pub fn write_to(&self, dir: &Path, stem: &str) -> Result<LeafFiles, TestkitError> {
        let files = LeafFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
            ca: dir.join(format!("{stem}-ca.crt")),
        };
        fs::write(&files.cert, &self.cert_pem).map_err(TestkitError::io("write certificate"))?;
        fs::write(&files.ca, &self.ca_pem).map_err(TestkitError::io("write CA certificate"))?;
        fs::write(&files.key, &self.key_pem).map_err(TestkitError::io("write key"))?;
        fs::set_permissions(&files.key, fs::Permissions::from_mode(0o400)).map_err(TestkitError::io("chmod key"))?;
        Ok(files)
    }
}
