//! Continuously updated keyed aggregates: no windows; each key's result is re-emitted
//! whenever its records change it.

use std::collections::BTreeMap;
use std::hash::Hash;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use tributary_runtime::logging::activation;
use tributary_runtime::{job_context, Checkpointer, Data, EventTime, Events, Time, Timestamped};

use crate::aggregate::Aggregator;
use crate::key_by::{key_hash, Keyed};
use crate::window::aggregate::{combine, Partial, Waiting};
use crate::window::Global;

/// A key's aggregate after an update. `revision` counts the updates of the key (0 first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyedUpdate<K, V> {
    /// The key.
    pub key: K,
    /// The aggregate over every record of the key so far.
    pub value: V,
    /// How many times this key was emitted before.
    pub revision: u32,
    /// The timely time (rounded event time) whose records this update completes.
    pub time: EventTime,
}

impl<K, V> Timestamped for KeyedUpdate<K, V> {
    fn event_time(&self) -> EventTime {
        self.time
    }
}

impl<'scope, K: Data + Hash + Eq, V: Data + Timestamped> Keyed<'scope, K, V> {
    /// Aggregates every record of each key, without windows, like a Kafka Streams table.
    /// When the frontier passes a timely time at which records changed a key, that key's
    /// new aggregate is emitted once, at that time. State grows with the number of keys.
    ///
    /// # Examples
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use timely::dataflow::operators::capture::{Capture, Extract};
    /// use timely::dataflow::operators::vec::Map;
    /// use tributary_operators::{KeyBy, Sum};
    /// use tributary_runtime::Timestamped;
    ///
    /// #[derive(Clone, Serialize, Deserialize)]
    /// struct Fill { ts: u64, qty: i64 }
    /// impl Timestamped for Fill {
    ///     fn event_time(&self) -> u64 { self.ts }
    /// }
    ///
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// timely::execute_directly(move |worker| {
    ///     let mut fills = timely::dataflow::InputHandle::new();
    ///     worker.dataflow::<u64, _, _>(|scope| {
    ///         fills.to_stream(scope)
    ///             .key_by(|_: &Fill| "position".to_owned())
    ///             .aggregate(Sum(|f: &Fill| f.qty))
    ///             .map(|u| (u.revision, u.value))
    ///             .capture_into(tx);
    ///     });
    ///     // Two fills at time 0, one at time 100: two updates of the position.
    ///     fills.send(Fill { ts: 0, qty: 5 });
    ///     fills.send(Fill { ts: 50, qty: -2 });
    ///     fills.advance_to(100);
    ///     fills.send(Fill { ts: 100, qty: 4 });
    /// });
    /// let updates: Vec<_> = rx.extract().into_iter().flat_map(|(_, us)| us).collect();
    /// assert_eq!(updates, vec![(0, 3), (1, 7)]);
    /// ```
    pub fn aggregate<A: Aggregator<V>>(self, agg: A) -> Events<'scope, KeyedUpdate<K, A::Out>> {
        let (partials, _never_late) = combine(self.into_stream(), "global", Global, 0, agg.clone());
        let exchange = Exchange::new(|(k, _, _): &Partial<K, A::Acc>| key_hash(k));
        let scope = partials.scope();
        let job = job_context(&scope);
        let name = "keyed-aggregate";
        let worker = scope.index();
        partials.unary_frontier(exchange, name, move |_cap, info| {
            let mut state: FxHashMap<K, (A::Acc, u32)> = FxHashMap::default();
            let mut checkpointer = Checkpointer::register(&scope, name, &info.address);
            if let Some(c) = &checkpointer {
                match c.restore::<Vec<(K, (A::Acc, u32))>>() {
                    Ok(Some(restore)) => state.extend(
                        restore.states.into_iter().flatten().filter(|(k, _)| c.owns(key_hash(k))),
                    ),
                    Ok(None) => {}
                    Err(error) => job.state.fail(error),
                }
            }
            // Partials wait here until the frontier passes their time, so that the update
            // at a time reflects exactly the records up to that time.
            let mut pending: Waiting<K, A::Acc> = BTreeMap::new();
            let mut changed: FxHashSet<K> = FxHashSet::default();
            move |(input, frontier), output| {
                let _activation = activation(name, worker);
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return data.clear() };
                    pending
                        .entry(time)
                        .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()))
                        .1
                        .append(data);
                });
                // Folds in the partials of the times the frontier has passed, below `limit`.
                macro_rules! fold {
                    ($limit:expr) => {
                        while let Some(entry) = pending.first_entry() {
                            let time = *entry.key();
                            if frontier.less_equal(&time) || time >= $limit {
                                break;
                            }
                            let (cap, partials) = entry.remove();
                            for (key, _, partial) in partials {
                                match state.get_mut(&key) {
                                    Some((acc, _)) => agg.merge(acc, partial),
                                    None => {
                                        state.insert(key.clone(), (partial, 0));
                                    }
                                }
                                changed.insert(key);
                            }
                            let mut session = output.session(&cap);
                            for key in changed.drain() {
                                let (acc, revision) =
                                    state.get_mut(&key).expect("changed keys exist");
                                session.give(KeyedUpdate {
                                    key,
                                    value: agg.finish(acc),
                                    revision: *revision,
                                    time,
                                });
                                *revision += 1;
                            }
                        }
                    };
                }
                // A pending checkpoint sees the partials below its cut, and only those.
                let cut = checkpointer.as_ref().and_then(|c| c.pending());
                fold!(cut.unwrap_or(Time::MAX));
                let Some(c) = checkpointer.as_mut() else { return };
                let saving = cut.is_some_and(|cut| frontier.frontier().iter().all(|&f| f >= cut));
                let ended = frontier.frontier().is_empty();
                if saving || ended {
                    let snapshot: Vec<_> =
                        state.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    let saved = if ended { c.finish(&snapshot) } else { c.save(&snapshot) };
                    if let Err(error) = saved {
                        job.state.fail(error);
                    }
                    if ended {
                        checkpointer = None;
                    }
                }
                fold!(Time::MAX);
            }
        })
    }
}
