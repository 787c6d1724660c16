//! What the authorization server remembers: used client-assertion `jti`s
//! (RFC 7523) and revoked tokens (RFC 7009).
//!
//! Production keeps them in Postgres (schema `auth`, reached as the
//! least-privilege `auth_app` role over verified TLS), so several replicas
//! share them: an assertion replayed against another replica is still refused.
//! Development without a database uses an in-process map; production mode
//! refuses to start that way.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use estate_secrets::database::{DatabaseLogin, DatabaseSettings};

/// The schema migrations, embedded in the binary. Run as `auth_owner`
/// (e.g. a deployment job), never by the service's own `auth_app` login.
pub fn migrator() -> Migrator {
    estate_secrets::database::embedded_migrator(
        "auth",
        &[
            (1, "auth schema", include_str!("../migrations/0001_auth_schema.sql")),
            (2, "users, codes, refresh tokens", include_str!("../migrations/0002_users_codes_refresh.sql")),
            (3, "revoked principals", include_str!("../migrations/0003_revoked_principal.sql")),
            (4, "revoked signing keys", include_str!("../migrations/0004_revoked_signing_key.sql")),
        ],
    )
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
    /// Users, codes and refresh tokens live only in Postgres.
    #[error("this needs service.database")]
    NeedsDatabase,
}

/// An authorization code as stored (the code itself is only hashed).
#[derive(Debug, Clone)]
pub struct CodeRecord {
    /// The client it was issued to.
    pub client_id: String,
    /// The exact redirect URI of the authorization request.
    pub redirect_uri: String,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// The user.
    pub subject: String,
    /// Granted API scopes (space-separated).
    pub scope: String,
    /// Audiences of the access token.
    pub audiences: Vec<String>,
    /// OIDC nonce.
    pub nonce: Option<String>,
    /// Whether `openid` was requested (an ID token is due).
    pub openid: bool,
    /// When the user authenticated.
    pub auth_time: i64,
    /// When the code expires.
    pub expires_at: i64,
    /// Whether it had expired when presented (decided by the database clock).
    pub expired: bool,
}

/// What presenting a code found.
#[derive(Debug)]
pub enum CodeUse {
    /// First use.
    Fresh(CodeRecord),
    /// Used before: what it issued then, to revoke.
    Replayed {
        /// Access token issued from it.
        issued_jti: Option<String>,
        /// Refresh family started from it.
        refresh_family: Option<uuid::Uuid>,
    },
    /// No such code.
    Unknown,
}

/// A refresh token as stored (hashed).
#[derive(Debug, Clone)]
pub struct RefreshRecord {
    /// The rotation family.
    pub family: uuid::Uuid,
    /// The client.
    pub client_id: String,
    /// The user.
    pub subject: String,
    /// Scopes the family may carry.
    pub scope: String,
    /// Audiences.
    pub audiences: Vec<String>,
    /// Expiry.
    pub expires_at: i64,
    /// Whether it had expired when presented (database clock).
    pub expired: bool,
}

/// What presenting a refresh token found.
#[derive(Debug)]
pub enum RefreshUse {
    /// Valid, now rotated away.
    Fresh(RefreshRecord),
    /// Already used: the family must die.
    Reused {
        /// The family.
        family: uuid::Uuid,
    },
    /// The family was revoked.
    FamilyRevoked,
    /// No such token.
    Unknown,
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
    principals: HashMap<String, (PrincipalKind, i64, bool)>,
    keys: HashMap<String, i64>,
}

/// What a revoked principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A user, by subject (its id).
    User,
    /// An OAuth client, by client id.
    Client,
}

impl PrincipalKind {
    /// `user` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Client => "client",
        }
    }
}

/// What the revocation list publishes (before hashing).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Revocations {
    /// Revoked token ids not yet expired.
    pub tokens: Vec<String>,
    /// Principals whose tokens up to `not_before` are revoked.
    pub principals: Vec<(String, i64)>,
    /// Signing keys (by `kid`) whose tokens are all revoked.
    pub keys: Vec<String>,
}

