//! [`Job`]: parses the standard flags, loads and checks the configuration, starts the timely
//! workers (threads and processes), builds the dataflow on each, and reports how it ended.

use std::io::{IsTerminal, Write};
use std::marker::PhantomData;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Args, FromArgMatches};
use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::{Config as Communication, Hooks};

use crate::cluster;
use crate::config::{Config, ProgressMode, RunArgs};
use crate::context::{JobContext, JobState};
use crate::error::{ConfigError, Error, Result};
use crate::flow::Flow;
use crate::logging;
use crate::status::{self, Progress, Reporter, Summary};
use crate::time::Time;

/// Exit code for a job that failed while running.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for invalid flags or configuration (reported before any worker starts).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a job that failed in a way running it again cannot fix (see
/// [`Error::is_retryable`]); `tributary run` does not restart it.
pub const EXIT_FATAL: u8 = 3;
/// Exit code when a second interrupt forces an immediate stop.
pub const EXIT_INTERRUPTED: u8 = 130;

/// A streaming job: its name and the type of its `[job]` configuration table.
///
/// # Examples
/// ```no_run
/// use tributary_runtime::{Flow, Job};
/// use timely::dataflow::operators::{Inspect, ToStream};
///
/// fn main() -> std::process::ExitCode {
///     Job::<()>::new("hello").run(|_config| {
///         Ok(|flow: &mut Flow<'_>| {
///             (0..3u64).to_stream(flow.scope()).container::<Vec<u64>>().inspect(|x| eprintln!("{x}"));
///         })
///     })
/// }
/// ```
pub struct Job<C = ()> {
    name: String,
    config: PhantomData<fn() -> C>,
}

