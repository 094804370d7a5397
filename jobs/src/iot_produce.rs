//! `iot-produce`: writes generated sensor readings to an output (a Kafka topic, typically),
//! keyed by device, to feed the other jobs in the Kafka walkthrough.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::prelude::*;

/// The `[job]` table of `iot-produce`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IotProduceConfig {
    /// The sensor-reading generator (`pace.events` bounds the run).
    pub readings: IotConfig,
    /// Where the readings go.
    pub output: Output,
}

/// Runs the job with the given arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    Job::<IotProduceConfig>::new("iot-produce").run_from(args, |config| {
        let job = &config.job;
        let readings = IotReadings::new(&job.readings).map_err(|e| e.within("job.readings"))?;
        let output = job
            .output
            .build("readings")
            .map_err(|e| e.within("job.output"))?
            .keyed(|r: &SensorReading| Some(r.device.to_string().into_bytes()));
        Ok(move |flow: &mut Flow<'_>| flow.source(&readings).sink_to(&output))
    })
}
