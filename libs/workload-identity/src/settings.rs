//! The `[service.identity]` section every east-west service shares: where
//! its SVID comes from, the trust bundle, and its east-west policy; and what
//! a service builds from it — the mTLS listener config, and clients that
//! present the SVID and accept only the expected peer.
//!
//! ```toml
//! [service.identity]
//! bundle_file = "/etc/estate/bundle.pem"
//! policy_file = "/etc/estate/east-west.toml"
//! svid = { source = "files", cert_file = "/run/svid/cert.pem", key_file = "/run/svid/key.pem" }
//! # or: svid = { source = "openbao", spiffe_id = "spiffe://estate.local/ns/estate/sa/order", role = "order" }
//! crl = { source = "openbao", mount = "pki", refresh_secs = 5 }   # revoked SVIDs (PC-12)
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use estate_service_kit::tls::ServerTls;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::crl::CrlSet;
use crate::identity::{RotatingIdentity, read_svid_files, spawn_file_reload, spawn_openbao_renewal, svid_from_pem};
use crate::policy::{EastWestPolicy, PolicyError};
use crate::spiffe::SpiffeId;
use crate::tls::{IdentityTlsError, client_config_with_crls, server_config_with_crls};

/// `[service.identity]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    /// CA certificates (PEM) that peers' SVIDs chain to.
    pub bundle_file: PathBuf,
    /// Default-deny east-west policy (TOML, see [`EastWestPolicy`]) for the
    /// workload's own API. Absent: nobody may call it (a pure client, such
    /// as the gateway towards its upstreams).
    #[serde(default)]
    pub policy_file: Option<PathBuf>,
    /// Where this workload's own SVID comes from.
    pub svid: SvidSource,
    /// Where the CRL of the bundle's CA comes from; revoked peer SVIDs are
    /// refused in both directions. Absent: no revocation checks (a
    /// compromised SVID is valid until it expires).
    #[serde(default)]
    pub crl: Option<CrlSource>,
}

/// Where the CRL comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum CrlSource {
    /// OpenBao's PKI engine (`GET /v1/<mount>/cert/crl`), polled.
    Openbao {
        /// PKI mount.
        #[serde(default = "default_pki_mount")]
        mount: String,
        /// How often to fetch it: the bound from revocation to refusal.
        #[serde(default = "default_crl_refresh_secs")]
        refresh_secs: u64,
    },
}

fn default_crl_refresh_secs() -> u64 {
    5
}

/// Where the SVID comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum SvidSource {
    /// Files another agent keeps fresh (cert-manager, SPIRE, Istio mounts);
    /// re-read when they change.
    Files {
        /// Certificate chain, leaf first (PEM).
        cert_file: PathBuf,
        /// Private key (PEM, owner-only file).
        key_file: PathBuf,
        /// How often to look for new files.
        #[serde(default = "default_reload_secs")]
        reload_secs: u64,
    },
    /// Issued by OpenBao's PKI engine and renewed at two thirds of its life.
    Openbao {
        /// PKI mount.
        #[serde(default = "default_pki_mount")]
        mount: String,
        /// PKI role.
        role: String,
        /// The SPIFFE ID to ask for.
        spiffe_id: String,
        /// Certificate lifetime.
        #[serde(default = "default_ttl_secs")]
        ttl_secs: u64,
    },
}

fn default_reload_secs() -> u64 {
    30
}

fn default_pki_mount() -> String {
    "pki".into()
}

fn default_ttl_secs() -> u64 {
    3600
}

/// Loading failures.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Bundle or SVID unusable.
    #[error(transparent)]
    Tls(#[from] IdentityTlsError),
    /// Policy unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// An OpenBao-issued SVID without an OpenBao client, or issuance failed.
    #[error("svid from openbao: {0}")]
    OpenBao(String),
    /// The bundle file is unreadable.
    #[error("trust bundle {path}: {reason}")]
    BundleFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The SVID carries no SPIFFE ID.
    #[error("the workload certificate carries no SPIFFE ID")]
    NoSpiffeId,
}

/// A workload's loaded identity: its rotating SVID, the trust bundle and the
/// east-west policy.
#[derive(Clone)]
pub struct WorkloadIdentity {
    identity: Arc<RotatingIdentity>,
    bundle: Arc<Vec<CertificateDer<'static>>>,
    spiffe_id: SpiffeId,
    policy: EastWestPolicy,
    crls: Arc<CrlSet>,
}

impl std::fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadIdentity").field("spiffe_id", &self.spiffe_id).finish_non_exhaustive()
    }
}

/// The pooled HTTP/2 client under an east-west gRPC client.
pub type GrpcChannel = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    tonic::body::Body,
>;

