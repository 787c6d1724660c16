//! `gateway`: the single public entry point (ARCHITECTURE §1).
//!
//! TLS edge (the kit's listener: rustls, TLS 1.2+, HTTP/1.1 and HTTP/2,
//! request ids, trace context, security headers, body and time limits) in
//! front of a declarative route table ([`routes`]). For a routed request it
//! verifies the bearer token for the upstream's audience and the route's
//! scope, applies rate limits per IP, subject and client ([`limits`]),
//! drops every client-sent header not on an allowlist, and forwards over
//! east-west mTLS with its own SPIFFE identity ([`proxy`]). The token goes
//! upstream unchanged: every service re-validates it.

pub mod limits;
pub mod proxy;
pub mod routes;
pub mod shared;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use estate_secrets::OpenBaoSettings;
use estate_service_kit::management::Readiness;
use estate_service_kit::{Config, DevSettings, Server, Service};
use estate_tokens::{Verifier, VerifierConfig};
use estate_workload_identity::{IdentitySettings, SpiffeId, WorkloadIdentity};
use serde::{Deserialize, Serialize};

use crate::limits::{Limits, RateClass};
use crate::proxy::{Gateway, Upstream};
use crate::routes::{RouteSettings, RouteTable};

/// `[[service.upstreams]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// Name the routes refer to.
    pub name: String,
    /// Base URL (`https://host:port`).
    pub url: String,
    /// The SPIFFE ID its certificate must carry.
    pub spiffe_id: String,
    /// The audience its tokens carry (`order-api` …).
    pub audience: String,
    /// Per-call time limit, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Most calls in flight.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_in_flight() -> usize {
    256
}

/// `[service]` of the gateway configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// OpenBao, for an SVID from its PKI.
    #[serde(default)]
    pub openbao: Option<OpenBaoSettings>,
    /// The gateway's SVID and trust bundle (no policy: nothing calls the gateway east-west).
    pub identity: IdentitySettings,
    /// The token issuer (exact `iss`; discovery starts here).
    pub issuer: String,
    /// Extra CA (PEM file) for the issuer's TLS.
    #[serde(default)]
    pub issuer_ca_file: Option<PathBuf>,
    /// Poll the issuer's revocation list (PC-12); off only for an issuer that publishes none.
    #[serde(default = "default_true")]
    pub revocations: bool,
    /// How often: the bound from revocation to refusal at the edge.
    #[serde(default = "default_revocation_poll_secs")]
    pub revocation_poll_secs: u64,
    /// Upstream services.
    pub upstreams: Vec<UpstreamSettings>,
    /// The route table.
    pub routes: Vec<RouteSettings>,
    /// Rate-limit classes (`default` applies to routes without a class).
    #[serde(default)]
    pub rate_classes: BTreeMap<String, RateClass>,
    /// Browser origins allowed by CORS (exact; `*` is refused).
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// A rate-limit budget shared by every replica, in Redis.
    #[serde(default)]
    pub redis: Option<shared::RedisSettings>,
}

impl DevSettings for GatewaySettings {
    fn dev_settings(&self) -> Vec<String> {
        let mut found = Vec::new();
        if !self.issuer.starts_with("https://") {
            found.push("service.issuer is not https".to_owned());
        }
        if self.cors_origins.iter().any(|o| !o.starts_with("https://")) {
            found.push("service.cors_origins has a non-https origin".to_owned());
        }
        found
    }
}

/// A built gateway: listeners bound, not yet serving.
pub struct Application {
    server: Server,
    openbao: Option<estate_secrets::OpenBao>,
}

impl Application {
    /// The bound public address.
    pub fn api_addr(&self) -> SocketAddr {
        self.server.api_addr()
    }

    /// The bound management address.
    pub fn management_addr(&self) -> SocketAddr {
        self.server.management_addr()
    }
}

impl Service for Application {
    const NAME: &'static str = "gateway";
    type Settings = GatewaySettings;

