//! Job configuration: a TOML file, overridden by `TRIBUTARY_*` environment variables,
//! overridden by command-line flags, validated before any worker starts.
//!
//! A configuration file has two tables: `[runtime]`, read by [`RuntimeConfig`], and `[job]`,
//! read by the job's own config type. Environment variables name keys with `__` between
//! levels: `TRIBUTARY_WORKERS=4` sets `runtime.workers`, `TRIBUTARY_JOB__READINGS__DEVICES=50`
//! sets `job.readings.devices`. The flag `--set KEY=VALUE` overrides any key.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointConfig;
use crate::error::ConfigError;
use crate::logging::{self, LogFormat, LogSettings};
use crate::time::{Granularity, HumanDuration};

/// The flags every job binary accepts.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// TOML configuration file with `[runtime]` and `[job]` tables.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Worker threads in this process.
    #[arg(long, short = 'w', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,

    /// Number of processes in the cluster (each runs this binary).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub processes: Option<u16>,

    /// This process's index in the cluster, from 0.
    #[arg(long, value_name = "I")]
    pub process_id: Option<u16>,

    /// File with one `host:port` per line, the addresses of processes 0, 1, ...
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,

    /// Log output format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter in `RUST_LOG` syntax, e.g. `info,tributary_connectors=debug`.
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,

    /// Serve Prometheus metrics at `http://ADDR/metrics`: a port (bound on 127.0.0.1) or
    /// `host:port`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,

    /// No progress line and no summary on the terminal (same as `runtime.progress = "never"`).
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Overrides any configuration key, e.g. `--set job.readings.devices=50` (repeatable).
    #[arg(long = "set", short = 'D', value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// When a job draws its progress line and prints its summary on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressMode {
    /// When stderr is a terminal.
    #[default]
    Auto,
    /// Always (a captured stderr then holds the line's redraws).
    Always,
    /// Never.
    Never,
}

/// The `[runtime]` table: how the job runs, independent of what it computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads per process.
    pub workers: usize,
    /// Number of processes.
    pub processes: usize,
    /// This process's index, `0..processes`.
    pub process_id: usize,
    /// Addresses of all processes, one `host:port` per line (required when `processes > 1`).
    pub hostfile: Option<PathBuf>,
    /// Step to which event time is rounded to form timely timestamps (`"100ms"`).
    pub granularity: Granularity,
    /// Log output format.
    pub log_format: LogFormat,
    /// Log filter (`RUST_LOG` syntax); the `RUST_LOG` variable wins when set.
    pub log: String,
    /// How long a process waits for its peers at start-up.
    pub connect_timeout: HumanDuration,
    /// How sources treat idle inputs and inputs that run ahead.
    pub watermarks: WatermarkConfig,
    /// Where this process serves Prometheus metrics (`/metrics`) and `/health`: a port
    /// (bound on 127.0.0.1) or `host:port`. Absent: no endpoint.
    pub metrics_addr: Option<String>,
    /// Where to export `tracing` spans over OpenTelemetry (OTLP over HTTP, protobuf): the
    /// collector's base URL, e.g. `http://127.0.0.1:4318` (spans go to `/v1/traces`). Needs a
    /// build with the `otlp` feature. Absent: no export.
    pub otlp_endpoint: Option<String>,
    /// Periodic checkpoints and recovery (`[runtime.checkpoint]`); off without a `dir`.
    pub checkpoint: CheckpointConfig,
    /// Flow control: sources pause while more records than this wait in the queues between
    /// workers (all processes together), and resume when half have been taken in. `0`: no
    /// limit.
    pub max_in_flight: u64,
    /// The progress line and exit summary on stderr: `auto` (on a terminal), `always`,
    /// `never` (also `--quiet`).
    pub progress: ProgressMode,
}

/// The `[runtime.watermarks]` table: idleness and alignment of every source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatermarkConfig {
    /// A source worker that has emitted nothing for this long is idle: its watermark follows
    /// the slowest active worker of the source instead of holding the job back. Absent: never.
    pub idle_timeout: Option<HumanDuration>,
    /// When every worker of a source is idle, advance its watermark with processing time, so
    /// quiet streams still close their last windows.
    pub idle_advance: bool,
    /// Pause a source worker whose watermark is further than this ahead of the slowest active
    /// worker of any source of the job, so state buffered for the future (windows to come, a
    /// join's faster input) stays bounded.
    pub max_drift: Option<HumanDuration>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: 1,
            processes: 1,
            process_id: 0,
            hostfile: None,
            granularity: Granularity::DEFAULT,
            log_format: LogFormat::Text,
            log: "info".to_owned(),
            connect_timeout: HumanDuration(std::time::Duration::from_secs(60)),
            watermarks: WatermarkConfig::default(),
            metrics_addr: None,
            otlp_endpoint: None,
            checkpoint: CheckpointConfig::default(),
            max_in_flight: crate::flow_control::DEFAULT_MAX_IN_FLIGHT,
            progress: ProgressMode::Auto,
        }
    }
}

