//! `cargo deny` against a RustSec advisory snapshot, offline (PC-11).
//!
//! cargo-deny looks for the database of `db-urls[0]` in
//! `<db-path>/advisory-db-<hash of the URL>` and reads the HEAD commit time of
//! that folder as a git repository. So we copy the snapshot (read-only in CI)
//! there and commit it once; a marker file remembers which snapshot it holds
//! so a second run copies nothing.
//!
//! Where the snapshot comes from: `$RUSTSEC_ADVISORY_DB`, else
//! `../shared/advisory-db` beside the checkout. Without either, bans,
//! licenses and sources are still checked offline, and advisories online when
//! the live database is reachable — otherwise a loud warning says they were
//! not checked (a machine with neither cannot know about new advisories).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{root, run};

/// A crate depending on a banned crate (`ring`): the deny step must fail on it.
const BANNED_FIXTURE: &str = "xtask/fixtures/banned-crate/Cargo.toml";
/// A fixture with a known advisory (the deny tests check it fails).
const ADVISORY_FIXTURE: &str = "xtask/fixtures/advisory-crate/Cargo.toml";

/// Folder name cargo-deny 0.20 derives from `https://github.com/rustsec/advisory-db`
/// (PLATFORM-NOTES, verified).
const DB_FOLDER: &str = "advisory-db-3157b0e258782691";

fn snapshot_source() -> Option<PathBuf> {
    std::env::var_os("RUSTSEC_ADVISORY_DB")
        .map(PathBuf::from)
        .or_else(|| root().parent().map(|p| p.join("shared/advisory-db")))
        .filter(|p| p.join("crates").is_dir())
}

pub(crate) fn check() -> Result<()> {
    // cargo-deny reads `cargo metadata` for every platform, so every crate of
    // the lock file must be in the local registry cache — including
    // wasm/Android/Windows-only ones no build here downloads. `cargo fetch`
    // gets them once (from the crate registry, as the build does).
    run(Command::new("cargo").args(["fetch", "--locked"]))?;
    // The same for the fixtures the deny tests check (a banned crate, a crate
    // with a known advisory), so they run offline.
    for fixture in [BANNED_FIXTURE, ADVISORY_FIXTURE] {
        run(Command::new("cargo").args(["fetch", "--locked", "--manifest-path"]).arg(fixture))?;
    }
    let Some(source) = snapshot_source() else {
        // Bans, licenses and sources need no database: always checked.
        run(Command::new("cargo").args(["deny", "--offline", "check", "bans", "licenses", "sources"]))?;
        if advisory_db_reachable() {
            println!("no advisory snapshot (RUSTSEC_ADVISORY_DB or ../shared/advisory-db): checking advisories online");
            return run(Command::new("cargo").args(["deny", "check", "advisories"]));
        }
        println!(
            "WARNING: advisories NOT checked — no snapshot (set RUSTSEC_ADVISORY_DB or provide \
             ../shared/advisory-db) and https://github.com/rustsec/advisory-db is unreachable"
        );
        return Ok(());
    };
    let db = root().join("target/advisory-dbs").join(DB_FOLDER);
    prepare(&source, &db)?;
    run(Command::new("cargo").args(["deny", "--offline", "check"]))
}