    async fn build(config: Config<Self::Settings>) -> anyhow::Result<Self> {
        let settings = &config.service;
        if settings.cors_origins.iter().any(|o| o.trim() == "*" || o.contains('*')) {
            bail!("service.cors_origins: wildcards are refused; list the origins");
        }
        let audit = estate_service_kit::audit_log(Self::NAME, &config.audit)?;
        let openbao =
            estate_secrets::OpenBao::login_renewing(settings.openbao.as_ref()).await.context("openbao login")?;
        let identity = WorkloadIdentity::load(&settings.identity, openbao.as_ref(), Some(audit.clone()))
            .await
            .context("workload identity")?;
        let issuer_ca = settings
            .issuer_ca_file
            .as_ref()
            .map(std::fs::read_to_string)
            .transpose()
            .context("service.issuer_ca_file")?;

        let mut upstreams = Vec::new();
        for upstream in &settings.upstreams {
            let peer: SpiffeId = upstream
                .spiffe_id
                .parse()
                .map_err(|_| anyhow::anyhow!("upstream {}: spiffe_id is not a SPIFFE ID", upstream.name))?;
            let timeout = Duration::from_millis(upstream.timeout_ms.clamp(100, 60_000));
            let mut verifier = VerifierConfig::new(&settings.issuer, &[upstream.audience.as_str()]);
            verifier.ca_pem.clone_from(&issuer_ca);
            if settings.revocations {
                let mut feed = estate_tokens::revocation::RevocationsConfig::of_issuer(&settings.issuer);
                feed.poll = Duration::from_secs(settings.revocation_poll_secs.max(1));
                verifier.revocations = Some(feed);
            }
            upstreams.push(Upstream {
                name: upstream.name.clone(),
                base: upstream.url.trim_end_matches('/').to_owned(),
                http: identity.http_client(&peer, timeout)?,
                verifier: Verifier::new(verifier).await.context("token verifier")?,
                permits: Arc::new(tokio::sync::Semaphore::new(upstream.max_in_flight.max(1))),
                timeout,
            });
        }
        let shared = match &settings.redis {
            Some(redis) => {
                use secrecy::ExposeSecret;
                let password = estate_secrets::resolve(&redis.password, openbao.as_ref())
                    .await
                    .context("service.redis.password")?;
                let password =
                    std::str::from_utf8(password.expose_secret()).context("service.redis.password is not text")?;
                Some(shared::SharedLimits::new(redis, secrecy::SecretString::from(password.trim_end().to_owned()))?)
            }
            None => None,
        };
        let table = RouteTable::new(&settings.routes, |name| upstreams.iter().position(|u| u.name == name))?;
        if let Some(route) = table.routes().iter().find(|r| r.body_limit > config.limits.body_bytes) {
            bail!("route {}: body_limit above limits.body_bytes", route.pattern);
        }
        let keys_ready = estate_tokens::readiness::KeysReady(upstreams.iter().map(|u| u.verifier.clone()).collect());
        let gateway = Gateway {
            table,
            upstreams,
            limits: Limits::new(&settings.rate_classes, shared),
            cors_origins: settings.cors_origins.clone(),
            audit: audit.clone(),
        };
        let router = Router::new().fallback(proxy::forward).with_state(Arc::new(gateway));
        let server = Server::bind(Self::NAME, &config, router, Readiness::new(vec![Box::new(keys_ready)])).await?;
        server.observe_audit(&audit);
        Ok(Self { server, openbao })
    }

    async fn run_until(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        let drained = self.server.run_until(shutdown).await;
        if let Some(openbao) = self.openbao
            && let Err(error) = openbao.revoke_self().await
        {
            tracing::warn!(%error, "could not revoke the OpenBao token on shutdown");
        }
        drained
    }
}

fn default_true() -> bool {
    true
}

fn default_revocation_poll_secs() -> u64 {
    estate_tokens::revocation::DEFAULT_POLL.as_secs()
}
