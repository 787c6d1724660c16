//! `payment`: authorize and refund payments for orders (ARCHITECTURE §3).
//!
//! Money movement needs both the caller workload (mTLS peer = order) and
//! the user (`sub` of the token): FLOW-TX for authorizations (exchanged
//! token, `act.sub` = order), FLOW-RELAY for refunds (the user's own token).
//! The card network is a third party behind [`psp`], validated strictly.
//!
//! Modules: [`api`] (handlers, DTOs), [`psp`] (the provider client).

pub mod api;
pub mod psp;
pub mod webhooks;

use anyhow::Context;
use estate_platform::{Built, Platform};
use estate_secrets::OpenBaoSettings;
use estate_secrets::database::DatabaseSettings;
use estate_service_kit::{Config, Service};
use estate_tokens::VerifierSettings;
use estate_workload_identity::IdentitySettings;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;

/// `[service]` of the payment configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSettings {
    /// OpenBao, for dynamic database logins, SVIDs and secret references.
    #[serde(default)]
    pub openbao: Option<OpenBaoSettings>,
    /// The `payments` schema.
    pub database: DatabaseSettings,
    /// SVID, trust bundle, east-west policy.
    pub identity: IdentitySettings,
    /// Whose tokens, for which audience (`payment-api`).
    pub tokens: VerifierSettings,
    /// The payment service provider.
    pub psp: psp::PspSettings,
    /// The SPIFFE ID of the only workload that may move money.
    pub order_spiffe_id: String,
    /// Order's OAuth client id (the `act.sub` of exchanged tokens).
    pub order_client_id: String,
    /// Webhook delivery.
    #[serde(default)]
    pub webhooks: webhooks::WebhookSettings,
}

estate_platform::platform_settings!(PaymentSettings, |settings: &PaymentSettings| {
    let mut found = Vec::new();
    if !settings.webhooks.exempt.is_empty() {
        found.push("service.webhooks.exempt is not empty (SSRF exemptions are for simulators)".to_owned());
    }
    found
});

/// The schema migrations, embedded; run as `payments_owner`.
pub fn migrator() -> Migrator {
    estate_secrets::database::embedded_migrator(
        "payments",
        &[
            (1, "payments", include_str!("../migrations/0001_payments.sql")),
            (2, "webhooks", include_str!("../migrations/0002_webhooks.sql")),
        ],
    )
}

/// A built `payment` service: listeners bound, not yet serving.
pub struct Application(Built);

impl Application {
    /// The bound API address.
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.0.api_addr()
    }

    /// The bound management address.
    pub fn management_addr(&self) -> std::net::SocketAddr {
        self.0.management_addr()
    }
}

impl Service for Application {
    const NAME: &'static str = "payment";
    type Settings = PaymentSettings;

    async fn build(config: Config<Self::Settings>) -> anyhow::Result<Self> {
        let settings = &config.service;
        let platform = Platform::start(Self::NAME, settings.platform(), &config.audit).await?;
        let state = api::AppState {
            pool: platform.pool.clone(),
            psp: psp::Psp::new(&settings.psp)?,
            verifier: platform.verifier.clone(),
            audit: platform.audit.clone(),
            order_peer: settings.order_spiffe_id.parse().ok().context("service.order_spiffe_id is not a SPIFFE ID")?,
            order_client: settings.order_client_id.clone(),
            egress: settings.webhooks.client()?,
        };
        let (api, api_doc) = api::router(state);
        let server = platform.bind(Self::NAME, &config, api, api::management_router(api_doc)).await?;
        Ok(Self(Built::new(server, platform)))
    }

    async fn run_until(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        self.0.run_until(shutdown).await
    }
}
