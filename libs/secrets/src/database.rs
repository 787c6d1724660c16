//! Dynamic database credentials from the database secrets engine: a login
//! role created on demand with `VALID UNTIL`, leased, renewed, revoked.

use std::time::Duration;

use reqwest::Method;
use secrecy::SecretString;
use serde::Deserialize;

use crate::client::{OpenBao, OpenBaoError};

/// Leased credentials.
pub struct DatabaseLease {
    /// The lease id (for renewal and revocation; not a secret on its own).
    pub lease_id: String,
    /// How long the lease lasts from issue.
    pub duration: Duration,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// The generated login role.
    pub username: String,
    /// Its password.
    pub password: SecretString,
}

impl std::fmt::Debug for DatabaseLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseLease")
            .field("lease_id", &self.lease_id)
            .field("duration", &self.duration)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct CredsResponse {
    lease_id: String,
    lease_duration: u64,
    renewable: bool,
    data: Creds,
}

#[derive(Deserialize)]
struct Creds {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct RenewResponse {
    lease_duration: u64,
}

impl OpenBao {
    /// New credentials for `role` of the engine at `mount` (`database/creds/<role>`).
    pub async fn database_credentials(&self, mount: &str, role: &str) -> Result<DatabaseLease, OpenBaoError> {
        let path = format!("{mount}/creds/{role}");
        let response: CredsResponse = self
            .call(Method::GET, &path, None, true)
            .await?
            .ok_or_else(|| OpenBaoError::Invalid { path: path.clone(), reason: "empty".into() })?;
        Ok(DatabaseLease {
            lease_id: response.lease_id,
            duration: Duration::from_secs(response.lease_duration),
            renewable: response.renewable,
            username: response.data.username,
            password: SecretString::from(response.data.password),
        })
    }

    /// Extend a lease; returns its new duration. The lease id goes in the
    /// path (`sys/leases/renew/<lease_id>`) so a policy can confine a service
    /// to renewing its own leases.
    pub async fn renew_lease(&self, lease_id: &str, increment: Duration) -> Result<Duration, OpenBaoError> {
        let path = format!("sys/leases/renew/{lease_id}");
        let body = serde_json::json!({ "increment": increment.as_secs() });
        let response: RenewResponse = self
            .call(Method::PUT, &path, Some(&body), true)
            .await?
            .ok_or_else(|| OpenBaoError::Invalid { path: path.clone(), reason: "empty".into() })?;
        Ok(Duration::from_secs(response.lease_duration))
    }

    /// End a lease now: the database login role is dropped.
    pub async fn revoke_lease(&self, lease_id: &str) -> Result<(), OpenBaoError> {
        let path = format!("sys/leases/revoke/{lease_id}");
        self.call::<serde_json::Value>(Method::PUT, &path, Some(&serde_json::json!({})), true).await?;
        Ok(())
    }
}
