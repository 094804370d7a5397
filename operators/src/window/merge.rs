//! Phase 2 of a windowed aggregation, shared by fixed windows and sessions: the partials,
//! exchanged by key, merged into a [`Store`] that the stateful driver runs.
//!
//! Partials that must wait for the frontier (late ones for fixed windows, all of them for
//! sessions) are applied time by time once the frontier has passed their time, after what
//! ends at or before that time has fired, so what the operator emits depends only on the
//! records' times (see [`Merge`]'s `advance`).

use std::collections::BTreeMap;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use tributary_runtime::checkpoint::Restore;
use tributary_runtime::stateful::{self, Emitter, KeyedState, UnaryState};
use tributary_runtime::status::LateCounter;
use tributary_runtime::{job_context, metrics as m, Data, Events, Granularity, Time};

use super::{instrument, Window, WindowResult};
use crate::aggregate::Aggregator;

/// A partial aggregate of one key in one window.
pub(crate) type Partial<K, Acc> = (K, Window, Acc);

/// Partials waiting for the frontier to pass their time, by time, with a capability for it.
pub(crate) type Waiting<K, Acc> = BTreeMap<Time, (Capability<Time>, Vec<Partial<K, Acc>>)>;

/// Puts a batch of partials read at `cap` among those waiting for the frontier.
pub(crate) fn wait<K, Acc>(
    waiting: &mut Waiting<K, Acc>,
    cap: &Capability<Time>,
    data: &mut Vec<Partial<K, Acc>>,
) {
    let (_, partials) = waiting.entry(*cap.time()).or_insert_with(|| (cap.clone(), Vec::new()));
    partials.append(data);
}

/// Where the output of a [`Store`] goes: results at a capability's time.
pub(crate) trait Output<K, Out>:
    FnMut(&Capability<Time>, &mut Vec<WindowResult<K, Out>>)
{
}

impl<K, Out, F: FnMut(&Capability<Time>, &mut Vec<WindowResult<K, Out>>)> Output<K, Out> for F {}

/// The per-worker state of the merge phase: fixed windows or sessions.
pub(crate) trait Store: Sized + 'static {
    /// The key of the aggregation.
    type Key: Data + Hash + Eq;
    /// The aggregator's accumulator.
    type Acc: Data;
    /// The state in a checkpoint.
    type Saved: Serialize + DeserializeOwned;
    /// The version of `Saved` (see [`KeyedState::VERSION`]).
    const VERSION: u32;

    /// An empty store keeping state for `lateness` after a window's end, for a job of
    /// `granularity`.
    fn new(lateness: u64, granularity: Granularity) -> Self;

    /// Takes a batch of partials read at `cap`: they merge at once or wait (in
    /// [`Store::waiting_mut`]) for the frontier to pass their time.
    fn absorb<V, A: Aggregator<V, Acc = Self::Acc>>(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<Partial<Self::Key, Self::Acc>>,
        agg: &A,
    );
    /// The partials waiting for the frontier, by time.
    fn waiting(&self) -> &Waiting<Self::Key, Self::Acc>;
    /// The same, to take from.
    fn waiting_mut(&mut self) -> &mut Waiting<Self::Key, Self::Acc>;
    /// Fires what ends at or before `time` and has not fired.
    fn fire<V, A, O>(&mut self, time: Time, agg: &A, output: &mut O)
    where
        A: Aggregator<V, Acc = Self::Acc>,
        O: Output<Self::Key, A::Out>;
    /// Merges the waiting partials of one time, read at `cap`, and emits one correction per
    /// result they changed that had fired (counted in `late_updates`).
    fn correct<V, A, O>(
        &mut self,
        cap: &Capability<Time>,
        partials: Vec<Partial<Self::Key, Self::Acc>>,
        agg: &A,
        late_updates: &LateCounter,
        output: &mut O,
    ) where
        A: Aggregator<V, Acc = Self::Acc>,
        O: Output<Self::Key, A::Out>;
    /// Frees what the frontier at `watermark` has passed by its allowed lateness.
    fn free(&mut self, watermark: Time);
    /// Takes back the keys this worker owns from a checkpoint (see [`KeyedState::restore`]).
    fn restore(&mut self, restore: Restore<Self::Saved>, initial: &Capability<Time>);
    /// The state to save at a cut.
    fn snapshot(&self) -> Self::Saved;
    /// Keys times windows (or sessions) held, for the state gauge.
    fn entries(&self) -> usize;
}

