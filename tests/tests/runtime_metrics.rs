//! The Prometheus endpoint: scraped while a job runs, and checked against what it wrote.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use support::{free_addresses, job_command, run_job, wait_for};

/// `GET path` on `address`; `None` while nothing listens there.
fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// The sum of every sample of `metric` (over all label sets).
fn total(body: &str, metric: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn metrics_are_served_while_the_job_runs_and_match_its_output() {
    const EVENTS: u64 = 300_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let address = free_addresses(1).remove(0);
    let output = format!("job.output={{kind=\"file\", path=\"{}\"}}", dir.path().display());
    let events = format!("job.readings.pace.events={EVENTS}");
    // 100 000 readings/s: about three seconds, long enough to scrape mid-run.
    let args = [
        "--metrics-addr",
        &address,
        "--workers",
        "2",
        "--log-format",
        "json",
        "--set",
        &events,
        "--set",
        "job.readings.pace.rate=100000",
        "--set",
        &output,
    ];
    let child = job_command("iot-produce", &args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the job");

    // Progress, not time: scrape until the counters have moved, within a deadline.
    let mid_run =
        wait_for("moving metrics", Duration::from_secs(30), || match get(&address, "/metrics") {
            Some((200, body)) if total(&body, "tributary_source_records_total") > 0 => Some(body),
            _ => None,
        });
    assert_eq!(get(&address, "/health"), Some((200, "ok\n".to_owned())));
    // Records flow, so the dataflow runs: ready (the Kubernetes readiness probe).
    assert_eq!(get(&address, "/ready"), Some((200, "ready\n".to_owned())));
    assert_eq!(get(&address, "/nothing").map(|(s, _)| s), Some(404));
    let read = total(&mid_run, "tributary_source_records_total");
    let written = total(&mid_run, "tributary_sink_records_total");
    assert!(read < EVENTS, "scraped mid-run: {read}");
    assert!(written <= read, "{written} written of {read} read");
    assert!(
        mid_run.contains("tributary_source_records_total{source=\"iot-readings\",worker=\"1\"}")
    );
    assert!(mid_run.contains("# TYPE tributary_source_watermark_lag_seconds gauge"), "{mid_run}");

    let out = child.wait_with_output().expect("the job ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The process's totals, logged at the end, equal what the job wrote.
    let finished: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "job finished")
        .expect("a `job finished` line");
    assert_eq!(finished["records_in"], EVENTS);
    assert_eq!(finished["records_out"], EVENTS);
    let lines: usize = std::fs::read_dir(dir.path())
        .expect("output folder")
        .map(|f| std::fs::read_to_string(f.expect("entry").path()).expect("read").lines().count())
        .sum();
    assert_eq!(lines as u64, EVENTS);
}

#[test]
fn a_bad_metrics_address_is_a_config_error() {
    let out = run_job("iot-stats", &["--metrics-addr", "localhost"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("runtime.metrics_addr") && stderr.contains("neither a port"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let out = run_job("iot-stats", &["--metrics-addr", &address]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}
