//! `auth`: Estate's OAuth 2.1 / OIDC authorization server.
//!
//! Implemented so far: discovery (RFC 8414 and OIDC), the JWKS, and the token
//! endpoint with `client_credentials` (clients authenticated by
//! `private_key_jwt` or `client_secret_basic`) and token exchange (RFC 8693)
//! under a configured policy. Access tokens are ES256 JWTs per RFC 9068 with
//! a lifetime of at most 300 s (exchanged: 60 s).
//!
//! Modules: [`settings`] (configuration), [`keys`] (signing keys),
//! [`clients`] (client authentication), [`grants`] (what is issued under
//! which rules), [`endpoints`] (HTTP), [`oauth_error`] (RFC 6749 errors).

pub mod authorize;
pub mod cli;
pub mod clients;
pub mod endpoints;
pub mod grants;
pub mod key_store;
pub mod keys;
pub mod oauth_error;
pub mod passwords;
pub mod rate_limit;
pub mod settings;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use estate_service_kit::management::Readiness;
use estate_service_kit::{Config, Server, Service};
use estate_tokens::jwks::KeyLocation;
use estate_tokens::{Verifier, VerifierConfig};
use secrecy::ExposeSecret;

use crate::clients::ClientRegistry;
use crate::endpoints::AuthState;
use crate::grants::Issuer;
use crate::keys::{KeyRing, SigningKey};
use crate::settings::{AuthSettings, MAX_ACCESS_TOKEN_TTL_SECS, MAX_EXCHANGED_TOKEN_TTL_SECS};
use crate::store::Store;

/// A built authorization server: listeners bound, not yet serving.
pub struct Application {
    server: Server,
    openbao: Option<estate_secrets::OpenBao>,
}

impl Application {
    /// The bound API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.server.api_addr()
    }

    /// The bound management address.
    pub fn management_addr(&self) -> SocketAddr {
        self.server.management_addr()
    }
}

impl Service for Application {
    const NAME: &'static str = "auth";
    type Settings = AuthSettings;

    async fn build(config: Config<Self::Settings>) -> anyhow::Result<Self> {
        let audit = estate_service_kit::audit_log(Self::NAME, &config.audit)?;
        let (state, openbao) = build_state(&config.service, audit.clone()).await?;
        // Ready means: the database answers (it holds users, codes, revocations).
        let readiness = Readiness::new(vec![Box::new(DatabaseReady(state.store.clone()))]);
        let server = Server::bind(Self::NAME, &config, endpoints::router(Arc::new(state)), readiness).await?;
        server.observe_audit(&audit);
        Ok(Self { server, openbao })
    }

    async fn run_until(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        let drained = self.server.run_until(shutdown).await;
        // Leave no OpenBao token behind that could be stolen from a stopped process.
        if let Some(openbao) = self.openbao
            && let Err(error) = openbao.revoke_self().await
        {
            tracing::warn!(%error, "could not revoke the OpenBao token on shutdown");
        }
        drained
    }
}

/// Readiness check: the store answers.
struct DatabaseReady(Arc<Store>);

impl estate_service_kit::management::ReadinessCheck for DatabaseReady {
    fn name(&self) -> &'static str {
        "database"
    }

    fn check(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
}

/// Forget expired assertion ids and revocations once a minute.
fn spawn_purger(store: &Arc<Store>) {
    let weak = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(store) = weak.upgrade() else { return };
            if let Err(error) = store.purge_expired().await {
                tracing::warn!(%error, "purging expired entries failed");
            }
        }
    });
}

