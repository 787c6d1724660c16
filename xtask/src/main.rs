//! `cargo xtask …`: Estate's task runner.
//!
//! - `cargo xtask test`: install what is missing, then fmt, clippy, cargo-deny
//!   (offline against the advisory snapshot when there is one), a check that
//!   `docs/checklist.md` names only tests that exist, the secret scan,
//!   lint-infra, every test, and the checklist matrix from that run (fails
//!   while an ID is unproven).
//! - `cargo xtask up` / `cargo xtask demo [--ci]`: the estate on this machine
//!   (and, for `demo`, the guided walkthrough of every control).
//! - `cargo xtask doctor`: list prerequisites, found or missing.
//! - `cargo xtask prereqs`: install what is missing, nothing else.
#![allow(clippy::print_stdout, reason = "a command-line tool talks on stdout")]

mod checklist;
mod deny;
mod docs;
mod infra;
mod lint_infra;
mod prereqs;
mod secrets;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  demo [--ci]
            start the estate and walk through every control and attack (exit 1 if any attack succeeds)
  up        start the estate locally (five services, Postgres, OpenBao, SIEM) until Ctrl-C
  test      install missing prerequisites, then fmt, clippy, cargo-deny and all tests
  doctor    list prerequisites, found or missing
  prereqs   install missing prerequisites only
  audit-verify FILE
            check a received audit log for gaps, reordering and edits
  checklist the checklist → tests matrix from the last test run (JUnit); fails while an ID is unproven
  gen-infra write k8s/base/generated/ from infra/topology.toml and infra/east-west/
  lint-infra
            lint Dockerfiles, compose and Kubernetes manifests offline (part of `test`)
  bench [tokens|auth|gateway]
            run benchmarks (release build) and print their figures";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("doctor") => {
            if prereqs::doctor() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "some prerequisites are missing; `cargo xtask prereqs` installs them on Debian/Ubuntu"
                ))
            }
        }
        Some("prereqs") => prereqs::ensure(),
        Some(command @ ("up" | "demo")) => estate(command, &args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("checklist") => checklist::report(&root()),
        Some("gen-infra") => infra::generate(&root()),
        Some("lint-infra") => lint_infra::run(&root()),
        Some("audit-verify") => match &args[1..] {
            // Commands run from the workspace root: resolve the path where the caller stands.
            [file] => std::path::absolute(file).context("audit log path").and_then(|file| {
                run(cargo()
                    .args(["run", "--quiet", "--locked", "-p", "estate-audit", "--bin", "audit-verify", "--"])
                    .arg(file))
            }),
            _ => Err(anyhow::anyhow!("usage: cargo xtask audit-verify FILE")),
        },
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Run a command in the workspace root, inheriting stdio; fail on non-zero exit.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command.current_dir(root()).status().with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Run a command quietly and report only whether it succeeded.
pub(crate) fn status_ok(command: &mut Command) -> bool {
    command
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

fn step(name: &str, timings: &mut Vec<(String, f64)>, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("\n==> {name}");
    let started = Instant::now();
    let result = f();
    let seconds = started.elapsed().as_secs_f64();
    timings.push((name.to_owned(), seconds));
    result.with_context(|| format!("step `{name}` failed after {seconds:.1} s"))
}

fn test(args: &[String]) -> Result<()> {
    if let Some(unknown) = args.first() {
        bail!("`cargo xtask test` takes no arguments (got {unknown:?})");
    }
    let started = Instant::now();
    let mut timings = Vec::new();
    step("prerequisites", &mut timings, prereqs::ensure)?;
    step("cargo fmt --check", &mut timings, || run(cargo().args(["fmt", "--all", "--", "--check"])))?;
    step("cargo clippy", &mut timings, || {
        // --all-features also checks code behind optional features (testkit's `docker`).
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step("cargo deny", &mut timings, deny::check)?;
    step("checklist names real tests", &mut timings, || docs::check(&root()))?;
    step("secret scan", &mut timings, || secrets::scan(&root()))?;
    step("lint-infra", &mut timings, || lint_infra::run(&root()))?;
    step("tests", &mut timings, run_tests)?;
    // Every checklist ID proven by the run that just passed (JUnit); writes target/checklist.xml.
    step("checklist", &mut timings, || checklist::report(&root()))?;
    println!("\n==> timings");
    for (name, seconds) in &timings {
        println!("  {seconds:>7.1} s  {name}");
    }
    println!("  {:>7.1} s  total", started.elapsed().as_secs_f64());
    Ok(())
}

/// `cargo xtask up` / `demo`: install what is missing, build the five
/// service binaries and `estate-demo`, and hand over to it (exec: Ctrl-C
/// reaches it directly). State, temp files and logs stay under `.estate/`.
fn estate(command: &str, args: &[String]) -> Result<()> {
    let ci = match args {
        [] => false,
        [flag] if flag == "--ci" && command == "demo" => true,
        _ => bail!("usage: cargo xtask up | cargo xtask demo [--ci]"),
    };
    prereqs::ensure()?;
    println!("\n==> building the estate");
    run(cargo()
        .args(["build", "--locked", "-p", "estate-tests", "--bin", "estate-demo"])
        .args(["auth", "gateway", "order", "payment", "inventory"].iter().flat_map(|b| ["-p", b, "--bin", b])))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let state = root().join(".estate");
    let mut demo = Command::new(target.join("debug/estate-demo"));
    demo.arg(command)
        .args(ci.then_some("--ci"))
        .arg("--state")
        .arg(&state)
        .env("TESTKIT_BAO", prereqs::bao_path())
        .env("TMPDIR", state.join("run/tmp"))
        .current_dir(root());
    let error = std::os::unix::process::CommandExt::exec(&mut demo);
    Err(anyhow::anyhow!("cannot run estate-demo: {error}"))
}

/// Benchmarks report figures; they assert nothing (tests do that).
fn bench(args: &[String]) -> Result<()> {
    const BENCHES: [(&str, &str, &str); 3] = [
        ("tokens", "estate-tokens", "verify"),
        ("auth", "auth", "token_endpoint"),
        ("gateway", "gateway", "through_gateway"),
    ];
    let wanted: Vec<&str> = args.iter().map(String::as_str).collect();
    for (name, package, bench) in BENCHES {
        if wanted.is_empty() || wanted.contains(&name) {
            println!("\n==> bench {name}");
            run(cargo()
                .args(["bench", "--locked", "-p", package, "--bench", bench])
                .env("TESTKIT_BAO", prereqs::bao_path()))?;
        }
    }
    if let Some(unknown) = wanted.iter().find(|w| !BENCHES.iter().any(|(n, _, _)| n == *w)) {
        bail!("unknown benchmark {unknown:?}; known: {}", BENCHES.map(|(n, _, _)| n).join(", "));
    }
    Ok(())
}

fn run_tests() -> Result<()> {
    let bao = prereqs::bao_path();
    let mut command = cargo();
    if prereqs::which("cargo-nextest").is_some() {
        command.args(["nextest", "run", "--workspace", "--locked", "--no-fail-fast"]);
    } else {
        command.args(["test", "--workspace", "--locked", "--no-fail-fast"]);
    }
    // What each test saw refused or served, for the checklist (decision 0023).
    let evidence = checklist::evidence_dir(&root());
    if evidence.exists() {
        std::fs::remove_dir_all(&evidence).with_context(|| format!("clear {}", evidence.display()))?;
    }
    std::fs::create_dir_all(&evidence).with_context(|| format!("create {}", evidence.display()))?;
    // Tell the testkit where the tools we installed are.
    run(command.env("TESTKIT_BAO", bao).env("CHECKLIST_EVIDENCE_DIR", &evidence))
}