impl RuntimeConfig {
    /// What the job's `tracing` subscriber is made of.
    pub fn log_settings(&self) -> LogSettings<'_> {
        LogSettings {
            filter: &self.log,
            format: self.log_format,
            otlp_endpoint: self.otlp_endpoint.as_deref(),
            process_id: self.process_id,
        }
    }

    /// Total number of workers in the job.
    pub fn total_workers(&self) -> usize {
        self.workers * self.processes
    }

    /// Checks the values and reads the hostfile. Returns the peer addresses (empty for a
    /// single process).
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        if self.workers == 0 {
            return Err(ConfigError::new("runtime.workers", "must be at least 1"));
        }
        if self.processes == 0 {
            return Err(ConfigError::new("runtime.processes", "must be at least 1"));
        }
        if self.process_id >= self.processes {
            return Err(ConfigError::new(
                "runtime.process_id",
                format!(
                    "is {} but must be below runtime.processes ({})",
                    self.process_id, self.processes
                ),
            ));
        }
        if let Some(address) = &self.metrics_addr {
            crate::serve::parse_address(address)
                .map_err(|e| ConfigError::new("runtime.metrics_addr", e))?;
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            logging::check_otlp_endpoint(endpoint)
                .map_err(|e| ConfigError::new("runtime.otlp_endpoint", e))?;
        }
        self.checkpoint.validate()?;
        if self.processes == 1 {
            return Ok(Vec::new());
        }
        let Some(path) = &self.hostfile else {
            return Err(ConfigError::new(
                "runtime.hostfile",
                format!("is required with {} processes (one host:port per line)", self.processes),
            ));
        };
        read_hostfile(path, self.processes)
    }
}

/// Reads `processes` addresses from a hostfile; blank lines and `#` comments are skipped.
fn read_hostfile(path: &Path, processes: usize) -> Result<Vec<String>, ConfigError> {
    let key = || format!("runtime.hostfile ({})", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(key(), e.to_string()))?;
    let mut addresses = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Only the form is checked here: names are resolved when the processes connect, so
        // a peer whose name appears late (a Kubernetes pod) is waited for.
        let port = line.rsplit_once(':').and_then(|(host, port)| {
            (!host.is_empty()).then_some(())?;
            port.parse::<u16>().ok()
        });
        if port.is_none() {
            return Err(ConfigError::new(
                format!("{}:{}", path.display(), number + 1),
                format!("`{line}` is not a host:port address"),
            ));
        }
        addresses.push(line.to_owned());
        if addresses.len() == processes {
            return Ok(addresses);
        }
    }
    Err(ConfigError::new(
        key(),
        format!("has {} addresses but {processes} processes were asked for", addresses.len()),
    ))
}

/// A job's whole configuration after every layer is applied.
#[derive(Debug, Clone)]
pub struct Config<C> {
    /// The `[runtime]` table.
    pub runtime: RuntimeConfig,
    /// The `[job]` table, in the job's own type.
    pub job: C,
    /// Peer addresses read from the hostfile (empty for one process).
    pub addresses: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document<C> {
    #[serde(default)]
    runtime: RuntimeConfig,
    #[serde(default)]
    job: C,
}

impl<C: DeserializeOwned + Serialize + Default> Config<C> {
    /// Loads defaults, the TOML file, `TRIBUTARY_*` variables and flags, in that order of
    /// precedence, and validates the `[runtime]` table.
    ///
    /// Every layer merges into the complete defaults, so overriding one nested key keeps the
    /// job's own defaults for its siblings.
    pub fn load(args: &RunArgs) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::default("runtime", RuntimeConfig::default()))
            .merge(Serialized::default("job", C::default()));
        if let Some(path) = &args.config {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("`{}` is not a readable file", path.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("TRIBUTARY_").map(|key| {
            let key = key.as_str().to_ascii_lowercase().replace("__", ".");
            if key.starts_with("job.") || key.starts_with("runtime.") {
                key.into()
            } else {
                format!("runtime.{key}").into()
            }
        }));
        figment = merge_flags(figment, args)?;
        let doc: Document<C> = figment.extract().map_err(figment_error)?;
        let addresses = doc.runtime.validate()?;
        Ok(Config { runtime: doc.runtime, job: doc.job, addresses })
    }
}

