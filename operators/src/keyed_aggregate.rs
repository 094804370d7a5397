//! Continuously updated keyed aggregates: no windows; each key's result is re-emitted
//! whenever its records change it.

use std::collections::BTreeMap;
use std::hash::Hash;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use tributary_runtime::{Data, EventTime, Events, Time, Timestamped};

use crate::aggregate::Aggregator;
use crate::key_by::{key_hash, Keyed};
use crate::window::aggregate::{combine, Partial};
use crate::window::Global;

/// Partials waiting for the frontier, by time.
type Stash<K, Acc> = BTreeMap<Time, (Capability<Time>, Vec<Partial<K, Acc>>)>;

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
        tributary_runtime::checkpoint::unsupported(&partials.scope(), "keyed-aggregate");
        partials.unary_frontier(exchange, "keyed-aggregate", move |_cap, _info| {
            let mut state: FxHashMap<K, (A::Acc, u32)> = FxHashMap::default();
            // Partials wait here until the frontier passes their time, so that the update
            // at a time reflects exactly the records up to that time.
            let mut pending: Stash<K, A::Acc> = BTreeMap::new();
            let mut changed: FxHashSet<K> = FxHashSet::default();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return data.clear() };
                    pending
                        .entry(time)
                        .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()))
                        .1
                        .append(data);
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let time = *entry.key();
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
                        let (acc, revision) = state.get_mut(&key).expect("changed keys exist");
                        session.give(KeyedUpdate {
                            key,
                            value: agg.finish(acc),
                            revision: *revision,
                            time,
                        });
                        *revision += 1;
                    }
                }
            }
        })
    }
}
