//! Setting up OpenBao for the estate, with an admin token: engines, one
//! least-privilege policy and AppRole per service (from
//! `infra/openbao/service-policy.hcl`), a PKI role pinning each service's
//! SPIFFE ID, and database roles whose logins are members of `<svc>_app`.
//!
//! Used by the test kit and by `cargo xtask up`; deployments run the same
//! calls from a bootstrap job.

use std::path::PathBuf;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{OpenBao, OpenBaoError};

/// The SPIFFE trust domain of the estate.
pub const TRUST_DOMAIN: &str = "estate.local";
/// The namespace services run in.
pub const NAMESPACE: &str = "estate";

/// The SPIFFE ID of `service`.
pub fn spiffe_id(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{service}")
}

const SERVICE_POLICY: &str = include_str!("../../../infra/openbao/service-policy.hcl");
const EXTERNAL_SECRETS_POLICY: &str = include_str!("../../../infra/openbao/external-secrets-policy.hcl");
/// The audience a Kubernetes ServiceAccount token must carry to log in.
pub const KUBERNETES_AUDIENCE: &str = "openbao";

/// What a service needs to log in with AppRole.
pub struct AppRoleCredentials {
    /// Role id (an identifier, not a secret by itself).
    pub role_id: String,
    /// Secret id.
    pub secret_id: SecretString,
}

/// How OpenBao's database engine reaches Postgres.
pub struct DatabaseConnection {
    /// Host (TLS is verified against it).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database.
    pub database: String,
    /// The engine's own role (`openbao_admin`: CREATEROLE, not superuser).
    pub username: String,
    /// Its password.
    pub password: SecretString,
    /// CA file of the server certificate, readable by the OpenBao process.
    pub ca_file: PathBuf,
    /// Lifetime of generated logins (the lease TTL).
    pub lease_ttl: std::time::Duration,
}

#[derive(Deserialize)]
struct DataWrapper<T> {
    data: T,
}

#[derive(Deserialize)]
struct RoleId {
    role_id: String,
}

#[derive(Deserialize)]
struct SecretId {
    secret_id: String,
}

/// Bootstrap operations, run with an admin client.
pub struct Bootstrap<'a> {
    admin: &'a OpenBao,
}

impl<'a> Bootstrap<'a> {
    /// Operate with `admin` (a root or bootstrap token).
    pub fn new(admin: &'a OpenBao) -> Self {
        Self { admin }
    }

    async fn post(&self, path: &str, body: Value) -> Result<(), OpenBaoError> {
        self.admin.call::<Value>(Method::POST, path, Some(&body), true).await.map(|_| ())
    }

    /// Enable an engine or auth method; an existing mount is left as it is.
    async fn enable(&self, path: &str, body: Value) -> Result<(), OpenBaoError> {
        match self.post(path, body).await {
            Err(OpenBaoError::Status { status: 400, .. }) => Ok(()), // "path is already in use"
            other => other,
        }
    }

    /// AppRole auth, KV v2 at `kv/`, the database engine at `database/`, and a
    /// PKI engine at `pki/` with a development root CA (its name carries the
    /// development marker that production mode refuses).
    pub async fn engines(&self) -> Result<(), OpenBaoError> {
        self.engines_with_ca("Estate Development Workload CA").await
    }

    /// The same with the workload CA named `ca_common_name`. Idempotent:
    /// mounted engines stay, and an engine that has a CA keeps it (a second
    /// run must not replace the trust bundle every workload holds).
    pub async fn engines_with_ca(&self, ca_common_name: &str) -> Result<(), OpenBaoError> {
        self.enable("sys/auth/approle", json!({ "type": "approle" })).await?;
        self.enable("sys/mounts/kv", json!({ "type": "kv", "options": { "version": "2" } })).await?;
        self.enable("sys/mounts/database", json!({ "type": "database" })).await?;
        self.enable("sys/mounts/pki", json!({ "type": "pki", "config": { "max_lease_ttl": "87600h" } })).await?;
        if self.admin.pki_ca_pem("pki").await?.is_some() {
            return Ok(());
        }
        self.post(
            "pki/root/generate/internal",
            json!({ "common_name": ca_common_name, "ttl": "87600h", "key_type": "ec", "key_bits": 256 }),
        )
        .await
    }

    async fn put_policy(&self, name: &str, policy: &str) -> Result<(), OpenBaoError> {
        self.admin
            .call::<Value>(Method::PUT, &format!("sys/policies/acl/{name}"), Some(&json!({ "policy": policy })), true)
            .await
            .map(|_| ())
    }

    /// The policy, AppRole and PKI role of `service`; returns its AppRole credentials.
    pub async fn service(&self, service: &str) -> Result<AppRoleCredentials, OpenBaoError> {
        self.service_policy(service).await?;
        self.post(
            &format!("auth/approle/role/{service}"),
            json!({ "token_policies": [service], "token_ttl": "1h", "token_max_ttl": "4h", "secret_id_ttl": "24h" }),
        )
        .await?;
        let role_id: DataWrapper<RoleId> = self
            .admin
            .call(Method::GET, &format!("auth/approle/role/{service}/role-id"), None, true)
            .await?
            .ok_or_else(|| OpenBaoError::Invalid { path: "role-id".into(), reason: "empty".into() })?;
        let secret_id: DataWrapper<SecretId> = self
            .admin
            .call(Method::POST, &format!("auth/approle/role/{service}/secret-id"), Some(&json!({})), true)
            .await?
            .ok_or_else(|| OpenBaoError::Invalid { path: "secret-id".into(), reason: "empty".into() })?;
        Ok(AppRoleCredentials {
            role_id: role_id.data.role_id,
            secret_id: SecretString::from(secret_id.data.secret_id),
        })
    }

