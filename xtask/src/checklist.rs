//! `cargo xtask checklist`: the checklist → tests matrix from the last test
//! run's results (nextest's JUnit XML), so the matrix reports what passed,
//! not what someone wrote down.
//!
//! A test belongs to an ID when its name says so (`pc05_…`, `api1_…`,
//! `flow_tx_…`; `flow_tx_and_relay_…` counts for both flows) or when
//! `docs/checklist.md` names it in that ID's row. Tests record what they saw
//! (`estate_evidence::refused` / `allowed`, into `target/checklist-evidence/`
//! during `cargo xtask test`). An ID is *proven* when none of its tests
//! failed, at least one passing test saw an attack refused and at least one
//! passing test saw the legitimate call served (decision 0023). The matrix is
//! printed and written as JUnit (`target/checklist.xml`, one case per ID);
//! the command fails while any ID is unproven.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use estate_evidence::Kind;

/// The IDs a test name claims by convention.
pub(crate) fn ids_of(test: &str) -> Vec<String> {
    let digits = |rest: &str| rest.chars().take_while(char::is_ascii_digit).collect::<String>();
    if let Some(rest) = test.strip_prefix("pc") {
        let n = digits(rest);
        if n.len() == 2 && rest[2..].starts_with('_') {
            return vec![format!("PC-{n}")];
        }
    }
    if let Some(rest) = test.strip_prefix("api") {
        let n = digits(rest);
        if !n.is_empty() && rest[n.len()..].starts_with('_') {
            return vec![format!("API{n}")];
        }
    }
    if test.starts_with("flow_tx_and_relay_") {
        return vec!["FLOW-TX".into(), "FLOW-RELAY".into()];
    }
    for (prefix, id) in [("flow_cc_", "FLOW-CC"), ("flow_tx_", "FLOW-TX"), ("flow_relay_", "FLOW-RELAY")] {
        if test.starts_with(prefix) {
            return vec![id.into()];
        }
    }
    Vec::new()
}

struct Row {
    control: String,
    named: BTreeSet<String>,
}

/// The matrix rows of `docs/checklist.md`: ID → control and named tests.
fn rows(doc: &str) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(id) = cells.first().and_then(|c| c.strip_prefix("| ")) else { continue };
        let is_id = id.starts_with("PC-") || id.starts_with("API") || id.starts_with("FLOW-");
        if !is_id || cells.len() < 3 {
            continue;
        }
        let named = cells[2]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|n| {
                n.matches('_').count() >= 3
                    && n.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':' || c == ' ')
            })
            .filter_map(|n| n.split([' ', ':']).next_back().map(str::to_owned))
            .collect();
        rows.insert(id.to_owned(), Row { control: cells[1].to_owned(), named });
    }
    rows
}

/// Test function name → passed, from nextest's JUnit (a name seen in
/// several binaries passes only if it passed everywhere).
fn results(junit: &str) -> BTreeMap<String, bool> {
    let mut results: BTreeMap<String, bool> = BTreeMap::new();
    for case in junit.split("<testcase ").skip(1) {
        let Some(name) = case.split("name=\"").nth(1).and_then(|n| n.split('"').next()) else { continue };
        let name = name.rsplit("::").next().unwrap_or(name).to_owned();
        let head_end = case.find('>').unwrap_or(case.len());
        let self_closing = case[..head_end].ends_with('/');
        let body = if self_closing { "" } else { case.split("</testcase>").next().unwrap_or("") };
        let passed = !body.contains("<failure") && !body.contains("<error") && !body.contains("<skipped");
        let entry = results.entry(name).or_insert(true);
        *entry &= passed;
    }
    results
}

/// Where the tests of `cargo xtask test` leave their evidence.
pub(crate) fn evidence_dir(root: &Path) -> std::path::PathBuf {
    root.join("target/checklist-evidence")
}

/// Test function name → (refusals seen, legitimate calls seen).
fn evidence(dir: &Path) -> Result<BTreeMap<String, (usize, usize)>> {
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("{}: run `cargo xtask test` first (it records the evidence)", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tsv") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
            for record in estate_evidence::parse(&text) {
                let name = record.test.rsplit("::").next().unwrap_or(&record.test).to_owned();
                let counts = seen.entry(name).or_default();
                match record.kind {
                    Kind::Refused => counts.0 += 1,
                    Kind::Allowed => counts.1 += 1,
                }
            }
        }
    }
    Ok(seen)
}

/// One ID's verdict from its tests' results and evidence.
#[derive(Debug, Default, PartialEq, Eq)]
struct Verdict {
    passed: usize,
    failed: usize,
    /// Passing tests that saw an attack refused.
    refusing: usize,
    /// Passing tests that saw the legitimate call served.
    serving: usize,
}

