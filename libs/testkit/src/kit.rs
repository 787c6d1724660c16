//! Service-kit configuration for tests: both listeners on free loopback
//! ports, server certificates from a [`TestPki`] written into `dir`.

use std::path::Path;

use estate_service_kit::SecretRef;
use estate_service_kit::config::{Config, DevSettings};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{TestPki, TestkitError};

/// Development-mode config with listeners on `127.0.0.1:0` and TLS from `pki`.
pub fn config<S>(pki: &TestPki, dir: &Path) -> Result<Config<S>, TestkitError>
where
    S: DeserializeOwned + Serialize + Default + DevSettings,
{
    config_with(pki, dir, S::default())
}

/// The same, with the `[service]` section given (settings with required fields).
pub fn config_with<S>(pki: &TestPki, dir: &Path, service: S) -> Result<Config<S>, TestkitError>
where
    S: DeserializeOwned + Serialize + DevSettings,
{
    use estate_service_kit::NoServiceSettings;
    let files = pki.localhost_server()?.write_to(dir, "server")?;
    let base = Config::<NoServiceSettings>::from_figment(Config::<NoServiceSettings>::figment(None))
        .map_err(|e| TestkitError::failed("kit config", e.to_string()))?;
    let mut config = Config {
        mode: base.mode,
        api: base.api,
        management: base.management,
        tls: base.tls,
        limits: base.limits,
        log: base.log,
        telemetry: base.telemetry,
        audit: base.audit,
        service,
    };
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.api.bind = loopback;
    config.management.bind = loopback;
    config.tls.cert = Some(files.cert);
    config.tls.key = Some(SecretRef::File(files.key));
    Ok(config)
}

/// A kit [`Server`](estate_service_kit::Server) serving a router on free
/// loopback ports for the life of the value (its task stops with the test's
/// runtime).
pub struct TestServer {
    /// The CA its certificates come from; `pki.https_client()` talks to it.
    pub pki: TestPki,
    /// The API listener's address.
    pub api_addr: std::net::SocketAddr,
    /// The management listener's address.
    pub management_addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Bind `router` as service `name` (development config, no settings) and
    /// serve it; `before_run` sees the bound server (e.g. to attach an audit log).
    pub async fn serve_with(
        name: &'static str,
        router: axum::Router,
        before_run: impl FnOnce(&estate_service_kit::Server),
    ) -> Result<Self, TestkitError> {
        Self::serve_at(name, router, std::net::IpAddr::from([127, 0, 0, 1]), before_run).await
    }

    /// [`Self::serve_with`] on another loopback address (`127.0.0.2` is in
    /// the test certificates too): a "public" partner that an SSRF-safe
    /// client may exempt without exempting `127.0.0.1`.
    pub async fn serve_at(
        name: &'static str,
        router: axum::Router,
        ip: std::net::IpAddr,
        before_run: impl FnOnce(&estate_service_kit::Server),
    ) -> Result<Self, TestkitError> {
        let pki = TestPki::new(name)?;
        let dir = tempfile::tempdir().map_err(TestkitError::io("tempdir"))?;
        let mut config = config::<estate_service_kit::NoServiceSettings>(&pki, dir.path())?;
        config.api.bind = std::net::SocketAddr::new(ip, 0);
        let server = estate_service_kit::Server::bind(
            name,
            &config,
            router,
            estate_service_kit::management::Readiness::default(),
        )
        .await
        .map_err(|e| TestkitError::failed("bind test server", e.to_string()))?;
        before_run(&server);
        let (api_addr, management_addr) = (server.api_addr(), server.management_addr());
        tokio::spawn(server.run_until(std::future::pending()));
        Ok(Self { pki, api_addr, management_addr, _dir: dir })
    }

    /// [`Self::serve_with`] with nothing to do before serving.
    pub async fn serve(name: &'static str, router: axum::Router) -> Result<Self, TestkitError> {
        Self::serve_with(name, router, |_| {}).await
    }

    /// `https://<api ip>:<api port><path>`.
    pub fn ip_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.api_addr)
    }

    /// `https://localhost:<api port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.api_addr.port())
    }
}
