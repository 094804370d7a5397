//! End-to-end tests of the main job, `iot-stats`, run as separate processes.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value;
use support::{job_command, naive_iot_stats, run_cluster, run_job, sorted_lines, IotStats};

use support::IOT_SMALL as SMALL;

fn stdout_lines(args: &[&str]) -> Vec<String> {
    let out = run_job("iot-stats", args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    sorted_lines([out.stdout.as_slice()])
}

/// The expected output of [`SMALL`], recomputed naively from the generator's events.
fn expected_small() -> IotStats {
    naive_iot_stats(12, 40_000, 10_000)
}

fn parse(lines: &[String]) -> IotStats {
    lines
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("JSON output");
            let start = tributary_runtime::time::parse_event_time(
                v["window_start"].as_str().expect("window_start"),
            )
            .expect("RFC 3339");
            assert_eq!(v["revision"], 0, "no late data, no corrections: {line}");
            let f = |k: &str| v[k].as_f64().expect("number");
            (
                (v["device"].as_u64().expect("device"), start),
                (v["count"].as_u64().expect("count"), f("min"), f("max"), f("mean"), f("p95")),
            )
        })
        .collect()
}

#[test]
fn output_matches_a_naive_recomputation_of_the_generated_events() {
    let lines = stdout_lines(SMALL);
    assert_eq!(parse(&lines), expected_small());
}

