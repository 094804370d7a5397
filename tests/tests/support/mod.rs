//! Shared by the end-to-end tests: running job processes, free ports, reading
//! outputs.

#![allow(dead_code)]

pub mod tansu;

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

/// Runs a job to completion and returns its output.
pub fn run_job(job: &str, args: &[&str]) -> Output {
    job_command(job, args).stdin(Stdio::null()).output().expect("the test-job binary runs")
}

/// `n` distinct free ports on 127.0.0.1, as `host:port` strings.
pub fn free_addresses(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind to a free port"))
        .collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").to_string()).collect()
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