/// Whether the live advisory database can be fetched (a quick `git ls-remote`).
fn advisory_db_reachable() -> bool {
    Command::new("git")
        .args(["ls-remote", "--heads", "https://github.com/rustsec/advisory-db", "main"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn prepare(source: &Path, db: &Path) -> Result<()> {
    let stamp = std::fs::read_to_string(source.join("SNAPSHOT")).unwrap_or_default();
    let marker = db.join(".estate-snapshot");
    if db.join(".git").is_dir() && std::fs::read_to_string(&marker).is_ok_and(|m| m == stamp) {
        println!("advisory db: snapshot already in place ({})", db.display());
        return Ok(());
    }
    println!("advisory db: copying {} to {}", source.display(), db.display());
    if db.exists() {
        std::fs::remove_dir_all(db).with_context(|| format!("remove {}", db.display()))?;
    }
    std::fs::create_dir_all(db).with_context(|| format!("mkdir {}", db.display()))?;
    copy_dir(source, db)?;
    std::fs::write(&marker, &stamp).context("write snapshot marker")?;
    let git = |args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(db)
            .args(args)
            .env("GIT_AUTHOR_NAME", "estate")
            .env("GIT_AUTHOR_EMAIL", "estate@localhost")
            .env("GIT_COMMITTER_NAME", "estate")
            .env("GIT_COMMITTER_EMAIL", "estate@localhost"))
    };
    git(&["init", "--quiet"])?;
    git(&["add", "-A"])?;
    git(&["commit", "--quiet", "--no-gpg-sign", "-m", "advisory snapshot"])
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| format!("copy {}", entry.path().display()))?;
            // The source is read-only in CI; the copy must be writable to be replaced later.
            let mut perms = std::fs::metadata(&target)?.permissions();
            #[allow(clippy::permissions_set_readonly_false, reason = "our own copy under target/")]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

    use super::*;

    /// `cargo deny check <check>` with Estate's deny.toml over `manifest`,
    /// offline: its exit status and what it said.
    fn deny(manifest: &Path, check: &str) -> (bool, String) {
        deny_with(manifest, check, &root().join("deny.toml"))
    }

    fn deny_with(manifest: &Path, check: &str, config: &Path) -> (bool, String) {
        let output = Command::new("cargo")
            .args(["deny", "--offline", "--manifest-path"])
            .arg(manifest)
            .arg("--config")
            .arg(config)
            .args(["check", check])
            .current_dir(root())
            .output()
            .expect("cargo-deny (cargo xtask prereqs installs it)");
        let said = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), said)
    }

    #[test]
    fn pc11_a_banned_crate_fails_the_deny_step_and_the_workspace_passes() {
        let (ok, said) = deny(&root().join(BANNED_FIXTURE), "bans");
        assert!(
            !ok && said.contains("crate 'ring = 0.17.14' is explicitly banned"),
            "the fixture must fail for its banned crate (its crates are fetched by the deny step of \
             `cargo xtask test`):\n{said}"
        );
        estate_evidence::refused("a dependency on a banned crate");
        let (ok, said) = deny(&root().join("Cargo.toml"), "bans");
        assert!(ok, "the workspace itself passes the bans:\n{said}");
        estate_evidence::allowed("the workspace's dependency graph");
    }

    #[test]
    fn pc11_a_crate_with_a_known_advisory_fails_the_deny_step_and_the_workspace_passes() {
        // The snapshot the deny step of `cargo xtask test` put in place; where
        // there is none (no ../shared/advisory-db, no network), a database of
        // the one advisory (xtask/fixtures/advisory-db) under Estate's policy.
        let snapshot = root().join("target/advisory-dbs").join(DB_FOLDER);
        let scratch = tempfile::tempdir().unwrap();
        let config = if snapshot.join("crates").is_dir() {
            root().join("deny.toml")
        } else {
            prepare(&root().join("xtask/fixtures/advisory-db"), &scratch.path().join(DB_FOLDER)).unwrap();
            let policy = std::fs::read_to_string(root().join("deny.toml")).unwrap();
            let db_path = format!("db-path = {:?}", scratch.path().display().to_string());
            assert!(policy.contains("db-path = \"target/advisory-dbs\""), "deny.toml's db-path moved");
            let config = scratch.path().join("deny.toml");
            std::fs::write(&config, policy.replace("db-path = \"target/advisory-dbs\"", &db_path)).unwrap();
            config
        };
        let deny = |manifest: &Path, check: &str| deny_with(manifest, check, &config);
        let (ok, said) = deny(&root().join(ADVISORY_FIXTURE), "advisories");
        assert!(
            !ok && said.contains("RUSTSEC-2021-0003"),
            "the fixture must fail for smallvec 0.6.13's advisory:\n{said}"
        );
        estate_evidence::refused("a dependency with a known advisory");
        let (ok, said) = deny(&root().join("Cargo.toml"), "advisories");
        assert!(ok, "the workspace itself has no unignored advisory:\n{said}");
        estate_evidence::allowed("the workspace's dependencies against the advisory snapshot");
    }
}
