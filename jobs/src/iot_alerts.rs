//! `iot-alerts`: alerts on sensor readings, enriched from a device registry.
//!
//! Three kinds of alert, each one JSON record (`"kind"` says which):
//!
//! - **`anomaly`**: a reading more than `sigmas` standard deviations from its device's
//!   baseline, the mean and deviation of the device's readings over the `baseline` window
//!   (ten minutes) that ends where the reading's `baseline_step` (minute) starts. Baselines are
//!   a sliding window aggregate ([`Moments`]); each reading meets its baseline in an as-of
//!   join. A baseline of fewer than `min_baseline` readings raises nothing.
//! - **`out_of_range`**: a reading outside the `[low, high]` range of its device's registry
//!   entry.
//! - **`offline`**: a device that sent nothing for `offline_after`, found by a session window
//!   per device that closes after that gap. The alert's `ts` is the moment the gap was
//!   reached (`last_seen + offline_after`). At the end of a bounded input every device's last
//!   session closes too (as Flink's final watermark closes all windows), so a bounded run
//!   ends with one `offline` alert per device, dated after the input's last reading.
//!
//! Every alert carries the device's site and model from the registry, a table (stream–table
//! join at the reading's event time) filled from the generator's devices, from JSON-lines
//! files of [`DeviceInfo`], or from a compacted Kafka topic (key: the device id; value: a
//! JSON [`DeviceInfo`], or no value to delete the device). Readings come from the generator
//! (100 devices, a tenth of them going quiet for 5 minutes every half hour) or from
//! `job.input`, as in `iot-stats`.

use std::ffi::OsString;
use std::process::ExitCode;

use timely::dataflow::operators::Concat;
use tributary_connectors::format::DecodeError;
use tributary_connectors::generator::{DeviceInfo, DeviceRegistry};
use tributary_connectors::kafka::{ChangelogDecoder, ChangelogRecord, Decode, RawRecord};
use tributary_runtime::{EventTime, Events as EventStream};

use crate::iot_stats::Readings;
use crate::prelude::*;
use crate::round;

/// The `[job]` table of `iot-alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IotAlertsConfig {
    /// The sensor-reading generator, used unless `input` is set.
    pub readings: IotConfig,
    /// Read sensor readings from files or Kafka instead (as in `iot-stats`).
    pub input: Option<Input>,
    /// The device registry: JSON-lines files of [`DeviceInfo`] (`{ kind = "file", path =
    /// "devices.jsonl" }`, each line an entry in force from its `since`), or a compacted Kafka
    /// topic keyed by device id (`{ kind = "kafka", ... }`, the Kafka timestamp is when a
    /// change takes effect). Absent: the generator's devices.
    pub registry: Option<Input>,
    /// Length of the baseline window.
    pub baseline: HumanDuration,
    /// How often the baseline moves on: a reading is compared with the baseline window that
    /// ends where its step starts.
    pub baseline_step: HumanDuration,
    /// How many standard deviations from the baseline mean make an anomaly.
    pub sigmas: f64,
    /// The fewest readings a baseline needs to judge a reading.
    pub min_baseline: u64,
    /// How long a device may be silent before it is reported offline.
    pub offline_after: HumanDuration,
    /// Where the alerts go.
    pub output: Output,
    /// Where records that cannot be decoded go (besides the log and the
    /// `tributary_dead_letters_total` counter).
    pub dead_letters: Option<Output>,
}

