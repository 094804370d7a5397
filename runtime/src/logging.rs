//! Sets up `tracing` for a job process: text or JSON lines on stderr, filtered like `RUST_LOG`,
//! and, in builds with the `otlp` feature, spans exported to an OpenTelemetry collector.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::error::ConfigError;

/// A layer of the process's subscriber.
type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Keeps the span exporter of [`init`] running; dropping it sends the spans still buffered.
#[must_use = "spans still buffered are lost unless the guard lives until the job ends"]
#[derive(Default)]
pub struct LogGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                tracing::warn!(%error, "OpenTelemetry export: spans lost at shutdown");
            }
        }
    }
}

/// Log output format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What [`init`] installs, from the `runtime.*` configuration.
#[derive(Debug, Clone, Copy)]
pub struct LogSettings<'a> {
    /// `runtime.log`: a `tracing` filter (`info`, `tributary=debug,warn`).
    pub filter: &'a str,
    /// `runtime.log_format`.
    pub format: LogFormat,
    /// `runtime.otlp_endpoint`: where spans are exported over OTLP, if anywhere.
    pub otlp_endpoint: Option<&'a str>,
    /// This process's index in the cluster, a resource attribute of exported spans.
    pub process_id: usize,
}

/// Installs the global `tracing` subscriber for job `job`. `RUST_LOG`, when set, wins over
/// the configured filter. Calling it twice is harmless (the second call changes nothing and
/// exports nothing).
pub fn init(config: LogSettings<'_>, job: &str) -> Result<LogGuard, ConfigError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec)
            .map_err(|e| ConfigError::new("RUST_LOG", format!("`{spec}`: {e}")))?,
        _ => EnvFilter::try_new(config.filter)
            .map_err(|e| ConfigError::new("runtime.log", format!("`{}`: {e}", config.filter)))?,
    };
    // Colours only for a person at a terminal (not in files, pipes or `tributary run`).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer().with_writer(Stderr).with_ansi(ansi);
    let fmt: BoxedLayer = match config.format {
        LogFormat::Text => fmt.with_target(false).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).boxed(),
    };
    let mut guard = LogGuard::default();
    let mut layers = vec![fmt];
    if let Some(endpoint) = config.otlp_endpoint {
        layers.push(otlp_layer(endpoint, job, config.process_id, &mut guard)?);
    }
    // An error only means a subscriber is already installed (tests, embedding programs).
    if tracing_subscriber::registry().with(layers).with(filter).try_init().is_err() {
        return Ok(LogGuard::default());
    }
    Ok(guard)
}

/// Checks a `runtime.otlp_endpoint` value: an `http://` or `https://` URL, in a build that
/// can export.
pub(crate) fn check_otlp_endpoint(endpoint: &str) -> Result<(), String> {
    if !cfg!(feature = "otlp") {
        return Err("this build cannot export spans: build the job with the `otlp` feature \
                    (cargo build --features otlp)"
            .to_owned());
    }
    let rest = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(format!("`{endpoint}` is not a URL like http://127.0.0.1:4318")),
    }
}

/// The OpenTelemetry layer: spans batched by the SDK's own thread and posted to
/// `{endpoint}/v1/traces` as OTLP protobuf, with the job as the service name.
#[cfg(feature = "otlp")]
fn otlp_layer(
    endpoint: &str,
    job: &str,
    process: usize,
    guard: &mut LogGuard,
) -> Result<BoxedLayer, ConfigError> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry::KeyValue;
    use opentelemetry_otlp::{Protocol, WithExportConfig};

    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| ConfigError::new("runtime.otlp_endpoint", format!("`{endpoint}`: {e}")))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(job.to_owned())
        .with_attribute(KeyValue::new("tributary.process", process as i64))
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("tributary"));
    guard.provider = Some(provider);
    Ok(layer.boxed())
}

#[cfg(not(feature = "otlp"))]
fn otlp_layer(
    endpoint: &str,
    _job: &str,
    _process: usize,
    _guard: &mut LogGuard,
) -> Result<BoxedLayer, ConfigError> {
    // Refused by the configuration check already; kept for callers that skip it.
    Err(ConfigError::new(
        "runtime.otlp_endpoint",
        check_otlp_endpoint(endpoint).err().unwrap_or_default(),
    ))
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

/// Enters a `debug` span `activation` for one activation of an operator on a worker; drop
/// the guard when the activation ends. Costs one level check when `debug` is off.
#[inline]
pub fn activation(operator: &str, worker: usize) -> tracing::span::EnteredSpan {
    tracing::debug_span!("activation", operator, worker).entered()
}
