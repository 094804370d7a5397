//! Sets up `tracing` for a job process: text or JSON lines on stderr, filtered like `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, RuntimeConfig};
use crate::error::ConfigError;

/// Installs the global `tracing` subscriber. `RUST_LOG`, when set, wins over the configured
/// filter. Calling it twice is harmless (the second call changes nothing).
pub fn init(config: &RuntimeConfig) -> Result<(), ConfigError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec)
            .map_err(|e| ConfigError::new("RUST_LOG", format!("`{spec}`: {e}")))?,
        _ => EnvFilter::try_new(&config.log)
            .map_err(|e| ConfigError::new("runtime.log", format!("`{}`: {e}", config.log)))?,
    };
    // Colours only for a person at a terminal (not in files, pipes or `tributary run`).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(Stderr).with_ansi(ansi);
    let result = match config.log_format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    // An error only means a subscriber is already installed (tests, embedding programs).
    drop(result);
    Ok(())
}

/// Stderr, locked for each log line, with the progress line (if shown) erased first; the
/// reporter draws it again within a second.
struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = std::io::StderrLock<'static>;

    fn make_writer(&'a self) -> Self::Writer {
        let mut stderr = std::io::stderr().lock();
        crate::status::clear_line(&mut stderr);
        stderr
    }
}
