//! Operator commands of the `auth` binary besides serving:
//!
//! - `auth keys rotate [--config PATH]`: one step of signing-key rotation
//!   (initialise, publish, activate; see [`crate::key_store`]). Run it from a
//!   scheduled job or by hand; it logs in to OpenBao with the service's own
//!   identity, like the server does.
//! - `auth keys revoke KID [--config PATH]`: a compromised signing key — out
//!   of the key set at once (the published next key, or a new one, signs
//!   from the replicas' next reload) and on the revocation list, so every
//!   verifier refuses what it signed within its poll interval.
//! - `auth revoke user NAME [--disable] [--config PATH]`: end every session
//!   of the user (refresh token families, pending codes) and revoke every
//!   token issued to them so far — at introspection at once, at every
//!   verifier within its revocation-list poll interval. `--disable` also
//!   refuses their logins until `auth reinstate user NAME`.
//! - `auth revoke client ID [--config PATH]`: a compromised client —
//!   disabled (no client authentication) and every token it holds or acts
//!   with revoked, the same way. Reinstate it after rotating its credentials.
//! - `auth reinstate user|client NAME [--config PATH]`: lift `disabled`;
//!   tokens revoked earlier stay revoked.
//!
//! Each command is an audited `admin_action` (docs/runbooks/).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use estate_service_kit::Config;

use estate_audit::{Action, AuditEvent, Outcome};

use crate::settings::AuthSettings;
use crate::store::{PrincipalKind, Store};

/// Whether `args` (after the program name) are an operator command.
pub fn is_command(args: &[String]) -> bool {
    args.first().is_some_and(|a| matches!(a.as_str(), "keys" | "revoke" | "reinstate"))
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

const USAGE: &str = "usage: auth keys rotate | auth keys revoke KID | auth revoke user NAME [--disable] \
                     | auth revoke client ID | auth reinstate (user|client) NAME   [--config PATH]";

/// Run an operator command in-process; the message it prints on success.
/// (What `auth` runs; public so the estate's incident drills can run the
/// very same code.)
pub fn execute(args: &[String]) -> anyhow::Result<String> {
    run_inner(args)
}

/// `--config PATH` and `--disable` wherever they are; the rest in order.
fn parse_flags(args: &[String]) -> anyhow::Result<(Vec<&str>, Option<PathBuf>, bool)> {
    let mut words = Vec::new();
    let mut config = None;
    let mut disable = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--config" => config = Some(PathBuf::from(rest.next().context(USAGE)?)),
            "--disable" => disable = true,
            flag if flag.starts_with("--") => bail!("unknown option {flag:?}\n{USAGE}"),
            word => words.push(word),
        }
    }
    Ok((words, config.or_else(|| std::env::var_os("ESTATE_CONFIG").map(PathBuf::from)), disable))
}

fn run_inner(args: &[String]) -> anyhow::Result<String> {
    let (words, config_path, disable) = parse_flags(args)?;
    let command = match words.as_slice() {
        ["keys", "rotate"] => Command::RotateKeys,
        ["keys", "revoke", kid] => Command::RevokeKey { kid: (*kid).to_owned() },
        ["revoke", "user", name] => Command::Revoke { kind: PrincipalKind::User, name: (*name).to_owned(), disable },
        ["revoke", "client", id] => {
            Command::Revoke { kind: PrincipalKind::Client, name: (*id).to_owned(), disable: true }
        }
        ["reinstate", "user", name] => Command::Reinstate { kind: PrincipalKind::User, name: (*name).to_owned() },
        ["reinstate", "client", id] => Command::Reinstate { kind: PrincipalKind::Client, name: (*id).to_owned() },
        _ => bail!("{USAGE}"),
    };
    if disable && !matches!(command, Command::Revoke { kind: PrincipalKind::User, .. }) {
        bail!("--disable applies to `revoke user` only\n{USAGE}");
    }
    let config = Config::<AuthSettings>::load(config_path.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let openbao = match &config.service.openbao {
            Some(settings) => Some(estate_secrets::OpenBao::login(settings).await.context("openbao login")?),
            None => None,
        };
        // An operator action: recorded like any other (admin_action-level evidence).
        let audit = estate_service_kit::audit_log("auth", &config.audit)?;
        let result = match command {
            Command::RotateKeys => {
                let openbao = openbao.as_ref().context("service.openbao is not configured")?;
                let store = config.service.key_store.as_ref().context("service.key_store is not configured")?;
                let step = crate::key_store::rotate(openbao, store, crate::grants::unix_now(), Some(&audit)).await?;
                Ok(format!("signing keys: {step:?}"))
            }
            Command::RevokeKey { kid } => {
                let openbao = openbao.as_ref().context("service.openbao is not configured")?;
                let key_store = config.service.key_store.as_ref().context("service.key_store is not configured")?;
                // The database first: a key on the revocation list that still
                // signs fails closed; a key out of the set but not listed would not.
                let store = open_store(&config.service, Some(openbao), &audit).await?;
                store.revoke_signing_key(&kid, crate::grants::unix_now()).await?;
                let signing = crate::key_store::revoke_key(openbao, key_store, &kid, Some(&audit)).await?;
                Ok(format!(
                    "signing key {kid} revoked: refused by every verifier within its revocation poll interval; \
                     {signing} signs from the next key reload"
                ))
            }
            Command::Revoke { kind, name, disable } => {
                revoke(&config.service, openbao.as_ref(), &audit, kind, &name, disable).await
            }
            Command::Reinstate { kind, name } => {
                reinstate(&config.service, openbao.as_ref(), &audit, kind, &name).await
            }
        };
        if !audit.flush(std::time::Duration::from_secs(10)).await {
            let _ = writeln!(std::io::stderr(), "auth: warning: the audit event may not have reached the SIEM");
        }
        // Leave no token behind.
        if let Some(openbao) = openbao {
            let _ = openbao.revoke_self().await;
        }
        result
    })
}

