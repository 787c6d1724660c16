//! `<service> migrate --user ROLE --password-file FILE [--config PATH]`:
//! bring the service's schema to the version its binary expects.
//!
//! Migrations are DDL, so they run as the schema's owner (`<schema>_owner`,
//! `infra/postgres/service-roles.sql`), never as the login the service runs
//! with (which cannot run DDL). The owner's password comes from a file (a
//! deployment's migration job mounts it; nothing in argv or the
//! environment); host, database and the CA come from the service's own
//! `[service.database]`, so TLS is verified the same way. Idempotent: applied
//! migrations are skipped, an edited one is refused (checksum).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use estate_secrets::database::{DatabaseLogin, DatabaseSettings};
use estate_service_kit::Config;
use estate_service_kit::config::{DevSettings, SecretRef};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::Migrator;

/// Whether `args` (after the program name) ask for `migrate`.
pub fn is_command(args: &[String]) -> bool {
    args.first().is_some_and(|a| a == "migrate")
}

const USAGE: &str = "usage: <service> migrate --user ROLE --password-file FILE [--config PATH]";

/// What `migrate` needs besides the service's configuration.
#[derive(Debug)]
struct Args {
    config: Option<PathBuf>,
    user: String,
    password_file: PathBuf,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let (mut config, mut user, mut password_file) = (None, None, None);
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().cloned().with_context(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--user" => user = Some(value()?),
            "--password-file" => password_file = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Args {
        config: config.or_else(|| std::env::var_os("ESTATE_CONFIG").map(PathBuf::from)),
        user: user.with_context(|| format!("--user is required\n{USAGE}"))?,
        password_file: password_file.with_context(|| format!("--password-file is required\n{USAGE}"))?,
    })
}

/// The whole `main` of a service binary with a database: `migrate` when
/// asked ([`main`]), else the service ([`estate_service_kit::run_main`]).
pub fn service_main<A>(database: impl Fn(&A::Settings) -> Option<&DatabaseSettings>, migrator: &Migrator) -> ExitCode
where
    A: estate_service_kit::Service,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    if is_command(&args) {
        return main::<A::Settings>(A::NAME, &args, database, migrator);
    }
    estate_service_kit::run_main::<A>()
}

/// Run `migrate` for `service`: exit 0 when the schema is at the latest
/// version, 1 (with the reason on stderr) otherwise.
pub fn main<S>(
    service: &str,
    args: &[String],
    database: impl Fn(&S) -> Option<&DatabaseSettings>,
    migrator: &Migrator,
) -> ExitCode
where
    S: DeserializeOwned + Serialize + DevSettings,
{
    let result = parse(args).and_then(|args| {
        let config = Config::<S>::load(args.config.as_deref()).context("configuration")?;
        let settings = database(&config.service).context("the configuration has no [service.database]")?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(run(settings, &args.user, args.password_file, migrator))
    });
    match result {
        Ok(version) => {
            let _ = writeln!(std::io::stdout(), "{service}: schema at version {version}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "{service} migrate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Apply `migrator` as `user`; the latest version.
pub async fn run(
    settings: &DatabaseSettings,
    user: &str,
    password_file: PathBuf,
    migrator: &Migrator,
) -> anyhow::Result<i64> {
    let owner = DatabaseSettings {
        login: DatabaseLogin::Password { user: user.to_owned(), password: SecretRef::File(password_file) },
        max_connections: 1,
        ..settings.clone()
    };
    let pool = owner.connect(None, None).await.context("connect as the schema owner")?;
    migrator.run(&pool).await.context("migrations")?;
    pool.close().await;
    Ok(migrator.iter().map(|m| m.version).max().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn arguments_are_parsed_and_missing_ones_named() {
        let parsed = parse(&args(&["migrate", "--user", "orders_owner", "--password-file", "/p", "--config", "/c"]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((parsed.user.as_str(), parsed.password_file.to_str()), ("orders_owner", Some("/p")));
        assert!(parse(&args(&["migrate", "--user", "x"])).is_err_and(|e| e.to_string().contains("--password-file")));
        assert!(parse(&args(&["migrate", "--password", "x"])).is_err_and(|e| e.to_string().contains("unknown")));
        assert!(is_command(&args(&["migrate"])) && !is_command(&args(&["serve"])));
    }
}