    /// Kubernetes auth at `kubernetes/`, checking ServiceAccount tokens with
    /// the cluster's API server at `kubernetes_host`, whose certificate's CA
    /// is `ca_pem` — or, without one, the CA of OpenBao's own ServiceAccount
    /// (OpenBao running in the cluster). Idempotent.
    pub async fn kubernetes_auth(&self, kubernetes_host: &str, ca_pem: Option<&str>) -> Result<(), OpenBaoError> {
        self.enable("sys/auth/kubernetes", json!({ "type": "kubernetes" })).await?;
        let mut config = json!({ "kubernetes_host": kubernetes_host });
        if let Some(ca_pem) = ca_pem {
            config["kubernetes_ca_cert"] = json!(ca_pem);
        }
        self.post("auth/kubernetes/config", config).await
    }

    /// `service` in Kubernetes: its policy and PKI role, and the Kubernetes
    /// auth role `service` that only the ServiceAccount `service` in
    /// `namespace` logs in with (a token for the audience
    /// [`KUBERNETES_AUDIENCE`]). No AppRole: nothing to hand out.
    pub async fn kubernetes_service(&self, service: &str, namespace: &str) -> Result<(), OpenBaoError> {
        self.service_policy(service).await?;
        self.post(
            &format!("auth/kubernetes/role/{service}"),
            json!({
                "bound_service_account_names": [service],
                "bound_service_account_namespaces": [namespace],
                "audience": KUBERNETES_AUDIENCE,
                "token_policies": [service], "token_ttl": "1h", "token_max_ttl": "4h",
            }),
        )
        .await
    }

    /// The External Secrets Operator's policy (`infra/openbao/
    /// external-secrets-policy.hcl`) and its Kubernetes auth role, bound to
    /// the ServiceAccount `external-secrets` in `namespace`.
    pub async fn external_secrets(&self, namespace: &str) -> Result<(), OpenBaoError> {
        self.put_policy("external-secrets", EXTERNAL_SECRETS_POLICY).await?;
        self.post(
            "auth/kubernetes/role/external-secrets",
            json!({
                "bound_service_account_names": ["external-secrets"],
                "bound_service_account_namespaces": [namespace],
                "audience": KUBERNETES_AUDIENCE,
                "token_policies": ["external-secrets"], "token_ttl": "1h", "token_max_ttl": "4h",
            }),
        )
        .await
    }

    /// The policy and PKI role of `service`.
    async fn service_policy(&self, service: &str) -> Result<(), OpenBaoError> {
        if service.is_empty() || !service.bytes().all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'_') {
            return Err(OpenBaoError::Config(format!("bad service name {service:?}")));
        }
        self.put_policy(service, &SERVICE_POLICY.replace("SERVICE", service)).await?;
        self.post(
            &format!("pki/roles/{service}"),
            json!({
                "allowed_uri_sans": spiffe_id(service),
                "allow_ip_sans": false, "allow_localhost": false, "allow_any_name": false,
                "allow_bare_domains": false, "allow_subdomains": false, "enforce_hostnames": true,
                "require_cn": false, "key_type": "ec", "key_bits": 256, "max_ttl": "24h",
                "server_flag": true, "client_flag": true,
            }),
        )
        .await
    }

    /// Point the database engine at Postgres (over verified TLS) and, for each
    /// `(service, schema)`, create the OpenBao role `<service>-app` whose
    /// generated logins are members of `<schema>_app` (schemas follow
    /// ARCHITECTURE §4: `auth`, `orders`, `payments`, `inventory` — `order`
    /// is an SQL keyword).
    pub async fn database(
        &self,
        connection: &DatabaseConnection,
        services: &[(&str, &str)],
    ) -> Result<(), OpenBaoError> {
        let url = format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/{}?sslmode=verify-full&sslrootcert={}",
            connection.host,
            connection.port,
            connection.database,
            connection.ca_file.display()
        );
        let roles: Vec<String> = services.iter().map(|(service, _)| format!("{service}-app")).collect();
        self.post(
            "database/config/estate",
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": url,
                "username": connection.username,
                "password": connection.password.expose_secret(),
                "password_authentication": "scram-sha-256",
                "allowed_roles": roles,
                "verify_connection": true,
            }),
        )
        .await?;
        for (service, schema) in services {
            if !schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                return Err(OpenBaoError::Config(format!("bad schema name {schema:?}")));
            }
            let schema_role = format!("{schema}_app");
            self.post(
                &format!("database/roles/{service}-app"),
                json!({
                    "db_name": "estate",
                    "creation_statements": [
                        format!("CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}' IN ROLE {schema_role};"),
                    ],
                    "default_ttl": format!("{}s", connection.lease_ttl.as_secs()),
                    "max_ttl": "24h",
                }),
            )
            .await?;
        }
        Ok(())
    }
}