impl WorkloadIdentity {
    /// Load from settings; starts the reload/renewal task. `openbao` is
    /// needed for `source = "openbao"`; denials go to `audit`.
    pub async fn load(
        settings: &IdentitySettings,
        openbao: Option<&estate_secrets::OpenBao>,
        audit: Option<estate_audit::AuditLog>,
    ) -> Result<Self, IdentityError> {
        let bundle_pem = std::fs::read(&settings.bundle_file).map_err(|e| IdentityError::BundleFile {
            path: settings.bundle_file.display().to_string(),
            reason: e.to_string(),
        })?;
        let bundle = CertificateDer::pem_slice_iter(&bundle_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IdentityTlsError::Bundle(e.to_string()))?;
        let identity = match &settings.svid {
            SvidSource::Files { cert_file, key_file, reload_secs } => {
                let identity = RotatingIdentity::new(read_svid_files(cert_file, key_file)?)?;
                spawn_file_reload(
                    &identity,
                    cert_file.clone(),
                    key_file.clone(),
                    Duration::from_secs((*reload_secs).max(1)),
                );
                identity
            }
            SvidSource::Openbao { mount, role, spiffe_id, ttl_secs } => {
                let openbao = openbao.ok_or_else(|| IdentityError::OpenBao("needs service.openbao".into()))?;
                let id: SpiffeId =
                    spiffe_id.parse().map_err(|_| IdentityError::OpenBao(format!("spiffe_id {spiffe_id:?}")))?;
                let ttl = Duration::from_secs(*ttl_secs);
                let issued = openbao
                    .issue_spiffe_certificate(mount, role, id.as_str(), ttl)
                    .await
                    .map_err(|e| IdentityError::OpenBao(e.to_string()))?;
                let identity = RotatingIdentity::new(svid_from_pem(&issued)?)?;
                spawn_openbao_renewal(&identity, openbao.clone(), mount.clone(), role.clone(), id, ttl);
                identity
            }
        };
        let leaf = identity.leaf().ok_or(IdentityError::NoSpiffeId)?;
        let spiffe_id = SpiffeId::from_certificate(&leaf).map_err(|_| IdentityError::NoSpiffeId)?;
        let mut policy = match &settings.policy_file {
            Some(file) => EastWestPolicy::load(file)?,
            None => EastWestPolicy::default(),
        };
        if let Some(audit) = audit {
            policy = policy.with_audit(audit);
        }
        let crls = CrlSet::new();
        match &settings.crl {
            Some(CrlSource::Openbao { mount, refresh_secs }) => {
                let openbao = openbao.ok_or_else(|| IdentityError::OpenBao("crl needs service.openbao".into()))?;
                if let Err(error) = crate::crl::load_from_openbao(&crls, openbao, mount).await {
                    tracing::warn!(%error, "initial CRL fetch failed; will retry");
                }
                crate::crl::spawn_openbao_crl_refresh(
                    &crls,
                    openbao.clone(),
                    mount.clone(),
                    Duration::from_secs(*refresh_secs),
                );
            }
            None => {}
        }
        let policy = policy.with_crls(crls.clone());
        Ok(Self { identity, bundle: Arc::new(bundle), spiffe_id, policy, crls })
    }

    /// The CRLs this workload checks peers against.
    pub fn crls(&self) -> &Arc<CrlSet> {
        &self.crls
    }

    /// This workload's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The east-west policy.
    pub fn policy(&self) -> &EastWestPolicy {
        &self.policy
    }

    /// The API listener's TLS: present the SVID, require a client SVID.
    pub fn server_tls(&self) -> Result<ServerTls, IdentityTlsError> {
        Ok(ServerTls::new(server_config_with_crls(self.identity.clone(), &self.bundle, self.crls.clone())?))
    }

    /// A rustls client config that presents the SVID and accepts only `peer`.
    pub fn client_config(&self, peer: &SpiffeId) -> Result<rustls::ClientConfig, IdentityTlsError> {
        client_config_with_crls(self.identity.clone(), &self.bundle, peer.clone(), self.crls.clone())
    }

    /// An HTTPS client (REST east-west) that presents the SVID and accepts
    /// only `peer`; no redirects, bounded connect and request time.
    pub fn http_client(&self, peer: &SpiffeId, timeout: Duration) -> Result<reqwest::Client, IdentityError> {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config(peer)?)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()
            .map_err(|e| IdentityError::Tls(IdentityTlsError::Verifier(e.to_string())))
    }

    /// A pooled HTTP/2 channel for a gRPC client (`FooClient::with_origin(channel, uri)`)
    /// that presents the SVID and accepts only `peer`.
    pub fn grpc_channel(&self, peer: &SpiffeId, connect_timeout: Duration) -> Result<GrpcChannel, IdentityTlsError> {
        Ok(grpc_channel(self.client_config(peer)?, connect_timeout))
    }
}

/// A pooled HTTP/2-over-TLS channel for tonic clients with the given rustls
/// config (from [`client_config`]); no plaintext fallback.
pub fn grpc_channel(mut tls: rustls::ClientConfig, connect_timeout: Duration) -> GrpcChannel {
    // The connector sets ALPN (h2 only) itself.
    tls.alpn_protocols.clear();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build(connector)
}
