//! `estate-bootstrap`: a deployment's one-time (and re-runnable) setup.
//!
//! - `estate-bootstrap certs --out DIR`: the estate CA and server
//!   certificates ([`certs`]).
//! - `estate-bootstrap configure --openbao URL --openbao-ca FILE (--token-file
//!   FILE | --init-dir DIR) --postgres HOST:PORT --postgres-ca FILE [--postgres-for-openbao
//!   HOST:PORT] [--postgres-ca-for-openbao FILE] --postgres-user USER --postgres-password-file FILE [--database
//!   NAME] --certs DIR --secrets DIR [--kubernetes NAMESPACE [--kubernetes-host
//!   URL] [--kubernetes-ca FILE]]`: OpenBao and Postgres as the services expect them, and each
//!   service's secret files ([`configure`]); for Kubernetes, Kubernetes auth
//!   and the External Secrets Operator's role instead of AppRoles.
//! - `estate-bootstrap demo-data --postgres HOST:PORT --postgres-ca FILE
//!   [--database NAME] --secrets DIR`: a demo catalogue and the demo users'
//!   passwords, after the migrations ([`demo`]). Not for production.
//!
//! Secrets come from files and go to files (0400); nothing secret is taken
//! from argv or the environment, and nothing secret is printed.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line tool talks on its terminal")]

mod certs;
mod configure;
mod demo;
mod unseal;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: estate-bootstrap certs --out DIR
       estate-bootstrap configure --openbao URL --openbao-ca FILE (--token-file FILE | --init-dir DIR) \\
           --postgres HOST:PORT --postgres-ca FILE [--postgres-for-openbao HOST:PORT] [--postgres-ca-for-openbao FILE] \\
           --postgres-user USER --postgres-password-file FILE [--database NAME] --certs DIR --secrets DIR \\
           [--kubernetes NAMESPACE [--kubernetes-host URL] [--kubernetes-ca FILE]]
       estate-bootstrap demo-data --postgres HOST:PORT --postgres-ca FILE [--database NAME] --secrets DIR";

fn options(args: &[String]) -> Result<HashMap<String, String>> {
    let mut options = HashMap::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let name = flag.strip_prefix("--").with_context(|| format!("unexpected {flag:?}\n{USAGE}"))?;
        let value = rest.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        options.insert(name.to_owned(), value.clone());
    }
    Ok(options)
}

fn host_port(value: &str) -> Result<(String, String)> {
    value
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .with_context(|| format!("--postgres is HOST:PORT\n{USAGE}"))
}

fn run(args: &[String]) -> Result<String> {
    let (command, rest) = args.split_first().context(USAGE)?;
    let mut options = options(rest)?;
    let mut take = |name: &str| options.remove(name).with_context(|| format!("--{name} is required\n{USAGE}"));
    match command.as_str() {
        "certs" => {
            let out = PathBuf::from(take("out")?);
            certs::run(&out)
        }
        "demo-data" => {
            let (postgres_host, port) = host_port(&take("postgres")?)?;
            let settings = demo::Settings {
                postgres_host,
                postgres_port: port.parse().context("--postgres port")?,
                postgres_ca: take("postgres-ca")?.into(),
                database: take("database").unwrap_or_else(|_| "estate".into()),
                secrets: take("secrets")?.into(),
            };
            if let Some(unknown) = options.keys().next() {
                bail!("unknown option --{unknown}\n{USAGE}");
            }
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(demo::run(&settings))
        }
        "configure" => {
            let (host, port) = host_port(&take("postgres")?)?;
            let postgres_ca = PathBuf::from(take("postgres-ca")?);
            let openbao = take("openbao")?;
            let openbao_ca = PathBuf::from(take("openbao-ca")?);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let ca = std::fs::read(&openbao_ca).context("OpenBao CA")?;
            runtime.block_on(unseal::wait_until_answering(&openbao, &ca))?;
            let token_file = match (take("token-file"), take("init-dir")) {
                (Ok(file), Err(_)) => PathBuf::from(file),
                (Err(_), Ok(dir)) => {
                    runtime.block_on(unseal::init_and_unseal(&openbao, &ca, std::path::Path::new(&dir)))?
                }
                _ => bail!("give exactly one of --token-file and --init-dir\n{USAGE}"),
            };
            let settings = configure::Settings {
                openbao,
                openbao_ca,
                token_file,
                postgres_host: host,
                postgres_port: port.parse().context("--postgres port")?,
                database: take("database").unwrap_or_else(|_| "estate".into()),
                postgres_ca_for_openbao: take("postgres-ca-for-openbao")
                    .map_or_else(|_| postgres_ca.clone(), PathBuf::from),
                postgres_for_openbao: match take("postgres-for-openbao") {
                    Ok(value) => {
                        let (host, port) = host_port(&value)?;
                        Some((host, port.parse().context("--postgres-for-openbao port")?))
                    }
                    Err(_) => None,
                },
                postgres_ca,
                postgres_user: take("postgres-user")?,
                postgres_password_file: take("postgres-password-file")?.into(),
                certs: take("certs")?.into(),
                secrets: take("secrets")?.into(),
                kubernetes: match (take("kubernetes"), take("kubernetes-host"), take("kubernetes-ca")) {
                    (Ok(namespace), host, ca) => Some(configure::Kubernetes {
                        namespace,
                        host: host.unwrap_or_else(|_| "https://kubernetes.default.svc".into()),
                        ca: ca.ok().map(PathBuf::from),
                    }),
                    (Err(_), Err(_), Err(_)) => None,
                    _ => bail!("--kubernetes-host and --kubernetes-ca need --kubernetes NAMESPACE\n{USAGE}"),
                },
            };
            if let Some(unknown) = options.keys().next() {
                bail!("unknown option --{unknown}\n{USAGE}");
            }
            runtime.block_on(configure::run(&settings))
        }
        _ => bail!("{USAGE}"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("estate-bootstrap: {error:#}");
            ExitCode::FAILURE
        }
    }
}
