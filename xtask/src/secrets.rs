//! `cargo xtask test` step "secret scan" (PC-05, non-negotiable 6): no
//! private key, token or credential is committed. Every tracked text file is
//! read; a finding names the file, the line and the kind, never the value.
//!
//! Kinds: PEM private-key blocks, JWTs, AWS access key ids, GitHub tokens,
//! and high-entropy string literals assigned to something called a secret,
//! password, token or key. Development material is generated at run time
//! (into a temp dir or `.estate/`), so none of these belongs in the tree. A
//! line that must look like one (a scanner fixture) says
//! `secret-scan: allow` and why.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// What was found where (1-based line).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) line: usize,
    pub(crate) kind: &'static str,
}

fn entropy(text: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in text.bytes() {
        counts[usize::from(b)] += 1;
    }
    let len = text.len() as f64;
    counts.iter().filter(|c| **c > 0).map(|c| *c as f64 / len).map(|p| -p * p.log2()).sum()
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `eyJ…{10,}.eyJ…{10,}.…{10,}` somewhere in `line`.
fn has_jwt(line: &str) -> bool {
    let bytes = line.as_bytes();
    let mut start = 0;
    while let Some(offset) = line[start..].find("eyJ") {
        let at = start + offset;
        let mut parts = 0;
        let mut i = at;
        loop {
            let begin = i;
            while i < bytes.len() && is_b64url(bytes[i]) {
                i += 1;
            }
            if i - begin < 10 {
                break;
            }
            parts += 1;
            if parts == 3 || i >= bytes.len() || bytes[i] != b'.' {
                break;
            }
            i += 1;
        }
        if parts == 3 {
            return true;
        }
        start = at + 3;
    }
    false
}

fn prefixed_token(line: &str, prefix: &str, len: usize, charset: fn(u8) -> bool) -> bool {
    line.match_indices(prefix).any(|(at, _)| {
        let rest = &line.as_bytes()[at + prefix.len()..];
        rest.len() >= len && rest[..len].iter().all(|b| charset(*b))
    })
}

/// Key material is hex or base64: letters and digits (both), `+/=_-`, nothing else.
fn secret_shaped(literal: &str) -> bool {
    literal.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=_-".contains(&b))
        && literal.bytes().any(|b| b.is_ascii_digit())
        && literal.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Quoted literals of `line` (double quotes, no escapes considered).
fn literals(line: &str) -> impl Iterator<Item = &str> {
    line.split('"').skip(1).step_by(2)
}

pub(crate) fn scan_text(text: &str) -> Vec<Finding> {
    let key_begin = concat!("-----BEG", "IN ");
    let key_end = concat!("PRIVATE ", "KEY-----");
    let mut findings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.contains(concat!("secret-scan: ", "allow")) {
            continue;
        }
        let mut found = |kind| findings.push(Finding { line: index + 1, kind });
        if line.contains(key_begin) && line.contains(key_end) {
            found("private key");
        }
        if has_jwt(line) {
            found("JWT");
        }
        if prefixed_token(line, "AKIA", 16, |b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            found("AWS access key id");
        }
        for prefix in ["ghp_", "gho_", "ghs_", "ghu_", "ghr_"] {
            if prefixed_token(line, prefix, 36, |b| b.is_ascii_alphanumeric()) {
                found("GitHub token");
            }
        }
        let lower = line.to_ascii_lowercase();
        let named = ["secret", "password", "passwd", "token", "api_key", "apikey", "private_key"]
            .iter()
            .any(|word| lower.contains(word));
        if named
            && (line.contains('=') || line.contains(':'))
            && literals(line).any(|l| l.len() >= 20 && secret_shaped(l) && entropy(l) >= 3.5)
        {
            found("high-entropy secret literal");
        }
    }
    findings
}

pub(crate) fn scan(root: &Path) -> Result<()> {
    let output = Command::new("git").arg("-C").arg(root).args(["ls-files", "-z"]).output().context("git ls-files")?;
    if !output.status.success() {
        bail!("secret scan needs a git checkout (git ls-files failed)");
    }
    let mut report = Vec::new();
    let mut files = 0;
    for name in output.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name == "Cargo.lock" {
            continue;
        }
        let Ok(bytes) = std::fs::read(root.join(&name)) else { continue };
        if bytes.len() > 1 << 20 || bytes.contains(&0) {
            continue;
        }
        files += 1;
        for finding in scan_text(&String::from_utf8_lossy(&bytes)) {
            report.push(format!("  {name}:{}: {}", finding.line, finding.kind));
        }
    }
    if !report.is_empty() {
        bail!("secret scan: {} finding(s) in tracked files:\n{}", report.len(), report.join("\n"));
    }
    println!("secret scan: {files} tracked files, nothing found");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<&'static str> {
        scan_text(text).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn pc05_committed_keys_tokens_and_credentials_are_found() {
        let key = format!("{}RSA {}\nMIIE\n", concat!("-----BEG", "IN "), concat!("PRIVATE ", "KEY-----"));
        assert_eq!(kinds(&key), ["private key"]);
        let jwt = format!(
            "let t = \"{}.{}.{}\";",
            "eyJhbGciOiJFUzI1NiJ9", "eyJzdWIiOiJhbGljZSJ9", "c2lnbmF0dXJlc2lnbmF0dXJl"
        );
        assert_eq!(kinds(&jwt), ["JWT"]);
        assert_eq!(kinds(&format!("key = {}{}", "AKIA", "ABCDEFGHIJKLMNOP")), ["AWS access key id"]);
        assert_eq!(kinds(&format!("t: {}{}", "ghp_", "a".repeat(36))), ["GitHub token"]);
        let hex = "4f1b7c0e9d2a3b5c6d7e8f90a1b2c3d4e5f60718293a4b5c";
        assert_eq!(kinds(&format!("const CLIENT_SECRET: &str = \"{hex}\";")), ["high-entropy secret literal"]);
        assert_eq!(kinds(&format!("password = \"{hex}\"")), ["high-entropy secret literal"]);
    }

    #[test]
    fn pc05_ordinary_code_and_marked_fixtures_pass() {
        for line in [
            "let secret_file = dir.join(\"secret-id\");",
            "password: SecretRef::File(path),",
            "const TOKEN_EXCHANGE_GRANT: &str = \"urn:ietf:params:oauth:grant-type:token-exchange\";",
            "let token = \"aaaaaaaaaaaaaaaaaaaaaaaa\";",
            "// secret-scan: allow (scanner fixture) password = \"4f1b7c0e9d2a3b5c6d7e8f90a1b2c3d4\"",
            "let bearer = format!(\"Bearer {token}\");",
        ] {
            assert!(kinds(line).is_empty(), "{line}");
        }
    }
}
