//! `inventory`: the machine-only inventory gRPC API (`proto/estate/inventory/v1`).
//!
//! Reserve / release / get stock over tonic, served on the kit's TLS
//! listener with east-west mTLS. Three gates stand in front of the stock
//! (ARCHITECTURE §3, FLOW-CC):
//!
//! 1. the TLS handshake needs a client SVID from the trust bundle;
//! 2. the east-west policy admits only the SPIFFE IDs it names per method
//!    (`order` in the estate's policy);
//! 3. the call needs an `inventory-api` client-credentials token with
//!    `inventory:reserve` (Reserve, Release) or `inventory:read` (GetStock).
//!
//! Modules: [`stock`] (domain types and the repository), [`grpc`] (the methods).

pub mod grpc;
pub mod stock;

use std::net::SocketAddr;

use axum::Router;
use estate_platform::{Built, Platform};
use estate_proto::inventory::v1::inventory_server::InventoryServer;
use estate_secrets::OpenBaoSettings;
use estate_secrets::database::DatabaseSettings;
use estate_service_kit::{Config, Service};
use estate_tokens::VerifierSettings;
use estate_tokens::grpc::GrpcAuthLayer;
use estate_workload_identity::IdentitySettings;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;

use crate::grpc::InventoryService;
use crate::stock::StockStore;

/// `[service]` of the inventory configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventorySettings {
    /// OpenBao, for dynamic database logins, SVIDs and secret references.
    #[serde(default)]
    pub openbao: Option<OpenBaoSettings>,
    /// The `inventory` schema.
    pub database: DatabaseSettings,
    /// SVID, trust bundle, east-west policy.
    pub identity: IdentitySettings,
    /// Whose tokens, for which audience (`inventory-api`).
    pub tokens: VerifierSettings,
}

estate_platform::platform_settings!(InventorySettings);

/// The schema migrations, embedded; run as `inventory_owner`.
pub fn migrator() -> Migrator {
    estate_secrets::database::embedded_migrator(
        "inventory",
        &[
            (1, "stock", include_str!("../migrations/0001_stock.sql")),
            (2, "released orders", include_str!("../migrations/0002_released_orders.sql")),
        ],
    )
}

/// A built `inventory` service: listeners bound, not yet serving.
pub struct Application(Built);

impl Application {
    /// The bound API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.0.api_addr()
    }

    /// The bound management address.
    pub fn management_addr(&self) -> SocketAddr {
        self.0.management_addr()
    }
}

impl Service for Application {
    const NAME: &'static str = "inventory";
    type Settings = InventorySettings;

    async fn build(config: Config<Self::Settings>) -> anyhow::Result<Self> {
        let platform = Platform::start(Self::NAME, config.service.platform(), &config.audit).await?;
        let server = platform.bind(Self::NAME, &config, api_router(&platform), Router::new()).await?;
        Ok(Self(Built::new(server, platform)))
    }

    async fn run_until(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        self.0.run_until(shutdown).await
    }
}

/// The gRPC service behind the token layer; anything else is 404.
fn api_router(platform: &Platform) -> Router {
    let service = InventoryService::new(StockStore::new(platform.pool.clone()), platform.audit.clone());
    let grpc = tower::ServiceBuilder::new()
        .layer(GrpcAuthLayer::new(platform.verifier.clone()))
        .service(InventoryServer::new(service));
    Router::new().route_service("/estate.inventory.v1.Inventory/{method}", grpc)
}
