//! What every operator of a job may reach from its scope: the [`JobContext`] (name, shared
//! state, time granularity, checkpoints, status), and the stream and data types.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use timely::dataflow::{Scope, StreamVec};

use crate::checkpoint::{Checkpointer, Checkpoints};
use crate::config::WatermarkConfig;
use crate::error::Error;
use crate::flow_control::DEFAULT_MAX_IN_FLIGHT;
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
        tracing::error!(%error, retryable = error.is_retryable(), "job failing");
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
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
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

    /// Registers the operator named `name` (it must be the same on every run of the job) at
    /// `address` in the worker's checkpoints; `None` when the job takes no checkpoints.
    pub fn checkpointer(
        &self,
        scope: &Scope<'_, Time>,
        name: &str,
        address: &[usize],
    ) -> Option<Checkpointer> {
        let shared = Arc::clone(self.checkpoints.as_ref()?);
        Some(Checkpointer::register(shared, scope, name, address))
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
