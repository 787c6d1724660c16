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
