//! `iot-stats`: per-device statistics of sensor readings over tumbling event-time windows:
//! count, min, max, mean and p95.
//!
//! The main job: with no configuration it generates 600 000 readings of 100 devices (ten
//! minutes of event time, up to 2 s out of order) and prints one JSON line per device and
//! minute. With `job.input` set it reads readings from files or Kafka instead; records that do
//! not decode are reported with `file:line` or `topic/partition@offset` and skipped.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::prelude::*;

/// The `[job]` table of `iot-stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IotStatsConfig {
    /// The sensor-reading generator, used unless `input` names files.
    pub readings: IotConfig,
    /// Read sensor readings (JSON or CSV with the fields of [`SensorReading`]) from files or
    /// Kafka instead of generating them: `{ kind = "file", path = "in/" }` or
    /// `{ kind = "kafka", brokers = "127.0.0.1:9092", topics = ["readings"] }`.
    pub input: Option<Input>,
    /// Window length.
    pub window: HumanDuration,
    /// How long a window accepts late readings after it fired.
    pub allowed_lateness: HumanDuration,
    /// Where the statistics go.
    pub output: Output,
    /// Where readings that cannot be decoded go (besides the log and the
    /// `tributary_dead_letters_total` counter), e.g. `{ kind = "file", path = "dead/" }`.
    pub dead_letters: Option<Output>,
}

impl Default for IotStatsConfig {
    fn default() -> Self {
        let pace = Pace {
            events: Some(600_000),
            max_disorder: HumanDuration(Duration::from_secs(2)),
            ..Pace::default()
        };
        IotStatsConfig {
            readings: IotConfig { devices: 100, pace, ..IotConfig::default() },
            input: None,
            window: HumanDuration(Duration::from_secs(60)),
            allowed_lateness: HumanDuration(Duration::ZERO),
            output: Output::Stdout,
            dead_letters: None,
        }
    }
}

/// One device's statistics for one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStats {
    /// The device.
    pub device: u32,
    /// What it measures.
    pub sensor: SensorKind,
    /// Window start, RFC 3339.
    pub window_start: String,
    /// Window end (exclusive), RFC 3339.
    pub window_end: String,
    /// Number of readings.
    pub count: u64,
    /// Smallest reading.
    pub min: f64,
    /// Largest reading.
    pub max: f64,
    /// Mean reading, rounded to 4 decimals.
    pub mean: f64,
    /// 95th percentile by nearest rank (the smallest reading with at least 95 % of the
    /// window's readings at or below it, as SQL's `percentile_disc(0.95)`).
    pub p95: f64,
    /// 0 when the window first fired; higher for corrections by late readings.
    pub revision: u32,
}

impl DeviceStats {
    fn from_result(r: WindowResult<(u32, SensorKind), (Summary, Option<f64>)>) -> Self {
        let (summary, p95) = r.value;
        DeviceStats {
            device: r.key.0,
            sensor: r.key.1,
            window_start: format_event_time(r.window.start),
            window_end: format_event_time(r.window.end),
            count: summary.count,
            min: summary.min,
            max: summary.max,
            mean: crate::round(summary.mean(), 4),
            // A window has at least one reading.
            p95: p95.unwrap_or(f64::NAN),
            revision: r.revision,
        }
    }
}

/// Where the readings of the IoT jobs come from: the generator, or the configured input.
pub(crate) enum Readings {
    Generator(IotReadings),
    Input(Box<AnySource<SensorReading>>),
}

impl Readings {
    /// The configured input (`job.input`) if there is one, else the generator
    /// (`job.readings`).
    pub(crate) fn build(generator: &IotConfig, input: Option<&Input>) -> Result<Self, ConfigError> {
        Ok(match input {
            Some(input) => Readings::Input(Box::new(
                input.build("readings").map_err(|e| e.within("job.input"))?,
            )),
            None => Readings::Generator(
                IotReadings::new(generator).map_err(|e| e.within("job.readings"))?,
            ),
        })
    }

    /// The readings' stream in `flow`.
    pub(crate) fn read<'scope>(&self, flow: &mut Flow<'scope>) -> Events<'scope, SensorReading> {
        match self {
            Readings::Input(source) => source.read(flow),
            Readings::Generator(generator) => flow.source(generator),
        }
    }
}

/// Runs the job with the process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the job with the given arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    Job::<IotStatsConfig>::new("iot-stats").run_from(args, |config| {
        let job = &config.job;
        let input = Readings::build(&job.readings, job.input.as_ref())?;
        // Keyed by device and window, so a compacted topic keeps the latest revision.
        let output =
            job.output.build("iot-stats").map_err(|e| e.within("job.output"))?.keyed(
                |s: &DeviceStats| Some(format!("{}@{}", s.device, s.window_start).into_bytes()),
            );
        let dead_letters = match &job.dead_letters {
            Some(o) => Some(o.build("dead-letters").map_err(|e| e.within("job.dead_letters"))?),
            None => None,
        };
        let window = Tumbling::new(job.window.0);
        let lateness = job.allowed_lateness.0;
        Ok(move |flow: &mut Flow<'_>| {
            input
                .read(flow)
                .key_by(|r: &SensorReading| (r.device, r.sensor))
                .window(window)
                .allowed_lateness(lateness)
                .aggregate((
                    Stats(|r: &SensorReading| r.value),
                    Quantile::new(0.95, |r: &SensorReading| r.value),
                ))
                .map(DeviceStats::from_result)
                .sink_to(&output);
            if let (Some(sink), Some(letters)) = (&dead_letters, flow.take_dead_letters()) {
                letters.sink_to(sink);
            }
        })
    })
}
