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

/// A Postgres pool whose login comes from OpenBao and rotates before it expires.
///
/// At two thirds of each lease, new credentials are fetched and set as the
/// pool's connect options; connections live at most a third of a lease, so
/// they move onto the new login by themselves; the old lease is revoked only
/// after that, so no query in flight is cut. If fetching fails, the current
/// credentials keep serving and the fetch is retried with backoff.
pub async fn leased_pool(
    openbao: OpenBao,
    mount: &str,
    role: &str,
    base: sqlx::postgres::PgConnectOptions,
    max_connections: u32,
    audit: Option<estate_audit::AuditLog>,
) -> Result<sqlx::PgPool, OpenBaoError> {
    use estate_audit::Action;
    use secrecy::ExposeSecret;
    let lease = openbao.database_credentials(mount, role).await?;
    let options = base.clone().username(&lease.username).password(lease.password.expose_secret());
    let lifetime = (lease.duration / 3).max(Duration::from_secs(1));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .max_lifetime(lifetime)
        .connect_with(options)
        .await
        .map_err(|e| OpenBaoError::Transport(format!("database: {e}")))?;
    tracing::info!(role, lease_id = %lease.lease_id, "database credentials leased");
    record(audit.as_ref(), Action::SecretLeased, &lease.lease_id);
    let (mount, role) = (mount.to_owned(), role.to_owned());
    let weak_pool = pool.clone();
    tokio::spawn(async move {
        let mut current = lease;
        let mut backoff = Duration::from_secs(1);
        loop {
            tokio::time::sleep(current.duration.mul_f64(2.0 / 3.0).max(Duration::from_secs(1))).await;
            if weak_pool.is_closed() {
                let _ = openbao.revoke_lease(&current.lease_id).await;
                return;
            }
            let next = loop {
                match openbao.database_credentials(&mount, &role).await {
                    Ok(next) => break next,
                    Err(error) => {
                        tracing::warn!(%error, "database credential rotation failed; current login keeps serving");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            };
            backoff = Duration::from_secs(1);
            weak_pool
                .set_connect_options(base.clone().username(&next.username).password(next.password.expose_secret()));
            tracing::info!(role = %role, lease_id = %next.lease_id, "database credentials rotated");
            record(audit.as_ref(), Action::SecretLeased, &next.lease_id);
            // Revoke the old login once every connection that used it has been recycled.
            let (old, client, audit) = (std::mem::replace(&mut current, next), openbao.clone(), audit.clone());
            let grace = (old.duration / 3) + Duration::from_secs(1);
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                match client.revoke_lease(&old.lease_id).await {
                    Ok(()) => {
                        tracing::info!(lease_id = %old.lease_id, "old database login revoked");
                        record(audit.as_ref(), Action::SecretRevoked, &old.lease_id);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "revoking the old database lease failed; it expires on its own")
                    }
                }
            });
        }
    });
    Ok(pool)
}

/// Record a lease event; the lease id names the lease, not the credential.
fn record(audit: Option<&estate_audit::AuditLog>, action: estate_audit::Action, lease_id: &str) {
    if let Some(audit) = audit {
        audit.emit(
            estate_audit::AuditEvent::new(action, estate_audit::Outcome::Success)
                .reason("database_credentials")
                .lease_id(lease_id),
        );
    }
}
