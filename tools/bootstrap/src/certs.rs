//! `estate-bootstrap certs --out DIR`: the estate CA and the server
//! certificates of the infrastructure and of each service's TLS listeners
//! (management, and the edge for auth and the gateway), generated here and
//! never committed. Idempotent: an existing CA is kept (and so is every
//! certificate it signed), so a second run changes nothing.
//!
//! Layout: `DIR/ca.pem`, `DIR/ca.key` (0400, for later runs only);
//! `DIR/<name>/{tls.crt, tls.key (0400), ca.pem}` for each name of
//! [`SERVERS`]; `DIR/postgres/superuser-password` (0400).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

/// Every server certificate: name → DNS names (the Kubernetes and compose
/// names; compose gives containers the cluster names as aliases). Each also
/// names `localhost` and 127.0.0.1 for a single-host run.
pub(crate) const SERVERS: [(&str, &[&str]); 8] = [
    ("postgres", &["postgres.estate-data.svc.cluster.local"]),
    ("openbao", &["openbao.openbao.svc.cluster.local"]),
    ("siem", &["siem.siem.svc.cluster.local"]),
    ("auth", &["auth.estate.local", "auth.estate.svc.cluster.local"]),
    ("gateway", &["gateway.estate.svc.cluster.local", "api.estate.local"]),
    ("order", &["order.estate.svc.cluster.local"]),
    ("payment", &["payment.estate.svc.cluster.local"]),
    ("inventory", &["inventory.estate.svc.cluster.local"]),
];

/// The estate CA's name. Not the development marker: the services run these
/// certificates in production mode.
pub(crate) const CA_NAME: &str = "Estate CA";

pub(crate) fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    // Replace, never append to, an existing (possibly read-only) file.
    let _ = std::fs::remove_file(path);
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// 32 random bytes, hex: generated passwords and tokens.
pub(crate) fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Write the CA and every server certificate into `out` (see the module docs).
pub(crate) fn run(out: &Path) -> Result<String> {
    let (ca_pem_path, ca_key_path) = (out.join("ca.pem"), out.join("ca.key"));
    if ca_pem_path.exists() && ca_key_path.exists() {
        return Ok(format!("certificates: {} already holds the estate CA; nothing changed", out.display()));
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name.push(DnType::OrganizationName, "Estate");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365);
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let ca = params.self_signed(&ca_key)?;
    let ca_pem = ca.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(params, ca_key);

    for (name, dns) in SERVERS {
        let mut names: Vec<String> = dns.iter().map(|d| (*d).to_owned()).collect();
        names.push("localhost".into());
        let mut leaf = CertificateParams::new(names)?;
        leaf.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        leaf.distinguished_name.push(DnType::CommonName, dns[0]);
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        leaf.not_before = now - time::Duration::minutes(5);
        leaf.not_after = now + time::Duration::days(90);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = leaf.signed_by(&key, &issuer)?;
        let dir = out.join(name);
        write_file(&dir.join("tls.crt"), &cert.pem(), 0o444)?;
        write_file(&dir.join("tls.key"), &key.serialize_pem(), 0o400)?;
        write_file(&dir.join("ca.pem"), &ca_pem, 0o444)?;
    }
    write_file(&out.join("postgres/superuser-password"), &random_hex()?, 0o400)?;
    // The CA last: its presence says the whole set was written.
    write_file(&ca_key_path, &ca_key_pem, 0o400)?;
    write_file(&ca_pem_path, &ca_pem, 0o444)?;
    Ok(format!("certificates: the estate CA and {} server certificates in {}", SERVERS.len(), out.display()))
}
