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

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Exit code of a job (and of this tool) for a configuration or usage error.
const EXIT_CONFIG: u8 = 2;
/// Exit code after an interrupt.
const EXIT_INTERRUPTED: u8 = 130;
/// How long stopped processes get to drain before they are killed.
const GRACE: Duration = Duration::from_secs(10);
/// How often the supervisor looks at its processes (it has no other way to wait on several
/// children at once).
const WATCH: Duration = Duration::from_millis(20);
/// The longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

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
        Cmd::Submit(args) => submit(&args),
        Cmd::K8s(args) => k8s(&args).map(|()| ExitCode::SUCCESS),
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("tributary: {error:#}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// How one start of the whole job ended.
#[derive(Debug)]
enum Outcome {
    /// Every process exited successfully.
    Finished,
    /// A process failed; the others were stopped.
    Failed { process: usize, status: ExitStatus },
    /// Interrupted by the user; every process was stopped.
    Interrupted,
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    if !args.job.is_file() {
        bail!("`{}` is not a job binary (no such file)", args.job.display());
    }
    let processes = usize::from(args.processes);
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

/// One line of a `submit` hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    /// Where ssh connects: `user@host` or a host of the ssh configuration.
    destination: String,
    /// Where the other processes connect: `host:port`.
    address: String,
}

/// Reads a hosts file: `DESTINATION [HOST:PORT]` per line, `#` comments.
fn read_hosts(path: &Path, port: u16) -> anyhow::Result<Vec<Host>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the hosts file `{}`", path.display()))?;
    let mut hosts = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let at = || format!("{}:{}", path.display(), number + 1);
        let host = match fields[..] {
            [] => continue,
            [destination] => {
                let name = destination.rsplit('@').next().unwrap_or(destination);
                Host { destination: destination.into(), address: format!("{name}:{port}") }
            }
            [destination, address]
                if address.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
            {
                Host { destination: destination.into(), address: address.into() }
            }
            [_, address] => bail!("{}: `{address}` is not a host:port address", at()),
            _ => bail!("{}: expected `DESTINATION [HOST:PORT]`, found `{line}`", at()),
        };
        hosts.push(host);
    }
    if hosts.is_empty() {
        bail!("{}: no hosts", path.display());
    }
    Ok(hosts)
}

fn submit(args: &SubmitArgs) -> anyhow::Result<ExitCode> {
    if !args.job.is_file() {
        bail!("`{}` is not a job binary (no such file)", args.job.display());
    }
    let hosts = read_hosts(&args.hosts, args.port)?;
    let name = args.job.file_name().context("the job binary has a file name")?.to_string_lossy();
    let hostfile: String = hosts.iter().map(|h| format!("{}\n", h.address)).collect();
    let hostfile = TempFile::write("hosts", &hostfile)?;
    let ssh = |program: &str| {
        let mut command = Command::new(program);
        if let Some(config) = &args.ssh_config {
            command.arg("-F").arg(config);
        }
        command.args(["-o", "BatchMode=yes"]);
        command
    };
    let quote = |arg: &str| -> anyhow::Result<String> {
        Ok(shlex::try_quote(arg).context("an argument with a NUL byte")?.into_owned())
    };
    let dirs: Vec<String> =
        (0..hosts.len()).map(|i| format!("{}/{name}-p{i}", args.remote_dir)).collect();

    // Copy the binary, the hostfile and the configuration, one folder per process.
    for (i, host) in hosts.iter().enumerate() {
        eprintln!("tributary: copying `{name}` to {}:{}", host.destination, dirs[i]);
        let status = ssh("ssh")
            .arg(&host.destination)
            .arg(format!("mkdir -p {}", quote(&dirs[i])?))
            .stdin(Stdio::null())
            .status()
            .context("cannot run ssh")?;
        if !status.success() {
            bail!("ssh {} failed ({})", host.destination, describe(status));
        }
        let mut scp = ssh("scp");
        scp.arg("-q").arg(&args.job).arg(&hostfile.0);
        if let Some(config) = &args.config {
            scp.arg(config);
        }
        let status = scp
            .arg(format!("{}:{}/", host.destination, dirs[i]))
            .stdin(Stdio::null())
            .status()
            .context("cannot run scp")?;
        if !status.success() {
            bail!("scp to {} failed ({})", host.destination, describe(status));
        }
    }

    let hostfile_name =
        hostfile.0.file_name().context("the hostfile has a name")?.to_string_lossy().into_owned();
    let config_name = match &args.config {
        Some(c) => Some(
            c.file_name().context("the config has a file name")?.to_string_lossy().into_owned(),
        ),
        None => None,
    };
    // Per process: the ssh destination and the command line for its shell.
    let mut remotes = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let mut job: Vec<String> = vec![format!("./{name}")];
        for arg in &args.args {
            job.push(arg.to_str().context("job arguments must be UTF-8 for ssh")?.to_owned());
        }
        let processes = hosts.len().to_string();
        let workers = args.workers.to_string();
        let id = i.to_string();
        let flags = ["--processes", &processes, "--process-id", &id, "--workers", &workers];
        job.extend(flags.iter().map(|f| f.to_string()));
        job.extend(["--hostfile".to_owned(), hostfile_name.clone()]);
        if let Some(config) = &config_name {
            job.extend(["--config".to_owned(), config.clone()]);
        }
        let job: Vec<String> = job.iter().map(|a| quote(a)).collect::<anyhow::Result<_>>()?;
        // The job runs in the background of a shell that stops it (SIGTERM) when its stdin
        // closes: when this tool stops it, or the connection drops. (A background list
        // reads /dev/null, so the watcher gets stdin as fd 3.)
        let remote = format!(
            "cd {} && exec sh -c 'exec 3<&0; \"$@\" & job=$!; \
             (cat <&3 >/dev/null; kill -TERM $job) >/dev/null 2>&1 & wait $job' sh {}",
            quote(&dirs[i])?,
            job.join(" ")
        );
        remotes.push((&host.destination, remote));
    }
    supervise(args.restarts, || {
        let commands = (remotes.iter())
            .map(|(destination, remote)| {
                let mut command = ssh("ssh");
                command.arg(destination).arg(remote);
                command
            })
            .collect();
        Cluster::start(commands, Path::new("ssh"), None)
    })
}

