//! Assembling a service: its API router and the management router, each
//! behind the common middleware stack, on two TLS listeners.
//!
//! A service's `Application::build` calls [`Server::bind`] with its router
//! and readiness checks; tests and `main` then call
//! [`Server::run_until`] with whatever future means "stop".

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use tokio::sync::watch;

use crate::config::Config;
use crate::management::{self, Readiness};
use crate::metrics::Metrics;
use crate::middleware::{StackLimits, apply_stack};
use crate::secret::resolve_local;
use crate::serve::TlsListener;
use crate::tls::{CertifiedKey, ServerTls};

/// Errors while starting a service.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// A listener could not be bound.
    #[error("cannot bind {listener} listener on {addr}: {source}")]
    Bind {
        /// `api` or `management`.
        listener: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A service whose listeners are bound but not yet serving.
pub struct Server {
    name: &'static str,
    api: (TlsListener, Router),
    management: (TlsListener, Router),
    api_addr: SocketAddr,
    management_addr: SocketAddr,
    readiness: Readiness,
    tls: ServerTls,
    grace: std::time::Duration,
    metrics: Metrics,
}

impl Server {
    /// Load TLS material, build both routers and bind both listeners.
    pub async fn bind<S>(
        name: &'static str,
        config: &Config<S>,
        api_router: Router,
        readiness: Readiness,
    ) -> Result<Self, StartError> {
        Self::bind_with_api_tls(name, config, api_router, readiness, None).await
    }

    /// The same, with the API listener's TLS given (east-west mTLS from
    /// `estate-workload-identity`); the management listener keeps the
    /// server-only TLS of the configuration, since probes and scrapers
    /// present no workload certificate.
    pub async fn bind_with_api_tls<S>(
        name: &'static str,
        config: &Config<S>,
        api_router: Router,
        readiness: Readiness,
        api_tls: Option<ServerTls>,
    ) -> Result<Self, StartError> {
        Self::bind_full(name, config, api_router, readiness, api_tls, Router::new()).await
    }

    /// The same, with more routes on the management listener (an admin API
    /// with its own authorization, the OpenAPI document): never on the API
    /// listener, so nothing that reaches the API can reach them.
    pub async fn bind_full<S>(
        name: &'static str,
        config: &Config<S>,
        api_router: Router,
        readiness: Readiness,
        api_tls: Option<ServerTls>,
        management_routes: Router,
    ) -> Result<Self, StartError> {
        let tls = ServerTls::new(CertifiedKey::load(&config.tls, config.mode)?.into_server_config()?);
        let api_tls = api_tls.unwrap_or_else(|| tls.clone());
        let metrics = Metrics::new(name);
        let metrics_token = config.management.metrics_token.as_ref().map(resolve_local).transpose()?;
        let limits =
            StackLimits { body_bytes: config.limits.body_bytes, request_timeout: config.limits.request_timeout() };

        let api_router = apply_stack(api_router, limits, metrics.api(), metrics.audit_slot());
        let management_router = apply_stack(
            management::router(readiness.clone(), metrics.clone(), metrics_token).merge(management_routes),
            limits,
            metrics.management(),
            metrics.audit_slot(),
        );

        let handshake = config.limits.handshake_timeout();
        let bind = |listener: &'static str, addr: SocketAddr, tls: ServerTls| async move {
            TlsListener::bind(addr, tls, handshake).await.map_err(|source| StartError::Bind { listener, addr, source })
        };
        let api_listener = bind("api", config.api.bind, api_tls.clone()).await?;
        let management_listener = bind("management", config.management.bind, tls).await?;
        let local = |l: &TlsListener, listener, addr| {
            l.local_addr().map_err(|source| StartError::Bind { listener, addr, source })
        };
        let api_addr = local(&api_listener, "api", config.api.bind)?;
        let management_addr = local(&management_listener, "management", config.management.bind)?;

        Ok(Self {
            name,
            api: (api_listener, api_router),
            management: (management_listener, management_router),
            api_addr,
            management_addr,
            readiness,
            tls: api_tls,
            grace: config.limits.shutdown_grace(),
            metrics,
        })
    }

    /// Export the delivery counters of the service's audit log on `/metrics`,
    /// and audit every refused request no handler audited into it.
    pub fn observe_audit(&self, log: &estate_audit::AuditLog) {
        self.metrics.observe_audit(log);
    }

    /// The bound API address (useful when the config said port 0).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The bound management address.
    pub fn management_addr(&self) -> SocketAddr {
        self.management_addr
    }

    /// The API listener's TLS slot, for certificate rotation.
    pub fn tls(&self) -> ServerTls {
        self.tls.clone()
    }

    /// Serve until `shutdown` completes; then report not-ready, stop
    /// accepting, and give in-flight requests the grace period to finish.
    /// Returns `true` when everything drained in time.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> bool {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (api_listener, api_router) = self.api;
        let (management_listener, management_router) = self.management;
        let api = tokio::spawn(api_listener.serve(api_router, stop_rx.clone(), self.grace));
        let management = tokio::spawn(management_listener.serve(management_router, stop_rx, self.grace));
        tracing::info!(
            service = self.name,
            api_addr = %self.api_addr,
            management_addr = %self.management_addr,
            "listening"
        );

        shutdown.await;
        tracing::info!(service = self.name, "shutting down: draining");
        self.readiness.start_draining();
        // Ignoring the send result: if every receiver is gone, the listeners already stopped.
        let _ = stop_tx.send(true);
        let api_drained = api.await.unwrap_or(false);
        let management_drained = management.await.unwrap_or(false);
        let drained = api_drained && management_drained;
        if drained {
            tracing::info!(service = self.name, "stopped");
        } else {
            tracing::warn!(service = self.name, "grace period over; remaining connections cut");
        }
        drained
    }
}
