//! [`Flow`]: what a job's graph-building code sees on each worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use timely::dataflow::operators::Concat;
use timely::dataflow::{Scope, StreamVec};

use crate::checkpoint::Checkpoints;
use crate::config::WatermarkConfig;
use crate::dead_letter::DeadLetter;
use crate::error::Error;
use crate::flow_control::{build_controller, Throttle, Traffic};
use crate::status::Status;
use crate::time::{Granularity, Time};

/// A stream of records of type `D` in a Tributary dataflow.
pub type Events<'scope, D> = StreamVec<'scope, Time, D>;

/// Data that can travel between workers and processes.
pub trait Data: timely::ExchangeData + Clone {}
impl<T: timely::ExchangeData + Clone> Data for T {}

/// State shared by all workers of one process: the stop request and the first failure.
#[derive(Debug, Default)]
pub struct JobState {
    stop: AtomicBool,
    failure: Mutex<Option<Error>>,
}

impl JobState {
    /// Asks every source of this process to stop; the dataflow then drains and sinks flush.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was requested (by a signal or a failure).
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records a failure (the first one is kept) and requests a stop.
    pub fn fail(&self, error: Error) {
        tracing::error!(%error, "job failing");
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(error);
        }
        drop(slot);
        self.request_stop();
    }

    /// Takes the recorded failure, if any.
    pub fn take_failure(&self) -> Option<Error> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What every operator of a job may need from the runtime: the job's name, its shared state
/// and its time granularity. The runtime stores it in timely's worker configuration, so any
/// operator can reach it from its scope (see [`job_context`]).
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's name.
    pub name: Arc<str>,
    /// The process's shared job state.
    pub state: Arc<JobState>,
    /// The step event time is rounded to for timely timestamps.
    pub granularity: Granularity,
    /// Idleness and alignment of sources.
    pub watermarks: WatermarkConfig,
    /// The process's checkpoints; `None` when the job takes none.
    pub checkpoints: Option<Arc<Checkpoints>>,
    /// Records in flight between workers above which sources pause; `0`: no limit.
    pub max_in_flight: u64,
    /// What the process's sources, sinks, operators and checkpoints have done, for people.
    pub status: Arc<Status>,
}

impl JobContext {
    /// The key under which the runtime stores the context in timely's worker configuration.
    pub const CONFIG_KEY: &'static str = "tributary.job";

    /// A context for a job named `name`.
    pub fn new(name: &str, granularity: Granularity) -> Self {
        JobContext {
            name: name.into(),
            state: Arc::default(),
            granularity,
            watermarks: WatermarkConfig::default(),
            checkpoints: None,
            max_in_flight: crate::flow_control::DEFAULT_MAX_IN_FLIGHT,
            status: Arc::new(Status::new(name)),
        }
    }

    /// Sets the idleness and alignment of sources.
    pub fn with_watermarks(mut self, watermarks: WatermarkConfig) -> Self {
        self.watermarks = watermarks;
        self
    }

    /// Pauses sources while more than `records` wait between workers (see
    /// [`crate::flow_control`]); `0`: no limit.
    pub fn with_max_in_flight(mut self, records: u64) -> Self {
        self.max_in_flight = records;
        self
    }

    /// Takes checkpoints and restores from them.
    pub fn with_checkpoints(mut self, checkpoints: Arc<Checkpoints>) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// Stores the context in a timely worker configuration.
    pub fn install(&self, config: &mut timely::WorkerConfig) {
        config.set(Self::CONFIG_KEY.to_owned(), self.clone());
    }
}

/// The job context of the worker that runs `scope`. Outside a Tributary job (a bare
/// `timely::example`, say) this is a fresh context with the default granularity.
pub fn job_context(scope: &Scope<'_, Time>) -> JobContext {
    scope
        .worker()
        .config()
        .get::<JobContext>(JobContext::CONFIG_KEY)
        .cloned()
        .unwrap_or_else(|| JobContext::new("unnamed", Granularity::DEFAULT))
}

/// The job's graph-building context on one worker: the timely scope plus what sources and
/// sinks need from the runtime.
///
/// Every worker runs the same building code, so every worker builds the same graph.
pub struct Flow<'scope> {
    scope: Scope<'scope, Time>,
    context: JobContext,
    dead_letters: Option<Events<'scope, DeadLetter>>,
    /// What this worker's source drivers know of every source worker's watermark, for
    /// watermark alignment across all the job's sources.
    pub(crate) watermarks: crate::source::Boards,
    /// Streams whose frontiers are the sources' watermarks, for the checkpoint agent.
    pub(crate) source_progress: Vec<Events<'scope, crate::source::Status>>,
    /// Tells this worker's sources to pause; held by the flow controller.
    pub(crate) throttle: Throttle,
    traffic: Option<Traffic>,
}

impl<'scope> Flow<'scope> {
    /// A context over `scope`. The runtime makes one per worker; tests may make their own.
    pub fn new(scope: Scope<'scope, Time>) -> Self {
        Flow {
            scope,
            context: job_context(&scope),
            dead_letters: None,
            watermarks: Default::default(),
            source_progress: Vec::new(),
            throttle: Throttle::default(),
            traffic: None,
        }
    }

    /// Pauses the sources while more than the job's `max_in_flight` records wait between
    /// workers, counted by `traffic` (see [`crate::flow_control`]). The runtime calls it for
    /// every job; without it nothing limits the queues.
    pub fn limit_in_flight(&mut self, traffic: Traffic) {
        self.traffic = Some(traffic);
    }

    /// Completes the graph with what the runtime adds to every job (the checkpoint agent and
    /// the flow controller). The runtime calls it after the job's building code.
    pub fn finish(self) {
        let limit = self.context.max_in_flight;
        if let Some(traffic) = self.traffic.filter(|_| limit > 0) {
            build_controller(self.scope, &self.context.name, traffic, self.throttle, limit);
        }
        crate::checkpoint::agent::build_agent(self.scope, &self.context, self.source_progress);
    }

    /// The timely scope, for timely and differential operators.
    pub fn scope(&self) -> Scope<'scope, Time> {
        self.scope
    }

    /// The job's name.
    pub fn job(&self) -> &str {
        &self.context.name
    }

    /// This worker's index among all workers of all processes.
    pub fn worker_index(&self) -> usize {
        self.scope.index()
    }

    /// The number of workers in the job.
    pub fn workers(&self) -> usize {
        self.scope.peers()
    }

    /// The step event time is rounded to for timely timestamps.
    pub fn granularity(&self) -> Granularity {
        self.context.granularity
    }

    /// The process's shared job state.
    pub fn state(&self) -> &Arc<JobState> {
        &self.context.state
    }

    /// Adds a stream of dead letters to the job's dead-letter output.
    pub fn add_dead_letters(&mut self, stream: Events<'scope, DeadLetter>) {
        self.dead_letters = Some(match self.dead_letters.take() {
            Some(existing) => existing.concat(stream),
            None => stream,
        });
    }

    /// Takes every dead letter added so far, to send them to a sink of the job's choice.
    /// Dead letters not taken are logged and counted only.
    pub fn take_dead_letters(&mut self) -> Option<Events<'scope, DeadLetter>> {
        self.dead_letters.take()
    }
}
