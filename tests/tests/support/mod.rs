//! Shared by the end-to-end tests: running job processes, free ports, reading
//! outputs.

#![allow(dead_code)]

pub mod oracle;

#[allow(unused_imports)]
pub use tributary_tests::{free_addresses, kafka, registry, wait_for, wait_for_every};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The test-job binary (`tributary-test-job`), built by cargo for this package's tests.
pub fn job_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tributary-test-job"))
}

/// A command running `job` with `args`, logs at `warn` so that stderr stays short
/// (`TEST_JOB_LOG=debug` or any filter shows more when a test needs debugging).
pub fn job_command(job: &str, args: &[&str]) -> Command {
    let mut command = Command::new(job_binary());
    command
        .arg(job)
        .args(args)
        .env("RUST_LOG", std::env::var("TEST_JOB_LOG").unwrap_or_else(|_| "warn".into()))
        .env_remove("TRIBUTARY_WORKERS");
    command
}

/// `line` without its terminal colour codes (`ESC [ ... m`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs a job to completion and returns its output.
pub fn run_job(job: &str, args: &[&str]) -> Output {
    job_command(job, args).stdin(Stdio::null()).output().expect("the test-job binary runs")
}

/// Runs a job as `processes` processes on loopback (each with `args`) and returns their
/// outputs in process order.
pub fn run_cluster(job: &str, processes: usize, args: &[&str], dir: &Path) -> Vec<Output> {
    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, free_addresses(processes).join("\n")).expect("write the hostfile");
    let hostfile = hostfile.to_str().expect("utf-8 path").to_owned();
    let children: Vec<_> = (0..processes)
        .map(|p| {
            let n = processes.to_string();
            let id = p.to_string();
            let mut all: Vec<&str> = args.to_vec();
            all.extend(["--processes", &n, "--process-id", &id, "--hostfile", &hostfile]);
            job_command(job, &all)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a job process")
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().expect("the job process ends")).collect()
}

/// The lines of all outputs, sorted.
pub fn sorted_lines<'a>(outputs: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    let mut lines: Vec<String> = outputs
        .into_iter()
        .flat_map(|o| String::from_utf8_lossy(o).lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    lines.sort();
    lines
}

/// A small `iot-stats` configuration: 40 000 readings of 12 devices, 10 s windows, 2 s
/// disorder (see [`naive_iot_stats`]).
pub const IOT_SMALL: &[&str] = &[
    "--set",
    "job.readings.devices=12",
    "--set",
    "job.readings.pace.events=40000",
    "--set",
    "job.window=\"10s\"",
];

/// Per device and window start (ms): count, min, max, mean (rounded to 4 decimals) and p95.
pub type IotStats = BTreeMap<(u64, u64), (u64, f64, f64, f64, f64)>;

/// `iot-stats` recomputed naively from the generator's events (2 s disorder): per device and
/// window start (ms), the count, min, max, mean (rounded to 4 decimals, as the job does) and
/// the nearest-rank p95 (the smallest reading with at least 95 % of the readings at or below
/// it).
pub fn naive_iot_stats(devices: u32, events: u64, window_ms: u64) -> IotStats {
    use tributary_connectors::generator::Generate;
    use tributary_connectors::{IotConfig, IotReadings, Pace};

    let config = IotConfig {
        devices,
        pace: Pace {
            events: Some(events),
            max_disorder: tributary_runtime::HumanDuration(std::time::Duration::from_secs(2)),
            ..Pace::default()
        },
        ..IotConfig::default()
    };
    let readings = IotReadings::new(&config).expect("valid config");
    let model = readings.model();
    model.start(0, 1);
    let mut groups: BTreeMap<(u64, u64), Vec<f64>> = BTreeMap::new();
    for i in 0..events {
        let (t, r) = model.event(&mut (), i);
        groups.entry((u64::from(r.device), t - t % window_ms)).or_default().push(r.value);
    }
    groups
        .into_iter()
        .map(|(k, vs)| {
            let micros: i128 = vs.iter().map(|v| (v * 1e6).round() as i128).sum();
            let mean = (micros as f64 / 1e6 / vs.len() as f64 * 1e4).round() / 1e4;
            let min = vs.iter().copied().fold(f64::INFINITY, f64::min);
            let max = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let n = vs.len() as f64;
            let p95 = *vs
                .iter()
                .filter(|v| vs.iter().filter(|w| w <= v).count() as f64 >= 0.95 * n - 1e-9)
                .min_by(|a, b| a.total_cmp(b))
                .expect("a window has readings");
            (k, (vs.len() as u64, min, max, mean, p95))
        })
        .collect()
}

