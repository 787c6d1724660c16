//! `cargo xtask checklist`: the checklist → tests matrix from the last test
//! run's results (nextest's JUnit XML), so the matrix reports what passed,
//! not what someone wrote down.
//!
//! A test belongs to an ID when its name says so (`pc05_…`, `api1_…`,
//! `flow_tx_…`; `flow_tx_and_relay_…` counts for both flows) or when
//! `docs/checklist.md` names it in that ID's row. An ID is *proven* when at
//! least one of its tests ran and passed and none failed. The matrix is
//! printed and written as JUnit (`target/checklist.xml`, one case per ID);
//! the command fails while any ID is unproven.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};

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

    let mut unproven = Vec::new();
    let mut cases = String::new();
    println!("{:<11} {:>6} {:>6}  {:<9} control", "ID", "pass", "fail", "status");
    for (id, row) in &rows {
        let mut tests: BTreeSet<&String> = results.keys().filter(|t| ids_of(t).contains(id)).collect();
        tests.extend(row.named.iter().filter(|t| results.contains_key(*t)));
        let passed = tests.iter().filter(|t| results[**t]).count();
        let failed = tests.len() - passed;
        let proven = passed > 0 && failed == 0;
        if !proven {
            unproven.push(id.clone());
        }
        let control: String = row.control.chars().take(60).collect();
        println!("{id:<11} {passed:>6} {failed:>6}  {:<9} {control}", if proven { "proven" } else { "UNPROVEN" });
        cases.push_str(&format!("  <testcase classname=\"checklist\" name=\"{}\">", escape(id)));
        if !proven {
            cases.push_str(&format!("<failure message=\"{passed} passing, {failed} failing tests\"/>"));
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
        bail!("unproven: {}", unproven.join(", "));
    }
    Ok(())
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
}
