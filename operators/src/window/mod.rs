//! Event-time windows: window assigners and the windowed aggregation built on them.
//!
//! A window is a half-open event-time interval `[start, end)`. It *fires* when the operator's
//! input frontier (the watermark) reaches `end`, emitting one [`WindowResult`] per key. A
//! window keeps its state for `allowed_lateness` after its end: a late record in that span
//! updates the window and the operator emits the corrected result with a higher `revision`.
//! Records later than that go to the late output. Window results carry event time `end - 1`,
//! so windows can be chained.

pub(crate) mod aggregate;
mod assigner;
pub(crate) mod merge;
mod session;

use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tributary_runtime::status::LateCounter;
use tributary_runtime::time::millis;
use tributary_runtime::{job_context, metrics as m, Data, EventTime, Events, Timestamped};

pub use assigner::{Global, Sliding, Tumbling, WindowAssigner};
pub use session::{SessionWindowed, Sessions};

use crate::aggregate::Aggregator;
use crate::key_by::Keyed;

/// A half-open event-time interval `[start, end)` in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    /// First millisecond in the window.
    pub start: EventTime,
    /// First millisecond after the window.
    pub end: EventTime,
}

impl Window {
    /// Whether the window contains `t`.
    pub fn contains(&self, t: EventTime) -> bool {
        self.start <= t && t < self.end
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// One key's result for one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowResult<K, V> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: Window,
    /// The aggregate.
    pub value: V,
    /// 0 for the result emitted when the window fired; 1, 2, ... for corrections caused by
    /// late records (a Kafka sink upserts these by key and window).
    pub revision: u32,
}

impl<K, V> Timestamped for WindowResult<K, V> {
    fn event_time(&self) -> EventTime {
        self.window.end - 1
    }
}

/// The operator name of one phase of a windowed aggregation and a late-record counter
/// labelled with it and the worker.
pub(crate) fn instrument(
    scope: &timely::dataflow::Scope<'_, tributary_runtime::Time>,
    phase: &str,
    name: &str,
    metric: &'static str,
) -> (String, LateCounter) {
    let operator = format!("{phase}:{name}");
    let labels = [(m::OPERATOR, operator.clone()), (m::WORKER, scope.index().to_string())];
    let status = job_context(scope).status;
    (operator, LateCounter::new(status, metric, &labels))
}

/// A stream of `T` with the keyed records that were too late for every window.
pub type WithLate<'scope, T, K, V> = (Events<'scope, T>, Events<'scope, (K, V)>);

/// How a windowed aggregation groups each key's records: into the fixed windows of a
/// [`WindowAssigner`] (tumbling, sliding, global), or into [`Sessions`].
pub trait Windowing: Clone + 'static {
    /// Aggregates each key's records per window, keeping window state for `lateness` after
    /// a window's end; returns the results and the records too late for every window.
    fn aggregate<'scope, K, V, A>(
        self,
        input: Events<'scope, (K, V)>,
        lateness: u64,
        agg: A,
    ) -> WithLate<'scope, WindowResult<K, A::Out>, K, V>
    where
        K: Data + Hash + Eq,
        V: Data + Timestamped,
        A: Aggregator<V>;
}

impl<W: WindowAssigner> Windowing for W {
    fn aggregate<'scope, K, V, A>(
        self,
        input: Events<'scope, (K, V)>,
        lateness: u64,
        agg: A,
    ) -> WithLate<'scope, WindowResult<K, A::Out>, K, V>
    where
        K: Data + Hash + Eq,
        V: Data + Timestamped,
        A: Aggregator<V>,
    {
        aggregate::window_aggregate(input, self, lateness, agg)
    }
}

/// A keyed stream with its windowing (fixed windows or sessions), waiting for its
/// aggregation.
pub struct Windowed<'scope, K, V, W> {
    keyed: Keyed<'scope, K, V>,
    windowing: W,
    allowed_lateness: u64,
}

/// Windows a keyed stream.
impl<'scope, K: Data + Hash + Eq, V: Data + Timestamped> Keyed<'scope, K, V> {
    /// Groups each key's records into event-time windows.
    pub fn window<W: WindowAssigner>(self, assigner: W) -> Windowed<'scope, K, V, W> {
        self.windowed(assigner)
    }

    fn windowed<W: Windowing>(self, windowing: W) -> Windowed<'scope, K, V, W> {
        Windowed { keyed: self, windowing, allowed_lateness: 0 }
    }
}

impl<'scope, K, V, W> Windowed<'scope, K, V, W>
where
    K: Data + Hash + Eq,
    V: Data + Timestamped,
    W: Windowing,
{
    /// Keeps each window's state for `lateness` after its end (a session's: after it
    /// fired), so late records update it.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = millis(lateness);
        self
    }
    /// Aggregates each key's records per window. Records too late for any of their windows
    /// are counted (`tributary_operator_late_records_total`) and logged at debug level; use
    /// [`Windowed::aggregate_with_late`] to keep them.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use serde::{Deserialize, Serialize};
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use timely::dataflow::operators::vec::Map;
    /// use tributary_operators::{Count, KeyBy, Tumbling};
    /// use tributary_runtime::Timestamped;
    ///
    /// #[derive(Clone, Serialize, Deserialize)]
    /// struct Reading { ts: u64, sensor: char }
    /// impl Timestamped for Reading {
    ///     fn event_time(&self) -> u64 { self.ts }
    /// }
    ///
    /// let captured = timely::example(|scope| {
    ///     // Two readings in the first second, one in the next.
    ///     let readings = [100, 900, 1500].map(|ts| Reading { ts, sensor: 'a' });
    ///     readings
    ///         .to_stream(scope)
    ///         .container::<Vec<Reading>>()
    ///         .key_by(|r| r.sensor)
    ///         .window(Tumbling::new(Duration::from_secs(1)))
    ///         .aggregate(Count)
    ///         .map(|result| (result.window.start, result.value))
    ///         .capture()
    /// });
    /// let counts: Vec<(u64, u64)> = captured.extract().into_iter().flat_map(|(_, rs)| rs).collect();
    /// assert_eq!(counts, vec![(0, 2), (1000, 1)]);
    /// ```
    pub fn aggregate<A: Aggregator<V>>(self, agg: A) -> Events<'scope, WindowResult<K, A::Out>> {
        self.aggregate_with_late(agg).0
    }

    /// Aggregates each key's records per window, and returns the records that were too late
    /// for every window they belong to as a second stream.
    pub fn aggregate_with_late<A: Aggregator<V>>(
        self,
        agg: A,
    ) -> WithLate<'scope, WindowResult<K, A::Out>, K, V> {
        self.windowing.aggregate(self.keyed.into_stream(), self.allowed_lateness, agg)
    }
}