/// Runs `tests/py/registry_kafka.py` (Confluent's Python client: Avro and Protobuf through a
/// schema registry) with `args` and `stdin` as its input; returns its output.
pub fn registry_kafka_py(args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/registry_kafka.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        // A hung script prints where it is when sent SIGABRT.
        .env("PYTHONFAULTHANDLER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test.sh installs confluent-kafka)");
    child.stdin.take().expect("stdin").write_all(stdin).expect("records written to python");
    let out = child.wait_with_output().expect("python3 ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "registry_kafka.py {args:?}: {stderr}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `n` readings of every sensor kind over 7 devices and 3 sites, 10 ms apart, for the
/// schema-registry tests (device 0, site 0 and value 0.0 are proto3 defaults: absent on the
/// Protobuf wire).
pub fn registry_readings(n: u64) -> Vec<tributary_connectors::SensorReading> {
    use tributary_connectors::SensorKind::{Humidity, Pressure, Temperature, Vibration};
    let kinds = [Temperature, Humidity, Pressure, Vibration];
    (0..n)
        .map(|n| tributary_connectors::SensorReading {
            device: (n % 7) as u32,
            site: (n % 3) as u32,
            sensor: kinds[n as usize % kinds.len()],
            value: (n % 11) as f64 / 4.0,
            ts: 1_767_225_600_000 + n * 10,
        })
        .collect()
}

/// Runs `source` into `sink` on 2 workers, to the source's end; no record may be a dead
/// letter.
pub fn pass_through(
    source: tributary_connectors::KafkaSource<tributary_connectors::SensorReading>,
    sink: tributary_connectors::KafkaSink<tributary_connectors::SensorReading>,
) {
    use timely::dataflow::operators::capture::Capture;
    use timely::dataflow::operators::vec::Map;
    use tributary_runtime::SinkExt;

    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    oracle::execute(100, 2, move |flow| {
        let (records, dead) = flow.source_with_errors(&source);
        dead.map(|d| format!("{}: {}", d.location, d.reason))
            .capture_into(tx.lock().expect("not poisoned").clone());
        records.sink_to(&sink);
    });
    assert_eq!(oracle::messages(rx), Vec::<String>::new(), "no dead letters");
}

/// The readings on `topic` as `registry_kafka.py COMMAND` (`proto-decode`, `json-decode`)
/// decodes them through the registry at `registry`, by event time.
pub fn read_back(
    kafka: &kafka::Kafka,
    command: &str,
    registry: &str,
    topic: &str,
) -> Vec<tributary_connectors::SensorReading> {
    let values = kafka.records(topic, kafka::Isolation::ReadCommitted);
    let decoded = registry_kafka_py(&[command, registry, topic], hex_values(&values).as_bytes());
    let mut got: Vec<tributary_connectors::SensorReading> =
        decoded.lines().map(|l| serde_json::from_str(l).expect("a reading")).collect();
    got.sort_by_key(|r| r.ts);
    got
}

/// Kafka record values as hex lines, for `registry_kafka.py decode` and `proto-decode`.
pub fn hex_values(records: &[kafka::KafkaRecord]) -> String {
    let hex = |v: &[u8]| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
    records.iter().map(|(_, v)| hex(v.as_deref().unwrap_or_default()) + "\n").collect()
}

/// Runs `sql` in DuckDB (`py/duckdb_query.py`) and returns its rows as JSON objects.
pub fn duckdb(sql: &str) -> Vec<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/duckdb_query.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(sql)
        .output()
        .expect("python3 runs (scripts/test.sh installs duckdb)");
    assert!(out.status.success(), "DuckDB fails: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

/// Reads the Parquet folder `dir` with pyarrow and DuckDB (`py/read_parquet.py`), running
/// `sql` on the table `t`.
pub fn read_parquet(dir: &Path, sql: Option<&str>) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/read_parquet.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .args(sql)
        .output()
        .expect("python3 runs (scripts/test.sh installs duckdb and pyarrow)");
    assert!(out.status.success(), "the readers fail: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

/// The `--set` value that sends `iot-stats` output to Parquet files in `dir`.
pub fn parquet_output(dir: &Path, extra: &str) -> String {
    format!(
        "job.output={{ kind = \"parquet\", path = \"{}\", timestamp_columns = [\"window_start\", \
         \"window_end\"], {extra} }}",
        dir.display()
    )
}

/// Every row of `iot-stats` Parquet output in `dir`, in a fixed order.
pub fn iot_stats_rows(dir: &Path) -> Vec<serde_json::Value> {
    let sql = "SELECT device, CAST(epoch_ms(window_start) AS BIGINT) AS start, count, min, max, \
               mean, revision FROM t ORDER BY device, start, revision";
    read_parquet(dir, Some(sql))["query"].as_array().expect("query rows").clone()
}

/// The number of the latest complete checkpoint of `job` under `dir` (0: none).
pub fn latest_checkpoint(dir: &Path, job: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir.join(job)) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("MANIFEST.json").exists())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// `iot-stats` input for crash tests: 600 000 readings of 50 devices over ten minutes of event
/// time, up to 2 s out of order, generated at 150 000 per second so that a run lasts about
/// four seconds.
pub const PACED_READINGS: &[&str] = &[
    "--set",
    "job.readings.pace.events=600000",
    "--set",
    "job.readings.devices=50",
    "--set",
    "job.readings.pace.rate=150000",
];

/// `GET path` on `address` (HTTP/1.0): the status code and body; `None` while nothing
/// listens there.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// The sum of every sample of Prometheus `metric` in `body` (over all label sets).
pub fn metric_total(body: &str, metric: &str) -> u64 {
    metric_samples(body, metric).map(|(_, v)| v).sum::<f64>() as u64
}

/// Every sample of Prometheus `metric` in `body`: its labels (`{...}` or empty) and value.
pub fn metric_samples<'a>(body: &'a str, metric: &'a str) -> impl Iterator<Item = (&'a str, f64)> {
    body.lines().filter_map(move |line| {
        let rest = line.strip_prefix(metric)?;
        if !rest.starts_with(['{', ' ']) {
            return None;
        }
        let (labels, value) = rest.rsplit_once(' ')?;
        Some((labels.trim(), value.parse().ok()?))
    })
}

/// A child process that is stopped when the guard is dropped, so that a failing test does
/// not leave a job running: SIGTERM (a job drains, `tributary run` stops its processes),
/// then SIGKILL if it has not ended within ten seconds.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        // A watchdog sends SIGKILL unless told within ten seconds that the child has ended.
        let (ended, watched) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if watched.recv_timeout(std::time::Duration::from_secs(10)).is_err() {
                let _ = kill(pid, Signal::SIGKILL);
            }
        });
        let _ = self.0.wait();
        let _ = ended.send(());
        let _ = watchdog.join();
    }
}
