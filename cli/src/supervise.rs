//! Starting a job's processes, watching them, stopping and restarting them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{Restarts, EXIT_CONFIG, EXIT_FATAL};

/// Exit code after an interrupt.
const EXIT_INTERRUPTED: u8 = 130;
/// How long stopped processes get to drain before they are killed.
const GRACE: Duration = Duration::from_secs(10);
/// How often the supervisor looks at its processes (it has no other way to wait on several
/// children at once).
const WATCH: Duration = Duration::from_millis(20);
/// The longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

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

/// Starts the job with `start` and restarts it after failures, as `policy` allows.
pub(crate) fn supervise(
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
                if code == EXIT_FATAL {
                    eprintln!(
                        "tributary: process {process} failed in a way a restart cannot fix; not restarting"
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
pub(crate) fn describe(status: ExitStatus) -> String {
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
pub(crate) struct TempFile(pub(crate) PathBuf);

impl TempFile {
    pub(crate) fn write(name: &str, contents: &str) -> anyhow::Result<TempFile> {
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
pub(crate) struct Cluster {
    children: Vec<Option<Child>>,
    /// Each process's stdin, held open while it runs (`submit` stops a remote process by
    /// closing it).
    inputs: Vec<std::process::ChildStdin>,
    forwarders: Vec<JoinHandle<()>>,
    _hostfile: Option<TempFile>,
}

impl Cluster {
    /// Starts process `i` with `commands[i]`.
    pub(crate) fn start(
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
pub(crate) fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
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