impl Store {
    /// Connect to Postgres as configured (`openbao` is needed for dynamic logins).
    pub async fn connect(
        settings: &DatabaseSettings,
        openbao: Option<&estate_secrets::OpenBao>,
        audit: &estate_audit::AuditLog,
    ) -> anyhow::Result<Self> {
        let pool = settings.connect(openbao, Some(audit)).await?;
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

    /// Revoke every token of `principal` issued at or before `not_before`
    /// (`not_before` never moves back); `disable` also stops new tokens.
    pub async fn revoke_principal(
        &self,
        principal: &str,
        kind: PrincipalKind,
        not_before: i64,
        disable: bool,
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO auth.revoked_principal (principal, kind, not_before, disabled) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (principal) DO UPDATE SET \
                       not_before = greatest(auth.revoked_principal.not_before, EXCLUDED.not_before), \
                       disabled = auth.revoked_principal.disabled OR EXCLUDED.disabled, revoked_at = now()",
                )
                .bind(principal)
                .bind(kind.as_str())
                .bind(not_before)
                .bind(disable)
                .execute(pool)
                .await?;
                Ok(())
            }
            Store::Memory(memory) => {
                let mut memory = memory.lock().map_err(|_| StoreError::Poisoned)?;
                let entry = memory.principals.entry(principal.to_owned()).or_insert((kind, not_before, disable));
                entry.1 = entry.1.max(not_before);
                entry.2 |= disable;
                Ok(())
            }
        }
    }

    /// Let a disabled principal obtain tokens again (its old tokens stay
    /// revoked); `false` if it was not disabled.
    pub async fn reinstate_principal(&self, principal: &str) -> Result<bool, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let changed =
                    sqlx::query("UPDATE auth.revoked_principal SET disabled = false WHERE principal = $1 AND disabled")
                        .bind(principal)
                        .execute(pool)
                        .await?;
                Ok(changed.rows_affected() == 1)
            }
            Store::Memory(memory) => {
                let mut memory = memory.lock().map_err(|_| StoreError::Poisoned)?;
                Ok(memory.principals.get_mut(principal).is_some_and(|entry| std::mem::replace(&mut entry.2, false)))
            }
        }
    }

    /// Whether `principal` is disabled.
    pub async fn principal_disabled(&self, principal: &str) -> Result<bool, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let found: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM auth.revoked_principal WHERE principal = $1 AND disabled")
                        .bind(principal)
                        .fetch_optional(pool)
                        .await?;
                Ok(found.is_some())
            }
            Store::Memory(memory) => {
                let memory = memory.lock().map_err(|_| StoreError::Poisoned)?;
                Ok(memory.principals.get(principal).is_some_and(|entry| entry.2))
            }
        }
    }

    /// The latest `not_before` among `principals`, if any is revoked.
    pub async fn principals_not_before(&self, principals: &[&str]) -> Result<Option<i64>, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let names: Vec<String> = principals.iter().map(|p| (*p).to_owned()).collect();
                Ok(sqlx::query_scalar("SELECT max(not_before) FROM auth.revoked_principal WHERE principal = ANY($1)")
                    .bind(names)
                    .fetch_one(pool)
                    .await?)
            }
            Store::Memory(memory) => {
                let memory = memory.lock().map_err(|_| StoreError::Poisoned)?;
                Ok(principals.iter().filter_map(|p| memory.principals.get(*p).map(|e| e.1)).max())
            }
        }
    }

    /// What to publish: revoked tokens not yet expired (with `leeway_secs`
    /// of clock skew), and principals revoked within `horizon_secs` (older
    /// revocations cover only tokens that have expired anyway).
    pub async fn revocations(&self, now: i64, horizon_secs: i64, leeway_secs: i64) -> Result<Revocations, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let tokens: Vec<String> = sqlx::query_scalar(
                    "SELECT jti FROM auth.revoked_token WHERE expires_at > to_timestamp($1) ORDER BY jti",
                )
                .bind((now - leeway_secs) as f64)
                .fetch_all(pool)
                .await?;
                let principals: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT principal, not_before FROM auth.revoked_principal WHERE not_before > $1 ORDER BY principal",
                )
                .bind(now - horizon_secs)
                .fetch_all(pool)
                .await?;
                let keys: Vec<String> =
                    sqlx::query_scalar("SELECT kid FROM auth.revoked_signing_key WHERE revoked_at > $1 ORDER BY kid")
                        .bind(now - horizon_secs)
                        .fetch_all(pool)
                        .await?;
                Ok(Revocations { tokens, principals, keys })
            }
            Store::Memory(memory) => {
                let memory = memory.lock().map_err(|_| StoreError::Poisoned)?;
                let mut tokens: Vec<String> = memory
                    .revoked
                    .iter()
                    .filter(|(_, exp)| **exp > now - leeway_secs)
                    .map(|(j, _)| j.clone())
                    .collect();
                tokens.sort();
                let mut principals: Vec<(String, i64)> = memory
                    .principals
                    .iter()
                    .filter(|(_, e)| e.1 > now - horizon_secs)
                    .map(|(p, e)| (p.clone(), e.1))
                    .collect();
                principals.sort();
                let mut keys: Vec<String> =
                    memory.keys.iter().filter(|(_, at)| **at > now - horizon_secs).map(|(k, _)| k.clone()).collect();
                keys.sort();
                Ok(Revocations { tokens, principals, keys })
            }
        }
    }

    /// Record `kid` as a compromised signing key (published at once).
    pub async fn revoke_signing_key(&self, kid: &str, now: i64) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO auth.revoked_signing_key (kid, revoked_at) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING",
                )
                .bind(kid)
                .bind(now)
                .execute(pool)
                .await?;
                Ok(())
            }
            Store::Memory(memory) => {
                memory.lock().map_err(|_| StoreError::Poisoned)?.keys.entry(kid.to_owned()).or_insert(now);
                Ok(())
            }
        }
    }

    /// Whether `kid` was revoked.
    pub async fn signing_key_revoked(&self, kid: &str) -> Result<bool, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM auth.revoked_signing_key WHERE kid = $1")
                    .bind(kid)
                    .fetch_optional(pool)
                    .await?;
                Ok(found.is_some())
            }
            Store::Memory(memory) => Ok(memory.lock().map_err(|_| StoreError::Poisoned)?.keys.contains_key(kid)),
        }
    }

    /// End every session of `subject`: its refresh token families are
    /// revoked and its unused authorization codes spent. Returns the number
    /// of families revoked.
    pub async fn end_sessions(&self, subject: &str) -> Result<u64, StoreError> {
        let pool = self.pool()?;
        let mut tx = pool.begin().await?;
        let families = sqlx::query(
            "INSERT INTO auth.revoked_family (family) \
             SELECT DISTINCT family FROM auth.refresh_token WHERE subject = $1 ON CONFLICT DO NOTHING",
        )
        .bind(subject)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE auth.authorization_code SET used = true WHERE subject = $1 AND NOT used")
            .bind(subject)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(families.rows_affected())
    }

    fn pool(&self) -> Result<&PgPool, StoreError> {
        match self {
            Store::Postgres(pool) => Ok(pool),
            Store::Memory(_) => Err(StoreError::NeedsDatabase),
        }
    }

    /// Create a user with an argon2id PHC hash; returns its id.
    pub async fn create_user(&self, username: &str, password_hash: &str) -> Result<uuid::Uuid, StoreError> {
        let id = uuid::Uuid::new_v4();
        sqlx::query("INSERT INTO auth.users (id, username, password_hash) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(username)
            .bind(password_hash)
            .execute(self.pool()?)
            .await?;
        Ok(id)
    }

    /// A user's id and password hash.
    pub async fn find_user(&self, username: &str) -> Result<Option<(uuid::Uuid, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT id, password_hash FROM auth.users WHERE username = $1")
            .bind(username)
            .fetch_optional(self.pool()?)
            .await?)
    }

    /// Seconds until `username` may try again, when it is locked.
    pub async fn locked_for(&self, username: &str) -> Result<Option<u64>, StoreError> {
        let secs: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM locked_until - now())::float8 FROM auth.login_failures \
             WHERE username = $1 AND locked_until > now()",
        )
        .bind(username)
        .fetch_optional(self.pool()?)
        .await?;
        Ok(secs.map(|s| s.ceil().max(1.0) as u64))
    }

    /// Count a failed login; lock the username once `max` failures fall in
    /// `window_secs`. Returns whether it is locked now.
    pub async fn record_login_failure(
        &self,
        username: &str,
        max: u32,
        window_secs: u64,
        lockout_secs: u64,
    ) -> Result<bool, StoreError> {
        let pool = self.pool()?;
        let failures: i32 = sqlx::query_scalar(
            "INSERT INTO auth.login_failures AS f (username, failures, first_failed) VALUES ($1, 1, now()) \
             ON CONFLICT (username) DO UPDATE SET \
               failures = CASE WHEN f.first_failed < now() - make_interval(secs => $2) THEN 1 ELSE f.failures + 1 END, \
               first_failed = CASE WHEN f.first_failed < now() - make_interval(secs => $2) THEN now() ELSE f.first_failed END \
             RETURNING failures",
        )
        .bind(username)
        .bind(window_secs as f64)
        .fetch_one(pool)
        .await?;
        if failures < i32::try_from(max).unwrap_or(i32::MAX) {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE auth.login_failures SET locked_until = now() + make_interval(secs => $2), failures = 0, \
             first_failed = now() WHERE username = $1",
        )
        .bind(username)
        .bind(lockout_secs as f64)
        .execute(pool)
        .await?;
        Ok(true)
    }

    /// Forget failures after a successful login.
    pub async fn clear_login_failures(&self, username: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM auth.login_failures WHERE username = $1 AND (locked_until IS NULL OR locked_until < now())",
        )
        .bind(username)
        .execute(self.pool()?)
        .await?;
        Ok(())
    }

    /// Store a new code under its hash.
    pub async fn insert_code(&self, code_hash: &[u8], code: &CodeRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO auth.authorization_code (code_hash, client_id, redirect_uri, code_challenge, subject, scope, \
             audiences, nonce, openid, auth_time, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, to_timestamp($11))",
        )
        .bind(code_hash)
        .bind(&code.client_id)
        .bind(&code.redirect_uri)
        .bind(&code.code_challenge)
        .bind(&code.subject)
        .bind(&code.scope)
        .bind(&code.audiences)
        .bind(&code.nonce)
        .bind(code.openid)
        .bind(code.auth_time)
        .bind(code.expires_at as f64)
        .execute(self.pool()?)
        .await?;
        Ok(())
    }

    /// Mark a code used, atomically: only one presentation can ever get `Fresh`.
    pub async fn consume_code(&self, code_hash: &[u8]) -> Result<CodeUse, StoreError> {
        let pool = self.pool()?;
        type Row = (String, String, String, String, String, Vec<String>, Option<String>, bool, i64, i64, bool);
        let fresh: Option<Row> = sqlx::query_as(
            "UPDATE auth.authorization_code SET used = true WHERE code_hash = $1 AND used = false \
             RETURNING client_id, redirect_uri, code_challenge, subject, scope, audiences, nonce, openid, auth_time, \
             extract(epoch FROM expires_at)::bigint, expires_at <= now()",
        )
        .bind(code_hash)
        .fetch_optional(pool)
        .await?;
        if let Some((
            client_id,
            redirect_uri,
            code_challenge,
            subject,
            scope,
            audiences,
            nonce,
            openid,
            auth_time,
            exp,
            expired,
        )) = fresh
        {
            return Ok(CodeUse::Fresh(CodeRecord {
                client_id,
                redirect_uri,
                code_challenge,
                subject,
                scope,
                audiences,
                nonce,
                openid,
                auth_time,
                expires_at: exp,
                expired,
            }));
        }
        let used: Option<(Option<String>, Option<uuid::Uuid>)> =
            sqlx::query_as("SELECT issued_jti, refresh_family FROM auth.authorization_code WHERE code_hash = $1")
                .bind(code_hash)
                .fetch_optional(pool)
                .await?;
        Ok(match used {
            Some((issued_jti, refresh_family)) => CodeUse::Replayed { issued_jti, refresh_family },
            None => CodeUse::Unknown,
        })
    }

    /// Remember what a code was exchanged for.
    pub async fn record_code_issue(
        &self,
        code_hash: &[u8],
        jti: &str,
        family: Option<uuid::Uuid>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE auth.authorization_code SET issued_jti = $2, refresh_family = $3 WHERE code_hash = $1")
            .bind(code_hash)
            .bind(jti)
            .bind(family)
            .execute(self.pool()?)
            .await?;
        Ok(())
    }

    /// Store a refresh token under its hash.
    pub async fn insert_refresh(&self, token_hash: &[u8], record: &RefreshRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO auth.refresh_token (token_hash, family, client_id, subject, scope, audiences, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7))",
        )
        .bind(token_hash)
        .bind(record.family)
        .bind(&record.client_id)
        .bind(&record.subject)
        .bind(&record.scope)
        .bind(&record.audiences)
        .bind(record.expires_at as f64)
        .execute(self.pool()?)
        .await?;
        Ok(())
    }

    /// Use a refresh token: atomically marks it used.
    pub async fn consume_refresh(&self, token_hash: &[u8]) -> Result<RefreshUse, StoreError> {
        let pool = self.pool()?;
        type Row = (uuid::Uuid, String, String, String, Vec<String>, i64, bool);
        let fresh: Option<Row> = sqlx::query_as(
            "UPDATE auth.refresh_token SET used = true WHERE token_hash = $1 AND used = false \
             RETURNING family, client_id, subject, scope, audiences, extract(epoch FROM expires_at)::bigint, \
             expires_at <= now()",
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await?;
        if let Some((family, client_id, subject, scope, audiences, expires_at, expired)) = fresh {
            if self.family_revoked(family).await? {
                return Ok(RefreshUse::FamilyRevoked);
            }
            return Ok(RefreshUse::Fresh(RefreshRecord {
                family,
                client_id,
                subject,
                scope,
                audiences,
                expires_at,
                expired,
            }));
        }
        let family: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT family FROM auth.refresh_token WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(pool)
                .await?;
        Ok(family.map_or(RefreshUse::Unknown, |family| RefreshUse::Reused { family }))
    }

    /// Revoke every refresh token of a family.
    pub async fn revoke_family(&self, family: uuid::Uuid) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO auth.revoked_family (family) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(family)
            .execute(self.pool()?)
            .await?;
        Ok(())
    }

    async fn family_revoked(&self, family: uuid::Uuid) -> Result<bool, StoreError> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM auth.revoked_family WHERE family = $1")
            .bind(family)
            .fetch_optional(self.pool()?)
            .await?;
        Ok(found.is_some())
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
                Ok(())
            }
            Store::Memory(_) => Ok(()),
        }
    }

    /// Drop entries whose tokens or assertions have expired anyway.
    pub async fn purge_expired(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                sqlx::query("DELETE FROM auth.client_assertion_jti WHERE expires_at < now()").execute(pool).await?;
                sqlx::query("DELETE FROM auth.revoked_token WHERE expires_at < now()").execute(pool).await?;
                sqlx::query("DELETE FROM auth.authorization_code WHERE expires_at < now() - interval '1 day'")
                    .execute(pool)
                    .await?;
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
