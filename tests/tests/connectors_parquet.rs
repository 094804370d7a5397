//! End-to-end tests of the Parquet sink, checked by readers we did not write: pyarrow and
//! DuckDB (`tests/py/read_parquet.py`; `scripts/test.sh` installs both).

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::{
    job_command, naive_iot_stats, parquet_output, read_parquet, run_job, wait_for, IOT_SMALL,
};

#[test]
fn windowed_job_writes_partitioned_parquet_that_duckdb_and_pyarrow_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("stats");
    // The shipped example config, with a temporary folder and small files.
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/config/iot-stats-parquet.toml");
    let path = format!("job.output.path=\"{}\"", out_dir.display());
    let mut args = vec![
        "--config",
        config.to_str().expect("utf-8 path"),
        "--set",
        &path,
        "--set",
        "job.output.roll.max_rows=10",
        "--set",
        "job.output.batch_rows=8",
        "--workers",
        "2",
    ];
    args.extend(IOT_SMALL);
    let out = run_job("iot-stats", &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let sql = "SELECT device, CAST(epoch(window_start) * 1000 AS BIGINT) AS start, count, min, \
               max, mean, p95, CAST(dt AS VARCHAR) AS dt, CAST(hour AS VARCHAR) AS hour FROM t";
    let read = read_parquet(&out_dir, Some(sql));
    let files = read["files"].as_array().expect("files");
    assert!(files.len() > 4, "rolled by rows, on two workers: {files:?}");
    assert_eq!(read["hidden"], Value::Array(vec![]), "no hidden files after a clean end");

    let expected = naive_iot_stats(12, 40_000, 10_000);
    assert_eq!(read["pyarrow_rows"], expected.len());
    assert_eq!(read["duckdb_rows"], expected.len());

    let arrow = &read["pyarrow_schema"];
    assert_eq!(arrow["window_start"], "timestamp[ms, tz=UTC]");
    assert_eq!(arrow["window_end"], "timestamp[ms, tz=UTC]");
    assert_eq!(arrow["device"], "uint32");
    assert_eq!(arrow["count"], "uint64");
    assert_eq!(arrow["mean"], "double");
    assert_eq!(arrow["sensor"], "dictionary<values=string, indices=uint32, ordered=0>");
    let duck = &read["duckdb_schema"];
    assert_eq!(duck["window_start"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(duck["count"], "UBIGINT");
    assert_eq!(duck["sensor"], "VARCHAR");
    assert_eq!(duck["dt"], "DATE", "the Hive partition folders are read as columns");

    let mut seen = std::collections::BTreeMap::new();
    for row in read["query"].as_array().expect("rows") {
        let start = row["start"].as_u64().expect("start");
        let time = tributary_runtime::time::format_event_time(start);
        assert_eq!(row["dt"].as_str(), Some(&time[..10]), "{row}");
        assert_eq!(row["hour"].as_str().map(|h| format!("{h:0>2}")), Some(time[11..13].to_owned()));
        let f = |k: &str| row[k].as_f64().expect("number");
        let key = (row["device"].as_u64().expect("device"), start);
        let value =
            (row["count"].as_u64().expect("count"), f("min"), f("max"), f("mean"), f("p95"));
        assert!(seen.insert(key, value).is_none(), "a duplicate row: {row}");
    }
    assert_eq!(seen, expected, "the files hold exactly the naive recomputation");
}

#[test]
fn a_job_killed_mid_write_leaves_no_partial_visible_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("readings");
    let output = format!(
        "job.output={{ kind = \"parquet\", path = \"{}\", timestamp_columns = [\"ts\"], \
         batch_rows = 500, roll = {{ max_rows = 2000 }} }}",
        out_dir.display()
    );
    // An endless stream at 100 000 readings/s: files are always being written.
    let args = [
        "--set",
        "job.readings.pace.rate=100000",
        "--set",
        "job.readings.devices=50",
        "--set",
        &output,
        "--workers",
        "2",
    ];
    let mut child = job_command("iot-produce", &args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the job");
    // Progress, not time: wait until several files have been published.
    let published = |dir: &Path| {
        walk(dir).iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).count()
    };
    wait_for("six published files", Duration::from_secs(60), || {
        assert!(child.try_wait().expect("poll the job").is_none(), "the job ended early");
        (published(&out_dir) >= 6).then_some(())
    });
    child.kill().expect("SIGKILL the job");
    child.wait().expect("reap the job");

    let hidden_before = walk(&out_dir).len() - published(&out_dir);
    let read = read_parquet(&out_dir, Some("SELECT count(DISTINCT device) AS devices FROM t"));
    let files = read["files"].as_array().expect("files").len();
    assert!(files >= 6);
    let rows = read["pyarrow_rows"].as_u64().expect("rows");
    assert!(rows >= 6 * 2000, "every visible file is complete: {rows} rows in {files} files");
    assert_eq!(read["duckdb_rows"], rows);
    assert_eq!(read["pyarrow_schema"]["ts"], "timestamp[ms, tz=UTC]");
    assert_eq!(read["query"][0]["devices"], 50);
    // What the kill interrupted stays hidden (the readers above never saw it).
    assert_eq!(read["hidden"].as_array().expect("hidden").len(), hidden_before);
}

#[test]
fn an_unwritable_folder_fails_the_job_and_leaves_nothing_visible() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("stats");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    std::fs::write(out_dir.join("blocked"), b"a file where a folder should be").expect("write");
    let output = parquet_output(&out_dir, "partition_by = \"blocked/dt={window_start:%Y-%m-%d}\"");
    let out = run_job("iot-stats", &["--set", "job.readings.pace.events=20000", "--set", &output]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("blocked/dt=") && stderr.contains("Not a directory"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let visible: Vec<_> = walk(&out_dir).into_iter().filter(|p| !p.ends_with("blocked")).collect();
    assert!(visible.is_empty(), "{visible:?}");
}

#[test]
fn a_bad_partition_template_is_a_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = parquet_output(dir.path(), "partition_by = \"dt={start:%Y}\"");
    let out = run_job("iot-stats", &["--set", &output]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("job.output.partition_by") && stderr.contains("no column `start`"));
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