/// Starts the job with `start` and restarts it after failures, as `policy` allows.
fn supervise(
    policy: Restarts,
    mut start: impl FnMut() -> anyhow::Result<Cluster>,
) -> anyhow::Result<ExitCode> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the interrupt handler")?;

    let mut restarts = 0;
    let mut backoff = policy.backoff;
    loop {
        let cluster = start()?;
        match cluster.supervise(&interrupted) {
            Outcome::Finished => return Ok(ExitCode::SUCCESS),
            Outcome::Interrupted => return Ok(ExitCode::from(EXIT_INTERRUPTED)),
            Outcome::Failed { process, status } => {
                let code = exit_code(status);
                if code == EXIT_CONFIG {
                    eprintln!(
                        "tributary: process {process} rejected its configuration; not restarting"
                    );
                    return Ok(ExitCode::from(code));
                }
                if restarts >= policy.max_restarts {
                    eprintln!("tributary: giving up after {restarts} restart(s)");
                    return Ok(ExitCode::from(code));
                }
                restarts += 1;
                eprintln!(
                    "tributary: restart {restarts} of {} in {}",
                    policy.max_restarts,
                    humantime::format_duration(backoff)
                );
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if interrupted.load(Ordering::SeqCst) {
                        return Ok(ExitCode::from(EXIT_INTERRUPTED));
                    }
                    std::thread::sleep(WATCH);
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// A process's exit status as this tool's exit code: its code, or 1 if a signal ended it.
fn exit_code(status: ExitStatus) -> u8 {
    status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1))
}

/// What ended a process, for the log.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(s) => format!("signal {s}"),
            Err(_) => format!("signal {signal}"),
        },
        _ => status.to_string(),
    }
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn write(name: &str, contents: &str) -> anyhow::Result<TempFile> {
        let file = format!("tributary-{}-{}.{name}", std::process::id(), unique());
        let path = std::env::temp_dir().join(file);
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        Ok(TempFile(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One start of the job: its processes, their log forwarders and the hostfile.
struct Cluster {
    children: Vec<Option<Child>>,
    /// Each process's stdin, held open while it runs (`submit` stops a remote process by
    /// closing it).
    inputs: Vec<std::process::ChildStdin>,
    forwarders: Vec<JoinHandle<()>>,
    _hostfile: Option<TempFile>,
}

impl Cluster {
    /// Starts process `i` with `commands[i]`.
    fn start(
        commands: Vec<Command>,
        job: &Path,
        hostfile: Option<TempFile>,
    ) -> anyhow::Result<Cluster> {
        let processes = commands.len();
        let mut cluster = Cluster {
            children: Vec::new(),
            inputs: Vec::new(),
            forwarders: Vec::new(),
            _hostfile: hostfile,
        };
        for (process, mut command) in commands.into_iter().enumerate() {
            // Its own process group: a Ctrl-C in the terminal reaches this tool only, which
            // then stops every process once.
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            command.process_group(0);
            let mut child =
                command.spawn().with_context(|| format!("cannot start `{}`", job.display()))?;
            cluster.inputs.extend(child.stdin.take());
            eprintln!("tributary: started process {process} of {processes} (pid {})", child.id());
            if let Some(out) = child.stdout.take() {
                cluster.forwarders.push(forward(out, None));
            }
            if let Some(err) = child.stderr.take() {
                cluster.forwarders.push(forward(err, Some(format!("[p{process}] "))));
            }
            cluster.children.push(Some(child));
        }
        Ok(cluster)
    }

    /// Waits until every process has exited, one has failed, or the user interrupts.
    fn supervise(mut self, interrupted: &AtomicBool) -> Outcome {
        let outcome = loop {
            if interrupted.load(Ordering::SeqCst) {
                eprintln!("tributary: interrupted; stopping every process");
                self.stop();
                break Outcome::Interrupted;
            }
            let mut failed = None;
            for (process, slot) in self.children.iter_mut().enumerate() {
                let Some(child) = slot else { continue };
                match child.try_wait() {
                    Ok(None) => {}
                    Ok(Some(status)) => {
                        *slot = None;
                        if !status.success() {
                            failed.get_or_insert((process, status));
                        }
                    }
                    Err(e) => {
                        eprintln!("tributary: cannot watch process {process}: {e}");
                        failed.get_or_insert((process, ExitStatus::from_raw(1 << 8)));
                    }
                }
            }
            if let Some((process, status)) = failed {
                eprintln!(
                    "tributary: process {process} failed ({}); stopping the others",
                    describe(status)
                );
                self.stop();
                break Outcome::Failed { process, status };
            }
            if self.children.iter().all(Option::is_none) {
                break Outcome::Finished;
            }
            std::thread::sleep(WATCH);
        };
        for forwarder in self.forwarders.drain(..) {
            let _ = forwarder.join();
        }
        outcome
    }

    /// Asks every running process to stop (SIGTERM: it drains and exits; a remote one sees
    /// its stdin close), and kills those still running after the grace period.
    fn stop(&mut self) {
        self.inputs.clear();
        for child in self.children.iter().flatten() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        for slot in &mut self.children {
            let Some(child) = slot else { continue };
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(WATCH);
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
            *slot = None;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A number that differs between the clusters this tool starts.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// `count` distinct ports that were free on the loopback interface a moment ago.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("cannot find free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().context("a bound listener has an address")?.port()))
        .collect()
}

/// Copies a process's output line by line to this tool's stdout (no prefix) or stderr (with
/// `prefix`), so lines of different processes never mix.
fn forward(stream: impl Read + Send + 'static, prefix: Option<String>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            let written = match &prefix {
                None => std::io::stdout().lock().write_all(&line),
                Some(prefix) => {
                    let mut err = std::io::stderr().lock();
                    err.write_all(prefix.as_bytes()).and_then(|()| err.write_all(&line))
                }
            };
            if written.is_err() {
                return;
            }
        }
    })
}

fn k8s(args: &K8sArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read `{}`", path.display()))?,
        ),
        None => None,
    };
    let yaml = manifests(args, config.as_deref())?;
    std::io::stdout().write_all(yaml.as_bytes()).context("cannot write the manifests")
}