impl Verdict {
    fn of<'a>(
        tests: impl IntoIterator<Item = &'a String>,
        results: &BTreeMap<String, bool>,
        evidence: &BTreeMap<String, (usize, usize)>,
    ) -> Self {
        let mut verdict = Self::default();
        for test in tests {
            if !results[test] {
                verdict.failed += 1;
                continue;
            }
            verdict.passed += 1;
            let (refused, allowed) = evidence.get(test).copied().unwrap_or_default();
            verdict.refusing += usize::from(refused > 0);
            verdict.serving += usize::from(allowed > 0);
        }
        verdict
    }

    fn proven(&self) -> bool {
        self.failed == 0 && self.refusing > 0 && self.serving > 0
    }

    fn why_not(&self) -> String {
        let mut reasons = Vec::new();
        if self.failed > 0 {
            reasons.push(format!("{} failing tests", self.failed));
        }
        if self.refusing == 0 {
            reasons.push("no passing test saw the attack refused".to_owned());
        }
        if self.serving == 0 {
            reasons.push("no passing test saw the legitimate call served".to_owned());
        }
        reasons.join("; ")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub(crate) fn report(root: &Path) -> Result<()> {
    let doc = std::fs::read_to_string(root.join("docs/checklist.md")).context("docs/checklist.md")?;
    let junit_path = root.join("target/nextest/default/junit.xml");
    let junit = std::fs::read_to_string(&junit_path)
        .with_context(|| format!("{}: run `cargo xtask test` (with nextest) first", junit_path.display()))?;
    let rows = rows(&doc);
    let results = results(&junit);
    let evidence = evidence(&evidence_dir(root))?;

    let mut unproven = Vec::new();
    let mut cases = String::new();
    println!("{:<11} {:>6} {:>6} {:>7} {:>7}  {:<9} control", "ID", "pass", "fail", "refused", "served", "status");
    for (id, row) in &rows {
        let mut tests: BTreeSet<&String> = results.keys().filter(|t| ids_of(t).contains(id)).collect();
        tests.extend(row.named.iter().filter(|t| results.contains_key(*t)));
        let verdict = Verdict::of(tests, &results, &evidence);
        let proven = verdict.proven();
        if !proven {
            unproven.push(format!("{id} ({})", verdict.why_not()));
        }
        let control: String = row.control.chars().take(56).collect();
        let Verdict { passed, failed, refusing, serving } = verdict;
        println!(
            "{id:<11} {passed:>6} {failed:>6} {refusing:>7} {serving:>7}  {:<9} {control}",
            if proven { "proven" } else { "UNPROVEN" }
        );
        cases.push_str(&format!("  <testcase classname=\"checklist\" name=\"{}\">", escape(id)));
        if !proven {
            cases.push_str(&format!(
                "<failure message=\"{}\"/>",
                escape(&verdict_message(passed, failed, refusing, serving))
            ));
        }
        cases.push_str("</testcase>\n");
    }
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"checklist\" tests=\"{}\" failures=\"{}\">\n{cases}</testsuite>\n",
        rows.len(),
        unproven.len()
    );
    std::fs::write(root.join("target/checklist.xml"), xml).context("target/checklist.xml")?;
    if !unproven.is_empty() {
        bail!("unproven:\n  {}", unproven.join("\n  "));
    }
    Ok(())
}

fn verdict_message(passed: usize, failed: usize, refusing: usize, serving: usize) -> String {
    format!(
        "{passed} passing, {failed} failing tests; {refusing} saw the attack refused, {serving} the legitimate call served"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_claim_their_ids() {
        assert_eq!(ids_of("pc05_the_app_role_cannot_switch_rls_off"), ["PC-05"]);
        assert_eq!(ids_of("api1_rls_hides_rows"), ["API1"]);
        assert_eq!(ids_of("api10_hostile_provider_answers"), ["API10"]);
        assert_eq!(ids_of("flow_tx_and_relay_work_end_to_end"), ["FLOW-TX", "FLOW-RELAY"]);
        assert_eq!(ids_of("flow_cc_single_flight"), ["FLOW-CC"]);
        assert!(ids_of("apix_nothing").is_empty());
        assert!(ids_of("pc5_too_short").is_empty());
        assert!(ids_of("binary_serves_health").is_empty());
    }

    #[test]
    fn junit_cases_pass_only_without_failures_anywhere() {
        let junit = r#"<testsuite>
<testcase name="flows::api1_a" classname="estate-tests::flows" time="1"/>
<testcase name="api3_b" classname="x"><failure message="boom"/></testcase>
<testcase name="binary_serves_health_and_tls" classname="a" time="1"></testcase>
<testcase name="binary_serves_health_and_tls" classname="b"><failure/></testcase>
</testsuite>"#;
        let results = results(junit);
        assert!(results["api1_a"]);
        assert!(!results["api3_b"]);
        assert!(!results["binary_serves_health_and_tls"]);
    }

    #[test]
    fn rows_name_their_tests() {
        let doc = "| ID | control | tests | status |\n|---|---|---|---|\n| PC-07 | BOLA | `estate-tests::flows` `api1_another_user_gets_404` and `x` | partial |\n";
        let rows = rows(doc);
        assert_eq!(rows["PC-07"].named.iter().collect::<Vec<_>>(), ["api1_another_user_gets_404"]);
    }

    #[test]
    fn an_id_needs_a_passing_refusal_and_a_passing_legitimate_call() {
        let results: BTreeMap<String, bool> =
            [("a".to_owned(), true), ("b".to_owned(), true), ("c".to_owned(), false)].into();
        let evidence: BTreeMap<String, (usize, usize)> =
            [("a".to_owned(), (2, 0)), ("b".to_owned(), (0, 1)), ("c".to_owned(), (1, 1))].into();
        let names = |n: &[&str]| n.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert!(Verdict::of(&names(&["a", "b"]), &results, &evidence).proven());
        // Refusals only, legitimate calls only, or evidence only from a failed test: not proven.
        assert!(!Verdict::of(&names(&["a"]), &results, &evidence).proven());
        assert!(!Verdict::of(&names(&["b"]), &results, &evidence).proven());
        let with_failure = Verdict::of(&names(&["a", "b", "c"]), &results, &evidence);
        assert!(!with_failure.proven());
        assert_eq!(with_failure.why_not(), "1 failing tests");
        assert_eq!(
            Verdict::of(&names(&["b"]), &results, &evidence).why_not(),
            "no passing test saw the attack refused"
        );
    }
}
