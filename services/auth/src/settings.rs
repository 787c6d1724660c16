//! The `[service]` section of the authorization server's configuration:
//! who the clients are, how they authenticate, what they may ask for, and
//! which client may exchange which tokens (RFC 8693 policy).
//!
//! ```toml
//! [service]
//! issuer = "https://auth.estate.local"
//! signing_key = "file:/run/secrets/auth-signing-key.pem"
//!
//! [[service.clients]]
//! client_id = "order-svc"
//! auth = { method = "private_key_jwt", public_key_file = "/etc/estate/clients/order-svc.pub.pem" }
//! grant_types = ["client_credentials", "token_exchange"]
//! scopes = ["inventory:read", "inventory:reserve"]
//! audiences = ["inventory-api"]
//!
//! [[service.exchange]]
//! actor = "order-svc"               # the client that exchanges
//! subject_audiences = ["order-api"] # tokens it may present as subject_token
//! audiences = ["payment-api"]       # what it may ask for
//! scopes = ["payments:authorize"]
//! ```

use std::path::PathBuf;

use estate_service_kit::{DevSettings, SecretRef};
use serde::{Deserialize, Serialize};

/// Longest access-token lifetime allowed (ARCHITECTURE §2).
pub const MAX_ACCESS_TOKEN_TTL_SECS: u64 = 300;
/// Longest exchanged-token lifetime allowed.
pub const MAX_EXCHANGED_TOKEN_TTL_SECS: u64 = 60;

/// The authorization server's own settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The issuer identifier: the exact `iss` of every token and the base of
    /// every endpoint URL published in discovery.
    pub issuer: String,
    /// The ES256 signing key (PKCS#8 PEM).
    #[serde(default)]
    pub signing_key: Option<SecretRef>,
    /// Generate a throwaway signing key at startup. Development only.
    #[serde(default)]
    pub dev_generated_signing_key: bool,
    /// Access-token lifetime in seconds (≤ 300).
    #[serde(default = "default_access_ttl")]
    pub access_token_ttl_secs: u64,
    /// Exchanged-token lifetime in seconds (≤ 60).
    #[serde(default = "default_exchanged_ttl")]
    pub exchanged_token_ttl_secs: u64,
    /// Registered clients.
    #[serde(default)]
    pub clients: Vec<ClientSettings>,
    /// Token-exchange policy: who may act for whom.
    #[serde(default)]
    pub exchange: Vec<ExchangePolicy>,
    /// Token endpoint rate limits (PC-09).
    #[serde(default)]
    pub rate_limits: RateLimitSettings,
    /// Postgres for shared state. Absent: in-process maps, development only
    /// (and no authorization-code or refresh-token grants).
    #[serde(default)]
    pub database: Option<crate::store::DatabaseSettings>,
    /// Login throttling and lockout.
    #[serde(default)]
    pub login: LoginSettings,
    /// Refresh-token lifetime in seconds (a family ends this long after login).
    #[serde(default = "default_refresh_ttl")]
    pub refresh_token_ttl_secs: u64,
    /// OpenBao, for `openbao:` secret references and the key store.
    #[serde(default)]
    pub openbao: Option<estate_secrets::OpenBaoSettings>,
    /// Signing keys held in OpenBao and rotated (takes precedence over
    /// `signing_key`). Needs `openbao`.
    #[serde(default)]
    pub key_store: Option<crate::key_store::KeyStoreSettings>,
}

fn default_refresh_ttl() -> u64 {
    8 * 3600
}

/// Brute-force protection of the login form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSettings {
    /// Failed attempts for one username within the window before it locks.
    pub max_failures: u32,
    /// The window, in seconds.
    pub failure_window_secs: u64,
    /// How long a locked username stays locked, in seconds.
    pub lockout_secs: u64,
    /// Login attempts per minute from one IP address.
    pub per_ip_per_minute: u32,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self { max_failures: 5, failure_window_secs: 900, lockout_secs: 300, per_ip_per_minute: 30 }
    }
}

/// Token endpoint request budgets (GCRA: a steady rate with this burst).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests per minute naming one client id (authenticated or not yet).
    pub per_client_per_minute: u32,
    /// Requests per minute from one IP address.
    pub per_ip_per_minute: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        // Generous for services refreshing tokens, tight for guessing secrets.
        Self { per_client_per_minute: 600, per_ip_per_minute: 3000 }
    }
}

fn default_access_ttl() -> u64 {
    MAX_ACCESS_TOKEN_TTL_SECS
}

fn default_exchanged_ttl() -> u64 {
    MAX_EXCHANGED_TOKEN_TTL_SECS
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuer: "https://localhost:8443".to_owned(),
            signing_key: None,
            dev_generated_signing_key: false,
            access_token_ttl_secs: default_access_ttl(),
            exchanged_token_ttl_secs: default_exchanged_ttl(),
            clients: Vec::new(),
            exchange: Vec::new(),
            rate_limits: RateLimitSettings::default(),
            database: None,
            login: LoginSettings::default(),
            refresh_token_ttl_secs: default_refresh_ttl(),
            openbao: None,
            key_store: None,
        }
    }
}

