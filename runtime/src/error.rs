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
    #[error("source `{source_name}` failed: {reason}")]
    Source {
        /// The source's name.
        source_name: String,
        /// What went wrong.
        reason: String,
    },

    /// A sink failed while writing.
    #[error("sink `{sink}` failed: {reason}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        reason: String,
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
