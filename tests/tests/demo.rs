//! `cargo xtask demo --ci`, as a test (issue 10): the five services as
//! separate processes from their binaries, over a real Postgres, OpenBao and
//! SIEM, and the whole walkthrough — every legitimate step works, every
//! attack is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use estate_tests::demo::{Narrator, walkthrough};
use estate_tests::{Estate, Options, ProcessMode};

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_walkthrough_refuses_every_attack_and_every_legitimate_step_works() {
    let logs = tempfile::tempdir().unwrap();
    let mode = ProcessMode::beside_current_exe(logs.path().to_path_buf())
        .expect("the service binaries next to the test binary (cargo build --workspace --bins)");
    let mode: &'static ProcessMode = Box::leak(Box::new(mode));
    let options = Options { siem: true, processes: Some(mode), generated_passwords: true, ..Options::default() };
    let mut estate = Estate::start_with(options).await;
    let narrator = Narrator { plain: true };
    let outcomes = walkthrough(&estate, &narrator).await;
    let all_ok = narrator.summary(&outcomes);
    for outcome in &outcomes {
        if outcome.attack {
            estate_testkit::evidence::refused(outcome.step);
        } else {
            estate_testkit::evidence::allowed(outcome.step);
        }
    }
    assert!(all_ok, "{:#?}", outcomes.iter().filter(|o| !o.ok).collect::<Vec<_>>());
    assert!(outcomes.iter().filter(|o| o.attack).count() >= 11, "every attack of the list was tried");
    // The hops came from the services' own logs: each process wrote its file.
    for service in ["auth", "gateway", "order", "payment", "inventory"] {
        assert!(logs.path().join(format!("{service}.log")).metadata().unwrap().len() > 0, "{service}.log");
    }
    assert!(estate.stop().await, "every service process drained and exited 0 on SIGTERM");
}
