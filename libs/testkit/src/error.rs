use std::path::PathBuf;

/// Why a piece of test infrastructure could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A required program is not installed; the message says how to get it.
    #[error("{program} not found: {hint}")]
    Missing {
        /// The program.
        program: &'static str,
        /// How to install it.
        hint: &'static str,
    },
    /// A program ran but failed.
    #[error("{what} failed: {detail}")]
    Failed {
        /// What was attempted.
        what: String,
        /// Output or reason (test infrastructure only; never secrets).
        detail: String,
    },
    /// A server did not become ready in time.
    #[error("{what} not ready after {seconds} s; log: {log}")]
    NotReady {
        /// The server.
        what: &'static str,
        /// How long we waited.
        seconds: u64,
        /// Where its log is.
        log: PathBuf,
    },
    /// File or process I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation.
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A database call.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// An HTTP call.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
}

impl TestkitError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    pub(crate) fn failed(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Failed { what: what.into(), detail: detail.into() }
    }
}
