//! `estate-bootstrap configure …`: with an OpenBao admin token and the
//! Postgres superuser, make the infrastructure what the services expect —
//! and write each service's secret files. Idempotent: run it again and
//! nothing that exists is replaced (roles keep their passwords, the PKI its
//! CA); only AppRole secret ids are issued afresh.
//!
//! 1. OpenBao: AppRole, KV v2, the database engine and a PKI engine with the
//!    estate's workload CA; per service its policy
//!    (`infra/openbao/service-policy.hcl`), AppRole and PKI role (its SPIFFE
//!    ID only) — `estate_secrets::bootstrap`, the code the suites run.
//! 2. Postgres: per schema `<schema>_owner` and `<schema>_app`
//!    (`infra/postgres/service-roles.sql`), the engine's `openbao_admin`
//!    (`infra/postgres/openbao-role.sql`); the engine's roles `<service>-app`
//!    lease members of `<schema>_app`. The owners' passwords go to
//!    `kv/<service>/db-owner` (what the migration Jobs mount) and to
//!    `SECRETS/<service>-migrate/password`.
//! 3. Per service, in `SECRETS/<service>/` (mode 0400 for secrets): `role-id`,
//!    `secret-id`, `tls.crt`/`tls.key` (from the certificates), `ca.pem` (the
//!    estate CA), `bundle.pem` (the workload CA), `metrics-token`.
//! 4. order's `private_key_jwt` key: the private key in `kv/order/oauth`
//!    (field `private_key`), the public key to `SECRETS/auth/order-svc.pub.pem`;
//!    the operations console's: the private key to
//!    `SECRETS/operator/ops-console.key.pem` (0400), the public key to auth.
//!
//! With `--kubernetes NAMESPACE` (the Kubernetes deployment): no AppRoles and
//! no `role-id`/`secret-id` files; instead Kubernetes auth (`--kubernetes-host`,
//! default `https://kubernetes.default.svc`; `--kubernetes-ca FILE`, default
//! the CA OpenBao's own pod mounts) with a role per service bound to
//! its ServiceAccount in NAMESPACE, the External Secrets Operator's read-only
//! role (`infra/openbao/external-secrets-policy.hcl`), and each service's
//! files also in `kv/<service>/tls` — what its ExternalSecret mounts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use estate_secrets::OpenBao;
use estate_secrets::bootstrap::{Bootstrap, DatabaseConnection};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, Row};

use crate::certs::{random_hex, write_file};

const SERVICE_ROLES_SQL: &str = include_str!("../../../infra/postgres/service-roles.sql");
const OPENBAO_ROLE_SQL: &str = include_str!("../../../infra/postgres/openbao-role.sql");

/// The workloads, and the schema of those with a database.
pub(crate) const SERVICES: [(&str, Option<&str>); 5] = [
    ("auth", Some("auth")),
    ("gateway", None),
    ("order", Some("orders")),
    ("payment", Some("payments")),
    ("inventory", Some("inventory")),
];

/// The workload CA's name in OpenBao's PKI.
pub(crate) const WORKLOAD_CA_NAME: &str = "Estate Workload CA";

/// Where everything is.
#[derive(Debug)]
pub(crate) struct Settings {
    /// OpenBao's address (https).
    pub(crate) openbao: String,
    /// The CA of OpenBao's server certificate.
    pub(crate) openbao_ca: PathBuf,
    /// A file holding an admin (or root) token.
    pub(crate) token_file: PathBuf,
    /// Postgres host and port as the services reach it.
    pub(crate) postgres_host: String,
    /// Its port.
    pub(crate) postgres_port: u16,
    /// Database name.
    pub(crate) database: String,
    /// The CA of Postgres's server certificate.
    pub(crate) postgres_ca: PathBuf,
    /// Where OpenBao reads that CA (its own file system; the engine verifies TLS).
    pub(crate) postgres_ca_for_openbao: PathBuf,
    /// Where OpenBao's database engine reaches Postgres, when not where this
    /// tool does (`--postgres-for-openbao`: this tool through a port-forward).
    pub(crate) postgres_for_openbao: Option<(String, u16)>,
    /// Superuser name and password file.
    pub(crate) postgres_user: String,
    /// Its password, in a file.
    pub(crate) postgres_password_file: PathBuf,
    /// The output of `certs`.
    pub(crate) certs: PathBuf,
    /// Where the services' secret files go.
    pub(crate) secrets: PathBuf,
    /// Kubernetes: the estate's namespace and the API server OpenBao reviews
    /// ServiceAccount tokens with.
    pub(crate) kubernetes: Option<Kubernetes>,
}

