//! Flow control: sources pause while too many records wait in the queues between workers.
//!
//! Timely's channels between workers (threads or processes) are unbounded: a worker that
//! falls behind (a hot key, a slow sink, a busy host) lets every other worker's records pile
//! up in its queues. Every worker counts the records it pushed to another worker and the
//! records it pulled from another worker, from timely's own message log
//! ([`MessagesEvent`](timely::logging::MessagesEvent)), so every channel counts, ours, differential's and the user's. A
//! controller per worker shares its counts with the others over a feedback loop; the job's
//! records in flight are the sum of what was sent minus what was received. Above
//! `runtime.max_in_flight` every source of the worker pauses between two polls (a Kafka
//! reader pauses its partitions, so librdkafka stops fetching too) until the queues have
//! drained to half the limit.
//!
//! This cannot deadlock: timely operators pull all their input whenever they are scheduled,
//! whatever their frontiers, so records in flight drain even while every source is paused.
//! (A bound on event time, pausing a source that runs ahead of a downstream frontier, could:
//! a window holds its output frontier back by its length.)

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{ConnectLoop, Feedback};
use timely::dataflow::Scope;

use crate::metrics as m;
use crate::status::Traffic;
use crate::time::Time;

/// The default of `runtime.max_in_flight`: about 100 MB of 100-byte records, and far above
/// what a job whose workers keep pace has in flight (a few source batches).
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 1_000_000;

/// How often a controller tells the others its counts, at most.
const COUNTS_EVERY: Duration = Duration::from_millis(5);

/// Whether this worker's sources must pause, and how many of them are still running. Every
/// source driver of the worker holds one; the controller keeps it told of the other workers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Throttle(Rc<ThrottleState>);

#[derive(Debug, Default)]
struct ThrottleState {
    /// This worker's traffic and the limit; `None`: no flow control.
    traffic: RefCell<Option<(Traffic, i64)>>,
    /// Sent minus received by the other workers, as last heard.
    others: Cell<i64>,
    hold: Cell<bool>,
    pauses: Cell<u64>,
    running: Cell<usize>,
}

impl Throttle {
    /// Whether sources must not emit now: more than the limit in flight, or, once paused,
    /// more than half of it.
    pub(crate) fn holds(&self) -> bool {
        let state = &*self.0;
        let traffic = state.traffic.borrow();
        let Some((traffic, limit)) = traffic.as_ref() else { return false };
        let in_flight = state.others.get() + traffic.balance();
        traffic.saw_in_flight(in_flight);
        let hold = if state.hold.get() { in_flight > limit / 2 } else { in_flight > *limit };
        if hold && !state.hold.get() {
            state.pauses.set(state.pauses.get() + 1);
        }
        state.hold.set(hold);
        hold
    }

    /// Marks a source as running until the guard is dropped.
    pub(crate) fn running(&self) -> Running {
        self.0.running.set(self.0.running.get() + 1);
        Running(Rc::clone(&self.0))
    }
}

/// A running source; dropped when it ends.
#[derive(Debug)]
pub(crate) struct Running(Rc<ThrottleState>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.set(self.0.running.get() - 1);
    }
}

/// One controller's report. Controllers keep reporting while a source runs anywhere, and stop
/// once every worker has said it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Report {
    worker: u32,
    /// Records this worker has pushed to others.
    sent: i64,
    /// Records this worker has pulled from others.
    received: i64,
    /// Whether a source of this worker still runs.
    running: bool,
}

/// Builds this worker's controller: shares `traffic` with the other workers' controllers so
/// that `throttle` holds the sources while more than `limit` records are in flight.
pub(crate) fn build_controller(
    scope: Scope<'_, Time>,
    job: &str,
    traffic: Traffic,
    throttle: Throttle,
    limit: u64,
) {
    let me = scope.index();
    let peers = scope.peers();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    *throttle.0.traffic.borrow_mut() = Some((traffic.clone(), limit));
    let (handle, reports) = scope.feedback::<Vec<Report>>(1);
    let mut builder = OperatorBuilder::new("flow-control".to_owned(), scope);
    let info = builder.operator_info();
    let mut input = builder.new_input_connection(reports, Pipeline, []);
    let (output, stream) = builder.new_output_connection([]);
    stream.broadcast().connect_loop(handle);
    let activator = scope.activator_for(Rc::clone(&info.address));
    let labels = [(m::JOB, job.to_owned()), (m::WORKER, me.to_string())];
    let in_flight_gauge = metrics::gauge!(m::IN_FLIGHT, &labels);
    let pauses_counter = metrics::counter!(m::FLOW_PAUSES, &labels);

    builder.build(move |mut capabilities| {
        let mut cap = capabilities.pop();
        let mut output = OutputBuilder::from(output);
        // What each worker last reported; `None`: not heard from yet (counts as running).
        let mut heard: Vec<Option<Report>> = vec![None; peers];
        let mut last: Option<(Report, Instant)> = None;
        let mut pauses = 0;
        move |_frontiers| {
            input.for_each(|_, reports| {
                for report in reports.drain(..) {
                    heard[report.worker as usize] = Some(report);
                }
            });
            let Some(held) = cap.as_ref() else { return };
            let state = &throttle.0;
            let running = state.running.get() > 0;
            let mine = Report {
                worker: me as u32,
                sent: traffic.sent(),
                received: traffic.received(),
                running,
            };
            heard[me] = None;
            let others: i64 = heard.iter().flatten().map(|r| r.sent - r.received).sum();
            state.others.set(others);
            heard[me] = Some(mine);
            let now = Instant::now();
            if last.is_none_or(|(report, at)| {
                report != mine && (now - at >= COUNTS_EVERY || report.running != mine.running)
            }) {
                output.activate().session(held).give(mine);
                last = Some((mine, now));
            }
            in_flight_gauge.set((others + traffic.balance()) as f64);
            pauses_counter.increment(state.pauses.get() - pauses);
            pauses = state.pauses.get();

            // Reports change the counts themselves, so the last word is "not running", not a
            // final count.
            let anyone_running = heard.iter().any(|r| r.is_none_or(|r| r.running));
            if anyone_running || last.is_none_or(|(report, _)| report.running) {
                activator.activate_after(COUNTS_EVERY);
            } else {
                if pauses > 0 {
                    tracing::info!(
                        worker = me,
                        pauses,
                        peak_in_flight = traffic.peak_in_flight(),
                        limit,
                        "flow control paused the sources"
                    );
                }
                *state.traffic.borrow_mut() = None;
                cap = None;
            }
        }
    });
}