/// Phase 2 (`window-aggregate:<name>`): the partials, exchanged by key, merged into a store
/// `S` keeping state for `lateness`, on the stateful driver.
pub(crate) fn merge_phase<'scope, V, A, S>(
    partials: Events<'scope, Partial<S::Key, A::Acc>>,
    name: &str,
    lateness: u64,
    agg: A,
) -> Events<'scope, WindowResult<S::Key, A::Out>>
where
    V: 'static,
    A: Aggregator<V>,
    S: Store<Acc = A::Acc>,
{
    let scope = partials.scope();
    let (operator, late_updates) = instrument(&scope, "window-aggregate", name, m::LATE_UPDATES);
    let exchange = Exchange::new(|(k, _, _): &Partial<S::Key, A::Acc>| crate::key_hash(k));
    let store = S::new(lateness, job_context(&scope).granularity);
    let state = Merge { store, agg, late_updates, record: PhantomData };
    stateful::unary(partials, exchange, &operator, state)
}

/// Phase 2 as the stateful driver runs it.
struct Merge<S, V, A> {
    store: S,
    agg: A,
    late_updates: LateCounter,
    record: PhantomData<fn(&V)>,
}

impl<S, V, A> KeyedState for Merge<S, V, A>
where
    V: 'static,
    A: Aggregator<V>,
    S: Store<Acc = A::Acc>,
{
    type Output = WindowResult<S::Key, A::Out>;
    type Saved = S::Saved;
    const VERSION: u32 = S::VERSION;

    fn restore(&mut self, restore: Restore<Self::Saved>, initial: &Capability<Time>) {
        self.store.restore(restore, initial);
    }

    /// Applies the waiting partials below the watermark in time order (at each time, what
    /// ends at or before it fires first), fires what the watermark has passed, then frees
    /// what is past its lateness.
    fn advance(&mut self, frontiers: &[Time], output: &mut Emitter<'_, '_, Self::Output>) {
        let watermark = frontiers[0];
        let (store, agg, late) = (&mut self.store, &self.agg, &self.late_updates);
        let mut emit = |cap: &Capability<Time>, results: &mut Vec<_>| output.give(cap, results);
        loop {
            let first = store.waiting().first_key_value().map(|(t, _)| *t);
            let next = first.filter(|t| *t < watermark);
            store.fire(next.unwrap_or(watermark), agg, &mut emit);
            let Some(time) = next else { break };
            let (cap, partials) = store.waiting_mut().remove(&time).expect("a waiting time");
            store.correct(&cap, partials, agg, late, &mut emit);
        }
        store.free(watermark);
    }

    fn snapshot(&self) -> Self::Saved {
        // Every waiting partial below the cut has been applied (the cut lies above all that
        // was sent when it was taken).
        debug_assert!(self.store.waiting().is_empty(), "partials left at a cut");
        self.store.snapshot()
    }

    fn entries(&self) -> usize {
        self.store.entries()
    }
}

impl<S, V, A> UnaryState for Merge<S, V, A>
where
    V: 'static,
    A: Aggregator<V>,
    S: Store<Acc = A::Acc>,
{
    type Input = Partial<S::Key, A::Acc>;

    fn absorb(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<Self::Input>,
        _output: &mut Emitter<'_, '_, Self::Output>,
    ) {
        self.store.absorb(cap, data, &self.agg);
    }
}
