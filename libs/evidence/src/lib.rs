//! Evidence a test leaves for `cargo xtask checklist`: that it saw an
//! attack **refused** or a legitimate call **served**.
//!
//! The checklist counts an ID as proven only when passing tests of that ID
//! recorded both kinds (decision 0023). A test records evidence right where
//! it asserts the outcome, so the evidence exists only if the run reached
//! that assertion; a test that fails later is a failed test and counts
//! against its IDs.
//!
//! Records go to `$CHECKLIST_EVIDENCE_DIR/<pid>.tsv` (one line per record:
//! binary id, test name, kind, what), which `cargo xtask test` sets for its
//! nextest run. Without that variable (a plain `cargo test`) nothing is
//! written. (Not `ESTATE_…`: services read `ESTATE_*` variables as
//! configuration and refuse unknown ones.) Std only: every test crate can
//! afford it.

use std::io::Write;

/// What a test saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An attack was refused (401/403/404/413/429, a failed handshake, SQL permission denied, …).
    Refused,
    /// The legitimate call was served.
    Allowed,
}

impl Kind {
    /// The word in the evidence file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Allowed => "allowed",
        }
    }
}

/// The test saw `what` (an attack) refused.
pub fn refused(what: &str) {
    record(Kind::Refused, what);
}

/// The test saw `what` (a legitimate call) served.
pub fn allowed(what: &str) {
    record(Kind::Allowed, what);
}

/// Record `kind` for the running test. Best effort: evidence that cannot be
/// written is missing evidence, which the checklist reports.
pub fn record(kind: Kind, what: &str) {
    let Some(dir) = std::env::var_os("CHECKLIST_EVIDENCE_DIR") else { return };
    let test = std::env::var("NEXTEST_TEST_NAME")
        .ok()
        .or_else(|| std::thread::current().name().map(str::to_owned))
        .unwrap_or_default();
    let binary = std::env::var("NEXTEST_BINARY_ID").unwrap_or_default();
    let line = format!("{}\t{}\t{}\t{}\n", clean(&binary), clean(&test), kind.as_str(), clean(what));
    let path = std::path::Path::new(&dir).join(format!("{}.tsv", std::process::id()));
    // One write per line on an O_APPEND file: lines of parallel tests never interleave.
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = file.write_all(line.as_bytes());
    }
}

fn clean(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

/// One record of an evidence file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// nextest's binary id (`crate` or `crate::test-file`).
    pub binary: String,
    /// The test's path within its binary.
    pub test: String,
    /// Refused or allowed.
    pub kind: Kind,
    /// What was refused or served.
    pub what: String,
}

/// Parse the lines of an evidence file; malformed lines are skipped.
#[must_use]
pub fn parse(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|line| {
            let mut cells = line.splitn(4, '\t');
            let (binary, test, kind, what) = (cells.next()?, cells.next()?, cells.next()?, cells.next()?);
            let kind = match kind {
                "refused" => Kind::Refused,
                "allowed" => Kind::Allowed,
                _ => return None,
            };
            Some(Record { binary: binary.to_owned(), test: test.to_owned(), kind, what: what.to_owned() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_skipped() {
        let text = "estate-tests::gateway\tpc02_x\trefused\talg none\nbroken line\nx\ty\tmaybe\tz\nb\tt\tallowed\tok\twith tab\n";
        let records = parse(text);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].kind, Kind::Refused);
        assert_eq!(records[0].what, "alg none");
        assert_eq!(records[1].what, "ok\twith tab");
        assert_eq!(clean("a\tb\nc"), "a b c");
    }
}
