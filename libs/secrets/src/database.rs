//! Dynamic database credentials from the database secrets engine: a login
//! role created on demand with `VALID UNTIL`, leased, renewed, revoked.

use std::path::PathBuf;
use std::time::Duration;

use estate_service_kit::SecretRef;
use reqwest::Method;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

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

/// Where a service's database is and how the service logs in (the
/// `[service.database]` section of every service with a schema).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Host name (TLS is verified against it).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name.
    pub name: String,
    /// How the service logs in.
    pub login: DatabaseLogin,
    /// CA that signed the server certificate (PEM). TLS is always verified.
    pub ca_file: PathBuf,
    /// Pool size.
    #[serde(default = "default_pool")]
    pub max_connections: u32,
}

fn default_pool() -> u32 {
    8
}

fn default_database_mount() -> String {
    "database".into()
}

/// Where the database login comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatabaseLogin {
    /// Dynamic, leased credentials from OpenBao's database engine, rotated
    /// before they expire (what production uses).
    Openbao {
        /// Engine mount.
        #[serde(default = "default_database_mount")]
        mount: String,
        /// The OpenBao role (e.g. `auth-app`).
        role: String,
    },
    /// A static login (development and tests only; production refuses it).
    Password {
        /// Login role (a member of `<svc>_app`).
        user: String,
        /// Its password.
        password: SecretRef,
    },
}

/// Database connection failures at startup.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The CA file is unreadable.
    #[error("database CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A dynamic login needs an OpenBao client.
    #[error("a database login from OpenBao needs service.openbao")]
    NoOpenBao,
    /// OpenBao (or the password reference) failed.
    #[error(transparent)]
    OpenBao(#[from] OpenBaoError),
    /// The password file is not UTF-8.
    #[error("the database password is not UTF-8")]
    PasswordEncoding,
    /// Postgres refused or is unreachable.
    #[error("database: {0}")]
    Connect(#[from] sqlx::Error),
}

impl DatabaseSettings {
    /// Whether the login is a static password (a development setting).
    pub fn is_static_password(&self) -> bool {
        matches!(self.login, DatabaseLogin::Password { .. })
    }

    /// Host, database and TLS `verify-full`; no statement logging (parameters may be secrets).
    fn base_options(&self) -> Result<PgConnectOptions, ConnectError> {
        let ca = std::fs::read(&self.ca_file)
            .map_err(|source| ConnectError::CaFile { path: self.ca_file.display().to_string(), source })?;
        Ok(PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .database(&self.name)
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert_from_pem(ca))
    }

    /// A pool logged in as configured: leased (and rotated) credentials from
    /// OpenBao, or a static password resolved from its reference.
    pub async fn connect(
        &self,
        openbao: Option<&OpenBao>,
        audit: Option<&estate_audit::AuditLog>,
    ) -> Result<sqlx::PgPool, ConnectError> {
        use secrecy::ExposeSecret;
        let base = self.base_options()?;
        match &self.login {
            DatabaseLogin::Openbao { mount, role } => {
                let openbao = openbao.ok_or(ConnectError::NoOpenBao)?;
                Ok(leased_pool(openbao.clone(), mount, role, base, self.max_connections, audit.cloned()).await?)
            }
            DatabaseLogin::Password { user, password } => {
                let password = crate::resolve(password, openbao).await?;
                let password = std::str::from_utf8(password.expose_secret())
                    .map_err(|_| ConnectError::PasswordEncoding)?
                    .trim_end()
                    .to_owned();
                Ok(PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .connect_with(base.username(user).password(&password))
                    .await?)
            }
        }
    }
}

/// A migrator over migrations embedded in the binary, whose bookkeeping
/// table lives in the service's own `schema` (the owner role may create
/// nothing in `public`). Run it as `<svc>_owner`, never as the app login.
pub fn embedded_migrator(schema: &str, migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    use sqlx::SqlSafeStr;
    let mut migrator = Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, description.into(), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    );
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    migrator
}