/// `--kubernetes NAMESPACE [--kubernetes-host URL]`.
#[derive(Debug)]
pub(crate) struct Kubernetes {
    pub(crate) namespace: String,
    pub(crate) host: String,
    /// The API server's CA (`--kubernetes-ca`); else OpenBao's in-cluster one.
    pub(crate) ca: Option<PathBuf>,
}

fn read_trimmed(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?.trim().to_owned())
}

/// Substitute psql-style variables; names and passwords are checked first.
fn render(sql: &str, pairs: &[(&str, &str)]) -> Result<String> {
    let mut sql = sql.to_owned();
    for (variable, value) in pairs {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("refusing to put {value:?} into SQL");
        }
        let quoted = format!("'{value}'");
        let replacement = if variable.starts_with(":'") { quoted.as_str() } else { value };
        sql = sql.replace(variable, replacement);
    }
    Ok(sql)
}

async fn role_exists(conn: &mut sqlx::PgConnection, role: &str) -> Result<bool> {
    let row = sqlx::query("SELECT count(*) AS n FROM pg_roles WHERE rolname = $1").bind(role).fetch_one(conn).await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// Run every step (see the module docs); a summary of what was done.
pub(crate) async fn run(settings: &Settings) -> Result<String> {
    let ca_pem = std::fs::read(&settings.openbao_ca).context("OpenBao CA")?;
    let token = SecretString::from(read_trimmed(&settings.token_file)?);
    let admin = OpenBao::with_token(&settings.openbao, Some(&ca_pem), token)?;
    let bootstrap = Bootstrap::new(&admin);
    bootstrap.engines_with_ca(WORKLOAD_CA_NAME).await.context("OpenBao engines")?;

    // Postgres roles, as the superuser over verified TLS.
    let superuser = PgConnectOptions::new()
        .host(&settings.postgres_host)
        .port(settings.postgres_port)
        .database(&settings.database)
        .username(&settings.postgres_user)
        .password(&read_trimmed(&settings.postgres_password_file)?)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert_from_pem(std::fs::read(&settings.postgres_ca).context("Postgres CA")?);
    let mut conn = sqlx::PgConnection::connect_with(&superuser).await.context("connect to Postgres as superuser")?;
    let mut created = Vec::new();
    for (service, schema) in SERVICES {
        let Some(schema) = schema else { continue };
        let owner = format!("{schema}_owner");
        if role_exists(&mut conn, &owner).await? {
            continue;
        }
        let (owner_password, app_password) = (random_hex()?, random_hex()?);
        let sql = render(
            SERVICE_ROLES_SQL,
            &[
                (":'owner_password'", &owner_password),
                (":'app_password'", &app_password),
                (":svc_owner", &owner),
                (":svc_app", &format!("{schema}_app")),
                (":svc", schema),
            ],
        )?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .with_context(|| format!("roles of {schema}"))?;
        // The owner's password: for the migration Job (Kubernetes) and the migrate step (compose).
        let fields = serde_json::json!({ "password": owner_password, "user": owner });
        admin.kv_write("kv", &format!("{service}/db-owner"), fields.as_object().context("json")?).await?;
        write_file(&settings.secrets.join(format!("{service}-migrate/password")), &owner_password, 0o400)?;
        created.push(schema);
    }
    let openbao_password = random_hex()?;
    if !role_exists(&mut conn, "openbao_admin").await? {
        let sql = render(OPENBAO_ROLE_SQL, &[(":'openbao_password'", &openbao_password)])?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.context("openbao_admin")?;
    } else {
        // OpenBao's engine needs the password again: set a fresh one.
        let sql = render(
            "ALTER ROLE openbao_admin PASSWORD :'openbao_password';",
            &[(":'openbao_password'", &openbao_password)],
        )?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.context("openbao_admin password")?;
    }
    conn.close().await?;
    let with_database: Vec<(&str, &str)> =
        SERVICES.iter().filter_map(|(s, schema)| schema.map(|schema| (*s, schema))).collect();
    bootstrap
        .database(
            &DatabaseConnection {
                host: settings.postgres_for_openbao.as_ref().map_or(&settings.postgres_host, |(h, _)| h).clone(),
                port: settings.postgres_for_openbao.as_ref().map_or(settings.postgres_port, |(_, p)| *p),
                database: settings.database.clone(),
                username: "openbao_admin".into(),
                password: SecretString::from(openbao_password),
                ca_file: settings.postgres_ca_for_openbao.clone(),
                lease_ttl: std::time::Duration::from_secs(3600),
            },
            &with_database,
        )
        .await
        .context("OpenBao database engine")?;

    // Per service: its AppRole, PKI role, policy, and files.
    let bundle = admin.pki_ca_pem("pki").await?.context("the PKI engine has no CA")?;
    let estate_ca = read_trimmed(&settings.certs.join("ca.pem"))?;
    if let Some(kubernetes) = &settings.kubernetes {
        let ca = kubernetes.ca.as_deref().map(read_trimmed).transpose().context("--kubernetes-ca")?;
        bootstrap.kubernetes_auth(&kubernetes.host, ca.as_deref()).await.context("Kubernetes auth")?;
        bootstrap.external_secrets(&kubernetes.namespace).await.context("External Secrets Operator role")?;
    }
    for (service, _) in SERVICES {
        let dir = settings.secrets.join(service);
        if let Some(kubernetes) = &settings.kubernetes {
            bootstrap
                .kubernetes_service(service, &kubernetes.namespace)
                .await
                .with_context(|| format!("Kubernetes role of {service}"))?;
        } else {
            let credentials = bootstrap.service(service).await.with_context(|| format!("AppRole of {service}"))?;
            write_file(&dir.join("role-id"), &credentials.role_id, 0o400)?;
            write_file(&dir.join("secret-id"), credentials.secret_id.expose_secret(), 0o400)?;
        }
        write_file(&dir.join("ca.pem"), &format!("{estate_ca}\n"), 0o444)?;
        write_file(&dir.join("bundle.pem"), &bundle, 0o444)?;
        let certs = settings.certs.join(service);
        write_file(&dir.join("tls.crt"), &read_trimmed(&certs.join("tls.crt"))?, 0o444)?;
        write_file(&dir.join("tls.key"), &format!("{}\n", read_trimmed(&certs.join("tls.key"))?), 0o400)?;
        let token_path = dir.join("metrics-token");
        if !token_path.exists() {
            write_file(&token_path, &random_hex()?, 0o400)?;
        }
    }

    // order's client key for private_key_jwt: private in OpenBao, public to auth.
    let public = settings.secrets.join("auth/order-svc.pub.pem");
    if !public.exists() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let fields = serde_json::json!({ "private_key": key.serialize_pem() });
        admin.kv_write("kv", "order/oauth", fields.as_object().context("json")?).await?;
        write_file(&public, &key.public_key_pem(), 0o444)?;
    }
    // The operations console's key (private_key_jwt, `admin:*`): the private
    // key for the operator only, the public key to auth.
    let console = settings.secrets.join("auth/ops-console.pub.pem");
    if !console.exists() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        write_file(&settings.secrets.join("operator/ops-console.key.pem"), &key.serialize_pem(), 0o400)?;
        write_file(&console, &key.public_key_pem(), 0o444)?;
    }
    if settings.kubernetes.is_some() {
        // What each service's ExternalSecret mounts: its files, in kv/<service>/tls.
        for (service, _) in SERVICES {
            let mut fields = serde_json::Map::new();
            for entry in std::fs::read_dir(settings.secrets.join(service))? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(entry.path()).with_context(|| name.clone())?;
                fields.insert(name, serde_json::Value::String(text));
            }
            admin
                .kv_write("kv", &format!("{service}/tls"), &fields)
                .await
                .with_context(|| format!("kv/{service}/tls"))?;
        }
    }
    Ok(format!(
        "configured OpenBao ({} workloads) and Postgres (new schemas: {}); secret files in {}",
        SERVICES.len(),
        if created.is_empty() { "none".to_owned() } else { created.join(", ") },
        settings.secrets.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_gets_only_checked_values() {
        let sql =
            render("CREATE ROLE :svc_owner PASSWORD :'pw';", &[(":'pw'", "abc123"), (":svc_owner", "orders_owner")])
                .unwrap_or_default();
        assert_eq!(sql, "CREATE ROLE orders_owner PASSWORD 'abc123';");
        assert!(render("x :'pw'", &[(":'pw'", "a'; DROP ROLE x; --")]).is_err());
        assert!(render("x :svc", &[(":svc", "")]).is_err());
    }
}
