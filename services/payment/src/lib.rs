//! `payment`: the payments REST API (issue 7).
//!
//! Today the service is its skeleton: the shared runtime from
//! `estate-service-kit` (TLS API listener, management listener with health
//! and metrics, JSON logs, graceful shutdown) around an API router that has no
//! routes yet, so every API path answers a problem+json 404.

use std::net::SocketAddr;

use axum::Router;
use estate_service_kit::management::Readiness;
use estate_service_kit::{Config, NoServiceSettings, Server, Service};

/// A built `payment` service: listeners bound, not yet serving.
pub struct Application {
    server: Server,
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
    const NAME: &'static str = "payment";
    type Settings = NoServiceSettings;

    async fn build(config: Config<Self::Settings>) -> anyhow::Result<Self> {
        let server = Server::bind(Self::NAME, &config, api_router(), Readiness::default()).await?;
        Ok(Self { server })
    }

    async fn run_until(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        self.server.run_until(shutdown).await
    }
}

fn api_router() -> Router {
    Router::new()
}
