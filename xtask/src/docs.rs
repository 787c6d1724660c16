//! `docs/checklist.md` is hand-kept; this step makes sure every test it names
//! exists, so the matrix cannot claim proof that was renamed or deleted.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Test-function names in backticks: snake_case with at least three
/// underscores (`module::tests::name` counts by its last segment). Shorter
/// snake_case words in the matrix are event or field names, not tests.
fn named_tests(matrix: &str) -> BTreeSet<String> {
    matrix
        .split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|code| code.split([' ', ',']))
        .filter_map(|part| part.rsplit("::").next())
        .filter(|name| {
            name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && name.matches('_').count() >= 3
        })
        .map(str::to_owned)
        .collect()
}

/// Every `fn name` in the Rust sources under `dir`.
fn functions(dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() && !matches!(name, "target" | ".git" | ".estate" | "node_modules" | ".ci") {
            functions(&path, out)?;
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
            for rest in text.split("fn ").skip(1) {
                let ident: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !ident.is_empty() {
                    out.insert(ident);
                }
            }
        }
    }
    Ok(())
}

/// Fail when the matrix names a test that does not exist.
pub(crate) fn check(root: &Path) -> Result<()> {
    let matrix = std::fs::read_to_string(root.join("docs/checklist.md")).context("read docs/checklist.md")?;
    let named = named_tests(&matrix);
    let mut defined = BTreeSet::new();
    // The whole checkout (minus build output and tool dirs): a crate added
    // anywhere counts.
    functions(root, &mut defined)?;
    let missing: Vec<&String> = named.iter().filter(|n| !defined.contains(*n)).collect();
    if !missing.is_empty() {
        bail!("docs/checklist.md names tests that do not exist: {missing:?}");
    }
    println!("docs/checklist.md: {} named tests, all exist", named.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_names_and_ignores_field_names() {
        let matrix = "| PC-10 | x | `estate-audit::siem` `pc10_a_b_c`, `mod::tests::one_two_three_four`; `lease_id` `audit_overflow` |";
        let names: Vec<String> = named_tests(matrix).into_iter().collect();
        assert_eq!(names, ["one_two_three_four", "pc10_a_b_c"]);
    }
}