impl DevSettings for AuthSettings {
    fn dev_settings(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self.dev_generated_signing_key {
            found.push("service.dev_generated_signing_key = true".to_owned());
        }
        match &self.database {
            None => found.push(
                "service.database is not set (in-process stores do not survive restarts or span replicas)".to_owned(),
            ),
            Some(database) if matches!(database.login, crate::store::DatabaseLogin::Password { .. }) => {
                found.push("service.database.login is a static password (use source = \"openbao\")".to_owned());
            }
            Some(_) => {}
        }
        if let Some(store) = &self.key_store {
            // A verifier must see a key before it signs, and keep it until its tokens expired.
            if store.publish_lead_secs < 300 {
                found.push("service.key_store.publish_lead_secs < 300 (the JWKS max-age)".to_owned());
            }
            if store.retire_after_secs < self.access_token_ttl_secs + 60 {
                found.push("service.key_store.retire_after_secs < access-token TTL + 60 s".to_owned());
            }
        }
        if !self.issuer.starts_with("https://") {
            found.push("service.issuer is not https".to_owned());
        }
        found
    }
}

/// One OAuth client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// The client id.
    pub client_id: String,
    /// How it authenticates at the token endpoint.
    pub auth: ClientAuthSettings,
    /// Grants it may use.
    pub grant_types: Vec<GrantType>,
    /// Scopes it may request for itself (client credentials).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Audiences (RFC 8707 resources) it may request for itself.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// May call the introspection endpoint (RFC 7662), e.g. a resource server.
    #[serde(default)]
    pub may_introspect: bool,
    /// Redirect URIs for the authorization-code grant, matched exactly.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

/// Client authentication methods (RFC 6749 §2.3, RFC 7523).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientAuthSettings {
    /// RFC 7523 assertion signed with the key whose public half is in this PEM file.
    PrivateKeyJwt {
        /// Public key (SubjectPublicKeyInfo PEM, EC P-256).
        public_key_file: PathBuf,
        /// The `kid` the client puts in its assertions; unset: the key's RFC
        /// 7638 thumbprint. Assertions without `kid` are accepted either way
        /// (there is exactly one registered key).
        #[serde(default)]
        kid: Option<String>,
    },
    /// HTTP Basic. The server stores only the SHA-256 of the secret (hex):
    /// secrets are random 256-bit values, so a fast digest is enough and no
    /// slow password hash sits on the token path (ARCHITECTURE §2).
    ClientSecretBasic {
        /// Lowercase hex SHA-256 of the secret.
        secret_sha256: String,
    },
    /// A public client (browser or native app): no credentials, so only the
    /// authorization-code grant with PKCE (and its refresh tokens).
    None,
}

/// Grants a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// `client_credentials`.
    ClientCredentials,
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    TokenExchange,
    /// `authorization_code` (with PKCE S256, always).
    AuthorizationCode,
    /// `refresh_token`.
    RefreshToken,
}

/// One token-exchange permission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangePolicy {
    /// The client that exchanges (becomes `act.sub`).
    pub actor: String,
    /// The subject token must carry one of these audiences.
    pub subject_audiences: Vec<String>,
    /// Audiences the actor may request.
    pub audiences: Vec<String>,
    /// Scopes the actor may request (further limited by the subject token's own).
    pub scopes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_refuses_a_generated_key_an_http_issuer_and_no_database() {
        let settings = AuthSettings {
            issuer: "http://auth.example".into(),
            dev_generated_signing_key: true,
            ..AuthSettings::default()
        };
        let found = settings.dev_settings().join("; ");
        assert!(found.contains("dev_generated_signing_key"), "{found}");
        let static_password = AuthSettings {
            database: Some(crate::store::DatabaseSettings {
                host: "db".into(),
                port: 5432,
                name: "estate".into(),
                login: crate::store::DatabaseLogin::Password {
                    user: "auth_app".into(),
                    password: "file:/run/secrets/db".parse().unwrap(),
                },
                ca_file: "/run/secrets/ca.pem".into(),
                max_connections: 4,
            }),
            ..AuthSettings::default()
        };
        assert!(static_password.dev_settings().join("; ").contains("static password"));
        assert!(found.contains("not https"), "{found}");
        assert!(found.contains("database"), "{found}");
    }

    #[test]
    fn unknown_client_auth_methods_and_fields_are_configuration_errors() {
        let bad_method = r#"client_id = "x"
auth = { method = "client_secret_post", secret_sha256 = "00" }
grant_types = ["client_credentials"]"#;
        assert!(toml_client(bad_method).is_err());
        let unknown_field = r#"client_id = "x"
auth = { method = "client_secret_basic", secret_sha256 = "00" }
grant_types = ["client_credentials"]
admin = true"#;
        assert!(toml_client(unknown_field).is_err());
    }

    fn toml_client(text: &str) -> Result<ClientSettings, Box<figment::Error>> {
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(text)).extract().map_err(Box::new)
    }
}