#[test]
fn same_rows_with_one_worker_two_workers_and_two_processes() {
    let one = stdout_lines(SMALL);
    let mut two_args = SMALL.to_vec();
    two_args.extend(["--workers", "2"]);
    let two = stdout_lines(&two_args);
    assert_eq!(one, two, "1 worker vs --workers 2");

    let dir = tempfile::tempdir().expect("temp dir");
    let outputs = run_cluster("iot-stats", 2, SMALL, dir.path());
    for (p, out) in outputs.iter().enumerate() {
        assert!(out.status.success(), "process {p}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let processes = sorted_lines(outputs.iter().map(|o| o.stdout.as_slice()));
    assert_eq!(one, processes, "1 worker vs --processes 2");
    assert!(!one.is_empty());
}

#[test]
fn default_run_produces_one_row_per_device_and_minute() {
    let lines = stdout_lines(&[]);
    // 100 devices, ten minutes of event time plus the minute the disorder reaches back into.
    assert_eq!(lines.len(), 100 * 11);
    let total: u64 = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON")["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(total, 600_000, "every generated reading is counted once");
}

/// Asserts the run failed with exit code 2 and one line on stderr containing `needle`.
fn assert_config_error(args: &[&str], needle: &str) {
    let out = run_job("iot-stats", args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_configuration_fails_fast_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad_type = dir.path().join("bad-type.toml");
    std::fs::write(&bad_type, "[job]\nwindow = 60\n").expect("write");
    let bad_type = bad_type.to_str().expect("utf-8");
    assert_config_error(&["--config", bad_type], "job.window");

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[job.readings]\ndevicez = 5\n").expect("write");
    assert_config_error(&["--config", unknown.to_str().expect("utf-8")], "devicez");

    let syntax = dir.path().join("syntax.toml");
    std::fs::write(&syntax, "[job\n").expect("write");
    assert_config_error(&["--config", syntax.to_str().expect("utf-8")], "syntax.toml");

    assert_config_error(
        &["--set", "job.readings.devices=0"],
        "job.readings.devices: must be at least 1",
    );
    assert_config_error(&["--set", "job.readings.pace.rate=-5"], "job.readings.pace.rate");
    assert_config_error(
        &["--set", "job.input={kind=\"file\", path=\"/nonexistent/readings.jsonl\"}"],
        "job.input.path",
    );
    assert_config_error(&["--config", "/nonexistent/job.toml"], "--config");
    assert_config_error(&["--processes", "2"], "runtime.hostfile");
}

#[test]
fn unknown_flag_fails_with_exit_code_2() {
    assert_config_error(&["--wrokers", "2"], "--wrokers");
    assert_config_error(&["--workers", "0"], "--workers");
}

#[test]
fn malformed_input_lines_are_reported_with_file_and_line_and_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readings.jsonl");
    let good = |device: u32, value: f64, ts: u64| {
        format!(
            r#"{{"device":{device},"site":1,"sensor":"temperature","value":{value},"ts":{ts}}}"#
        )
    };
    let lines = [
        good(1, 20.5, 1_000),
        "{not json".to_owned(),
        good(1, 21.5, 2_000),
        r#"{"device":"one","site":1,"sensor":"temperature","value":1.0,"ts":5}"#.to_owned(),
        String::new(),
        r#"{"device":2,"site":1,"sensor":"smell","value":1.0,"ts":5}"#.to_owned(),
        good(2, 19.0, 3_000),
        "\u{0}\u{1}binary".to_owned(),
    ];
    std::fs::write(&path, lines.join("\n")).expect("write input");
    let input = format!("job.input={{kind=\"file\", path=\"{}\"}}", path.display());
    let dead_dir = dir.path().join("dead");
    let dead = format!("job.dead_letters={{kind=\"file\", path=\"{}\"}}", dead_dir.display());
    let out = run_job("iot-stats", &["--set", &input, "--set", &dead]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for line in [2, 4, 6, 8] {
        assert!(
            stderr.contains(&format!("readings.jsonl:{line}")),
            "line {line} not reported: {stderr}"
        );
    }
    assert!(!stderr.contains("readings.jsonl:5"), "blank lines are not errors: {stderr}");
    let rows = sorted_lines([out.stdout.as_slice()]);
    let counts: Vec<(u64, u64)> = rows
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON");
            (v["device"].as_u64().expect("device"), v["count"].as_u64().expect("count"))
        })
        .collect();
    assert_eq!(counts, vec![(1, 2), (2, 1)], "the good lines flow: {rows:?}");

    let letters = std::fs::read_to_string(dead_dir.join("part-0000.jsonl")).expect("dead letters");
    let letters: Vec<Value> =
        letters.lines().map(|l| serde_json::from_str(l).expect("JSON dead letter")).collect();
    assert_eq!(letters.len(), 4, "{letters:?}");
    assert_eq!(letters[0]["payload"], "{not json");
    assert!(letters[1]["reason"].as_str().expect("reason").contains("invalid type"), "{letters:?}");
    assert!(letters[2]["reason"].as_str().expect("reason").contains("smell"), "{letters:?}");
}

#[test]
fn csv_input_errors_name_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("readings.csv");
    std::fs::write(
        &path,
        "device,site,sensor,value,ts\n3,1,humidity,40.5,100\n3,1,humidity,not-a-number,200\n3,1\n",
    )
    .expect("write input");
    let input = format!("job.input={{kind=\"file\", path=\"{}\"}}", path.display());
    let out = run_job("iot-stats", &["--set", &input]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("readings.csv:3"), "{stderr}");
    assert!(stderr.contains("readings.csv:4"), "{stderr}");
    let rows = sorted_lines([out.stdout.as_slice()]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].contains(r#""count":1"#), "{rows:?}");
}

#[test]
fn sigterm_stops_an_endless_job_cleanly_and_flushes() {
    let mut child = job_command(
        "iot-stats",
        &[
            "--set",
            "job.readings.pace.rate=20000",
            "--set",
            "job.readings.pace.events_per_second=20000",
            "--set",
            "job.window=\"1s\"",
            "--set",
            "job.readings.devices=3",
        ],
    )
    .env("RUST_LOG", "info")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    // Wait for the first result: the job is running and windows are firing.
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read");
    assert!(first.contains("window_start"), "{first}");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read the rest");
    let out = child.wait_with_output().expect("the job ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stop requested"), "{stderr}");
    assert!(stderr.contains("job finished"), "{stderr}");
    // Every line written before the stop is complete JSON.
    for line in rest.lines() {
        serde_json::from_str::<Value>(line).expect("complete JSON lines");
    }
}

#[test]
fn file_output_in_csv_with_json_logs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("out");
    let output =
        format!("job.output={{kind=\"file\", path=\"{}\", format=\"csv\"}}", out_dir.display());
    let mut args = SMALL.to_vec();
    args.extend(["--set", &output, "--workers", "2", "--log-format", "json"]);
    let out = job_command("iot-stats", &args).env("RUST_LOG", "info").output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "results go to the files");
    for line in stderr.lines() {
        let log: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(log["level"].is_string() && log["message"].is_string(), "{line}");
    }
    assert!(stderr.contains("job finished"));

    let mut total = 0;
    let mut rows = 0;
    for worker in 0..2 {
        let text = std::fs::read_to_string(out_dir.join(format!("part-{worker:04}.csv")))
            .expect("a file per worker");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("device,sensor,window_start,window_end,count,min,max,mean,p95,revision")
        );
        for line in lines {
            total += line.split(',').nth(4).expect("count column").parse::<u64>().expect("count");
            rows += 1;
        }
    }
    assert_eq!(total, 40_000, "every reading counted once");
    assert_eq!(rows, expected_small().len());
}