fn merge_flags(mut figment: Figment, args: &RunArgs) -> Result<Figment, ConfigError> {
    let flag = |figment: Figment, key: &str, value: Option<u16>| match value {
        Some(v) => figment.merge(Serialized::default(key, v)),
        None => figment,
    };
    figment = flag(figment, "runtime.workers", args.workers);
    figment = flag(figment, "runtime.processes", args.processes);
    figment = flag(figment, "runtime.process_id", args.process_id);
    if let Some(path) = &args.hostfile {
        figment = figment.merge(Serialized::default("runtime.hostfile", path));
    }
    if let Some(format) = args.log_format {
        figment = figment.merge(Serialized::default("runtime.log_format", format));
    }
    if let Some(log) = &args.log {
        figment = figment.merge(Serialized::default("runtime.log", log));
    }
    if let Some(address) = &args.metrics_addr {
        figment = figment.merge(Serialized::default("runtime.metrics_addr", address));
    }
    for assignment in &args.overrides {
        let (key, value) = parse_override(assignment)?;
        figment = figment.merge(Serialized::default(&key, value));
    }
    if args.quiet {
        figment = figment.merge(Serialized::default("runtime.progress", ProgressMode::Never));
    }
    Ok(figment)
}

/// Parses `key=value`; the value is read as a TOML value (`5`, `true`, `"x"`, `[1, 2]`) and
/// falls back to a plain string.
fn parse_override(assignment: &str) -> Result<(String, toml_value::Value), ConfigError> {
    let Some((key, value)) = assignment.split_once('=') else {
        return Err(ConfigError::new(
            "--set",
            format!("`{assignment}` is not of the form KEY=VALUE"),
        ));
    };
    let key = key.trim();
    let valid = |part: &str| {
        !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !key.split('.').all(valid) {
        return Err(ConfigError::new("--set", format!("`{key}` is not a dotted key path")));
    }
    Ok((key.to_owned(), toml_value::parse(value.trim())))
}

/// TOML values for `--set`, through figment's own TOML support.
mod toml_value {
    pub use figment::value::Value;

    pub fn parse(text: &str) -> Value {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(&format!("v = {text}")))
            .extract_inner::<Value>("v")
            .unwrap_or_else(|_| Value::from(text.to_owned()))
    }
}

