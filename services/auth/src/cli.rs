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
//! - `auth users create NAME --password-file FILE [--config PATH]`: a user
//!   with the password in FILE (hashed with Argon2id as logins check it; the
//!   password never appears in argv, the environment or a log). For
//!   bootstrap jobs and demos; refused when the user exists.
//! - `auth users import DIR [--config PATH]`: a user per file in DIR (name =
//!   file name, password = content); existing users are left as they are
//!   (compose's demo users, re-runnable).
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
    args.first().is_some_and(|a| matches!(a.as_str(), "keys" | "revoke" | "reinstate" | "users"))
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
                     | auth revoke client ID | auth reinstate (user|client) NAME \
                     | auth users create NAME --password-file FILE | auth users import DIR   [--config PATH]";

/// Run an operator command in-process; the message it prints on success.
/// (What `auth` runs; public so the estate's incident drills can run the
/// very same code.)
pub fn execute(args: &[String]) -> anyhow::Result<String> {
    run_inner(args)
}

/// The options of a command line, wherever they stand; the words in order.
struct Flags<'a> {
    words: Vec<&'a str>,
    config: Option<PathBuf>,
    disable: bool,
    password_file: Option<PathBuf>,
}

fn parse_flags(args: &[String]) -> anyhow::Result<Flags<'_>> {
    let mut flags = Flags { words: Vec::new(), config: None, disable: false, password_file: None };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--config" => flags.config = Some(PathBuf::from(rest.next().context(USAGE)?)),
            "--password-file" => flags.password_file = Some(PathBuf::from(rest.next().context(USAGE)?)),
            "--disable" => flags.disable = true,
            flag if flag.starts_with("--") => bail!("unknown option {flag:?}\n{USAGE}"),
            word => flags.words.push(word),
        }
    }
    flags.config = flags.config.or_else(|| std::env::var_os("ESTATE_CONFIG").map(PathBuf::from));
    Ok(flags)
}

fn run_inner(args: &[String]) -> anyhow::Result<String> {
    let Flags { words, config: config_path, disable, password_file } = parse_flags(args)?;
    let command = match words.as_slice() {
        ["keys", "rotate"] => Command::RotateKeys,
        ["keys", "revoke", kid] => Command::RevokeKey { kid: (*kid).to_owned() },
        ["revoke", "user", name] => Command::Revoke { kind: PrincipalKind::User, name: (*name).to_owned(), disable },
        ["revoke", "client", id] => {
            Command::Revoke { kind: PrincipalKind::Client, name: (*id).to_owned(), disable: true }
        }
        ["reinstate", "user", name] => Command::Reinstate { kind: PrincipalKind::User, name: (*name).to_owned() },
        ["reinstate", "client", id] => Command::Reinstate { kind: PrincipalKind::Client, name: (*id).to_owned() },
        ["users", "import", dir] => Command::ImportUsers { dir: PathBuf::from(dir) },
        ["users", "create", name] => Command::CreateUser {
            name: (*name).to_owned(),
            password_file: password_file.clone().with_context(|| format!("--password-file is required\n{USAGE}"))?,
        },
        _ => bail!("{USAGE}"),
    };
    if password_file.is_some() && !matches!(command, Command::CreateUser { .. }) {
        bail!("--password-file applies to `users create` only\n{USAGE}");
    }
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
            Command::CreateUser { name, password_file } => {
                create_user(&config.service, openbao.as_ref(), &audit, &name, &password_file).await
            }
            Command::ImportUsers { dir } => import_users(&config.service, openbao.as_ref(), &audit, &dir).await,
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
    CreateUser { name: String, password_file: PathBuf },
    ImportUsers { dir: PathBuf },
}

/// The shortest password `users create` accepts (NIST SP 800-63B: at least 8; we ask for more).
const MIN_PASSWORD_CHARS: usize = 12;

/// A password from its file: one line of at least [`MIN_PASSWORD_CHARS`].
fn read_password(password_file: &std::path::Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(password_file).with_context(|| format!("password file {}", password_file.display()))?;
    // One trailing newline is the file's, not the password's.
    let password = text.strip_suffix('\n').unwrap_or(&text);
    if password.chars().count() < MIN_PASSWORD_CHARS || password.contains('\n') {
        bail!("{}: the password must be one line of at least {MIN_PASSWORD_CHARS} characters", password_file.display());
    }
    Ok(password.to_owned())
}

fn check_user_name(name: &str) -> anyhow::Result<()> {
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !valid_name {
        bail!("a user name is 1-64 characters: letters, digits, . _ - @ (got {name:?})");
    }
    Ok(())
}

/// Store a new user with the password's Argon2id hash; audited.
async fn insert_user(
    store: &Store,
    audit: &estate_audit::AuditLog,
    name: &str,
    password: &str,
) -> anyhow::Result<uuid::Uuid> {
    let hash = crate::passwords::Passwords::new()?.hash(password)?;
    let id = store.create_user(name, &hash).await?;
    audit.emit(AuditEvent::new(Action::AdminAction, Outcome::Success).reason("user_created").user(&id.to_string()));
    Ok(id)
}

async fn create_user(
    settings: &AuthSettings,
    openbao: Option<&estate_secrets::OpenBao>,
    audit: &estate_audit::AuditLog,
    name: &str,
    password_file: &std::path::Path,
) -> anyhow::Result<String> {
    let password = read_password(password_file)?;
    check_user_name(name)?;
    let store = open_store(settings, openbao, audit).await?;
    if store.find_user(name).await?.is_some() {
        bail!("user {name:?} exists");
    }
    let id = insert_user(&store, audit, name, &password).await?;
    Ok(format!("user {name} created ({id})"))
}

/// One user per file in `dir` (the file's name is the user's, its content the
/// password; names starting with `.` are skipped, as a Kubernetes Secret
/// mount's `..data` links). Users that exist are left as they are, so a
/// re-run changes nothing; every file is checked before anything is stored.
async fn import_users(
    settings: &AuthSettings,
    openbao: Option<&estate_secrets::OpenBao>,
    audit: &estate_audit::AuditLog,
    dir: &std::path::Path,
) -> anyhow::Result<String> {
    let mut users = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        check_user_name(&name)?;
        users.push((name, read_password(&entry.path())?));
    }
    if users.is_empty() {
        bail!("{}: no password files", dir.display());
    }
    users.sort();
    let store = open_store(settings, openbao, audit).await?;
    let (mut created, mut kept) = (Vec::new(), Vec::new());
    for (name, password) in &users {
        if store.find_user(name).await?.is_some() {
            kept.push(name.as_str());
        } else {
            insert_user(&store, audit, name, password).await?;
            created.push(name.as_str());
        }
    }
    Ok(format!("users: created [{}]; existing, left as they were [{}]", created.join(", "), kept.join(", ")))
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
