//! Child processes that are stopped by handle when dropped.

use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a process gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Owns a spawned server process; dropping it stops that process (and only
/// that one: by PID, never by name).
pub(crate) struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub(crate) fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` when the process has already exited.
    pub(crate) fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, wait up to [`TERM_GRACE`], then SIGKILL; always reaps.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let Ok(raw) = i32::try_from(child.id()) else { return };
        let pid = Pid::from_raw(raw);
        if kill(pid, Signal::SIGTERM).is_err() {
            // Already gone; reap it.
            let _ = child.wait();
            return;
        }
        // Wait for the exit on a helper thread, so the timeout is an event, not a poll.
        let (done_tx, done_rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = child.wait();
            let _ = done_tx.send(());
        });
        if done_rx.recv_timeout(TERM_GRACE).is_err() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let _ = waiter.join();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a process with this PID is still running (used by the
/// no-leftover tests). A zombie (exited, not yet reaped by its parent, which
/// for daemons like the postmaster is PID 1) does not count: it holds no
/// ports, files or memory.
pub fn process_exists(pid: u32) -> bool {
    let signalable = i32::try_from(pid).is_ok_and(|raw| kill(Pid::from_raw(raw), None).is_ok());
    signalable && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    // /proc/<pid>/stat: "pid (comm) STATE ..."; comm may contain spaces or parens.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])))
        .unwrap_or(false)
}
