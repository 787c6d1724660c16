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
    let files = pki.localhost_server()?.write_to(dir, "server")?;
    let mut config = Config::<S>::from_figment(Config::<S>::figment(None))
        .map_err(|e| TestkitError::failed("kit config", e.to_string()))?;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.api.bind = loopback;
    config.management.bind = loopback;
    config.tls.cert = Some(files.cert);
    config.tls.key = Some(SecretRef::File(files.key));
    Ok(config)
}
