//! Test helpers (feature `test-util`): the bootstrap steps every suite that
//! needs OpenBao with services and the database engine repeats.

use std::path::Path;
use std::time::Duration;

use estate_testkit::{TestOpenBao, TestPostgres};
use secrecy::{ExposeSecret, SecretString};

use crate::OpenBao;
use crate::bootstrap::{AppRoleCredentials, Bootstrap, DatabaseConnection};

/// A boxed error for test setup.
pub type SetupError = Box<dyn std::error::Error + Send + Sync>;

/// A root-token client of a test OpenBao.
pub fn admin(bao: &TestOpenBao) -> Result<OpenBao, SetupError> {
    Ok(OpenBao::with_token(bao.addr(), Some(bao.ca_pem().as_bytes()), SecretString::from(bao.root_token().to_owned()))?)
}

/// Engines plus one policy and AppRole per service; the services' credentials in order.
pub async fn bootstrap(admin: &OpenBao, services: &[&str]) -> Result<Vec<AppRoleCredentials>, SetupError> {
    let bootstrap = Bootstrap::new(admin);
    bootstrap.engines().await?;
    let mut credentials = Vec::new();
    for service in services {
        credentials.push(bootstrap.service(service).await?);
    }
    Ok(credentials)
}

/// Log in as a service.
pub async fn login(bao: &TestOpenBao, credentials: &AppRoleCredentials) -> Result<OpenBao, SetupError> {
    Ok(OpenBao::login_approle(bao.addr(), Some(bao.ca_pem().as_bytes()), &credentials.role_id, &credentials.secret_id)
        .await?)
}

/// Point the database engine at `pg` (as `openbao_admin`, over verified TLS)
/// with roles for `(service, schema)` pairs and `lease_ttl` logins. The
/// schemas' roles must exist (`TestPostgres::create_service_roles`).
pub async fn database(
    admin: &OpenBao,
    bao: &TestOpenBao,
    pg: &TestPostgres,
    services: &[(&str, &str)],
    lease_ttl: Duration,
) -> Result<(), SetupError> {
    let ca_file = bao.dir().join("pg-ca.pem");
    std::fs::write(&ca_file, pg.ca_pem().ok_or("the cluster has no TLS CA")?)?;
    let connection = DatabaseConnection {
        host: "127.0.0.1".into(),
        port: pg.port(),
        database: "postgres".into(),
        username: "openbao_admin".into(),
        password: SecretString::from(pg.create_openbao_role().await?),
        ca_file,
        lease_ttl,
    };
    Bootstrap::new(admin).database(&connection, services).await?;
    Ok(())
}

/// Write a service's AppRole credentials and OpenBao's CA into `dir`; returns
/// the `[service.openbao]` TOML section that points at them.
pub fn openbao_section(dir: &Path, bao: &TestOpenBao, credentials: &AppRoleCredentials) -> Result<String, SetupError> {
    let settings = openbao_settings(dir, "", bao, credentials)?;
    let crate::AuthMethod::AppRole { role_id_file, secret_id_file, .. } = &settings.auth else {
        return Err("app role expected".into());
    };
    Ok(format!(
        "[service.openbao]\naddress = \"{}\"\nca_file = \"{}\"\nauth = {{ method = \"app_role\", role_id_file = \"{}\", secret_id_file = \"{}\" }}\n",
        settings.address,
        settings.ca_file.as_deref().unwrap_or(Path::new("")).display(),
        role_id_file.display(),
        secret_id_file.display()
    ))
}

/// The same as settings: the credentials written as `<prefix>role-id` and
/// `<prefix>secret-id` (0400) in `dir`, with OpenBao's CA.
pub fn openbao_settings(
    dir: &Path,
    prefix: &str,
    bao: &TestOpenBao,
    credentials: &AppRoleCredentials,
) -> Result<crate::OpenBaoSettings, SetupError> {
    use std::os::unix::fs::PermissionsExt;
    let role_id = dir.join(format!("{prefix}role-id"));
    let secret_id = dir.join(format!("{prefix}secret-id"));
    let ca = dir.join("bao-ca.pem");
    std::fs::write(&role_id, &credentials.role_id)?;
    std::fs::write(&secret_id, credentials.secret_id.expose_secret())?;
    std::fs::set_permissions(&secret_id, std::fs::Permissions::from_mode(0o400))?;
    std::fs::write(&ca, bao.ca_pem())?;
    Ok(crate::OpenBaoSettings {
        address: bao.addr().to_owned(),
        ca_file: Some(ca),
        auth: crate::AuthMethod::AppRole { mount: "approle".into(), role_id_file: role_id, secret_id_file: secret_id },
    })
}
