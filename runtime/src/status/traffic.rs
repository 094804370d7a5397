//! [`Traffic`]: the records one worker exchanged with the others, read from timely's log.

use std::cell::Cell;
use std::rc::Rc;

use timely::logging::MessagesEvent;
use timely::worker::Worker;

/// One worker's view of the records in flight between workers, read from timely's message
/// log. Made by [`Traffic::watch`] before the worker builds its dataflow, and handed to the
/// [`Flow`](crate::Flow) with [`Flow::limit_in_flight`](crate::Flow::limit_in_flight), whose
/// flow controller (see [`crate::flow_control`]) pauses the sources on it.
#[derive(Debug, Clone)]
pub struct Traffic {
    counts: Rc<Counts>,
    peak: Rc<Cell<i64>>,
}

/// Records this worker pushed to other workers and pulled from them, as timely logged them
/// (the log is flushed at the end of every worker step).
#[derive(Debug, Default)]
struct Counts {
    sent: Cell<i64>,
    received: Cell<i64>,
}

impl Traffic {
    /// Starts counting the records this worker exchanges with others. Call it before
    /// `worker.dataflow(...)`: timely's channels take their logger when they are built.
    /// Returns `None` for a job of one worker (nothing travels between workers) and when the
    /// worker has no logging.
    ///
    /// It takes timely's `"timely"` logger slot, replacing any logger there.
    pub fn watch(worker: &mut Worker) -> Option<Traffic> {
        super::watch(worker, true, None)
    }

    /// A worker's counts, fed by [`super::watch`].
    pub(super) fn new() -> Traffic {
        Traffic { counts: Rc::new(Counts::default()), peak: Rc::new(Cell::new(0)) }
    }

    /// Counts one logged message if it went to or came from another worker.
    pub(super) fn observe(&self, message: &MessagesEvent) {
        if message.source != message.target {
            let counts = &self.counts;
            let count = if message.is_send { &counts.sent } else { &counts.received };
            count.set(count.get() + message.record_count);
        }
    }

    /// Records this worker sent to others so far.
    pub(crate) fn sent(&self) -> i64 {
        self.counts.sent.get()
    }

    /// Records this worker received from others so far.
    pub(crate) fn received(&self) -> i64 {
        self.counts.received.get()
    }

    /// Sent minus received: this worker's share of the records in flight.
    pub(crate) fn balance(&self) -> i64 {
        self.sent() - self.received()
    }

    /// Notes that `in_flight` records were in flight between all workers at once.
    pub(crate) fn saw_in_flight(&self, in_flight: i64) {
        self.peak.set(self.peak.get().max(in_flight));
    }

    /// The most records this worker's sources saw in flight between all workers at once.
    pub fn peak_in_flight(&self) -> i64 {
        self.peak.get()
    }
}
