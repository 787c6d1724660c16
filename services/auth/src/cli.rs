//! Operator commands of the `auth` binary besides serving:
//!
//! - `auth keys rotate [--config PATH]`: one step of signing-key rotation
//!   (initialise, publish, activate; see [`crate::key_store`]). Run it from a
//!   scheduled job or by hand; it logs in to OpenBao with the service's own
//!   identity, like the server does.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use estate_service_kit::Config;

use crate::settings::AuthSettings;

/// Whether `args` (after the program name) are an operator command.
pub fn is_command(args: &[String]) -> bool {
    args.first().is_some_and(|a| a == "keys")
}

/// Run an operator command; exit 0 on success.
pub fn run(args: &[String]) -> ExitCode {
    match run_inner(args) {
        Ok(message) => {
            let _ = writeln!(std::io::stdout(), "{message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "auth: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: &[String]) -> anyhow::Result<String> {
    let (command, rest) = match args {
        [keys, command, rest @ ..] if keys == "keys" => (command.as_str(), rest),
        _ => bail!("usage: auth keys rotate [--config PATH]"),
    };
    let config_path = match rest {
        [] => std::env::var_os("ESTATE_CONFIG").map(PathBuf::from),
        [flag, path] if flag == "--config" => Some(PathBuf::from(path)),
        _ => bail!("usage: auth keys rotate [--config PATH]"),
    };
    if command != "rotate" {
        bail!("unknown keys command {command:?} (known: rotate)");
    }
    let config = Config::<AuthSettings>::load(config_path.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let openbao_settings = config.service.openbao.as_ref().context("service.openbao is not configured")?;
        let store = config.service.key_store.as_ref().context("service.key_store is not configured")?;
        let openbao = estate_secrets::OpenBao::login(openbao_settings).await.context("openbao login")?;
        // An operator action: recorded like any other (admin_action-level evidence).
        let audit = estate_service_kit::audit_log("auth", &config.audit)?;
        let step = crate::key_store::rotate(&openbao, store, crate::grants::unix_now(), Some(&audit)).await?;
        if !audit.flush(std::time::Duration::from_secs(10)).await {
            let _ = writeln!(std::io::stderr(), "auth: warning: the audit event may not have reached the SIEM");
        }
        // Leave no token behind.
        let _ = openbao.revoke_self().await;
        Ok(format!("signing keys: {step:?}"))
    })
}
