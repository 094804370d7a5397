//! Runs any Tributary job by name, so the end-to-end tests can start job processes:
//! `tributary-test-job iot-stats --workers 2 ...`. Besides the jobs of `tributary-jobs` it
//! holds `stateful-mix`, a job made to exercise every checkpointed operator at once.

use std::ffi::OsString;
use std::process::ExitCode;

use timely::dataflow::operators::Concat;
use tributary_jobs::prelude::*;

fn main() -> ExitCode {
    let mut args: Vec<_> = std::env::args_os().collect();
    if args.len() < 2 {
        eprintln!("usage: tributary-test-job JOB [FLAGS...]");
        return ExitCode::from(2);
    }
    let job = args.remove(1);
    match job.to_str() {
        Some("iot-stats") => tributary_jobs::iot_stats::main_from(args),
        Some("iot-deviation") => tributary_jobs::iot_deviation::main_from(args),
        Some("iot-produce") => tributary_jobs::iot_produce::main_from(args),
        Some("iot-alerts") => tributary_jobs::iot_alerts::main_from(args),
        Some("market-candles") => tributary_jobs::market_candles::main_from(args),
        Some("market-tca") => tributary_jobs::market_tca::main_from(args),
        Some("market-movers") => tributary_jobs::market_movers::main_from(args),
        Some("market-produce") => tributary_jobs::market_produce::main_from(args),
        Some("nexmark") => tributary_jobs::nexmark::main_from(args),
        Some("stateful-mix") => stateful_mix(args),
        _ => {
            eprintln!("unknown job {job:?}");
            ExitCode::from(2)
        }
    }
}

/// The `[job]` table of `stateful-mix`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MixConfig {
    readings: IotConfig,
    output: Output,
}

/// One output row of `stateful-mix`, whichever operator made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    kind: String,
    key: u32,
    start: u64,
    end: u64,
    count: u64,
    max: f64,
    revision: u32,
}

/// Session windows (gap 100 ms) of devices 0–2, a keyed aggregate per `device % 3`, and a
/// left outer interval join (±20 ms) of device 0's readings with device 1's, all into one
/// output. Maxima and counts only, so that no result depends on the order floats were added.
fn stateful_mix(args: Vec<OsString>) -> ExitCode {
    Job::<MixConfig>::new("stateful-mix").run_from(args, |config| {
        let readings =
            IotReadings::new(&config.job.readings).map_err(|e| e.within("job.readings"))?;
        let output = config.job.output.build("stateful-mix").map_err(|e| e.within("job.output"))?;
        Ok(move |flow: &mut Flow<'_>| {
            let readings = flow.source(&readings);
            let value = |r: &SensorReading| r.value;
            let sessions = (readings.clone().filter(|r| r.device < 3))
                .key_by(|r: &SensorReading| r.device)
                .session_window(Duration::from_millis(100))
                .aggregate(Stats(value))
                .map(|r| Row {
                    kind: "session".into(),
                    key: r.key,
                    start: r.window.start,
                    end: r.window.end,
                    count: r.value.count,
                    max: r.value.max,
                    revision: r.revision,
                });
            let totals = (readings.clone())
                .key_by(|r: &SensorReading| r.device % 3)
                .aggregate(Stats(value))
                .map(|u| Row {
                    kind: "keyed".into(),
                    key: u.key,
                    start: u.time,
                    end: u.time,
                    count: u.value.count,
                    max: u.value.max,
                    revision: u.revision,
                });
            let left = readings.clone().filter(|r| r.device == 0).key_by(|_: &SensorReading| 0u32);
            let right = readings.filter(|r| r.device == 1).key_by(|_: &SensorReading| 0u32);
            let twenty_ms = Duration::from_millis(20);
            let pairs = left
                .interval_join(right, (twenty_ms, true), (twenty_ms, false))
                .left_outer()
                .join()
                .map(|j| Row {
                    kind: "interval".into(),
                    key: j.key,
                    start: j.left.ts,
                    end: j.right.as_ref().map_or(0, |r| r.ts),
                    count: u64::from(j.right.is_some()),
                    max: j.left.value,
                    revision: 0,
                });
            sessions.concat(totals).concat(pairs).sink_to(&output);
        })
    })
}