impl<C: DeserializeOwned + Serialize + Default + Send + Sync + 'static> Job<C> {
    /// A job called `name` (used in logs, metrics and `--help`).
    pub fn new(name: impl Into<String>) -> Self {
        Job { name: name.into(), config: PhantomData }
    }

    /// Runs the job as a program: parses `std::env::args`, installs the Ctrl-C / SIGTERM
    /// handler, runs, and turns the outcome into an exit code (0, 1 failed, 2 bad config).
    ///
    /// `plan` runs once per process, before the workers start: it checks the job's config and
    /// resolves its sources and sinks, and returns the graph-building function that every
    /// worker calls.
    pub fn run<P, B>(self, plan: P) -> ExitCode
    where
        P: FnOnce(&Config<C>) -> Result<B, ConfigError>,
        B: Fn(&mut Flow<'_>) + Send + Sync + 'static,
    {
        self.run_from(std::env::args_os(), plan)
    }

    /// Like [`Job::run`], with the arguments given (the first is the program name).
    pub fn run_from<I, P, B>(self, args: I, plan: P) -> ExitCode
    where
        I: IntoIterator<Item = std::ffi::OsString>,
        P: FnOnce(&Config<C>) -> Result<B, ConfigError>,
        B: Fn(&mut Flow<'_>) + Send + Sync + 'static,
    {
        let command = RunArgs::augment_args(clap::Command::new(self.name.clone()).about(format!(
            "Tributary job `{}`. Configuration: --config FILE, TRIBUTARY_* variables, --set KEY=VALUE.",
            self.name
        )));
        // Usage errors and --help exit here, usage errors with code 2.
        let matches = command.get_matches_from(args);
        let args = match RunArgs::from_arg_matches(&matches) {
            Ok(args) => args,
            Err(e) => e.exit(),
        };
        match self.run_with(&args, plan, install_signal_handler) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Error::Config(e)) => {
                eprintln!("error: invalid configuration: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
            Err(e) if e.is_retryable() => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
            Err(e) => {
                eprintln!("error: {e} (running the job again will fail the same way)");
                ExitCode::from(EXIT_FATAL)
            }
        }
    }

    /// Runs the job with already-parsed flags and returns how it ended. `on_start` receives
    /// the job's shared state before the workers start (the binary path installs signal
    /// handlers there; tests can keep it to request a stop).
    pub fn run_with<P, B>(
        &self,
        args: &RunArgs,
        plan: P,
        on_start: impl FnOnce(&Arc<JobState>),
    ) -> Result<()>
    where
        P: FnOnce(&Config<C>) -> Result<B, ConfigError>,
        B: Fn(&mut Flow<'_>) + Send + Sync + 'static,
    {
        let config = Config::<C>::load(args)?;
        let _log = logging::init(config.runtime.log_settings(), &self.name)?;
        let runtime = &config.runtime;
        let mut context = JobContext::new(&self.name, runtime.granularity)
            .with_watermarks(runtime.watermarks)
            .with_max_in_flight(runtime.max_in_flight);
        context.status.set_cluster(runtime.process_id, runtime.processes, runtime.workers);
        let server = match &runtime.metrics_addr {
            Some(address) => {
                let address = crate::serve::parse_address(address)
                    .map_err(|e| ConfigError::new("runtime.metrics_addr", e))?;
                Some(crate::serve::MetricsServer::start(address, Arc::clone(&context.status))?)
            }
            None => None,
        };
        let build = plan(&config)?;

        if let Some(dir) = &runtime.checkpoint.dir {
            let store = Arc::new(crate::checkpoint::LocalDir::new(dir));
            let first_worker = runtime.process_id * runtime.workers;
            let checkpoints = crate::checkpoint::Checkpoints::open(
                &runtime.checkpoint,
                &self.name,
                store,
                first_worker,
                runtime.workers,
            )?;
            context = context.with_checkpoints(Arc::new(checkpoints));
            if runtime.watermarks.idle_advance || runtime.watermarks.idle_timeout.is_some() {
                // Idleness is a matter of the wall clock: a restored run can go idle at other
                // moments than the run that crashed, and judge late records differently.
                tracing::warn!(
                    idle_timeout = ?runtime.watermarks.idle_timeout.map(|d| d.0),
                    idle_advance = runtime.watermarks.idle_advance,
                    "runtime.watermarks.idle_timeout and idle_advance depend on the wall clock: \
                     with them, a run restored from a checkpoint may emit other results for \
                     late records than a run without a crash (see docs/architecture.md, \
                     \"Deterministic recovery\")"
                );
            }
        }
        let progress = match runtime.progress {
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Always => true,
            ProgressMode::Never => false,
        };
        // Operators and channels are watched only for the status page: it costs a log event
        // per batch and activation.
        let operators = server.is_some().then(|| Arc::clone(&context.status));
        let reporter = (server.is_some() || progress)
            .then(|| Reporter::start(Arc::clone(&context.status), progress.then(Progress::new)));
        let mut worker_config = timely::WorkerConfig::default();
        context.install(&mut worker_config);
        on_start(&context.state);

        tracing::info!(job = %self.name, workers = runtime.workers, processes = runtime.processes,
            process = runtime.process_id, granularity = %runtime.granularity, "job starting");
        let started = std::time::Instant::now();
        let (builders, resources) = allocators(&self.name, &config)?;
        let max_in_flight = runtime.max_in_flight;
        let guards =
            timely::execute::execute_from(builders, resources, worker_config, move |worker| {
                let index = worker.index();
                let span = tracing::info_span!("worker", index);
                let _entered = span.enter();
                let traffic = status::watch(worker, max_in_flight > 0, operators.clone());
                worker.dataflow::<Time, _, _>(|scope| {
                    let mut flow = Flow::new(scope);
                    if let Some(traffic) = traffic {
                        flow.limit_in_flight(traffic);
                    }
                    build(&mut flow);
                    flow.finish();
                });
                // Step here rather than in timely's own loop so the span covers the whole run.
                while worker.has_dataflows() {
                    worker.step_or_park(None);
                }
            })
            .map_err(Error::Startup)?;
        // Connected to every peer, workers running: ready until they stop.
        crate::serve::set_ready(true);

        let first_index = runtime.process_id * runtime.workers;
        let mut panic = None;
        for (offset, outcome) in guards.join().into_iter().enumerate() {
            if let Err(message) = outcome {
                panic.get_or_insert(Error::WorkerPanic { worker: first_index + offset, message });
            }
        }
        crate::serve::set_ready(false);
        drop(reporter);
        let failure = context.state.take_failure().or(panic);
        let snapshot = context.status.snapshot(None);
        if progress {
            let outcome = match &failure {
                Some(_) => "failed",
                None if context.state.stop_requested() => "stopped",
                None => "finished",
            };
            let summary = Summary { snapshot: &snapshot, outcome }.to_string();
            let _ = std::io::stderr().lock().write_all(summary.as_bytes());
        }
        if let Some(error) = failure {
            return Err(error);
        }
        let latency = snapshot.latency.as_ref();
        tracing::info!(job = %self.name, elapsed_ms = started.elapsed().as_millis() as u64,
            records_in = snapshot.records_in, records_out = snapshot.records_out,
            bytes_in = snapshot.bytes_in, peak_rss_bytes = snapshot.memory.peak_rss_bytes,
            latency_p50_ms = latency.map(|l| l.p50_ms), latency_p99_ms = latency.map(|l| l.p99_ms),
            latency_buckets = latency.map(|l| l.buckets_text()), "job finished");
        Ok(())
    }
}

/// The communication set-up: threads of one process, or a cluster whose sockets this
/// process connects itself (see [`crate::cluster`]) before timely's networking takes them.
fn allocators<C>(
    job: &str,
    config: &Config<C>,
) -> Result<(Vec<AllocatorBuilder>, Box<dyn std::any::Any + Send>)> {
    let runtime = &config.runtime;
    if runtime.processes == 1 {
        let communication = if runtime.workers > 1 {
            Communication::Process(runtime.workers)
        } else {
            Communication::Thread
        };
        return communication.try_build().map_err(Error::Startup);
    }
    let sockets =
        cluster::connect(job, &config.addresses, runtime.process_id, runtime.connect_timeout.0)?;
    let hooks = Hooks::default();
    let local = ProcessBuilder::new_typed_vector(runtime.workers, hooks.refill.clone(), None);
    let (builders, guard) = initialize_networking_from_sockets(
        local,
        sockets,
        runtime.process_id,
        runtime.workers,
        hooks,
    )
    .map_err(|e| Error::Startup(format!("cannot start networking: {e}")))?;
    Ok((builders.into_iter().map(AllocatorBuilder::Tcp).collect(), Box::new(guard)))
}

/// The state the signal handler stops; replaced for each run in the process.
static SIGNALLED: Mutex<Option<Arc<JobState>>> = Mutex::new(None);

/// On the first Ctrl-C or SIGTERM, stops the sources so the dataflow drains and the sinks
/// flush; on the second, exits at once.
fn install_signal_handler(state: &Arc<JobState>) {
    *SIGNALLED.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(state));
    let result = ctrlc::set_handler(|| {
        let state = SIGNALLED.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match state {
            Some(state) if !state.stop_requested() => {
                tracing::info!("stop requested: draining; interrupt again to exit at once");
                state.request_stop();
            }
            _ => std::process::exit(i32::from(EXIT_INTERRUPTED)),
        }
    });
    if let Err(e) = result {
        // Only possible when the handler is already set, e.g. by an embedding program.
        tracing::debug!(error = %e, "signal handler not installed");
    }
}
