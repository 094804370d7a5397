//! The status page in a real browser (headless Chromium), the `/status` JSON, and the progress
//! line and summary on stderr.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{free_addresses, http_get, job_command, run_job, wait_for};

/// Runs headless Chromium on `url` with `args` (after letting the page's scripts run for
/// three seconds of virtual time) and returns its stdout.
fn chromium(url: &str, args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg("--virtual-time-budget=3000")
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("Debian's chromium (scripts/test.sh installs it)");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The text of the card with `id` on the rendered page.
fn card<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("card {id}: {dom}"));
    let value = &dom[start..];
    let value = &value[value.find("class=\"value\">").expect("a value") + 14..];
    &value[..value.find('<').expect("end of value")]
}

#[test]
fn the_status_page_shows_the_dataflow_with_live_rates_in_chromium() {
    let address = free_addresses(1).remove(0);
    // Two workers, 40 000 readings a second for up to a minute: the page is read mid-run.
    let _job = job_command(
        "iot-stats",
        &[
            "--workers",
            "2",
            "--metrics-addr",
            &address,
            "--set",
            "job.readings.pace.rate=40000",
            "--set",
            "job.readings.pace.events=2400000",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .map(support::KillOnDrop)
    .expect("start the job");

    // The JSON first: wait until a snapshot shows records flowing.
    let status: Value = wait_for("a snapshot with rates", Duration::from_secs(30), || {
        let (code, body) = http_get(&address, "/status")?;
        assert_eq!(code, 200);
        let status: Value = serde_json::from_str(&body).expect("status JSON");
        // Records flow, and the window reports the state it keeps (once a second).
        let aggregate = status["operators"]
            .as_array()?
            .iter()
            .find(|o| o["name"] == "window-aggregate:tumbling(1m)")?
            .clone();
        let state = aggregate["state_entries"].as_u64()?;
        // An operator's rate needs two snapshots that list it, so the first snapshot with a job
        // rate can still show every operator at 0/s: wait for one that shows a moving operator.
        let moving = status["operators"]
            .as_array()?
            .iter()
            .any(|o| o["records_in_per_s"].as_f64().is_some_and(|r| r > 0.0));
        (status["records_in_per_s"].as_f64()? > 0.0 && state > 0 && moving).then_some(status)
    });
    assert_eq!(status["job"], "iot-stats");
    assert_eq!(status["workers"], 2);
    let sources = status["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 2, "one entry per worker: {status}");
    assert!(sources.iter().all(|s| s["name"] == "iot-readings" && s["watermark"].is_string()));
    let operators = status["operators"].as_array().expect("operators");
    let window = operators
        .iter()
        .find(|o| o["name"] == "window-combine:tumbling(1m)")
        .unwrap_or_else(|| panic!("the window operator: {status}"));
    assert!(window["records_in"].as_u64().expect("records in") > 0, "{window}");
    // The sink took in what the sink endpoint wrote, give or take the moment each was read.
    assert!(status["edges"].as_array().is_some_and(|e| !e.is_empty()), "{status}");

    // The page, rendered by a browser that ran its scripts.
    let url = format!("http://{address}/");
    let dom = chromium(&url, &["--dump-dom"]);
    assert!(dom.contains("window-combine:tumbling(1m)"), "the graph names the window: {dom}");
    assert!(dom.contains("<g class=\"node\""), "at least one operator with records moving: {dom}");
    let rate = card(&dom, "in-rate");
    assert!(rate != "0" && !rate.is_empty(), "records in /s shown as {rate:?}");
    assert!(dom.contains("id=\"state\">live<"), "the page reached /status: {dom}");

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(&url, &["--window-size=1400,1300", &format!("--screenshot={}", screenshot.display())]);
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "{} bytes", png.len());
}

#[test]
fn the_progress_line_and_summary_show_on_request_and_not_in_pipes() {
    let args = ["--set", "job.readings.pace.events=50000", "--set", "job.readings.devices=10"];
    let mut always = args.to_vec();
    always.extend(["--set", "runtime.progress=\"always\""]);
    let out = run_job("iot-stats", &always);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("\r\x1b[2Kiot-stats | in "), "a progress line: {stderr:?}");
    assert!(stderr.contains("iot-stats finished in "), "{stderr}");
    let records_in = stderr.lines().find(|l| l.trim_start().starts_with("records in"));
    assert!(records_in.is_some_and(|l| l.contains(" 50,000 ")), "{stderr}");
    assert!(stderr.contains("source iot-readings") && stderr.contains("50,000 records"));

    // Not a terminal (the default `auto`), or `--quiet`: neither.
    let mut quiet = always.clone();
    quiet.push("--quiet");
    for args in [&args[..], &quiet[..]] {
        let out = run_job("iot-stats", args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains('\r') && !stderr.contains("finished in"), "{stderr:?}");
    }
}
