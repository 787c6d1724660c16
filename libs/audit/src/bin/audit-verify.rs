//! `audit-verify FILE`: check a received audit log (one record per line, or
//! the test SIEM's JSON lines) for gaps, reordering and modification.
//! Exit 0 when intact, 1 with the first problem otherwise.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        let _ = writeln!(std::io::stderr(), "usage: audit-verify FILE");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "audit-verify: {path}: {error}");
            return ExitCode::from(2);
        }
    };
    match estate_audit::chain::verify(text.lines()) {
        Ok(verified) => {
            let _ = writeln!(
                std::io::stdout(),
                "intact: {} records from {} process instance(s)",
                verified.records,
                verified.instances
            );
            ExitCode::SUCCESS
        }
        Err(problem) => {
            let _ = writeln!(std::io::stdout(), "TAMPERED: {problem}");
            ExitCode::FAILURE
        }
    }
}
