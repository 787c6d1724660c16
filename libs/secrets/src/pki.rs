//! Workload certificates from the PKI engine (SPIFFE IDs as URI SANs).

use reqwest::Method;
use secrecy::SecretString;
use serde::Deserialize;

use crate::client::{OpenBao, OpenBaoError};

/// An issued certificate and its key.
pub struct IssuedCertificate {
    /// Leaf certificate, PEM.
    pub certificate: String,
    /// Private key, PEM.
    pub private_key: SecretString,
    /// The issuing CA, PEM.
    pub issuing_ca: String,
    /// Serial number (for revocation).
    pub serial_number: String,
    /// Expiry, seconds since the epoch.
    pub expiration: i64,
}

#[derive(Deserialize)]
struct IssueResponse {
    data: IssueData,
}

#[derive(Deserialize)]
struct IssueData {
    certificate: String,
    private_key: String,
    issuing_ca: String,
    serial_number: String,
    expiration: i64,
}

impl OpenBao {
    /// Issue a certificate whose only identity is `spiffe_id` (URI SAN), for `ttl`.
    pub async fn issue_spiffe_certificate(
        &self,
        mount: &str,
        role: &str,
        spiffe_id: &str,
        ttl: std::time::Duration,
    ) -> Result<IssuedCertificate, OpenBaoError> {
        let path = format!("{mount}/issue/{role}");
        let body = serde_json::json!({ "uri_sans": spiffe_id, "ttl": format!("{}s", ttl.as_secs()), "exclude_cn_from_sans": true });
        let response: IssueResponse = self
            .call(Method::POST, &path, Some(&body), true)
            .await?
            .ok_or_else(|| OpenBaoError::Invalid { path: path.clone(), reason: "empty".into() })?;
        let d = response.data;
        Ok(IssuedCertificate {
            certificate: d.certificate,
            private_key: SecretString::from(d.private_key),
            issuing_ca: d.issuing_ca,
            serial_number: d.serial_number,
            expiration: d.expiration,
        })
    }
}

#[derive(Deserialize)]
struct CertResponse {
    data: CertData,
}

#[derive(Deserialize)]
struct CertData {
    certificate: String,
}

#[derive(Deserialize)]
struct ListResponse {
    data: ListData,
}

#[derive(Deserialize)]
struct ListData {
    keys: Vec<String>,
}

impl OpenBao {
    /// The PKI engine's current CRL (PEM). An unauthenticated endpoint of
    /// the engine: any workload may read it.
    pub async fn pki_crl_pem(&self, mount: &str) -> Result<String, OpenBaoError> {
        let path = format!("{mount}/cert/crl");
        let response: CertResponse = self
            .call(Method::GET, &path, None, false)
            .await?
            .ok_or_else(|| OpenBaoError::Invalid { path: path.clone(), reason: "empty".into() })?;
        Ok(response.data.certificate)
    }

    /// The PKI engine's CA certificate (PEM) — the workloads' trust bundle;
    /// `None` while the engine has no CA yet.
    pub async fn pki_ca_pem(&self, mount: &str) -> Result<Option<String>, OpenBaoError> {
        let path = format!("{mount}/cert/ca");
        match self.call::<CertResponse>(Method::GET, &path, None, false).await {
            Ok(response) => Ok(response.map(|r| r.data.certificate).filter(|pem| !pem.trim().is_empty())),
            Err(OpenBaoError::Status { status: 400 | 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Revoke the certificate `serial_number` (`aa:bb:…`); the engine
    /// rebuilds its CRL. An operator (or incident tooling) permission.
    pub async fn revoke_certificate(&self, mount: &str, serial_number: &str) -> Result<(), OpenBaoError> {
        let body = serde_json::json!({ "serial_number": serial_number });
        self.call::<serde_json::Value>(Method::POST, &format!("{mount}/revoke"), Some(&body), true).await?;
        Ok(())
    }

    /// Serial numbers of every certificate the engine has issued and not yet tidied.
    pub async fn list_certificates(&self, mount: &str) -> Result<Vec<String>, OpenBaoError> {
        let path = format!("{mount}/certs?list=true");
        let response: Option<ListResponse> = match self.call(Method::GET, &path, None, true).await {
            Err(OpenBaoError::NotFound { .. }) => None, // nothing issued yet
            other => other?,
        };
        Ok(response.map(|r| r.data.keys).unwrap_or_default())
    }

    /// One issued certificate (PEM) by serial number.
    pub async fn read_certificate(&self, mount: &str, serial_number: &str) -> Result<String, OpenBaoError> {
        let path = format!("{mount}/cert/{serial_number}");
        let response: CertResponse = self
            .call(Method::GET, &path, None, false)
            .await?
            .ok_or_else(|| OpenBaoError::Invalid { path: path.clone(), reason: "empty".into() })?;
        Ok(response.data.certificate)
    }
}
