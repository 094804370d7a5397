//! `tributary run`: a job as a cluster of local processes, supervised. The same job on 1, 2
//! and 3 processes gives the same rows; a process killed mid-run makes the supervisor stop the
//! others and restart the job, which resumes from its checkpoint and writes every row once.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{
    iot_stats_rows as rows, job_binary, latest_checkpoint, parquet_output, run_job, wait_for,
    PACED_READINGS,
};

/// The `tributary` tool, built next to the test job by `cargo test --workspace` (the runtime
/// package's own CLI tests need it).
fn tributary_binary() -> PathBuf {
    let path = job_binary().with_file_name("tributary");
    assert!(path.is_file(), "{} is missing: run `cargo test --workspace`", path.display());
    path
}

/// `tributary run` with `processes` processes of `workers` workers running `job` with `args`.
fn tributary_run(
    processes: u16,
    workers: u16,
    extra: &[&str],
    job: &str,
    args: &[&str],
) -> Command {
    let mut command = Command::new(tributary_binary());
    command
        .args(["run", "--processes", &processes.to_string(), "--workers", &workers.to_string()])
        .args(extra)
        .arg(job_binary())
        .arg("--")
        .arg(job)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

fn sorted_lines(out: &Output) -> Vec<String> {
    let mut lines: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn one_two_and_three_processes_give_the_same_rows() {
    let args = ["--set", "job.readings.pace.events=60000", "--set", "job.readings.devices=40"];
    let mut outputs = Vec::new();
    for processes in [1, 2, 3] {
        let out = tributary_run(processes, 2, &[], "iot-stats", &args).output().expect("runs");
        assert!(
            out.status.success(),
            "{processes} processes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = String::from_utf8_lossy(&out.stderr);
        for p in 0..processes {
            assert!(log.contains(&format!("started process {p} of {processes}")), "{log}");
        }
        outputs.push(sorted_lines(&out));
    }
    assert!(outputs[0].len() >= 40, "{} rows", outputs[0].len());
    assert_eq!(outputs[0], outputs[1], "1 vs 2 processes");
    assert_eq!(outputs[0], outputs[2], "1 vs 3 processes");
}

#[test]
fn a_configuration_error_is_reported_once_and_not_retried() {
    let out = tributary_run(2, 1, &[], "iot-stats", &["--set", "job.window=\"soon\""])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("job.window"), "{log}");
    assert!(log.contains("not restarting"), "{log}");
    assert_eq!(log.matches("started process 0").count(), 1, "{log}");
}

/// A failure another run cannot get past (here: the output folder holds another run's
/// files, which a fresh checkpointed run must not overwrite) exits with code 3, and the
/// supervisor does not restart the job.
#[test]
fn a_failure_a_restart_cannot_fix_is_not_retried() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("out");
    std::fs::create_dir(&output).expect("output folder");
    std::fs::write(output.join("part-0000-000001.jsonl"), "{}\n").expect("another run's file");
    let args = [
        "--set".to_owned(),
        format!("job.output={{ kind = \"file\", path = \"{}\" }}", output.display()),
        "--set".to_owned(),
        format!("runtime.checkpoint.dir=\"{}\"", dir.path().join("chk").display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out =
        tributary_run(1, 1, &["--backoff", "10ms"], "iot-stats", &args).output().expect("runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains("holds output of another run"), "{log}");
    assert!(log.contains("a restart cannot fix; not restarting"), "{log}");
    assert_eq!(log.matches("started process 0").count(), 1, "{log}");
}

#[test]
fn a_killed_process_restarts_the_job_from_its_checkpoint_exactly_once() {
    let input = PACED_READINGS;
    let dir = tempfile::tempdir().expect("temp dir");
    let reference = dir.path().join("reference");
    let mut args: Vec<String> = input.iter().map(|s| s.to_string()).collect();
    args.extend(["--set".into(), parquet_output(&reference, "roll = { max_rows = 400 }")]);
    let out = run_job("iot-stats", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = rows(&reference);

    let output = dir.path().join("out");
    let chk = dir.path().join("chk");
    let mut args: Vec<String> = input.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--set".into(),
        parquet_output(&output, "roll = { max_rows = 400 }"),
        "--set".into(),
        format!("runtime.checkpoint.dir=\"{}\"", chk.display()),
        "--set".into(),
        "runtime.checkpoint.interval=\"150ms\"".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut supervisor = tributary_run(3, 1, &["--backoff", "100ms"], "iot-stats", &args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("tributary runs");

    // The supervisor names each process's pid; its log is kept for the assertions.
    let stderr = supervisor.stderr.take().expect("piped");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let victim = wait_for("process 1 to start", Duration::from_secs(60), || {
        let line = lines.recv_timeout(Duration::from_millis(100)).ok()?;
        log.push(line.clone());
        let pid = line.strip_prefix("tributary: started process 1 of 3 (pid ")?;
        pid.trim_end_matches(')').parse::<i32>().ok()
    });
    wait_for("a checkpoint", Duration::from_secs(60), || {
        (latest_checkpoint(&chk, "iot-stats") > 0).then_some(())
    });
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("SIGKILL process 1");

    let status = supervisor.wait().expect("the supervisor ends");
    reader.join().expect("log reader");
    log.extend(lines.try_iter());
    let log = log.join("\n");
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("process 1 failed (signal SIGKILL); stopping the others"), "{log}");
    assert!(log.contains("restart 1 of 3"), "{log}");
    assert_eq!(log.matches("started process 1 of 3").count(), 2, "{log}");
    let got = rows(&output);
    assert_eq!(got.len(), expected.len(), "row count after the restart");
    assert_eq!(got, expected, "rows after the restart");
}

#[test]
fn each_process_serves_its_own_status_page_on_consecutive_ports() {
    // Free ports that are consecutive: bind the first, check the next.
    let base = (20_000..60_000u16)
        .step_by(97)
        .find(|&p| (p..p + 2).all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()))
        .expect("two free consecutive ports");
    let args =
        ["--set", "job.readings.pace.events=2000000", "--set", "job.readings.pace.rate=50000"];
    let child = tributary_run(2, 1, &["--metrics-port", &base.to_string()], "iot-stats", &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(support::KillOnDrop)
        .expect("start tributary run");
    for process in 0..2u16 {
        let address = format!("127.0.0.1:{}", base + process);
        let status: serde_json::Value = wait_for("a status page", Duration::from_secs(30), || {
            let (_, body) = support::http_get(&address, "/status")?;
            let status: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status["records_in"].as_u64()? > 0).then_some(status)
        });
        assert_eq!(
            (status["process"].as_u64(), status["processes"].as_u64()),
            (Some(u64::from(process)), Some(2))
        );
    }
    drop(child);
}
