//! A minimal OpenBao / HashiCorp Vault HTTP client: only the calls Estate
//! makes, each visible.
//!
//! - TLS is always verified against a configured CA (or the system roots);
//!   `http://` addresses are refused.
//! - The client token is a [`SecretString`], sent only in `X-Vault-Token`,
//!   never logged; responses are size-capped and parsed into typed structs.
//! - Login (AppRole or Kubernetes) yields a token that is renewed in the
//!   background at two thirds of its TTL ([`OpenBao::spawn_token_renewal`])
//!   and revoked on shutdown ([`OpenBao::revoke_self`]).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest response body read from OpenBao.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// How a workload proves itself to OpenBao.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthMethod {
    /// AppRole: `role_id` and `secret_id` read from files (mounted secrets).
    AppRole {
        /// Mount path, usually `approle`.
        #[serde(default = "approle_mount")]
        mount: String,
        /// File holding the role id.
        role_id_file: PathBuf,
        /// File holding the secret id (owner-only permissions required).
        secret_id_file: PathBuf,
    },
    /// Kubernetes auth: the projected service-account token.
    Kubernetes {
        /// Mount path, usually `kubernetes`.
        #[serde(default = "kubernetes_mount")]
        mount: String,
        /// The OpenBao role.
        role: String,
        /// The service-account token file.
        #[serde(default = "sa_token_file")]
        token_file: PathBuf,
    },
}

fn approle_mount() -> String {
    "approle".into()
}
fn kubernetes_mount() -> String {
    "kubernetes".into()
}
fn sa_token_file() -> PathBuf {
    PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
}

/// Where OpenBao is and how to log in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenBaoSettings {
    /// `https://…` address.
    pub address: String,
    /// CA certificate (PEM) that signed OpenBao's server certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Login method.
    pub auth: AuthMethod,
}

