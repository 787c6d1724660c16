//! What the authorization server remembers: used client-assertion `jti`s
//! (RFC 7523) and revoked tokens (RFC 7009).
//!
//! Production keeps them in Postgres (schema `auth`, reached as the
//! least-privilege `auth_app` role over verified TLS), so several replicas
//! share them: an assertion replayed against another replica is still refused.
//! Development without a database uses an in-process map; production mode
//! refuses to start that way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use estate_service_kit::SecretRef;
use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{PgPool, SqlSafeStr};

/// Where the database is and how to reach it as `auth_app`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Host name (TLS is verified against it).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name.
    pub name: String,
    /// Login role (a member of `auth_app`).
    pub user: String,
    /// Its password.
    pub password: SecretRef,
    /// CA that signed the server certificate (PEM). TLS is always verified.
    pub ca_file: PathBuf,
    /// Pool size.
    #[serde(default = "default_pool")]
    pub max_connections: u32,
}

fn default_pool() -> u32 {
    8
}

impl DatabaseSettings {
    /// Connect options: TLS `verify-full`, no statement logging (parameters may be secrets).
    pub fn connect_options(&self) -> anyhow::Result<PgConnectOptions> {
        use secrecy::ExposeSecret;
        let password = estate_service_kit::secret::resolve_local(&self.password)?;
        let password = std::str::from_utf8(password.expose_secret())?.trim_end().to_owned();
        let ca = std::fs::read(&self.ca_file)?;
        Ok(PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .database(&self.name)
            .username(&self.user)
            .password(&password)
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert_from_pem(ca))
    }
}

/// The schema migrations, embedded in the binary. Run as `auth_owner`
/// (e.g. a deployment job), never by the service's own `auth_app` login.
pub fn migrator() -> Migrator {
    let mut migrator = Migrator::with_migrations(vec![Migration::new(
        1,
        "auth schema".into(),
        MigrationType::Simple,
        include_str!("../migrations/0001_auth_schema.sql").into_sql_str(),
        false,
    )]);
    // The bookkeeping table lives in the service's own schema: the owner may
    // create nothing in `public`.
    migrator.dangerous_set_table_name("auth._sqlx_migrations");
    migrator
}

/// Store failures (logged; the client sees `server_error`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or is unreachable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A lock was poisoned.
    #[error("in-memory store poisoned")]
    Poisoned,
}

/// The backing store.
pub enum Store {
    /// Shared across replicas.
    Postgres(PgPool),
    /// This process only (development).
    Memory(Mutex<MemoryStore>),
}

/// The in-process maps.
#[derive(Default)]
pub struct MemoryStore {
    jtis: HashMap<(String, String), i64>,
    revoked: HashMap<String, i64>,
}

impl Store {
    /// Connect to Postgres as configured.
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .connect_with(settings.connect_options()?)
            .await?;
        Ok(Store::Postgres(pool))
    }

    /// Record an assertion `jti`; `false` if it was seen before (a replay).
    pub async fn remember_assertion_jti(&self, client: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let inserted = sqlx::query(
                    "INSERT INTO auth.client_assertion_jti (client_id, jti, expires_at) \
                     VALUES ($1, $2, to_timestamp($3)) ON CONFLICT DO NOTHING",
                )
                .bind(client)
                .bind(jti)
                .bind(expires_at as f64)
                .execute(pool)
                .await?;
                Ok(inserted.rows_affected() == 1)
            }
            Store::Memory(memory) => {
                let now = crate::grants::unix_now();
                let mut memory = memory.lock().map_err(|_| StoreError::Poisoned)?;
                memory.jtis.retain(|_, exp| *exp >= now);
                Ok(memory.jtis.insert((client.to_owned(), jti.to_owned()), expires_at).is_none())
            }
        }
    }

    /// Revoke the token `jti` until `expires_at`.
    pub async fn revoke(&self, jti: &str, client: &str, expires_at: i64) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO auth.revoked_token (jti, client_id, expires_at) \
                     VALUES ($1, $2, to_timestamp($3)) ON CONFLICT (jti) DO NOTHING",
                )
                .bind(jti)
                .bind(client)
                .bind(expires_at as f64)
                .execute(pool)
                .await?;
                Ok(())
            }
            Store::Memory(memory) => {
                memory.lock().map_err(|_| StoreError::Poisoned)?.revoked.insert(jti.to_owned(), expires_at);
                Ok(())
            }
        }
    }

    /// Whether `jti` was revoked.
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM auth.revoked_token WHERE jti = $1")
                    .bind(jti)
                    .fetch_optional(pool)
                    .await?;
                Ok(found.is_some())
            }
            Store::Memory(memory) => Ok(memory.lock().map_err(|_| StoreError::Poisoned)?.revoked.contains_key(jti)),
        }
    }

    /// Drop entries whose tokens or assertions have expired anyway.
    pub async fn purge_expired(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                sqlx::query("DELETE FROM auth.client_assertion_jti WHERE expires_at < now()").execute(pool).await?;
                sqlx::query("DELETE FROM auth.revoked_token WHERE expires_at < now()").execute(pool).await?;
                Ok(())
            }
            Store::Memory(memory) => {
                let now = crate::grants::unix_now();
                let mut memory = memory.lock().map_err(|_| StoreError::Poisoned)?;
                memory.jtis.retain(|_, exp| *exp >= now);
                memory.revoked.retain(|_, exp| *exp >= now);
                Ok(())
            }
        }
    }
}
