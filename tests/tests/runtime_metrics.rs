//! The Prometheus endpoint: scraped while a job runs, and checked against what it wrote.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{
    free_addresses, http_get as get, job_command, metric_total as total, run_job, wait_for,
};

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
    let sink_in = |body: &str| -> u64 {
        support::metric_samples(body, "tributary_operator_records_in_total")
            .filter(|(labels, _)| labels.contains("operator=\"sink:readings\""))
            .map(|(_, v)| v as u64)
            .sum()
    };
    // Every key series moves: records in and out, the sink operator's input (published
    // every 250 ms), the latency histogram, and the sink's bytes (the file sink counts them
    // when it flushes, on a frontier advance: later than its records).
    let moved = |body: &str| {
        total(body, "tributary_source_records_total") > 0
            && total(body, "tributary_sink_records_total") > 0
            && total(body, "tributary_sink_bytes_total") > 0
            && sink_in(body) > 0
            && total(body, "tributary_sink_latency_seconds_count") > 0
    };
    let mid_run =
        wait_for("moving metrics", Duration::from_secs(30), || match get(&address, "/metrics") {
            Some((200, body)) if moved(&body) => Some(body),
            _ => None,
        });
    assert_eq!(get(&address, "/health"), Some((200, "ok\n".to_owned())));
    // Records flow, so the dataflow runs: ready (the Kubernetes readiness probe).
    assert_eq!(get(&address, "/ready"), Some((200, "ready\n".to_owned())));
    assert_eq!(get(&address, "/nothing").map(|(s, _)| s), Some(404));
    let read = total(&mid_run, "tributary_source_records_total");
    let written = total(&mid_run, "tributary_sink_records_total");
    assert!(read < EVENTS, "scraped mid-run: {read}");
    // One scrape reads the counters one by one while records flow, so a sink's count can be
    // newer than a source's: compare with what the sources had read by a later scrape (all
    // of it once the job has ended).
    let read_later = match get(&address, "/metrics") {
        Some((200, body)) => total(&body, "tributary_source_records_total"),
        _ => EVENTS,
    };
    assert!(written <= read_later, "{written} written of {read_later} read");
    assert!(
        mid_run.contains("tributary_source_records_total{source=\"iot-readings\",worker=\"1\"}")
    );
    assert!(mid_run.contains("# TYPE tributary_source_watermark_lag_seconds gauge"), "{mid_run}");
    // The sink operator took in no more than the sources read: sources count a batch before
    // they send it, the operator's count is published after it received it. (Not compared
    // with the records written: a sink may hold records it took in but has not written.)
    assert!(sink_in(&mid_run) <= read_later, "{mid_run}");
    assert!(total(&mid_run, "tributary_process_resident_memory_bytes") > 1 << 20, "{mid_run}");
    let sink_bytes = total(&mid_run, "tributary_sink_bytes_total");

    // The process's totals, logged at the end, equal what the job wrote.
    let finished = finished_line(child.wait_with_output().expect("the job ends"));
    assert_eq!(finished["records_in"], EVENTS);
    assert_eq!(finished["records_out"], EVENTS);
    let lines: usize = std::fs::read_dir(dir.path())
        .expect("output folder")
        .map(|f| std::fs::read_to_string(f.expect("entry").path()).expect("read").lines().count())
        .sum();
    assert_eq!(lines as u64, EVENTS);

    // Bytes: the sink counts what it has flushed (some, never more than the files hold); a
    // job that reads the files back counts every byte of them.
    let files: u64 = std::fs::read_dir(dir.path())
        .expect("output folder")
        .map(|f| f.expect("entry").metadata().expect("size").len())
        .sum();
    assert!(sink_bytes > 0 && sink_bytes <= files, "{sink_bytes} bytes of {files}: {mid_run}");
    let input = format!("job.input={{kind=\"file\", path=\"{}\"}}", dir.path().display());
    let finished = finished_line(
        job_command("iot-stats", &["--log-format", "json", "--set", &input])
            .env("RUST_LOG", "info")
            .output()
            .expect("run iot-stats"),
    );
    assert_eq!(
        (finished["records_in"].as_u64(), finished["bytes_in"].as_u64()),
        (Some(EVENTS), Some(files))
    );
}

/// The `job finished` line of a successful run with JSON logs.
fn finished_line(out: std::process::Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "job finished")
        .expect("a `job finished` line")
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