impl Default for IotAlertsConfig {
    fn default() -> Self {
        let minutes = |m: u64| HumanDuration(Duration::from_secs(60 * m));
        let readings = IotConfig {
            devices: 100,
            quiet_devices: 0.1,
            quiet_for: minutes(5),
            quiet_every: minutes(30),
            pace: Pace {
                // 40 minutes of one reading per device and second.
                events: Some(240_000),
                events_per_second: 100.0,
                max_disorder: HumanDuration(Duration::from_secs(2)),
                ..Pace::default()
            },
            ..IotConfig::default()
        };
        IotAlertsConfig {
            readings,
            input: None,
            registry: None,
            baseline: minutes(10),
            baseline_step: minutes(1),
            sigmas: 4.0,
            min_baseline: 30,
            offline_after: minutes(2),
            output: Output::Stdout,
            dead_letters: None,
        }
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A reading far from its device's baseline.
    Anomaly,
    /// A reading outside its device's registered range.
    OutOfRange,
    /// A device that went silent.
    Offline,
}

/// One alert. Fields that do not apply to its kind are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What the alert is about.
    pub kind: AlertKind,
    /// The device.
    pub device: u32,
    /// Its site, from the registry (absent if the device is not registered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<u32>,
    /// Its model, from the registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The reading's time, or for `offline` the time the device had been silent for
    /// `offline_after`; RFC 3339.
    pub ts: String,
    /// The reading (`anomaly`, `out_of_range`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The baseline's mean, rounded to 4 decimals (`anomaly`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// The baseline's standard deviation, rounded to 4 decimals (`anomaly`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// How many standard deviations the reading is from the mean, signed, 2 decimals
    /// (`anomaly`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigmas: Option<f64>,
    /// The registered range (`out_of_range`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// The registered range (`out_of_range`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// The device's last reading before it went silent (`offline`), RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

impl Alert {
    fn new(kind: AlertKind, device: u32, info: Option<&DeviceInfo>, ts: EventTime) -> Alert {
        Alert {
            kind,
            device,
            site: info.map(|i| i.site),
            model: info.map(|i| i.model.clone()),
            ts: format_event_time(ts),
            value: None,
            mean: None,
            std: None,
            sigmas: None,
            low: None,
            high: None,
            last_seen: None,
        }
    }
}

/// A device's baseline: the moments of its readings in the window that ends at `from`, in
/// force for the readings of the step that starts there.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Baseline {
    from: EventTime,
    moments: MomentsOut,
}

impl Timestamped for Baseline {
    fn event_time(&self) -> EventTime {
        self.from
    }
}

impl Baseline {
    fn key(&self) -> (EventTime, u64, u64, u64) {
        let m = &self.moments;
        (self.from, m.count, m.mean.to_bits(), m.std.to_bits())
    }
}

impl PartialEq for Baseline {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Baseline {}

impl PartialOrd for Baseline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Baselines are kept in an arrangement (the as-of join's right side), which needs a total
/// order; any one will do, two baselines of a device never share a `from`.
impl Ord for Baseline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// A change of the registry read from a compacted topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RegistryUpdate {
    device: u32,
    change: Change<DeviceInfo>,
}

impl Timestamped for RegistryUpdate {
    fn event_time(&self) -> EventTime {
        self.change.ts
    }
}

/// Decodes a compacted registry topic: the key is the device id, the value a
/// [`DeviceInfo`] of the same device (in the topic's format), or nothing (a tombstone) to
/// delete it.
#[derive(Clone)]
struct RegistryDecoder(ChangelogDecoder);

impl Decode<RegistryUpdate> for RegistryDecoder {
    fn decode(&mut self, record: RawRecord<'_>) -> Result<RegistryUpdate, DecodeError> {
        let c: ChangelogRecord<DeviceInfo> = self.0.decode(record)?;
        let device = c.key.parse().map_err(|_| format!("key `{}` is not a device id", c.key))?;
        if let Some(info) = &c.value {
            if info.device != device {
                return Err(
                    format!("key says device {device}, value device {}", info.device).into()
                );
            }
        }
        Ok(RegistryUpdate { device, change: Change { value: c.value, ts: c.ts } })
    }
}

/// Where the registry comes from.
enum Registry {
    Generator(DeviceRegistry),
    File(FileSource<DeviceInfo>),
    Kafka(KafkaSource<RegistryUpdate>),
}

impl Registry {
    fn build(readings: &Readings, input: Option<&Input>) -> Result<Self, ConfigError> {
        let within = |e: ConfigError| e.within("job.registry");
        Ok(match (input, readings) {
            (Some(Input::File(c)), _) => Registry::File(FileSource::new("registry", c).map_err(within)?),
            (Some(Input::Kafka(c)), _) => Registry::Kafka(
                {
                    let decoder = RegistryDecoder(ChangelogDecoder::new(c).map_err(within)?);
                    KafkaSource::with_decoder("registry", c, decoder).map_err(within)?
                },
            ),
            (None, Readings::Generator(g)) => Registry::Generator(DeviceRegistry::of(g)),
            (None, Readings::Input(_)) => {
                return Err(ConfigError::new(
                    "job.registry",
                    "is needed when job.input is set (the generator's registry only knows generated devices)",
                ))
            }
        })
    }

