//! Continuously updated keyed aggregates: no windows; each key's result is re-emitted
//! whenever its records change it.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::marker::PhantomData;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use tributary_runtime::checkpoint::Restore;
use tributary_runtime::stateful::{self, Emitter, KeyedState, UnaryState};
use tributary_runtime::{Data, EventTime, Events, Time, Timestamped};

use crate::aggregate::{Aggregator, SavedKey};
use crate::key_by::{key_hash, Keyed};
use crate::window::aggregate::combine;
use crate::window::merge::{wait, Partial, Waiting};
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
        let state = KeyedAggregate {
            keys: FxHashMap::default(),
            pending: BTreeMap::new(),
            changed: FxHashSet::default(),
            agg,
            record: PhantomData,
        };
        stateful::unary(partials, exchange, "keyed-aggregate", state)
    }
}

/// Each key's accumulator, emitted for every time whose records changed it.
struct KeyedAggregate<K, V, A: Aggregator<V>> {
    /// Each key's accumulator and the revision its next update carries.
    keys: FxHashMap<K, (A::Acc, u32)>,
    /// Partials wait here until the frontier passes their time, so that the update at a
    /// time reflects exactly the records up to that time.
    pending: Waiting<K, A::Acc>,
    changed: FxHashSet<K>,
    agg: A,
    record: PhantomData<fn(&V)>,
}

/// The keyed aggregate's state in a checkpoint.
#[derive(Serialize, Deserialize)]
struct SavedKeys<K, Acc> {
    keys: Vec<SavedKey<K, Acc>>,
}

impl<K, V, A> KeyedState for KeyedAggregate<K, V, A>
where
    K: Data + Hash + Eq,
    V: 'static,
    A: Aggregator<V>,
{
    type Output = KeyedUpdate<K, A::Out>;
    type Saved = SavedKeys<K, A::Acc>;
    const VERSION: u32 = 1;

    fn restore(&mut self, restore: Restore<Self::Saved>, _initial: &Capability<Time>) {
        let saved = restore.states.iter().flat_map(|s| &s.keys);
        for SavedKey { key, acc, revision } in saved.filter(|s| restore.owns(key_hash(&s.key))) {
            self.keys.insert(key.clone(), (acc.clone(), *revision));
        }
    }

    /// Folds in the partials of the times the frontier has passed, emitting each changed key
    /// once per time.
    fn advance(&mut self, frontiers: &[Time], output: &mut Emitter<'_, '_, Self::Output>) {
        let mut updates = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            let time = *entry.key();
            if time >= frontiers[0] {
                break;
            }
            let (cap, partials) = entry.remove();
            for (key, _, partial) in partials {
                match self.keys.get_mut(&key) {
                    Some((acc, _)) => self.agg.merge(acc, partial),
                    None => {
                        self.keys.insert(key.clone(), (partial, 0));
                    }
                }
                self.changed.insert(key);
            }
            for key in self.changed.drain() {
                let (acc, revision) = self.keys.get_mut(&key).expect("changed keys exist");
                let value = self.agg.finish(acc);
                updates.push(KeyedUpdate { key, value, revision: *revision, time });
                *revision += 1;
            }
            output.give(&cap, &mut updates);
        }
    }

    fn snapshot(&self) -> Self::Saved {
        debug_assert!(self.pending.is_empty(), "partials below the cut left at a save");
        let keys = self.keys.iter().map(|(key, (acc, revision))| SavedKey {
            key: key.clone(),
            acc: acc.clone(),
            revision: *revision,
        });
        SavedKeys { keys: keys.collect() }
    }

    fn entries(&self) -> usize {
        self.keys.len()
    }
}

impl<K, V, A> UnaryState for KeyedAggregate<K, V, A>
where
    K: Data + Hash + Eq,
    V: 'static,
    A: Aggregator<V>,
{
    type Input = Partial<K, A::Acc>;

    fn absorb(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<Self::Input>,
        _output: &mut Emitter<'_, '_, Self::Output>,
    ) {
        wait(&mut self.pending, cap, data);
    }
}
