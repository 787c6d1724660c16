//! `estate-demo up|demo [--ci] --state DIR`: the whole estate on this
//! machine, five services as separate processes over a real Postgres,
//! OpenBao and rsyslog SIEM — run by `cargo xtask up` and `cargo xtask demo`
//! (which build the binaries, install what is missing and point `TMPDIR`
//! into the state directory, so nothing is written outside it).
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line tool talks on its terminal")]

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use estate_tests::demo::{Narrator, walkthrough};
use estate_tests::{Estate, Options, ProcessMode};

const USAGE: &str = "usage: estate-demo up|demo [--ci] --state DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().cloned().unwrap_or_default();
    let ci = args.iter().any(|a| a == "--ci");
    let state = args.iter().position(|a| a == "--state").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let (Some(state), "up" | "demo") = (state, command.as_str()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("estate-demo: {error}");
            return ExitCode::FAILURE;
        }
    };
    let plain = ci || std::env::var_os("NO_COLOR").is_some() || !std::io::stdout().is_terminal();
    match runtime.block_on(run(&command, &state, Narrator { plain })) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("estate-demo: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: &str, state: &Path, narrator: Narrator) -> Result<bool, String> {
    let started = Instant::now();
    let logs = state.join("logs");
    let run_dir = state.join("run");
    stop_leftovers(&run_dir).await;
    for dir in [&logs, &run_dir] {
        // A second `up` starts from a clean slate: the last run's state is recreated, not reused.
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| format!("clear {}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    // `cargo xtask` points TMPDIR into the run directory: every throwaway dir lives there.
    let tmp = std::env::temp_dir();
    std::fs::create_dir_all(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    let mode = ProcessMode::beside_current_exe(logs.clone()).ok_or(
        "the service binaries are not next to estate-demo; run it through `cargo xtask up` or `cargo xtask demo`",
    )?;
    let mode: &'static ProcessMode = Box::leak(Box::new(mode));
    narrator.heading(
        "Starting the estate: Postgres, OpenBao (PKI, AppRoles, database engine), rsyslog SIEM, five services",
    );
    let options = Options { siem: true, processes: Some(mode), generated_passwords: true, ..Options::default() };
    let mut estate =
        tokio::spawn(Estate::start_with(options)).await.map_err(|e| format!("the estate did not start: {e}"))?;
    narrator.say(&format!("up in {:.1} s; service logs in {}", started.elapsed().as_secs_f64(), logs.display()));

    let ok = match command {
        "up" => {
            print_access(&estate, &run_dir, &narrator).await?;
            narrator.say("Ctrl-C stops everything.");
            tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
            true
        }
        _ => {
            let outcomes = walkthrough(&estate, &narrator).await;
            let ok = narrator.summary(&outcomes);
            narrator.say(&format!("{:.1} s from start to summary", started.elapsed().as_secs_f64()));
            ok
        }
    };
    narrator.say("stopping…");
    estate.stop().await;
    drop(estate);
    Ok(ok)
}

/// What a user needs to try the estate: URLs, users, a token, the SIEM log.
async fn print_access(estate: &Estate, run_dir: &Path, narrator: &Narrator) -> Result<(), String> {
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let path = run_dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        Ok(path)
    };
    let edge_ca = write("edge-ca.pem", &estate.pki.ca_pem())?;
    let login = estate.user_login("alice").await;
    let token_file = write("alice.token", login["access_token"].as_str().unwrap_or_default())?;
    let refresh_file = write("alice.refresh", login["refresh_token"].as_str().unwrap_or_default())?;
    let auth_ca = write("auth-ca.pem", estate.auth_ca())?;
    narrator.heading("The estate is up");
    narrator.detail("gateway", &estate.edge_url(""));
    narrator.detail("edge CA", &edge_ca.display().to_string());
    narrator.detail("auth server", &estate.auth_url);
    for (user, password) in &estate.users {
        narrator.detail("user", &format!("{user} / {password}  (generated for this run)"));
    }
    narrator
        .detail("SIEM log", &estate.siem.as_ref().map(|s| s.events_path().display().to_string()).unwrap_or_default());
    narrator.say("a new access token for alice, with curl (refresh tokens rotate: keep the new one it returns):");
    narrator.say(&format!(
        "  curl --cacert {} -d grant_type=refresh_token -d client_id={} -d refresh_token=$(cat {}) {}/token",
        auth_ca.display(),
        estate_tests::WEB_CLIENT,
        refresh_file.display(),
        estate.auth_url
    ));
    narrator.say("alice's access token (5 minutes) is in the token file; call the API with it:");
    narrator.say(&format!(
        "  curl --cacert {} -H \"Authorization: Bearer $(cat {})\" {}",
        edge_ca.display(),
        token_file.display(),
        estate.edge_url("/v1/orders")
    ));
    narrator.say(&format!(
        "  curl --cacert {} -H \"Authorization: Bearer $(cat {})\" -H 'Idempotency-Key: first-order-1' \
         -H 'Content-Type: application/json' -d '{{\"lines\":[{{\"sku\":\"TEA-01\",\"quantity\":1}}]}}' {}",
        edge_ca.display(),
        token_file.display(),
        estate.edge_url("/v1/orders")
    ));
    Ok(())
}

/// Processes a previous run left behind (its `estate-demo` was killed before
/// it could stop them): every process whose command line names a path in
/// this run directory — its Postgres cluster, OpenBao, rsyslog, the
/// services' configuration files — gets SIGTERM, and SIGKILL after 10 s.
/// Identified by this estate's own state directory, never by program name.
async fn stop_leftovers(run_dir: &Path) {
    let marker = run_dir.display().to_string();
    let own = std::process::id();
    let leftovers: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != own))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&marker))
        })
        .collect();
    if leftovers.is_empty() {
        return;
    }
    println!("  stopping {} process(es) a previous run left behind", leftovers.len());
    let signal = |pid: i32, signal| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).is_ok();
    for pid in &leftovers {
        signal(*pid, nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while Instant::now() < deadline && leftovers.iter().any(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for pid in leftovers.iter().filter(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
        signal(*pid, nix::sys::signal::Signal::SIGKILL);
    }
}
