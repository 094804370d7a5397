//! The runtime's error type.

use std::path::PathBuf;

/// Runtime errors, by whose fault they are: the user's (configuration), the outside world's
/// (I/O, peers), or ours (a bug).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job's configuration or command line is invalid. Reported before any worker starts;
    /// the process exits with code 2.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),

    /// Reading or writing a file failed.
    #[error("{op} `{path}`: {source}", path = path.display())]
    Io {
        /// What was being done, e.g. "cannot open".
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A source failed while reading (not a bad record: those go to the dead-letter output).
    #[error("source `{source_name}` failed: {cause}")]
    Source {
        /// The source's name.
        source_name: String,
        /// What went wrong.
        #[source]
        cause: BoxError,
        /// Whether running the job again may get past it (see [`Error::is_retryable`]).
        retryable: bool,
    },

    /// A sink failed while writing.
    #[error("sink `{sink}` failed: {cause}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        #[source]
        cause: BoxError,
        /// Whether running the job again may get past it (see [`Error::is_retryable`]).
        retryable: bool,
    },

    /// Timely could not set up its workers or its connections to peer processes.
    #[error("cannot start the workers: {0}")]
    Startup(String),

    /// Writing or reading a checkpoint failed, or a checkpoint cannot be restored.
    #[error("checkpoint: {0}")]
    Checkpoint(String),

    /// A worker thread panicked. This is a bug in Tributary or in the job's code.
    #[error("worker {worker} panicked: {message} (this is a bug, please report it)")]
    WorkerPanic {
        /// The global index of the worker.
        worker: usize,
        /// The panic message.
        message: String,
    },
}

/// The cause of a source's or sink's failure, as the connector reported it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    /// Whether running the job again (from its last checkpoint) may get past this failure: a
    /// broker that was down, a connection that broke, a full disk. Not for an invalid
    /// configuration, nor for what a connector knows will fail the same way again (a topic
    /// that does not exist, a record its sink cannot encode, a checkpoint whose positions do
    /// not fit the input). The process exits with [`EXIT_FATAL`](crate::EXIT_FATAL) then, and
    /// `tributary run` does not restart it.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Config(_) => false,
            Error::Source { retryable, .. } | Error::Sink { retryable, .. } => *retryable,
            Error::Io { .. }
            | Error::Startup(_)
            | Error::Checkpoint(_)
            | Error::WorkerPanic { .. } => true,
        }
    }
}

/// A configuration error: which key (or flag, or file) is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// The configuration key path (`job.readings.rate`), flag (`--workers`) or file concerned.
    pub key: String,
    /// Why the value is not acceptable.
    pub reason: String,
}

impl ConfigError {
    /// A configuration error at `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { key: key.into(), reason: reason.into() }
    }

    /// Prefixes the key with `parent.`, so nested configs can report full paths.
    pub fn within(mut self, parent: &str) -> Self {
        if !parent.is_empty() {
            self.key = format!("{parent}.{}", self.key);
        }
        self
    }
}

/// Adds the path to an I/O error's message, keeping its kind.
pub fn io_error_at(path: &std::path::Path, error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("`{}`: {error}", path.display()))
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
