//! `tributary`: runs a job binary as a cluster of local processes and supervises it, and
//! prints Kubernetes manifests for running it on a cluster.
//!
//! ```text
//! tributary run --processes 3 --workers 2 ./target/release/my-job -- --config job.toml
//! tributary submit --hosts hosts.txt --config job.toml ./target/release/my-job
//! tributary k8s my-job --processes 4 --image registry.example/my-job:1.0 --config job.toml
//! ```
//!
//! `run` picks free loopback ports, writes the hostfile, starts one process per index with
//! `--processes`, `--process-id`, `--workers` and `--hostfile` appended to the job's
//! arguments, passes the job's stdout through and prefixes each process's log lines with
//! `[p<i>]`. `submit` does the same with one process per host over ssh, after copying the
//! binary, the hostfile and the configuration there. When a process fails, the others are
//! stopped (timely cannot go on without a peer) and, within `--max-restarts`, the whole job
//! starts again after a backoff: with `runtime.checkpoint.dir` set, it resumes from its latest
//! checkpoint. A configuration error (exit code 2) is never retried.

mod k8s;
mod submit;
mod supervise;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

use supervise::{free_ports, supervise, Cluster, TempFile};

/// Exit code of a job (and of this tool) for a configuration or usage error.
const EXIT_CONFIG: u8 = 2;
/// A job's exit code for a failure that a restart cannot fix (`tributary_runtime::EXIT_FATAL`).
const EXIT_FATAL: u8 = 3;

#[derive(Parser, Debug)]
#[command(name = "tributary", version, about = "Runs and deploys Tributary jobs")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs a job binary as a cluster of processes on this machine and supervises it.
    Run(RunArgs),
    /// Copies a job binary to hosts over ssh, runs one process on each and supervises them.
    Submit(SubmitArgs),
    /// Prints Kubernetes manifests (ConfigMap, headless Service, StatefulSet, checkpoint
    /// volume claim) that run a job image as a cluster.
    K8s(K8sArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Processes to start.
    #[arg(long, short = 'p', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    processes: u16,
    /// Worker threads per process.
    #[arg(long, short = 'w', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Serve each process's metrics and status page on 127.0.0.1: process `i` on port
    /// `PORT + i`.
    #[arg(long, value_name = "PORT")]
    metrics_port: Option<u16>,
    #[command(flatten)]
    restarts: Restarts,
    /// The job binary.
    job: PathBuf,
    /// Arguments for the job (after `--`).
    #[arg(last = true)]
    args: Vec<OsString>,
}

/// The restart policy.
#[derive(Args, Debug, Clone, Copy)]
struct Restarts {
    /// How often the job is restarted after a failure (0: never).
    #[arg(long, default_value_t = 3)]
    max_restarts: u32,
    /// Wait before the first restart; doubles with each further one, up to a minute.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    backoff: Duration,
}

#[derive(Args, Debug)]
struct SubmitArgs {
    /// File with one host per line, process 0 first: an ssh destination (`user@host`, or a
    /// host of your ssh configuration), optionally followed by the `host:port` the other
    /// processes reach it on (default: the destination's host and `--port`). `#` comments.
    #[arg(long, value_name = "FILE")]
    hosts: PathBuf,
    /// Worker threads per process.
    #[arg(long, short = 'w', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Port the processes connect to each other on, where the hosts file gives none.
    #[arg(long, default_value_t = 2101)]
    port: u16,
    /// The job's TOML configuration, copied next to the binary.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory on each host that gets a folder per process with the binary in it.
    #[arg(long, default_value = "/tmp/tributary")]
    remote_dir: String,
    /// ssh configuration file for `ssh -F` and `scp -F` (default: yours).
    #[arg(long, short = 'F', value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    #[command(flatten)]
    restarts: Restarts,
    /// The job binary (built for the hosts).
    job: PathBuf,
    /// Arguments for the job (after `--`).
    #[arg(last = true)]
    args: Vec<OsString>,
}

#[derive(Args, Debug)]
struct K8sArgs {
    /// The job: the binary's name inside the image (found on the image's PATH or given as an
    /// absolute path), also the name of the Kubernetes objects unless `--name` says otherwise.
    job: String,
    /// The container image holding the job binary.
    #[arg(long)]
    image: String,
    /// Processes (pods).
    #[arg(long, short = 'p', default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    processes: u16,
    /// Worker threads per process.
    #[arg(long, short = 'w', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// The job's TOML configuration, put into the ConfigMap.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Name of the Kubernetes objects (default: the job's name).
    #[arg(long)]
    name: Option<String>,
    /// Namespace of the objects.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Port the processes connect to each other on.
    #[arg(long, default_value_t = 2101)]
    port: u16,
    /// Port of the metrics and health endpoint.
    #[arg(long, default_value_t = 9464)]
    metrics_port: u16,
    /// CPU per pod (request and limit).
    #[arg(long, default_value = "2")]
    cpu: String,
    /// Memory per pod (request and limit).
    #[arg(long, default_value = "4Gi")]
    memory: String,
    /// Size of the checkpoint volume, shared by every pod.
    #[arg(long, default_value = "10Gi")]
    checkpoint_size: String,
    /// Storage class of the checkpoint volume; it must allow ReadWriteMany.
    #[arg(long)]
    storage_class: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::Run(args) => run(&args),
        Cmd::Submit(args) => submit::submit(&args),
        Cmd::K8s(args) => k8s::k8s(&args).map(|()| ExitCode::SUCCESS),
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("tributary: {error:#}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    if !args.job.is_file() {
        bail!("`{}` is not a job binary (no such file)", args.job.display());
    }
    let processes = usize::from(args.processes);
    if let Some(port) = args.metrics_port {
        if usize::from(port) + processes > usize::from(u16::MAX) + 1 {
            bail!(
                "--metrics-port {port}: {processes} processes need ports up to {}",
                usize::from(port) + processes - 1
            );
        }
    }
    supervise(args.restarts, || {
        let hostfile = if processes > 1 {
            let hosts: String =
                free_ports(processes)?.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
            Some(TempFile::write("hosts", &hosts)?)
        } else {
            None
        };
        let commands = (0..processes)
            .map(|process| {
                let mut command = Command::new(&args.job);
                command.args(&args.args).arg("--workers").arg(args.workers.to_string());
                if let Some(port) = args.metrics_port {
                    let port = usize::from(port) + process;
                    command.arg("--metrics-addr").arg(format!("127.0.0.1:{port}"));
                }
                if let Some(hostfile) = &hostfile {
                    command
                        .arg("--processes")
                        .arg(processes.to_string())
                        .arg("--process-id")
                        .arg(process.to_string())
                        .arg("--hostfile")
                        .arg(&hostfile.0);
                }
                command
            })
            .collect();
        Cluster::start(commands, &args.job, hostfile)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_arguments_follow_the_double_dash() {
        let cli = Cli::try_parse_from([
            "tributary",
            "run",
            "-p",
            "3",
            "-w",
            "2",
            "./job",
            "--",
            "--set",
            "a=1",
        ])
        .expect("valid arguments");
        let Cmd::Run(run) = cli.command else { panic!("a run command") };
        assert_eq!((run.processes, run.workers, run.restarts.max_restarts), (3, 2, 3));
        assert_eq!(run.args, ["--set", "a=1"]);
        assert!(Cli::try_parse_from(["tributary", "run", "-p", "0", "./job"]).is_err());
    }
}