/// A JSON string, which is also a valid YAML scalar: every value below is quoted this way.
fn q(value: &str) -> String {
    serde_json::to_string(value).expect("strings serialise")
}

/// Whether `name` is a valid Kubernetes object name (an RFC 1123 label).
fn valid_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    !name.is_empty()
        && name.len() <= 52
        && name.chars().all(ok)
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The manifests, as one multi-document YAML stream.
fn manifests(args: &K8sArgs, config: Option<&str>) -> anyhow::Result<String> {
    let name = args.name.clone().unwrap_or_else(|| {
        Path::new(&args.job).file_name().map_or_else(
            || args.job.clone(),
            |n| n.to_string_lossy().to_ascii_lowercase().replace('_', "-"),
        )
    });
    if !valid_name(&name) {
        bail!("`{name}` is not a Kubernetes name (lower-case letters, digits, `-`; pass --name)");
    }
    let ns = &args.namespace;
    let service = format!("{name}-peers");
    let hosts: String = (0..args.processes)
        .map(|i| format!("{name}-{i}.{service}.{ns}.svc.cluster.local:{}\n", args.port))
        .collect();
    let labels = format!("app.kubernetes.io/name: {}\n", q(&name));
    let indent = |text: &str, by: usize| -> String {
        let pad = " ".repeat(by);
        text.lines().map(|l| format!("{pad}{l}\n")).collect()
    };
    let block = |text: &str| format!("|\n{}", indent(text, 4));
    let mut command = vec![
        args.job.clone(),
        "--processes".into(),
        args.processes.to_string(),
        "--workers".into(),
        args.workers.to_string(),
        "--hostfile".into(),
        "/etc/tributary/hosts".into(),
        "--metrics-addr".into(),
        format!("0.0.0.0:{}", args.metrics_port),
        "--set".into(),
        "runtime.checkpoint.dir=\"/var/lib/tributary/checkpoints\"".into(),
    ];
    if config.is_some() {
        command.extend(["--config".into(), "/etc/tributary/job.toml".into()]);
    }
    let command: String = command.iter().map(|c| format!("            - {}\n", q(c))).collect();
    let config_entry = config.map_or(String::new(), |c| format!("  job.toml: {}", block(c)));
    let storage_class = args
        .storage_class
        .as_ref()
        .map_or(String::new(), |c| format!("  storageClassName: {}\n", q(c)));
    Ok(format!(
        r#"# Tributary job `{name}`: {processes} processes x {workers} workers.
# Apply with `kubectl apply -f`; see docs/cluster.md.
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name_q}
  namespace: {ns_q}
  labels:
{labels_4}data:
  hosts: {hosts_block}{config_entry}---
# Stable DNS names for the pods (name-0.{service}, ...): the addresses in the hostfile.
apiVersion: v1
kind: Service
metadata:
  name: {service_q}
  namespace: {ns_q}
  labels:
{labels_4}spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
{labels_4}  ports:
    - name: peers
      port: {port}
    - name: metrics
      port: {metrics_port}
---
# Checkpoints: every process writes its part and reads the manifest process 0 writes, so
# the volume is shared (ReadWriteMany).
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {checkpoints_q}
  namespace: {ns_q}
  labels:
{labels_4}spec:
  accessModes: ["ReadWriteMany"]
{storage_class}  resources:
    requests:
      storage: {size_q}
---
# One pod per process; the pod's ordinal is its process id (Kubernetes 1.28+ labels each
# pod with its index). All pods start together: the processes connect to each other first.
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name_q}
  namespace: {ns_q}
  labels:
{labels_4}spec:
  serviceName: {service_q}
  replicas: {processes}
  podManagementPolicy: Parallel
  selector:
    matchLabels:
{labels_6}  template:
    metadata:
      labels:
{labels_8}    spec:
      containers:
        - name: job
          image: {image_q}
          command:
{command}          env:
            - name: TRIBUTARY_PROCESS_ID
              valueFrom:
                fieldRef:
                  fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
          ports:
            - name: peers
              containerPort: {port}
            - name: metrics
              containerPort: {metrics_port}
          readinessProbe:
            httpGet:
              path: /ready
              port: metrics
            periodSeconds: 5
          livenessProbe:
            httpGet:
              path: /health
              port: metrics
            initialDelaySeconds: 10
            periodSeconds: 10
          resources:
            requests:
              cpu: {cpu_q}
              memory: {memory_q}
            limits:
              cpu: {cpu_q}
              memory: {memory_q}
          volumeMounts:
            - name: config
              mountPath: /etc/tributary
              readOnly: true
            - name: checkpoints
              mountPath: /var/lib/tributary/checkpoints
      volumes:
        - name: config
          configMap:
            name: {name_q}
        - name: checkpoints
          persistentVolumeClaim:
            claimName: {checkpoints_q}
"#,
        processes = args.processes,
        workers = args.workers,
        name_q = q(&name),
        ns_q = q(ns),
        service_q = q(&service),
        checkpoints_q = q(&format!("{name}-checkpoints")),
        labels_4 = indent(&labels, 4),
        labels_6 = indent(&labels, 6),
        labels_8 = indent(&labels, 8),
        hosts_block = block(&hosts),
        port = args.port,
        metrics_port = args.metrics_port,
        size_q = q(&args.checkpoint_size),
        image_q = q(&args.image),
        cpu_q = q(&args.cpu),
        memory_q = q(&args.memory),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_kubernetes_labels() {
        assert!(valid_name("iot-stats"));
        assert!(!valid_name("IoT"));
        assert!(!valid_name("-x"));
        assert!(!valid_name(""));
    }

    #[test]
    fn hosts_files_name_a_destination_and_maybe_an_address() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hosts.txt");
        let read = |text: &str| {
            std::fs::write(&path, text).expect("written");
            read_hosts(&path, 2101)
        };
        let hosts = read("# cluster\nops@10.0.0.1\n\nbox 10.0.0.2:7000  # gpu\n").expect("valid");
        assert_eq!(
            hosts,
            [
                Host { destination: "ops@10.0.0.1".into(), address: "10.0.0.1:2101".into() },
                Host { destination: "box".into(), address: "10.0.0.2:7000".into() },
            ]
        );
        let error = read("a\nb 10.0.0.2\n").unwrap_err().to_string();
        assert!(error.ends_with("hosts.txt:2: `10.0.0.2` is not a host:port address"), "{error}");
        assert!(read("a b c\n").unwrap_err().to_string().contains("expected `DESTINATION"));
        assert!(read("# none\n").unwrap_err().to_string().contains("no hosts"));
    }

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
