//! KV version 2: read and write secrets (`<mount>/data/<path>`).

use reqwest::Method;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client::{OpenBao, OpenBaoError};

#[derive(Deserialize)]
struct KvResponse {
    data: KvData,
}

#[derive(Deserialize)]
struct KvData {
    data: Map<String, Value>,
}

impl OpenBao {
    /// Read every field of a KV v2 secret; string values become [`SecretString`]s.
    pub async fn kv_read(&self, mount: &str, path: &str) -> Result<Vec<(String, SecretString)>, OpenBaoError> {
        let api = format!("{mount}/data/{path}");
        let response: KvResponse = self
            .call(Method::GET, &api, None, true)
            .await?
            .ok_or_else(|| OpenBaoError::Invalid { path: api.clone(), reason: "empty".into() })?;
        Ok(response
            .data
            .data
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, SecretString::from(s.to_owned()))))
            .collect())
    }

    /// One field of a KV v2 secret.
    pub async fn kv_field(&self, mount: &str, path: &str, field: &str) -> Result<SecretString, OpenBaoError> {
        self.kv_read(mount, path)
            .await?
            .into_iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v)
            .ok_or_else(|| OpenBaoError::NotFound { path: format!("{mount}/data/{path}#{field}") })
    }

    /// Write a KV v2 secret (replaces all fields; a new version).
    pub async fn kv_write(&self, mount: &str, path: &str, fields: &Map<String, Value>) -> Result<(), OpenBaoError> {
        let api = format!("{mount}/data/{path}");
        self.call::<Value>(Method::POST, &api, Some(&serde_json::json!({ "data": fields })), true).await?;
        Ok(())
    }
}