/// One readable message per error: the key path, where the value came from, and why.
fn figment_error(errors: figment::Error) -> ConfigError {
    let mut first: Option<ConfigError> = None;
    let mut more = 0;
    for e in errors {
        let mut key = e.path.join(".");
        if let Some(name) = e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            key = if key.is_empty() { name.to_string() } else { format!("{key} (in {name})") };
        } else if let Some(m) = &e.metadata {
            if m.name.contains("environment") {
                key = format!("{key} (from {})", m.name);
            }
        }
        if key.is_empty() {
            key = "configuration".into();
        }
        if first.is_none() {
            first = Some(ConfigError::new(key, e.kind.to_string()));
        } else {
            more += 1;
        }
    }
    let mut error = first.unwrap_or_else(|| ConfigError::new("configuration", "unreadable"));
    if more > 0 {
        error.reason.push_str(&format!(" (and {more} more errors)"));
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct JobCfg {
        devices: u32,
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        a: u32,
        b: u32,
    }

    /// The job's defaults differ from `Inner::default()`, as a job's often do.
    impl Default for JobCfg {
        fn default() -> Self {
            JobCfg { devices: 1, name: String::new(), inner: Inner { a: 10, b: 20 } }
        }
    }

    /// Loads with exactly the given `TRIBUTARY_*` variables set (figment's jail restores the
    /// environment afterwards and serialises the tests that use it).
    #[allow(clippy::result_large_err)] // figment's jail API returns its own error type
    fn load(args: &RunArgs, env: &[(&str, &str)]) -> Result<Config<JobCfg>, ConfigError> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in env {
                jail.set_env(format!("TRIBUTARY_{k}"), v);
            }
            out = Some(Config::<JobCfg>::load(args));
            Ok(())
        });
        out.expect("the jail ran the closure")
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_then_file_then_env_then_flags() {
        let f = file("[runtime]\nworkers = 3\n[job]\ndevices = 7\nname = \"a\"\n");
        let mut args = RunArgs { config: Some(f.path().into()), ..Default::default() };
        let c = load(&args, &[]).unwrap();
        assert_eq!((c.runtime.workers, c.job.devices, c.job.name.as_str()), (3, 7, "a"));

        let c = load(&args, &[("WORKERS", "5"), ("JOB__DEVICES", "9")]).unwrap();
        assert_eq!((c.runtime.workers, c.job.devices), (5, 9));

        args.workers = Some(2);
        args.overrides = vec!["job.devices=11".into(), "job.name=plain words".into()];
        let c = load(&args, &[("WORKERS", "5")]).unwrap();
        assert_eq!((c.runtime.workers, c.job.devices, c.job.name.as_str()), (2, 11, "plain words"));
    }

    #[test]
    fn a_nested_override_keeps_the_job_defaults_of_its_siblings() {
        let args = RunArgs { overrides: vec!["job.inner.a=1".into()], ..Default::default() };
        let c = load(&args, &[]).unwrap();
        assert_eq!(c.job.inner, Inner { a: 1, b: 20 });
        assert_eq!(c.job.devices, 1);
    }

    #[test]
    fn errors_name_the_key() {
        let f = file("[job]\ndevices = \"many\"\n");
        let args = RunArgs { config: Some(f.path().into()), ..Default::default() };
        let e = load(&args, &[]).unwrap_err();
        assert!(e.key.starts_with("job.devices"), "{e}");
        assert!(e.reason.contains("invalid type"), "{e}");

        let f = file("[runtime]\nwrokers = 2\n");
        let args = RunArgs { config: Some(f.path().into()), ..Default::default() };
        let e = load(&args, &[]).unwrap_err();
        assert!(e.to_string().contains("unknown field: found `wrokers`"), "{e}");

        let f = file("[runtime\n");
        let args = RunArgs { config: Some(f.path().into()), ..Default::default() };
        let e = load(&args, &[]).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");

        let e = load(&RunArgs::default(), &[("WORKERS", "lots")]).unwrap_err();
        assert!(e.key.starts_with("runtime.workers"), "{e}");

        let args = RunArgs { overrides: vec!["job.devices".into()], ..Default::default() };
        assert_eq!(load(&args, &[]).unwrap_err().key, "--set");

        let args = RunArgs { config: Some("/nonexistent/x.toml".into()), ..Default::default() };
        assert_eq!(load(&args, &[]).unwrap_err().key, "--config");
    }

    #[test]
    fn cluster_settings_are_checked() {
        let args = RunArgs { processes: Some(2), ..Default::default() };
        assert_eq!(load(&args, &[]).unwrap_err().key, "runtime.hostfile");

        let args = RunArgs { processes: Some(2), process_id: Some(2), ..Default::default() };
        assert_eq!(load(&args, &[]).unwrap_err().key, "runtime.process_id");

        let hosts = file("# two processes\n127.0.0.1:4000\n\n127.0.0.1:4001\n");
        let args = RunArgs {
            processes: Some(2),
            process_id: Some(1),
            hostfile: Some(hosts.path().into()),
            ..Default::default()
        };
        let c = load(&args, &[]).unwrap();
        assert_eq!(c.addresses, vec!["127.0.0.1:4000", "127.0.0.1:4001"]);

        let bad = file("127.0.0.1:4000\nnot an address\n");
        let args =
            RunArgs { processes: Some(2), hostfile: Some(bad.path().into()), ..Default::default() };
        let e = load(&args, &[]).unwrap_err();
        assert!(e.key.ends_with(":2"), "{e}");

        // Names are resolved when the processes connect (a pod's appears once it runs).
        let later = file("job-0.job-peers.default.svc.cluster.local:2101\n[::1]:2101\n");
        let args = RunArgs {
            processes: Some(2),
            hostfile: Some(later.path().into()),
            ..Default::default()
        };
        assert_eq!(load(&args, &[]).unwrap().addresses.len(), 2);
        for line in [":2101", "host:port", "host"] {
            let bad = file(&format!("{line}\n127.0.0.1:1\n"));
            let hostfile = Some(bad.path().into());
            let args = RunArgs { processes: Some(2), hostfile, ..Default::default() };
            assert!(load(&args, &[]).unwrap_err().key.ends_with(":1"), "{line}");
        }
    }
}
