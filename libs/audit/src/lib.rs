//! `estate-audit`: security events for the SIEM.
//!
//! - [`AuditEvent`]: a closed set of typed events (ECS field names) with no
//!   place for a token, secret or password;
//! - a per-process hash chain (`estate.seq`, `estate.prev_hash`) that
//!   [`chain::verify`] (and `cargo xtask audit-verify`) checks for gaps,
//!   reordering and edits;
//! - sinks: JSON lines on stdout (for Kubernetes log collectors) and syslog
//!   over TLS to a SIEM, held through outages ([`sink`]).

pub mod chain;
mod event;
pub mod sink;
mod spool;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use event::{Action, AuditEvent, Identifier, NotAnIdentifier, Outcome, TraceId};
pub use sink::{SiemTarget, SinkCounters};

use chain::ChainState;

tokio::task_local! {
    static TRACE_ID: TraceId;
    static AUDITED: std::cell::Cell<bool>;
}

/// Run `future` and report whether it emitted any audit event (in its own
/// task; events of tasks it spawned do not count). The service kit uses it
/// to audit refusals no handler explained.
pub async fn tracking<F: std::future::Future>(future: F) -> (F::Output, bool) {
    AUDITED
        .scope(std::cell::Cell::new(false), async {
            let output = future.await;
            (output, AUDITED.with(std::cell::Cell::get))
        })
        .await
}

/// Run `future` with `trace_id` as its trace: events emitted inside it carry
/// that `trace.id` unless they set their own. The service kit's request
/// middleware does this for every request.
pub async fn with_trace_id<F: std::future::Future>(trace_id: TraceId, future: F) -> F::Output {
    TRACE_ID.scope(trace_id, future).await
}

fn current_trace_id() -> Option<TraceId> {
    TRACE_ID.try_with(Clone::clone).ok()
}

/// Count the current request as audited without an event here: for a
/// response that another service produced and audited (the gateway
/// forwarding an upstream's refusal), so it is not audited twice.
pub fn audited_elsewhere() {
    let _ = AUDITED.try_with(|flag| flag.set(true));
}

/// Audit setup failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Bad sink configuration.
    #[error("audit configuration: {0}")]
    Config(String),
}

struct Inner {
    service: String,
    chain: Mutex<ChainState>,
    stdout: bool,
    siem: Option<tokio::sync::mpsc::UnboundedSender<(u8, String)>>,
    counters: Arc<SinkCounters>,
    reported_dropped: AtomicU64,
    queued: AtomicU64,
}

/// The audit log of one process. Cheap to clone; records are chained in the
/// order `emit` is called.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl AuditLog {
    /// A log for `service` writing JSON lines to stdout and, when given, to a SIEM.
    pub fn new(service: &str, stdout: bool, siem: Option<SiemTarget>) -> Result<Self, AuditError> {
        let counters = Arc::new(SinkCounters::default());
        let hostname = std::env::var("HOSTNAME").unwrap_or_else(|_| "-".to_owned());
        let siem = match siem {
            Some(target) => Some(sink::spawn(target, hostname, format!("estate-{service}"), counters.clone())?),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                chain: Mutex::new(ChainState::new()),
                stdout,
                siem,
                counters,
                reported_dropped: AtomicU64::new(0),
                queued: AtomicU64::new(0),
            }),
        })
    }

    /// Record `event`. Without an explicit trace id it gets the one of the
    /// request being served ([`with_trace_id`]), if any.
    pub fn emit(&self, mut event: AuditEvent) {
        if event.trace_id.is_none() {
            event.trace_id = current_trace_id();
        }
        let _ = AUDITED.try_with(|flag| flag.set(true));
        // Losses first, so the chain shows them where they happened.
        let dropped = self.inner.counters.dropped.load(Ordering::SeqCst);
        let reported = self.inner.reported_dropped.swap(dropped, Ordering::SeqCst);
        if dropped > reported {
            self.write(AuditEvent::new(Action::AuditOverflow, Outcome::Failure).count(dropped - reported));
        }
        self.write(event);
    }

    fn write(&self, event: AuditEvent) {
        let timestamp =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let record = match self.inner.chain.lock() {
            Ok(mut chain) => chain.record(&self.inner.service, &event, &timestamp),
            Err(poisoned) => poisoned.into_inner().record(&self.inner.service, &event, &timestamp),
        };
        if self.inner.stdout {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{record}");
        }
        if let Some(siem) = &self.inner.siem
            && siem.send((event.action().severity(), record)).is_ok()
        {
            self.inner.queued.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wait (at most `timeout`) until every record queued for the SIEM has been
    /// written to it — for short-lived processes such as operator commands.
    /// Returns whether everything went out in time.
    pub async fn flush(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done = self.inner.counters.sent.load(Ordering::SeqCst)
                + self.inner.counters.dropped.load(Ordering::SeqCst)
                >= self.inner.queued.load(Ordering::SeqCst);
            if done || self.inner.siem.is_none() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Delivery counters (records sent, records dropped) for metrics.
    pub fn counters(&self) -> &SinkCounters {
        &self.inner.counters
    }
}
