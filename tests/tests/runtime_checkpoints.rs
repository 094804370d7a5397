//! Checkpoints end to end: a job killed with SIGKILL at random moments and restarted each
//! time from its latest checkpoint writes exactly the output of a run that never crashed —
//! no row missing, none twice — as read back by DuckDB.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::kafka::{Isolation, Kafka};
use support::{
    iot_stats_rows as rows, job_command, latest_checkpoint, parquet_output, read_parquet, run_job,
    wait_for_every, PACED_READINGS,
};

/// `iot-stats` over [`PACED_READINGS`] into Parquet files in `out`.
fn args(out: &Path, checkpoints: Option<&Path>, workers: usize) -> Vec<String> {
    let output = parquet_output(out, "roll = { max_rows = 400 }");
    job_args(input(), output, checkpoints, workers)
}

fn input() -> Vec<String> {
    PACED_READINGS.iter().map(|s| s.to_string()).collect()
}

/// `args`, then the `output` setting, the worker count and, with `checkpoints`, a checkpoint
/// every 150 ms into that directory.
fn job_args(
    mut args: Vec<String>,
    output: String,
    checkpoints: Option<&Path>,
    workers: usize,
) -> Vec<String> {
    args.extend(["--set".into(), output, "--workers".into(), workers.to_string()]);
    if let Some(dir) = checkpoints {
        args.extend([
            "--set".into(),
            format!("runtime.checkpoint.dir=\"{}\"", dir.display()),
            "--set".into(),
            "runtime.checkpoint.interval=\"150ms\"".into(),
        ]);
    }
    args
}

/// Taken by every test here: a crash test counts on each run making little progress between
/// two checkpoints, and jobs of other tests sharing the two cores slow the checkpoints down
/// more than the reading, so that a run can reach the end before it is killed.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Asserts equal row lists, naming the first differences and how many rows differ rather
/// than printing thousands of rows.
fn assert_same_rows(got: &[Value], expected: &[Value], context: &str) {
    let differ: Vec<usize> =
        (0..got.len().max(expected.len())).filter(|&i| got.get(i) != expected.get(i)).collect();
    if let Some(&first) = differ.first() {
        let show =
            |rows: &[Value], i: usize| rows.get(i).map_or("nothing".into(), Value::to_string);
        let examples: Vec<String> = (differ.iter().take(4))
            .map(|&i| format!("row {i} is {} but should be {}", show(got, i), show(expected, i)))
            .collect();
        panic!(
            "{context}: {} of {} rows differ (expected {}), from row {first}:\n{}",
            differ.len(),
            got.len(),
            expected.len(),
            examples.join("\n")
        );
    }
}

fn run_to_end(job: &str, args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_job(job, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A small seeded generator of kill moments (xorshift), reported on failure: delays of up
/// to the given milliseconds after a checkpoint completes.
struct Moments(u64, u64);

impl Moments {
    fn next_delay(&mut self) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % self.1)
    }
}

/// Kills `job` at random moments until it has been killed `kills` times (or ends by
/// itself); returns how often it was killed. Run `n` (from 0) is started with `args(n)` and
/// killed at the first moment, `delay()` or more after it completed a checkpoint with a cut
/// of at least `min_cut`, at which `ready(n)` holds.
fn crash_repeatedly(
    job: &str,
    args: &dyn Fn(usize) -> Vec<String>,
    delay: &mut dyn FnMut() -> Duration,
    ready: &dyn Fn(usize) -> bool,
    chk: &Path,
    kills: usize,
    min_cut: u64,
) -> usize {
    let mut killed = 0;
    while killed < kills {
        let before = latest_checkpoint(chk, job);
        let ready = || ready(killed);
        if !kill_after(job, &args(killed), chk, delay(), &ready, min_cut) {
            break;
        }
        killed += 1;
        let after = latest_checkpoint(chk, job);
        eprintln!("kill {killed}: checkpoint {before} -> {after}, cut {}", cut_of(chk, job, after));
    }
    killed
}