    /// The registry's changes, keyed by device.
    fn read<'scope>(
        &self,
        flow: &mut Flow<'scope>,
    ) -> EventStream<'scope, (u32, Change<DeviceInfo>)> {
        let upsert = |i: DeviceInfo| (i.device, Change { ts: i.since, value: Some(i) });
        match self {
            Registry::Generator(g) => flow.source(g).map(upsert),
            Registry::File(f) => flow.source(f).map(upsert),
            Registry::Kafka(k) => flow.source(k).map(|u| (u.device, u.change)),
        }
    }
}

/// Runs the job with the process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the job with the given arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    Job::<IotAlertsConfig>::new("iot-alerts").run_from(args, |config| {
        let job = &config.job;
        let readings = Readings::build(&job.readings, job.input.as_ref())?;
        let registry = Registry::build(&readings, job.registry.as_ref())?;
        if !(job.sigmas.is_finite() && job.sigmas > 0.0) {
            return Err(ConfigError::new("job.sigmas", "must be a positive number"));
        }
        let (baseline, step) = (job.baseline.0, job.baseline_step.0);
        if step.is_zero() || baseline < step || baseline.as_millis() % step.as_millis() != 0 {
            return Err(ConfigError::new(
                "job.baseline_step",
                "must be positive and divide job.baseline",
            ));
        }
        if job.offline_after.0.is_zero() {
            return Err(ConfigError::new("job.offline_after", "must be positive"));
        }
        // Keyed by device, so that a device's alerts stay in order in one partition.
        let output = job
            .output
            .build("iot-alerts")
            .map_err(|e| e.within("job.output"))?
            .keyed(|a: &Alert| Some(a.device.to_string().into_bytes()));
        let dead_letters = match &job.dead_letters {
            Some(o) => Some(o.build("dead-letters").map_err(|e| e.within("job.dead_letters"))?),
            None => None,
        };
        let (sigmas, min_baseline, gap) = (job.sigmas, job.min_baseline, job.offline_after.0);
        // A baseline serves the readings of the step that starts at its window's end.
        let staleness = step - Duration::from_millis(1);
        Ok(move |flow: &mut Flow<'_>| {
            let table = Keyed::new(registry.read(flow)).into_table("registry");
            let readings = readings.read(flow);

            let enriched =
                readings.clone().key_by(|r: &SensorReading| r.device).join_table(&table).join();
            let out_of_range = enriched.clone().flat_map(|e| {
                let (r, info) = (&e.left, e.right.as_ref()?);
                if info.low <= r.value && r.value <= info.high {
                    return None;
                }
                let mut alert = Alert::new(AlertKind::OutOfRange, r.device, Some(info), r.ts);
                (alert.value, alert.low, alert.high) =
                    (Some(r.value), Some(info.low), Some(info.high));
                Some(alert)
            });

            let baselines = readings
                .clone()
                .key_by(|r: &SensorReading| r.device)
                .window(Sliding::new(baseline, step))
                .aggregate(Moments(|r: &SensorReading| r.value))
                .map(|w| (w.key, Baseline { from: w.window.end, moments: w.value }));
            let anomalies = enriched
                .key_by(|e| e.key)
                .asof_join(Keyed::new(baselines))
                .max_staleness(staleness)
                .inner()
                .join()
                .flat_map(move |j| {
                    let (r, info) = (&j.left.left, j.left.right.as_ref());
                    let m = j.right?.moments;
                    let distance = (r.value - m.mean) / m.std;
                    if m.count < min_baseline || m.std <= 0.0 || distance.abs() <= sigmas {
                        return None;
                    }
                    let mut alert = Alert::new(AlertKind::Anomaly, r.device, info, r.ts);
                    alert.value = Some(r.value);
                    (alert.mean, alert.std) = (Some(round(m.mean, 4)), Some(round(m.std, 4)));
                    alert.sigmas = Some(round(distance, 2));
                    Some(alert)
                });

            let offline = readings
                .key_by(|r: &SensorReading| r.device)
                .session_window(gap)
                .aggregate(Max(|r: &SensorReading| r.ts))
                .key_by(|s| s.key)
                .join_table(&table)
                .join()
                .map(|e| {
                    let session = &e.left;
                    let mut alert = Alert::new(
                        AlertKind::Offline,
                        session.key,
                        e.right.as_ref(),
                        session.window.end,
                    );
                    alert.last_seen = session.value.map(format_event_time);
                    alert
                });

            anomalies.concat(out_of_range).concat(offline).sink_to(&output);
            if let (Some(sink), Some(letters)) = (&dead_letters, flow.take_dead_letters()) {
                letters.sink_to(sink);
            }
        })
    })
}
