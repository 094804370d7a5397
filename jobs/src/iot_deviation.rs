//! `iot-deviation`: how far each device's readings are from its site's, window by window.
//!
//! Per device and window, the readings' count and mean; per site and window, the same over
//! all the site's devices; a window join on site then pairs each device's figures with its
//! site's, so that a drifting sensor stands out from the devices around it. Inputs and
//! outputs are configured like `iot-stats`: the generator by default (600 000 readings of 100
//! devices at 20 sites), `job.input` for files or Kafka, and JSON lines on stdout unless
//! `job.output` says otherwise.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::prelude::*;
use crate::round;

/// The `[job]` table of `iot-deviation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IotDeviationConfig {
    /// The sensor-reading generator, used unless `input` is set.
    pub readings: IotConfig,
    /// Read sensor readings from files or Kafka instead of generating them (as in
    /// `iot-stats`).
    pub input: Option<Input>,
    /// Window length.
    pub window: HumanDuration,
    /// Where the deviations go.
    pub output: Output,
}

impl Default for IotDeviationConfig {
    fn default() -> Self {
        let stats = crate::iot_stats::IotStatsConfig::default();
        IotDeviationConfig {
            readings: stats.readings,
            input: None,
            window: stats.window,
            output: Output::Stdout,
        }
    }
}

/// One device's figures next to its site's, for one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deviation {
    /// The device.
    pub device: u32,
    /// Its site.
    pub site: u32,
    /// Window start, RFC 3339.
    pub window_start: String,
    /// The device's readings in the window.
    pub count: u64,
    /// Their mean, rounded to 4 decimals.
    pub mean: f64,
    /// The readings of all the site's devices in the window.
    pub site_count: u64,
    /// Their mean, rounded to 4 decimals.
    pub site_mean: f64,
    /// `mean - site_mean`, rounded to 4 decimals.
    pub deviation: f64,
}

/// Runs the job with the process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the job with the given arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    Job::<IotDeviationConfig>::new("iot-deviation").run_from(args, |config| {
        let job = &config.job;
        let input = crate::iot_stats::Readings::build(&job.readings, job.input.as_ref())?;
        let output = job.output.build("iot-deviation").map_err(|e| e.within("job.output"))?;
        let window = Tumbling::new(job.window.0);
        Ok(move |flow: &mut Flow<'_>| {
            let readings = input.read(flow);
            let devices = readings
                .clone()
                .key_by(|r: &SensorReading| (r.site, r.device))
                .window(window)
                .aggregate(Stats(|r: &SensorReading| r.value))
                .key_by(|r| r.key.0);
            let sites = readings
                .key_by(|r: &SensorReading| r.site)
                .window(window)
                .aggregate(Stats(|r: &SensorReading| r.value))
                .key_by(|r| r.key);
            devices
                .window_join(sites, window)
                .join()
                .flat_map(|j| {
                    let (device, site) = (j.left?, j.right?);
                    let (mean, site_mean) = (device.value.mean(), site.value.mean());
                    Some(Deviation {
                        device: device.key.1,
                        site: j.key,
                        window_start: format_event_time(j.window.start),
                        count: device.value.count,
                        mean: round(mean, 4),
                        site_count: site.value.count,
                        site_mean: round(site_mean, 4),
                        deviation: round(mean - site_mean, 4),
                    })
                })
                .sink_to(&output);
        })
    })
}