/// Starts `job` with `args` and kills it with SIGKILL `delay` after it has completed a
/// checkpoint beyond those in `chk` with a cut of at least `min_cut`, once `ready()` holds,
/// unless it ends first; returns whether it was killed. The checkpoint directory is watched
/// every millisecond, so that a kill `delay` zero lands within about a millisecond of the
/// checkpoint's completion, typically before its output is committed.
fn kill_after(
    job: &str,
    args: &[String],
    chk: &Path,
    delay: Duration,
    ready: &dyn Fn() -> bool,
    min_cut: u64,
) -> bool {
    let before = latest_checkpoint(chk, job);
    let mut moment = None;
    kill_when(job, args, || {
        let latest = latest_checkpoint(chk, job);
        if moment.is_none() && latest > before && cut_of(chk, job, latest) >= min_cut {
            moment = Some(Instant::now() + delay);
        }
        moment.is_some_and(|m| Instant::now() >= m) && ready()
    })
}

/// Starts `job` with `args`, its output discarded, and kills it with SIGKILL as soon as
/// `now()` holds (asked every millisecond), unless it ends first; returns whether it was
/// killed.
fn kill_when(job: &str, args: &[String], mut now: impl FnMut() -> bool) -> bool {
    let mut child = job_command(job, &args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the test-job binary runs");
    let ended = wait_for_every(
        "the job to end or the moment to kill it",
        Duration::from_secs(120),
        Duration::from_millis(1),
        || match child.try_wait().expect("child status") {
            Some(status) => {
                assert!(status.success(), "the job failed before it was killed: {status}");
                Some(true)
            }
            None => now().then_some(false),
        },
    );
    if !ended {
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
    !ended
}

/// The cut of complete checkpoint `id` of `job`.
fn cut_of(dir: &Path, job: &str, id: u64) -> u64 {
    let manifest = dir.join(job).join(format!("chk-{id:08}")).join("MANIFEST.json");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(manifest).expect("manifest")).expect("JSON");
    manifest["cut"].as_u64().expect("a cut")
}

#[test]
fn killed_at_random_moments_and_restarted_the_output_is_exactly_once() {
    let _alone = alone();
    let dir = tempfile::tempdir().expect("temp dir");
    let reference = dir.path().join("reference");
    run_to_end("iot-stats", &args(&reference, None, 1));
    let expected = rows(&reference);
    assert!(expected.len() > 400, "{} rows", expected.len());

    let out = dir.path().join("out");
    let chk = dir.path().join("chk");
    let seed = 0x5eed_2026_u64;
    let mut moments = Moments(seed, 400);
    let kills = crash_repeatedly(
        "iot-stats",
        &|_| args(&out, Some(&chk), 2),
        &mut || moments.next_delay(),
        &|_| true,
        &chk,
        6,
        0,
    );
    assert!(kills >= 5, "the job ended after {kills} kills (seed {seed:#x})");
    run_to_end("iot-stats", &args(&out, Some(&chk), 2));
    assert_same_rows(&rows(&out), &expected, &format!("after {kills} kills (seed {seed:#x})"));

    // The job is finished: running it again restores the last checkpoint and adds nothing.
    run_to_end("iot-stats", &args(&out, Some(&chk), 2));
    assert_same_rows(&rows(&out), &expected, "a finished job run again");
}

#[test]
fn a_restart_with_another_worker_count_gives_the_same_output() {
    let _alone = alone();
    let dir = tempfile::tempdir().expect("temp dir");
    let reference = dir.path().join("reference");
    run_to_end("iot-stats", &args(&reference, None, 2));
    let expected = rows(&reference);

    let out = dir.path().join("out");
    let chk = dir.path().join("chk");
    // One worker, killed after some checkpoints; then two workers; then one again.
    let mut moments = Moments(0xdead_beef, 400);
    for workers in [1, 2] {
        let start = latest_checkpoint(&chk, "iot-stats");
        let job = args(&out, Some(&chk), workers);
        assert!(kill_after("iot-stats", &job, &chk, moments.next_delay(), &|| true, 0));
        let end = latest_checkpoint(&chk, "iot-stats");
        assert!(end > start, "a checkpoint completed with {workers} worker(s)");
    }
    run_to_end("iot-stats", &args(&out, Some(&chk), 1));
    assert_same_rows(&rows(&out), &expected, "restarted with 1, 2, then 1 worker");
}

/// Session windows, a keyed aggregate and a left outer interval join (the `stateful-mix`
/// test job) killed at random moments with 2 workers, finished with 1: the same rows as a
/// crash-free run.
#[test]
fn sessions_keyed_aggregates_and_interval_joins_recover_exactly() {
    let _alone = alone();
    const JOB: &str = "stateful-mix";
    let job_args = |out: &Path, chk: Option<&Path>, workers: usize| {
        let output = rolling_parquet(out);
        job_args(input(), output, chk, workers)
    };
    let rows = |dir: &Path| {
        query(dir, "SELECT kind, key, start, \"end\", count, max, revision FROM t ORDER BY ALL")
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let reference = dir.path().join("reference");
    run_to_end(JOB, &job_args(&reference, None, 2));
    let expected = rows(&reference);
    for kind in ["session", "keyed", "interval"] {
        let n = expected.iter().filter(|r| r["kind"] == kind).count();
        assert!(n > 1000, "{n} {kind} rows");
    }
    assert!(
        expected.iter().any(|r| r["kind"] == "interval" && r["count"] == 0),
        "some left records are unmatched (outer rows)"
    );

    recovers_exactly(JOB, dir.path(), job_args, rows, &expected, 0x0b5e_55ed);
}

/// Stream–table and as-of joins (`market-tca`: each trade with the quote in force on its
/// venue, then the instrument table) killed at random moments with 2 workers, finished with
/// 1: the same rows as a crash-free run.
#[test]
fn table_and_as_of_joins_recover_exactly() {
    let _alone = alone();
    const JOB: &str = "market-tca";
    let job_args = |out: &Path, chk: Option<&Path>, workers: usize| {
        let mut input = Vec::new();
        for setting in [
            "job.market.generator.symbols=8",
            "job.market.generator.venues=2",
            "job.market.generator.pace.events=150000",
            "job.market.generator.pace.rate=50000",
        ] {
            input.extend(["--set".to_owned(), setting.to_owned()]);
        }
        let output = rolling_parquet(out);
        job_args(input, output, chk, workers)
    };
    let rows = |dir: &Path| query(dir, "SELECT * FROM t ORDER BY ALL");

    let dir = tempfile::tempdir().expect("temp dir");
    let reference = dir.path().join("reference");
    run_to_end(JOB, &job_args(&reference, None, 2));
    let expected = rows(&reference);
    assert!(expected.len() > 100_000, "{} rows", expected.len());
    // Every trade finds its instrument (the table is restored too), most a fresh quote.
    assert!(expected.iter().all(|r| r["sector"].is_string()), "{}", expected[0]);
    let quoted = expected.iter().filter(|r| !r["quote_ts"].is_null()).count();
    assert!(quoted > expected.len() / 2, "{quoted} quoted");

    recovers_exactly(JOB, dir.path(), job_args, rows, &expected, 0x7ab1_e5ed);
}

/// Parquet output into `out`, a file every 2000 rows.
fn rolling_parquet(out: &Path) -> String {
    format!(
        "job.output={{ kind = \"parquet\", path = \"{}\", roll = {{ max_rows = 2000 }} }}",
        out.display()
    )
}

/// The rows `sql` selects from the Parquet files in `dir` (as table `t`).
fn query(dir: &Path, sql: &str) -> Vec<Value> {
    read_parquet(dir, Some(sql))["query"].as_array().expect("query rows").clone()
}

/// Kills `job` (arguments from `job_args(output, checkpoints, workers)`) five times at
/// random moments with 2 workers, finishes it with 1, and compares its `rows` with the
/// crash-free run's.
fn recovers_exactly(
    job: &str,
    dir: &Path,
    job_args: impl Fn(&Path, Option<&Path>, usize) -> Vec<String>,
    rows: impl Fn(&Path) -> Vec<Value>,
    expected: &[Value],
    seed: u64,
) {
    let (out, chk) = (dir.join("out"), dir.join("chk"));
    let mut moments = Moments(seed, 400);
    let args = |_| job_args(&out, Some(&chk), 2);
    let kills = crash_repeatedly(job, &args, &mut || moments.next_delay(), &|_| true, &chk, 5, 0);
    assert!(kills >= 5, "the job ended after {kills} kills (seed {seed:#x})");
    run_to_end(job, &job_args(&out, Some(&chk), 1));
    assert_same_rows(&rows(&out), expected, &format!("after {kills} kills (seed {seed:#x})"));
}

/// A reading as JSON: `n` decides the device (of 50, at 5 sites) and the event time (10 per
/// ms, from a whole second on).
fn reading(n: u64) -> Vec<u8> {
    let (device, ts, value) = reading_of(n);
    let site = device % 5;
    format!(r#"{{"device":{device},"site":{site},"sensor":"humidity","value":{value},"ts":{ts}}}"#)
        .into_bytes()
}

const BASE_TS: u64 = 1_767_225_600_000;

fn reading_of(n: u64) -> (u64, u64, f64) {
    (n % 50, BASE_TS + n / 10, (n % 7) as f64 + 0.5)
}

/// Every row of `iot-deviation`'s output, in a fixed order.
fn deviation_rows(dir: &Path) -> Vec<Value> {
    let sql = "SELECT device, site, CAST(epoch_ms(window_start) AS BIGINT) AS start, count, mean, \
               site_count, site_mean FROM t ORDER BY device, start";
    let read = read_parquet(dir, Some(sql));
    read["query"].as_array().expect("query rows").clone()
}

/// The deviation rows of the first `records` readings, computed naively: per device and
/// second, and per site and second, the count and the mean.
fn naive_deviations(records: u64) -> Vec<Value> {
    use std::collections::BTreeMap;
    let mut devices: BTreeMap<(u64, u64), (u64, f64)> = BTreeMap::new();
    let mut sites: BTreeMap<(u64, u64), (u64, f64)> = BTreeMap::new();
    for n in 0..records {
        let (device, ts, value) = reading_of(n);
        let start = ts / 1000 * 1000;
        for (map, key) in [(&mut devices, device), (&mut sites, device % 5)] {
            let entry = map.entry((key, start)).or_default();
            entry.0 += 1;
            entry.1 += value;
        }
    }
    let round = |x: f64| (x * 1e4).round() / 1e4;
    (devices.iter())
        .map(|(&(device, start), &(count, sum))| {
            let (site_count, site_sum) = sites[&(device % 5, start)];
            serde_json::json!({
                "device": device, "site": device % 5, "start": start, "count": count,
                "mean": round(sum / count as f64), "site_count": site_count,
                "site_mean": round(site_sum / site_count as f64),
            })
        })
        .collect()
}

/// Kafka → per-device and per-site windows → window join → Parquet, killed at random
/// moments; checked against a naive recomputation and a crash-free run.
#[test]
fn kafka_window_join_to_parquet_killed_at_random_moments_is_exactly_once() {
    let _alone = alone();
    const RECORDS: u64 = 300_000;
    const JOB: &str = "iot-deviation";
    let kafka = Kafka::shared();
    let readings = kafka.topic("readings", 4);
    kafka.produce(&readings, (0..RECORDS).map(|n| (Some(n.to_string().into_bytes()), reading(n))));
    assert_eq!(kafka.count(&readings), RECORDS as i64, "the broker holds every input record");
    let input = vec![
        "--set".to_owned(),
        format!(
            "job.input={{kind=\"kafka\", brokers=\"{}\", topics=[\"{readings}\"], bounded=true, \
             max_out_of_orderness=\"1s\", group_id=\"crash\", rate=100000}}",
            kafka.address
        ),
        "--set".to_owned(),
        "job.window=\"1s\"".to_owned(),
    ];
    let job_args = |out: &Path, chk: Option<&Path>, workers: usize| {
        let output = format!(
            "job.output={{ kind = \"parquet\", path = \"{}\", timestamp_columns = \
             [\"window_start\"], roll = {{ max_rows = 400 }} }}",
            out.display()
        );
        let mut args = job_args(input.clone(), output, chk, workers);
        // Read at 100 000 records a second (a run lasts about 3 s) and checkpoint often, so
        // that every run ends in a kill.
        args.extend(["--set".into(), "runtime.checkpoint.interval=\"50ms\"".into()]);
        args
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let reference = dir.path().join("reference");
    run_to_end(JOB, &job_args(&reference, None, 2));
    let expected = deviation_rows(&reference);
    assert_same_rows(&expected, &naive_deviations(RECORDS), "the crash-free run");

    let out = dir.path().join("out");
    let chk = dir.path().join("chk");
    let seed = 0x4b61_666b_u64;
    // Every kill follows a checkpoint cut inside the data (not one taken before the first
    // record arrived), so each restart restores windows, join state and offsets mid-stream;
    // the worker count changes from run to run (2, 1, 3, 2, 1, ...).
    let mut moments = Moments(seed, 40);
    let kills = crash_repeatedly(
        JOB,
        &|run| job_args(&out, Some(&chk), [2, 1, 3][run % 3]),
        &mut || moments.next_delay(),
        &|_| true,
        &chk,
        5,
        BASE_TS + 1000,
    );
    assert!(kills >= 5, "the job ended after {kills} kills (seed {seed:#x})");
    // Partitions are matched by topic and number, so the restore does not depend on the
    // worker count.
    run_to_end(JOB, &job_args(&out, Some(&chk), 2));
    assert_same_rows(
        &deviation_rows(&out),
        &expected,
        &format!("after {kills} kills (seed {seed:#x})"),
    );
    // Offsets reach the group as checkpoints complete; after the last, the whole topic.
    let committed = kafka.committed("crash", &readings, 4);
    assert_eq!(committed, Some(RECORDS as i64), "offsets committed by the last checkpoint");
}

/// The values of `records`, sorted.
fn sorted_values(records: Vec<support::kafka::KafkaRecord>) -> Vec<String> {
    let value = |v: Option<Vec<u8>>| String::from_utf8(v.expect("a value")).expect("UTF-8 JSON");
    let mut values: Vec<String> = records.into_iter().map(|(_, v)| value(v)).collect();
    values.sort_unstable();
    values
}

/// `iot-stats` → Kafka with `delivery = "exactly-once"` on Apache Kafka, killed with SIGKILL
/// at least five times, the worker count changing between runs (2, 3, 1, ...): a
/// `read_committed` consumer of the output topic reads exactly the rows of a crash-free run.
/// Every other kill lands within about a millisecond of a checkpoint's completion, before
/// its transactions are committed, so the restart must commit them (with the producer id and
/// epoch the checkpoint saved): without that commit the transaction stays open and blocks
/// `read_committed` readers at it until the broker aborts it. The other kills come while a
/// transaction with records is open (the topic's last stable offset behind its high
/// watermark), which the restart aborts: a `read_uncommitted` read shows their records.
#[test]
fn exactly_once_kafka_output_read_committed_after_kills() {
    let _alone = alone();
    const JOB: &str = "iot-stats";
    let kafka = Kafka::shared();
    let job_args = |topic: &str, delivery: &str, chk: Option<&Path>, workers: usize| {
        let output = format!(
            "job.output={{kind=\"kafka\", brokers=\"{}\", topic=\"{topic}\", \
             delivery=\"{delivery}\", transactional_id_prefix=\"{topic}\"}}",
            kafka.address
        );
        job_args(input(), output, chk, workers)
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let reference = kafka.topic("reference", 2);
    run_to_end(JOB, &job_args(&reference, "at-least-once", None, 2));
    let expected = sorted_values(kafka.records(&reference, Isolation::ReadCommitted));
    assert!(expected.len() > 100, "{} results", expected.len());

    // Without a crash: checkpoints every 150 ms, each worker's output in one transaction per
    // checkpoint, every result once.
    let once = kafka.topic("once", 2);
    run_to_end(JOB, &job_args(&once, "exactly-once", Some(&dir.path().join("once")), 2));
    let got = sorted_values(kafka.records(&once, Isolation::ReadCommitted));
    assert_eq!(got, expected, "a crash-free exactly-once run");

    let crashed = kafka.topic("crashed", 2);
    let chk = dir.path().join("crashed");
    let seed = 0x6b61_666b_u64;
    let mut moments = Moments(seed, 400);
    let mut kill = 0;
    let mut delay = || {
        kill += 1;
        if kill % 2 == 1 {
            Duration::ZERO
        } else {
            moments.next_delay()
        }
    };
    let args = |run: usize| job_args(&crashed, "exactly-once", Some(&chk), [2, 3, 1][run % 3]);
    let ready = |run: usize| run.is_multiple_of(2) || !kafka.stable(&crashed);
    let kills = crash_repeatedly(JOB, &args, &mut delay, &ready, &chk, 6, 0);
    assert!(kills >= 5, "the job ended after {kills} kills (seed {seed:#x})");
    run_to_end(JOB, &job_args(&crashed, "exactly-once", Some(&chk), 1));

    let committed = sorted_values(kafka.records(&crashed, Isolation::ReadCommitted));
    let strings = |v: &[String]| v.iter().map(|s| Value::String(s.clone())).collect::<Vec<_>>();
    assert_same_rows(
        &strings(&committed),
        &strings(&expected),
        &format!("read_committed after {kills} kills (seed {seed:#x})"),
    );
    // The records of the transactions the kills left open are in the topic, aborted.
    let everything = sorted_values(kafka.records(&crashed, Isolation::ReadUncommitted));
    eprintln!("{} records in the topic, {} committed", everything.len(), committed.len());
    assert!(
        everything.len() > committed.len(),
        "no aborted records: the kills left no open transaction (seed {seed:#x})"
    );
}

/// Files in, files out: `iot-stats` over a directory of readings (a JSON-lines file read in
/// byte ranges by both workers, then a CSV file; a few broken lines), replayed at 100 000
/// lines a second, into CSV files; killed at random moments with 2 workers and finished with
/// 1: the same rows as a crash-free run, each once.
#[test]
fn file_source_to_file_sink_killed_at_random_moments_is_exactly_once() {
    let _alone = alone();
    const JOB: &str = "iot-stats";
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("readings");
    write_reading_files(&input);
    let job_args = |out: &Path, chk: Option<&Path>, workers: usize| {
        let input = format!(
            "job.input={{ kind = \"file\", path = \"{}\", split_size = 4000000, \
             max_out_of_orderness = \"2s\", rate = 100000 }}",
            input.display()
        );
        let output = format!(
            "job.output={{ kind = \"file\", path = \"{}\", format = \"csv\" }}",
            out.display()
        );
        job_args(vec!["--set".into(), input], output, chk, workers)
    };
    let reference = dir.path().join("reference");
    run_to_end(JOB, &job_args(&reference, None, 2));
    let expected = csv_rows(&reference);
    assert!(expected.len() > 400, "{} rows", expected.len());

    let (out, chk) = (dir.path().join("out"), dir.path().join("chk"));
    let seed = 0xf11e_5eed_u64;
    let mut moments = Moments(seed, 400);
    let args = |_| job_args(&out, Some(&chk), 2);
    let kills = crash_repeatedly(JOB, &args, &mut || moments.next_delay(), &|_| true, &chk, 5, 0);
    assert!(kills >= 5, "the job ended after {kills} kills (seed {seed:#x})");
    run_to_end(JOB, &job_args(&out, Some(&chk), 1));
    assert_same_rows(&csv_rows(&out), &expected, &format!("after {kills} kills (seed {seed:#x})"));
    let hidden = std::fs::read_dir(&out)
        .expect("output")
        .filter(|e| e.as_ref().expect("entry").file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(hidden, 0, "no hidden file is left once the job has finished");
}

/// 300 000 readings of 50 devices, one every 2 ms of event time, up to 2 s out of order:
/// the first 200 000 as JSON lines in `a.jsonl` (with two broken lines), the rest as CSV in
/// `b.csv`.
fn write_reading_files(dir: &Path) {
    use std::fmt::Write;
    std::fs::create_dir_all(dir).expect("input directory");
    let reading = |n: u64| {
        let device = n % 50;
        let ts = BASE_TS + n * 2 + (n * 7919) % 2000;
        (device, device % 5, (n % 7) as f64 + 0.5, ts)
    };
    let mut json = String::new();
    for n in 0..200_000 {
        if n == 777 || n == 150_001 {
            json.push_str("{\"device\": broken\n");
        }
        let (device, site, value, ts) = reading(n);
        writeln!(
            json,
            r#"{{"device":{device},"site":{site},"sensor":"humidity","value":{value},"ts":{ts}}}"#
        )
        .expect("formatting");
    }
    std::fs::write(dir.join("a.jsonl"), json).expect("write a.jsonl");
    let mut csv = String::from("device,site,sensor,value,ts\n");
    for n in 200_000..300_000 {
        let (device, site, value, ts) = reading(n);
        writeln!(csv, "{device},{site},humidity,{value},{ts}").expect("formatting");
    }
    std::fs::write(dir.join("b.csv"), csv).expect("write b.csv");
}

/// Every data line of the visible CSV files in `dir`, sorted, as JSON strings.
fn csv_rows(dir: &Path) -> Vec<Value> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output directory") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("a name").to_string_lossy().into_owned();
        if name.starts_with("part-") && name.ends_with(".csv") {
            let text = std::fs::read_to_string(&path).expect("read output");
            rows.extend(text.lines().skip(1).map(|l| Value::String(l.to_owned())));
        }
    }
    rows.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    rows
}

/// 400 000 readings of 40 devices as JSON lines, with their devices, one every millisecond
/// of event time: most up to 5 s out of order, 2 % late by one to three minutes (behind the
/// 5 s bound; with one minute of allowed lateness some still correct their window, some are
/// too late). Seeded.
fn late_readings(seed: u64) -> Vec<(u64, String)> {
    let mut state = seed;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..400_000u64)
        .map(|n| {
            let (r, disorder) = (next(), next());
            let back = if r % 100 < 2 { 60_000 + disorder % 120_000 } else { disorder % 5_000 };
            let ts = BASE_TS + 200_000 + n - back;
            let (device, value) = (n % 40, (r % 1000) as f64 / 10.0);
            let line = format!(
                r#"{{"device":{device},"site":{},"sensor":"temperature","value":{value},"ts":{ts}}}"#,
                device % 4
            );
            (device, line)
        })
        .collect()
}

/// Deterministic recovery (docs/architecture.md): `iot-stats` over [`late_readings`] (input
/// setting `input(checkpointed)`, with 5 s of out-of-orderness and 1 min of allowed lateness)
/// into CSV files, SIGKILLed at random moments (not tied to checkpoints) and restarted with
/// 2, 3 and 1 workers, writes exactly the rows of a run without a crash: every window's first
/// result and every correction, revisions included. The crash-free runs read at full speed
/// (one with one worker, one with three), the killed ones (`checkpointed`) at 40 000 records
/// a second: a record's timely time, and so whether it is late, depends only on the records
/// of its file range or partition before it, not on timing or the worker count.
/// Each run is killed `settle` plus up to 1.7 s after it started.
fn late_data_recovers_exactly(input: &dyn Fn(bool) -> String, settle: Duration, seed: u64) {
    const JOB: &str = "iot-stats";
    let dir = tempfile::tempdir().expect("temp dir");
    let job_args = |out: &Path, chk: Option<&Path>, workers: usize| {
        let output = format!(
            "job.output={{ kind = \"file\", path = \"{}\", format = \"csv\" }}",
            out.display()
        );
        let lateness = "job.allowed_lateness=\"1m\"".to_owned();
        let mut args = vec!["--set".into(), input(chk.is_some()), "--set".into(), lateness];
        args = job_args(args, output, chk, workers);
        args.extend(["--set".into(), "runtime.checkpoint.interval=\"200ms\"".into()]);
        args
    };
    let reference = dir.path().join("reference");
    run_to_end(JOB, &job_args(&reference, None, 1));
    let expected = csv_rows(&reference);
    let first = |r: &Value| r.as_str().is_some_and(|r| r.ends_with(",0"));
    let corrections = expected.iter().filter(|r| !first(r)).count();
    let rows = expected.len();
    assert!(rows > 400 && corrections > 50, "{rows} rows, {corrections} corrections");

    let three = dir.path().join("three");
    run_to_end(JOB, &job_args(&three, None, 3));
    assert_same_rows(&csv_rows(&three), &expected, "a crash-free run with 3 workers");

    let (out, chk) = (dir.path().join("out"), dir.path().join("chk"));
    let mut moments = Moments(seed, 1_700);
    let mut kills = 0;
    for workers in [2, 3, 1, 2, 3, 1] {
        let delay = settle + moments.next_delay();
        if !kill_at(JOB, &job_args(&out, Some(&chk), workers), delay) {
            break;
        }
        kills += 1;
        let latest = latest_checkpoint(&chk, JOB);
        eprintln!("kill {kills} after {delay:?} ({workers} workers): checkpoint {latest}");
    }
    assert!(kills >= 5, "the job ended after {kills} kills (seed {seed:#x})");
    run_to_end(JOB, &job_args(&out, Some(&chk), 2));
    let context = format!("after {kills} kills (seed {seed:#x})");
    assert_same_rows(&csv_rows(&out), &expected, &context);
}

/// [`late_data_recovers_exactly`] over a JSON-lines file read in byte ranges of 1 MB.
#[test]
fn late_data_from_a_file_after_kills_at_any_moment_with_any_worker_count_is_the_same() {
    let _alone = alone();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readings.jsonl");
    let seed = 0x1a7e_da7a_u64;
    let mut text = String::new();
    for (_, line) in late_readings(seed) {
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(&path, text).expect("write the readings");
    let input = |checkpointed: bool| {
        let rate = if checkpointed { ", rate = 40000" } else { "" };
        format!(
            "job.input={{ kind = \"file\", path = \"{}\", split_size = 1000000, \
             max_out_of_orderness = \"5s\"{rate} }}",
            path.display()
        )
    };
    late_data_recovers_exactly(&input, Duration::from_millis(800), seed);
}

/// [`late_data_recovers_exactly`] over a Kafka topic of 4 partitions, keyed by device.
#[test]
fn late_data_from_kafka_after_kills_at_any_moment_with_any_worker_count_is_the_same() {
    let _alone = alone();
    let kafka = Kafka::shared();
    let seed = 0x1a7e_4b61_u64;
    let readings = kafka.topic("late-readings", 4);
    let records = late_readings(seed).into_iter();
    kafka.produce(&readings, records.map(|(d, l)| (Some(d.to_string().into()), l.into())));
    let input = |checkpointed: bool| {
        let rate = if checkpointed { ", rate = 40000" } else { "" };
        format!(
            "job.input={{ kind = \"kafka\", brokers = \"{}\", topics = [\"{readings}\"], \
             bounded = true, max_out_of_orderness = \"5s\"{rate} }}",
            kafka.address
        )
    };
    // A Kafka reader takes about a second longer to start (metadata, offsets).
    late_data_recovers_exactly(&input, Duration::from_millis(2000), seed);
}

/// Starts `job` with `args` and kills it with SIGKILL `after` it started, unless it ends
/// first; returns whether it was killed.
fn kill_at(job: &str, args: &[String], after: Duration) -> bool {
    let moment = Instant::now() + after;
    kill_when(job, args, || Instant::now() >= moment)
}