enum Command {
    RotateKeys,
    RevokeKey { kid: String },
    Revoke { kind: PrincipalKind, name: String, disable: bool },
    Reinstate { kind: PrincipalKind, name: String },
}

async fn open_store(
    settings: &AuthSettings,
    openbao: Option<&estate_secrets::OpenBao>,
    audit: &estate_audit::AuditLog,
) -> anyhow::Result<Store> {
    let database = settings.database.as_ref().context("service.database is not configured")?;
    Store::connect(database, openbao, audit).await.context("database")
}

/// The principal a user or client name stands for: a user's subject is its id.
async fn principal(settings: &AuthSettings, store: &Store, kind: PrincipalKind, name: &str) -> anyhow::Result<String> {
    match kind {
        PrincipalKind::User => {
            let (id, _) = store.find_user(name).await?.with_context(|| format!("no user {name:?}"))?;
            Ok(id.to_string())
        }
        PrincipalKind::Client => {
            if !settings.clients.iter().any(|c| c.client_id == name) {
                bail!("no client {name:?} is registered");
            }
            Ok(name.to_owned())
        }
    }
}

async fn revoke(
    settings: &AuthSettings,
    openbao: Option<&estate_secrets::OpenBao>,
    audit: &estate_audit::AuditLog,
    kind: PrincipalKind,
    name: &str,
    disable: bool,
) -> anyhow::Result<String> {
    let store = open_store(settings, openbao, audit).await?;
    let principal = principal(settings, &store, kind, name).await?;
    let now = crate::grants::unix_now();
    store.revoke_principal(&principal, kind, now, disable).await?;
    let sessions = match kind {
        PrincipalKind::User => store.end_sessions(&principal).await?,
        PrincipalKind::Client => 0,
    };
    let event = AuditEvent::new(Action::AdminAction, Outcome::Success).count(sessions);
    audit.emit(match kind {
        PrincipalKind::User => {
            event.reason(if disable { "user_revoked_and_disabled" } else { "user_revoked" }).user(&principal)
        }
        PrincipalKind::Client => event.reason("client_revoked_and_disabled").client(&principal),
    });
    tracing::warn!(principal = %principal, ?kind, disable, "principal revoked");
    Ok(format!(
        "revoked every token of {} {name} issued up to {now} (unix){}{}; verifiers refuse them within their \
         revocation poll interval",
        kind.as_str(),
        if sessions > 0 { format!(", ended {sessions} session(s)") } else { String::new() },
        if disable { ", and disabled it" } else { "" },
    ))
}

async fn reinstate(
    settings: &AuthSettings,
    openbao: Option<&estate_secrets::OpenBao>,
    audit: &estate_audit::AuditLog,
    kind: PrincipalKind,
    name: &str,
) -> anyhow::Result<String> {
    let store = open_store(settings, openbao, audit).await?;
    let principal = principal(settings, &store, kind, name).await?;
    let changed = store.reinstate_principal(&principal).await?;
    if changed {
        let event = AuditEvent::new(Action::AdminAction, Outcome::Success).reason("principal_reinstated");
        audit.emit(match kind {
            PrincipalKind::User => event.user(&principal),
            PrincipalKind::Client => event.client(&principal),
        });
    }
    Ok(if changed {
        format!("{} {name} reinstated", kind.as_str())
    } else {
        format!("{} {name} was not disabled", kind.as_str())
    })
}