async fn build_state(
    settings: &AuthSettings,
    audit: estate_audit::AuditLog,
) -> anyhow::Result<(AuthState, Option<estate_secrets::OpenBao>)> {
    if settings.access_token_ttl_secs == 0 || settings.access_token_ttl_secs > MAX_ACCESS_TOKEN_TTL_SECS {
        bail!("access_token_ttl_secs must be 1..={MAX_ACCESS_TOKEN_TTL_SECS}");
    }
    if settings.exchanged_token_ttl_secs == 0 || settings.exchanged_token_ttl_secs > MAX_EXCHANGED_TOKEN_TTL_SECS {
        bail!("exchanged_token_ttl_secs must be 1..={MAX_EXCHANGED_TOKEN_TTL_SECS}");
    }
    let issuer = settings.issuer.trim_end_matches('/').to_owned();
    let openbao = estate_secrets::OpenBao::login_renewing(settings.openbao.as_ref()).await.context("openbao login")?;
    let keys = Arc::new(match (&settings.key_store, &settings.signing_key, settings.dev_generated_signing_key) {
        (Some(store), _, _) => {
            let client = openbao.as_ref().context("service.key_store needs service.openbao")?;
            let set = key_store::load(client, store).await.context("loading signing keys")?;
            if set.keys.is_empty() {
                bail!("no signing keys in OpenBao yet: run `auth keys rotate` once to create the first");
            }
            let (active, published) = set.to_ring_parts(grants::unix_now())?;
            KeyRing::with_keys(active, published)
        }
        (None, Some(reference), _) => {
            let pem = estate_secrets::resolve(reference, openbao.as_ref()).await.context("signing key")?;
            KeyRing::new(SigningKey::from_pem(pem.expose_secret())?)
        }
        (None, None, true) => KeyRing::new(SigningKey::generate()?),
        (None, None, false) => {
            bail!(
                "no signing key: set service.key_store or service.signing_key (or dev_generated_signing_key in development)"
            )
        }
    });
    let needs_database = settings.clients.iter().any(|c| {
        c.grant_types.contains(&settings::GrantType::AuthorizationCode)
            || c.grant_types.contains(&settings::GrantType::RefreshToken)
    });
    if needs_database && settings.database.is_none() {
        bail!("the authorization_code and refresh_token grants need service.database");
    }
    let store = Arc::new(match &settings.database {
        Some(database) => Store::connect(database, openbao.as_ref(), &audit).await.context("database")?,
        None => Store::Memory(std::sync::Mutex::default()),
    });
    spawn_purger(&store);
    let token_endpoint = format!("{issuer}/token");
    let clients =
        ClientRegistry::new(&settings.clients, &issuer, &token_endpoint, store.clone(), audit.clone()).await?;

    // Our own tokens (subject tokens, introspection, revocation) are verified
    // in-process with our own keys, for any audience we issue.
    let mut audiences: Vec<&str> =
        settings.clients.iter().flat_map(|c| c.audiences.iter().map(String::as_str)).collect();
    audiences.extend(settings.exchange.iter().flat_map(|p| p.subject_audiences.iter().map(String::as_str)));
    audiences.extend(settings.exchange.iter().flat_map(|p| p.audiences.iter().map(String::as_str)));
    audiences.sort_unstable();
    audiences.dedup();
    if audiences.is_empty() {
        audiences.push(issuer.as_str());
    }
    let mut subject_config = VerifierConfig::new(issuer.clone(), &audiences);
    subject_config.keys = KeyLocation::Static(keys.jwks());
    let subject_verifier = Verifier::new(subject_config).await?;

    let metadata = endpoints::metadata(&issuer);
    let issuer_url = issuer.clone();
    if let (Some(store), Some(client)) = (&settings.key_store, &openbao) {
        key_store::spawn_reloader(client.clone(), store.clone(), &keys, subject_verifier.clone());
    }
    let issuer = Issuer::new(
        issuer,
        keys,
        grants::Lifetimes {
            access_secs: settings.access_token_ttl_secs,
            exchanged_secs: settings.exchanged_token_ttl_secs,
            refresh_secs: settings.refresh_token_ttl_secs,
        },
        settings.exchange.clone(),
        subject_verifier,
        store.clone(),
        audit.clone(),
    );
    let limits = rate_limit::TokenRateLimits::new(&settings.rate_limits);
    let login_limits = rate_limit::TokenRateLimits::new(&settings::RateLimitSettings {
        per_client_per_minute: u32::MAX,
        per_ip_per_minute: settings.login.per_ip_per_minute,
    });
    let passwords = Arc::new(passwords::Passwords::new()?);
    let state = AuthState {
        issuer,
        clients,
        metadata,
        limits,
        login_limits,
        login_settings: settings.login.clone(),
        store,
        passwords,
        issuer_url,
        audit,
        revocation_cache: std::sync::Mutex::new(None),
    };
    Ok((state, openbao))
}
