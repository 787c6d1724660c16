//! `estate-platform`: the start-up every east-west business service
//! (order, payment, inventory) shares, so none of them gets it subtly wrong:
//!
//! 1. log in to OpenBao (when configured) and keep the token renewed;
//! 2. load the workload identity (SVID, bundle, east-west policy);
//! 3. connect to the service's own schema as its least-privilege login;
//! 4. set up the access-token verifier for the service's audience;
//! 5. bind the API listener with east-west mTLS and the policy enforced in
//!    front of every route, the management listener with a database
//!    readiness check and the audit counters;
//! 6. on shutdown, revoke the OpenBao token (no usable token outlives the process).

pub mod migrate;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use anyhow::Context;
use axum::Router;
use estate_secrets::OpenBaoSettings;
use estate_secrets::database::DatabaseSettings;
use estate_service_kit::management::{Readiness, ReadinessCheck};
use estate_service_kit::{Config, Server};
use estate_tokens::{Verifier, VerifierSettings};
use estate_workload_identity::{IdentitySettings, WorkloadIdentity};
use sqlx::PgPool;

/// The shared parts of a service's `[service]` section.
pub struct PlatformSettings<'a> {
    /// `service.openbao`.
    pub openbao: Option<&'a OpenBaoSettings>,
    /// `service.database`.
    pub database: &'a DatabaseSettings,
    /// `service.identity`.
    pub identity: &'a IdentitySettings,
    /// `service.tokens`.
    pub tokens: &'a VerifierSettings,
}

impl PlatformSettings<'_> {
    /// What production mode refuses (a static database password).
    pub fn dev_settings(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self.database.is_static_password() {
            found.push("service.database.login is a static password (use source = \"openbao\")".to_owned());
        }
        if !self.tokens.issuer.starts_with("https://") {
            found.push("service.tokens.issuer is not https".to_owned());
        }
        found
    }
}

/// A started platform: the parts a service's handlers use.
#[derive(Clone)]
pub struct Platform {
    /// The service's audit log.
    pub audit: estate_audit::AuditLog,
    /// The OpenBao client, when configured.
    pub openbao: Option<estate_secrets::OpenBao>,
    /// The pool on the service's own schema.
    pub pool: PgPool,
    /// This workload's identity.
    pub identity: WorkloadIdentity,
    /// Verifies access tokens for this service's audience.
    pub verifier: Verifier,
}

impl Platform {
    /// Steps 1–4.
    pub async fn start(
        service: &'static str,
        settings: PlatformSettings<'_>,
        audit: &estate_service_kit::config::AuditConfig,
    ) -> anyhow::Result<Self> {
        let audit = estate_service_kit::audit_log(service, audit)?;
        let openbao = estate_secrets::OpenBao::login_renewing(settings.openbao).await.context("openbao login")?;
        let identity = WorkloadIdentity::load(settings.identity, openbao.as_ref(), Some(audit.clone()))
            .await
            .context("workload identity")?;
        let pool = settings.database.connect(openbao.as_ref(), Some(&audit)).await.context("database")?;
        let verifier = Verifier::new(settings.tokens.config().context("service.tokens.ca_file")?)
            .await
            .context("token verifier")?;
        Ok(Self { audit, openbao, pool, identity, verifier })
    }

    /// Step 5: `api` behind the east-west policy on an mTLS listener;
    /// `management` (admin API, OpenAPI document) on the management listener.
    pub async fn bind<S>(
        &self,
        service: &'static str,
        config: &Config<S>,
        api: Router,
        management: Router,
    ) -> anyhow::Result<Server> {
        let api = api.layer(axum::middleware::from_fn_with_state(
            self.identity.policy().clone(),
            estate_workload_identity::enforce,
        ));
        let readiness = Readiness::new(vec![
            Box::new(DatabaseReady(self.pool.clone())),
            Box::new(estate_tokens::readiness::KeysReady(vec![self.verifier.clone()])),
        ]);
        let server =
            Server::bind_full(service, config, api, readiness, Some(self.identity.server_tls()?), management).await?;
        server.observe_audit(&self.audit);
        Ok(server)
    }

    /// Step 6: serve until `shutdown`, then revoke the OpenBao token.
    pub async fn run_until(self, server: Server, shutdown: impl Future<Output = ()> + Send + 'static) -> bool {
        let drained = server.run_until(shutdown).await;
        self.pool.close().await;
        if let Some(openbao) = &self.openbao
            && let Err(error) = openbao.revoke_self().await
        {
            tracing::warn!(%error, "could not revoke the OpenBao token on shutdown");
        }
        drained
    }
}