/// Errors talking to OpenBao.
#[derive(Debug, thiserror::Error)]
pub enum OpenBaoError {
    /// Bad settings.
    #[error("openbao configuration: {0}")]
    Config(String),
    /// Transport failure.
    #[error("openbao unreachable: {0}")]
    Transport(String),
    /// 403: the policy does not allow it.
    #[error("openbao denied {path} (permission denied)")]
    Denied {
        /// The path.
        path: String,
    },
    /// 404.
    #[error("openbao has nothing at {path}")]
    NotFound {
        /// The path.
        path: String,
    },
    /// Another status.
    #[error("openbao answered {status} for {path}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The path.
        path: String,
    },
    /// A response that is not what the API documents.
    #[error("unexpected openbao response for {path}: {reason}")]
    Invalid {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Reading a credential file failed.
    #[error(transparent)]
    Secret(#[from] estate_service_kit::secret::SecretError),
}

/// The `auth` block of a login or token response.
#[derive(Debug, Deserialize)]
struct AuthBlock {
    client_token: String,
    lease_duration: u64,
    renewable: bool,
}

#[derive(Debug, Deserialize)]
struct AuthResponse {
    auth: AuthBlock,
}

struct TokenState {
    token: SecretString,
    ttl: Duration,
    renewable: bool,
}

/// A logged-in OpenBao client. Cheap to clone.
#[derive(Clone)]
pub struct OpenBao {
    address: String,
    http: reqwest::Client,
    token: Arc<RwLock<TokenState>>,
}

impl OpenBao {
    fn http_client(address: &str, ca_pem: Option<&[u8]>) -> Result<reqwest::Client, OpenBaoError> {
        if !address.starts_with("https://") {
            return Err(OpenBaoError::Config("address must be https".into()));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true);
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem).map_err(|e| OpenBaoError::Config(e.to_string()))?;
            builder = builder.tls_certs_only([ca]);
        }
        builder.build().map_err(|e| OpenBaoError::Config(e.to_string()))
    }

    /// A client using an existing token (tests, bootstrap with an admin token).
    pub fn with_token(address: &str, ca_pem: Option<&[u8]>, token: SecretString) -> Result<Self, OpenBaoError> {
        let http = Self::http_client(address, ca_pem)?;
        let state = TokenState { token, ttl: Duration::ZERO, renewable: false };
        Ok(Self { address: address.trim_end_matches('/').to_owned(), http, token: Arc::new(RwLock::new(state)) })
    }

    /// Log in when configured, and keep the token renewed (what every
    /// service does at start); `None` without settings.
    pub async fn login_renewing(settings: Option<&OpenBaoSettings>) -> Result<Option<Self>, OpenBaoError> {
        let Some(settings) = settings else { return Ok(None) };
        let client = Self::login(settings).await?;
        client.spawn_token_renewal();
        Ok(Some(client))
    }

    /// Log in as configured.
    pub async fn login(settings: &OpenBaoSettings) -> Result<Self, OpenBaoError> {
        let ca = match &settings.ca_file {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| OpenBaoError::Config(format!("{}: {e}", path.display())))?)
            }
            None => None,
        };
        let client = Self::with_token(&settings.address, ca.as_deref(), SecretString::from(String::new()))?;
        let (path, body) = match &settings.auth {
            AuthMethod::AppRole { mount, role_id_file, secret_id_file } => {
                let role_id = read_trimmed(role_id_file, false)?;
                let secret_id = read_trimmed(secret_id_file, true)?;
                (
                    format!("auth/{mount}/login"),
                    serde_json::json!({ "role_id": role_id.expose_secret(), "secret_id": secret_id.expose_secret() }),
                )
            }
            AuthMethod::Kubernetes { mount, role, token_file } => {
                let jwt = read_trimmed(token_file, false)?;
                (format!("auth/{mount}/login"), serde_json::json!({ "role": role, "jwt": jwt.expose_secret() }))
            }
        };
        client.login_with(&path, &body).await?;
        Ok(client)
    }

    /// AppRole login with values in hand (bootstrap and tests).
    pub async fn login_approle(
        address: &str,
        ca_pem: Option<&[u8]>,
        role_id: &str,
        secret_id: &SecretString,
    ) -> Result<Self, OpenBaoError> {
        let client = Self::with_token(address, ca_pem, SecretString::from(String::new()))?;
        let body = serde_json::json!({ "role_id": role_id, "secret_id": secret_id.expose_secret() });
        client.login_with("auth/approle/login", &body).await?;
        Ok(client)
    }

    async fn login_with(&self, path: &str, body: &Value) -> Result<(), OpenBaoError> {
        let response: AuthResponse = self
            .call(Method::POST, path, Some(body), false)
            .await?
            .ok_or_else(|| OpenBaoError::Invalid { path: path.to_owned(), reason: "empty login response".into() })?;
        self.set_token(response.auth);
        Ok(())
    }

    fn set_token(&self, auth: AuthBlock) {
        if let Ok(mut state) = self.token.write() {
            *state = TokenState {
                token: SecretString::from(auth.client_token),
                ttl: Duration::from_secs(auth.lease_duration),
                renewable: auth.renewable,
            };
        }
    }

    fn token(&self) -> SecretString {
        match self.token.read() {
            Ok(state) => state.token.clone(),
            Err(poisoned) => poisoned.into_inner().token.clone(),
        }
    }

    /// The current token's TTL as of the last login or renewal.
    pub fn token_ttl(&self) -> Duration {
        self.token.read().map(|s| s.ttl).unwrap_or_default()
    }

    /// Renew the client token (`auth/token/renew-self`).
    pub async fn renew_self(&self) -> Result<Duration, OpenBaoError> {
        let response: AuthResponse = self
            .call(Method::POST, "auth/token/renew-self", Some(&serde_json::json!({})), true)
            .await?
            .ok_or_else(|| OpenBaoError::Invalid { path: "auth/token/renew-self".into(), reason: "empty".into() })?;
        let ttl = Duration::from_secs(response.auth.lease_duration);
        self.set_token(response.auth);
        Ok(ttl)
    }

    /// Revoke the client token (on shutdown: nothing lingers that could be stolen).
    pub async fn revoke_self(&self) -> Result<(), OpenBaoError> {
        self.call::<Value>(Method::POST, "auth/token/revoke-self", Some(&serde_json::json!({})), true).await?;
        Ok(())
    }

    /// Keep the token alive: renew at two thirds of its TTL until dropped or
    /// renewal is refused (then log and stop; callers re-login).
    pub fn spawn_token_renewal(&self) {
        let renewable = self.token.read().is_ok_and(|s| s.renewable && !s.ttl.is_zero());
        if !renewable {
            return;
        }
        let weak = Arc::downgrade(&self.token);
        let (address, http) = (self.address.clone(), self.http.clone());
        tokio::spawn(async move {
            loop {
                let Some(token) = weak.upgrade() else { return };
                let ttl = token.read().map(|s| s.ttl).unwrap_or_default();
                drop(token);
                tokio::time::sleep(ttl.mul_f64(2.0 / 3.0).max(Duration::from_secs(1))).await;
                let Some(token) = weak.upgrade() else { return };
                let client = OpenBao { address: address.clone(), http: http.clone(), token };
                if let Err(error) = client.renew_self().await {
                    tracing::warn!(%error, "openbao token renewal failed; stopping renewal");
                    return;
                }
            }
        });
    }

    /// One API call. `Ok(None)` for 204.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        authenticated: bool,
    ) -> Result<Option<T>, OpenBaoError> {
        let url = format!("{}/v1/{}", self.address, path.trim_start_matches('/'));
        let mut request = self.http.request(method, &url);
        if authenticated {
            let mut value = reqwest::header::HeaderValue::from_str(self.token().expose_secret())
                .map_err(|_| OpenBaoError::Config("token is not a header value".into()))?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response = request.send().await.map_err(|e| OpenBaoError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| OpenBaoError::Transport(e.to_string()))? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(OpenBaoError::Invalid { path: path.to_owned(), reason: "response too large".into() });
            }
            bytes.extend_from_slice(&chunk);
        }
        match status {
            StatusCode::NO_CONTENT => Ok(None),
            s if s.is_success() => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| OpenBaoError::Invalid { path: path.to_owned(), reason: e.to_string() }),
            StatusCode::FORBIDDEN => Err(OpenBaoError::Denied { path: path.to_owned() }),
            StatusCode::NOT_FOUND => Err(OpenBaoError::NotFound { path: path.to_owned() }),
            s => Err(OpenBaoError::Status { status: s.as_u16(), path: path.to_owned() }),
        }
    }
}

/// Read a credential file (owner-only when `secret`), trimmed of the trailing newline.
fn read_trimmed(path: &std::path::Path, secret: bool) -> Result<SecretString, OpenBaoError> {
    let bytes = if secret {
        estate_service_kit::secret::read_file_secret(path)?.expose_secret().to_vec()
    } else {
        std::fs::read(path).map_err(|e| OpenBaoError::Config(format!("{}: {e}", path.display())))?
    };
    let text =
        String::from_utf8(bytes).map_err(|_| OpenBaoError::Config(format!("{} is not UTF-8", path.display())))?;
    Ok(SecretString::from(text.trim_end().to_owned()))
}
