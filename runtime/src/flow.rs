//! [`Flow`]: what a job's graph-building code sees on each worker.

use std::sync::Arc;

use timely::dataflow::operators::Concat;
use timely::dataflow::Scope;

use crate::context::{job_context, Events, JobContext, JobState};
use crate::dead_letter::DeadLetter;
use crate::flow_control::{build_controller, Throttle};
use crate::source::alignment::{Boards, Status as SourceStatus};
use crate::status::Traffic;
use crate::time::{Granularity, Time};

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
    pub(crate) watermarks: Boards,
    /// Streams whose frontiers are the sources' watermarks, for the checkpoint agent.
    pub(crate) source_progress: Vec<Events<'scope, SourceStatus>>,
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