/// A built service: its server and platform, ready to run.
pub struct Built {
    server: Server,
    platform: Platform,
}

impl Built {
    /// Pair them.
    pub fn new(server: Server, platform: Platform) -> Self {
        Self { server, platform }
    }

    /// The bound API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.server.api_addr()
    }

    /// The bound management address.
    pub fn management_addr(&self) -> SocketAddr {
        self.server.management_addr()
    }

    /// Serve until `shutdown`; see [`Platform::run_until`].
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> bool {
        self.platform.run_until(self.server, shutdown).await
    }
}

/// Readiness: the database answers.
struct DatabaseReady(PgPool);

impl ReadinessCheck for DatabaseReady {
    fn name(&self) -> &'static str {
        "database"
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { sqlx::query("SELECT 1").execute(&self.0).await.map(|_| ()).map_err(|e| e.to_string()) })
    }
}

/// `[service.oauth]`: this service as an OAuth client (`private_key_jwt`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientSettings {
    /// The authorization server's token endpoint (https).
    pub token_endpoint: String,
    /// This service's client id (e.g. `order-svc`).
    pub client_id: String,
    /// The EC P-256 private key (PKCS#8 PEM) that signs client assertions.
    pub key: estate_service_kit::SecretRef,
    /// The `kid` the server knows the public key by.
    pub kid: String,
    /// Extra CA certificates (PEM file) for the token endpoint's TLS.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// An east-west upstream: where it is and who it must be.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// Base URL (`https://host:port`).
    pub url: String,
    /// The SPIFFE ID its certificate must carry.
    pub spiffe_id: String,
}

impl UpstreamSettings {
    /// The expected peer identity.
    pub fn peer(&self) -> anyhow::Result<estate_workload_identity::SpiffeId> {
        self.spiffe_id
            .parse()
            .map_err(|_| anyhow::anyhow!("upstream spiffe_id {:?} is not a SPIFFE ID", self.spiffe_id))
    }
}

impl Platform {
    /// An OAuth client for `settings`, its key resolved (file or OpenBao).
    pub async fn oauth_client(
        &self,
        settings: &OAuthClientSettings,
    ) -> anyhow::Result<estate_oauth_client::OAuthClient> {
        use secrecy::ExposeSecret;
        let key = estate_secrets::resolve(&settings.key, self.openbao.as_ref()).await.context("service.oauth.key")?;
        let pem = std::str::from_utf8(key.expose_secret()).context("service.oauth.key is not PEM text")?;
        let auth = estate_oauth_client::ClientAuth::private_key_jwt(
            &settings.client_id,
            &settings.kid,
            &secrecy::SecretString::from(pem.to_owned()),
        )?;
        let ca = settings.ca_file.as_ref().map(std::fs::read_to_string).transpose().context("service.oauth.ca_file")?;
        Ok(estate_oauth_client::OAuthClient::new(&settings.token_endpoint, auth, ca.as_deref())?)
    }
}

/// A transaction in which row-level security shows `subject`'s rows only:
/// `estate.subject` is set transaction-locally first (`set_config(…, true)`),
/// so it cannot leak to the next user of the pooled connection.
pub async fn owner_transaction(
    pool: &PgPool,
    subject: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('estate.subject', $1, true)").bind(subject).execute(&mut *tx).await?;
    Ok(tx)
}

/// For a service settings type with the four shared sections (`openbao`,
/// `database`, `identity`, `tokens`): its [`PlatformSettings`] view
/// (`platform()`) and a `DevSettings` impl reporting what production refuses
/// (plus what `extra`, a `fn(&Settings) -> Vec<String>`, finds).
#[macro_export]
macro_rules! platform_settings {
    ($settings:ty) => {
        $crate::platform_settings!($settings, |_: &$settings| Vec::<String>::new());
    };
    ($settings:ty, $extra:expr) => {
        impl $settings {
            fn platform(&self) -> $crate::PlatformSettings<'_> {
                $crate::PlatformSettings {
                    openbao: self.openbao.as_ref(),
                    database: &self.database,
                    identity: &self.identity,
                    tokens: &self.tokens,
                }
            }
        }

        impl estate_service_kit::DevSettings for $settings {
            fn dev_settings(&self) -> Vec<String> {
                let extra: fn(&$settings) -> Vec<String> = $extra;
                let mut found = self.platform().dev_settings();
                found.extend(extra(self));
                found
            }
        }
    };
}
