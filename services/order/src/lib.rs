//! `order`: the orders REST API (ARCHITECTURE §3).
//!
//! - `POST /v1/orders` (with `Idempotency-Key`): price the lines from the
//!   price list, reserve stock at inventory with order's client-credentials
//!   token (FLOW-CC), exchange the user's token for a payment-scoped one and
//!   authorize payment (FLOW-TX); on failure, release the stock and fail the
//!   order (compensation);
//! - `GET /v1/orders`, `GET|PATCH /v1/orders/{id}`;
//! - `POST /v1/orders/{id}/cancel|refund`: refund with the user's own token
//!   relayed to payment (FLOW-RELAY).
//!
//! Modules: [`domain`], [`repo`] (owner-scoped, over row-level security),
//! [`upstream`] (inventory and payment clients), [`api`] (handlers, DTOs).

pub mod api;
pub mod domain;
pub mod repo;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use estate_oauth_client::ClientCredentialsSource;
use estate_platform::{Built, OAuthClientSettings, Platform, UpstreamSettings};
use estate_secrets::OpenBaoSettings;
use estate_secrets::database::DatabaseSettings;
use estate_service_kit::{Config, Service};
use estate_tokens::VerifierSettings;
use estate_workload_identity::IdentitySettings;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;

/// `[service]` of the order configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderSettings {
    /// OpenBao, for dynamic database logins, SVIDs and secret references.
    #[serde(default)]
    pub openbao: Option<OpenBaoSettings>,
    /// The `orders` schema.
    pub database: DatabaseSettings,
    /// SVID, trust bundle, east-west policy.
    pub identity: IdentitySettings,
    /// Whose user tokens, for which audience (`order-api`).
    pub tokens: VerifierSettings,
    /// Order as an OAuth client (`order-svc`).
    pub oauth: OAuthClientSettings,
    /// The inventory gRPC service.
    pub inventory: UpstreamSettings,
    /// The payment REST service.
    pub payment: UpstreamSettings,
    /// Per-user velocity limits.
    #[serde(default)]
    pub velocity: api::Velocity,
}

estate_platform::platform_settings!(OrderSettings);

/// The schema migrations, embedded; run as `orders_owner`.
pub fn migrator() -> Migrator {
    estate_secrets::database::embedded_migrator(
        "orders",
        &[
            (1, "orders", include_str!("../migrations/0001_orders.sql")),
            (2, "checkout", include_str!("../migrations/0002_checkout.sql")),
        ],
    )
}

/// A built `order` service: listeners bound, not yet serving.
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
    const NAME: &'static str = "order";
    type Settings = OrderSettings;

    async fn build(config: Config<Self::Settings>) -> anyhow::Result<Self> {
        let settings = &config.service;
        let platform = Platform::start(Self::NAME, settings.platform(), &config.audit).await?;

        let inventory_peer = settings.inventory.peer()?;
        let channel = platform.identity.grpc_channel(&inventory_peer, upstream::CALL_TIMEOUT)?;
        let origin = settings.inventory.url.parse().context("service.inventory.url")?;
        let tokens = ClientCredentialsSource::new(
            platform.oauth_client(&settings.oauth).await?,
            "inventory:read inventory:reserve",
            Some("inventory-api"),
        );
        let inventory = upstream::Inventory::new(channel, origin, tokens);

        let payment_http = platform.identity.http_client(&settings.payment.peer()?, Duration::from_secs(10))?;
        let payment = upstream::Payment::new(
            payment_http,
            &settings.payment.url,
            Arc::new(platform.oauth_client(&settings.oauth).await?),
        );

        let state = api::AppState::new(
            repo::Orders::new(platform.pool.clone()),
            inventory,
            payment,
            platform.verifier.clone(),
            platform.audit.clone(),
            settings.velocity,
        );
        let (api, api_doc) = api::router(state.clone());
        let server = platform.bind(Self::NAME, &config, api, api::management_router(state, api_doc)).await?;
        Ok(Self(Built::new(server, platform)))
    }

    async fn run_until(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        self.0.run_until(shutdown).await
    }
}
