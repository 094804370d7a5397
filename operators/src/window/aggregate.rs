//! The windowed aggregation operator, in two phases.
//!
//! 1. `window-combine` (on the worker that read the record, no exchange): folds each input
//!    batch into one partial accumulator per key and window, and splits off records that are
//!    too late for all their windows. Where the assigner has panes (sliding windows whose size
//!    is a multiple of the slide), a record is folded once into its pane, and each pane's
//!    accumulator is sent to the pane's windows.
//! 2. `window-aggregate` (after the keyed exchange): merges partials into per-window state,
//!    fires windows when the frontier reaches their end, emits corrections for late
//!    partials, and frees a window once the frontier passes its end plus the allowed lateness.
//!
//! Lateness is judged by a record's timely time, which is its split's watermark when it was
//! read (or its own event time, rounded down, if it was on time): a record at time `t` is late
//! for a window if `t >= end`, and too late if `t >= end + allowed_lateness`. The rule needs no
//! frontier, so both phases agree on it, and a window's state is never freed while a record
//! that may still update it can arrive.
//!
//! The output is a function of the records' times alone, never of when partials arrive: a
//! window's first result holds exactly its on-time records; late partials wait until the
//! frontier passes their time and are applied time by time, after the windows ending at or
//! before that time have fired, each time emitting one correction per key and window it
//! changed. A key's results carry revisions 0, 1, 2, ... (0 also when its first result comes
//! from late records only). So a run restored from a checkpoint, with any worker count,
//! emits what a run without a crash emits.

use std::collections::BTreeMap;
use std::hash::Hash;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use tributary_runtime::checkpoint::Restore;
use tributary_runtime::logging::activation;
use tributary_runtime::metrics as m;
use tributary_runtime::status::LateCounter;
use tributary_runtime::{Data, Events, Granularity, Time, Timestamped};

use super::merge::{merge_phase, Output, Partial, Store, Waiting};
use super::{instrument, Window, WindowAssigner, WindowResult, WithLate};
use crate::aggregate::{Aggregator, SavedKey};
use crate::key_by::key_hash;

pub(super) fn window_aggregate<'scope, K, V, W, A>(
    input: Events<'scope, (K, V)>,
    assigner: W,
    lateness: u64,
    agg: A,
) -> WithLate<'scope, WindowResult<K, A::Out>, K, V>
where
    K: Data + Hash + Eq,
    V: Data + Timestamped,
    W: WindowAssigner,
    A: Aggregator<V>,
{
    let name = assigner.describe();
    let (partials, late) = combine(input, &name, assigner, lateness, agg.clone());
    let results = merge_phase::<_, _, Windows<K, A::Acc>>(partials, &name, lateness, agg);
    (results, late)
}

/// Phase 1: per-batch pre-aggregation and the late split.
pub(crate) fn combine<'scope, K, V, W, A>(
    input: Events<'scope, (K, V)>,
    name: &str,
    assigner: W,
    lateness: u64,
    agg: A,
) -> WithLate<'scope, Partial<K, A::Acc>, K, V>
where
    K: Data + Hash + Eq,
    V: Data + Timestamped,
    W: WindowAssigner,
    A: Aggregator<V>,
{
    let scope = input.scope();
    let (operator, late_counter) = instrument(&scope, "window-combine", name, m::LATE_DROPPED);

    let mut builder = OperatorBuilder::new(operator.clone(), scope);
    let mut input = builder.new_input(input, Pipeline);
    let (partial_out, partials) = builder.new_output();
    let (late_out, late) = builder.new_output();
    let mut partial_out = OutputBuilder::from(partial_out);
    let mut late_out = OutputBuilder::from(late_out);

    let worker = scope.index();
    builder.build(move |_capabilities| {
        // Per batch: pane -> key -> accumulator. Few panes per batch, so a short Vec.
        let mut batch: Vec<Pane<K, A::Acc>> = Vec::new();
        let mut spare: Vec<Pane<K, A::Acc>> = Vec::new();
        let mut windows: Vec<Window> = Vec::new();
        let mut too_late: Vec<(K, V)> = Vec::new();
        move |_frontiers| {
            let _activation = activation(&operator, worker);
            let mut partial_out = partial_out.activate();
            let mut late_out = late_out.activate();
            input.for_each(|cap, data| {
                // Every message in a Tributary graph is sent under a capability.
                let Some(&time) = cap.least() else { return data.clear() };
                // The windows of this batch a record can still change.
                let open = |w: &Window| time < w.end.saturating_add(lateness);
                for (key, value) in data.drain(..) {
                    let t = value.event_time();
                    if let Some(pane) = assigner.pane(t) {
                        let slot = Pane::find(&mut batch, &mut spare, pane, |windows| {
                            assigner.assign(pane.start, |w| windows.extend(Some(w).filter(open)))
                        });
                        if slot.windows.is_empty() {
                            too_late.push((key, value));
                        } else {
                            fold(&mut slot.accs, &agg, key, &value);
                        }
                        continue;
                    }
                    // No panes: fold into each window, a pane of its own.
                    windows.clear();
                    assigner.assign(t, |w| windows.extend(Some(w).filter(open)));
                    let Some((&last, rest)) = windows.split_last() else {
                        too_late.push((key, value));
                        continue;
                    };
                    for &w in rest {
                        let slot = Pane::find(&mut batch, &mut spare, w, |ws| ws.push(w));
                        fold(&mut slot.accs, &agg, key.clone(), &value);
                    }
                    let slot = Pane::find(&mut batch, &mut spare, last, |ws| ws.push(last));
                    fold(&mut slot.accs, &agg, key, &value);
                }
                let mut session = partial_out.session(&cap);
                for mut pane in batch.drain(..) {
                    // Window by window, so that the merge finds runs of one window (a pane
                    // without an open window holds no accumulators).
                    if let Some((&last, rest)) = pane.windows.split_last() {
                        for &w in rest {
                            for (k, acc) in &pane.accs {
                                session.give((k.clone(), w, acc.clone()));
                            }
                        }
                        for (k, acc) in pane.accs.drain() {
                            session.give((k, last, acc));
                        }
                    }
                    pane.windows.clear();
                    spare.push(pane);
                }
                drop(session);
                if !too_late.is_empty() {
                    late_counter.increment(too_late.len() as u64);
                    tracing::debug!(operator = %operator, time, records = too_late.len(),
                        "records too late for every window");
                    late_out.session(&cap).give_container(&mut too_late);
                    too_late.clear();
                }
            });
        }
    });
    (partials, late)
}

/// The records of one batch in one pane (a window of its own when the assigner has no panes),
/// folded per key, and the windows of the pane they still change.
struct Pane<K, Acc> {
    pane: Window,
    windows: Vec<Window>,
    accs: FxHashMap<K, Acc>,
}

impl<K, Acc> Pane<K, Acc> {
    /// The batch's entry for `pane`, made (from a spare one) with the windows `windows` gives
    /// if the batch has none yet.
    #[inline]
    fn find<'a>(
        batch: &'a mut Vec<Self>,
        spare: &mut Vec<Self>,
        pane: Window,
        windows: impl FnOnce(&mut Vec<Window>),
    ) -> &'a mut Self {
        let index = match batch.iter().rposition(|p| p.pane == pane) {
            Some(i) => i,
            None => {
                let mut entry = spare.pop().unwrap_or_else(|| Pane {
                    pane,
                    windows: Vec::new(),
                    accs: FxHashMap::default(),
                });
                entry.pane = pane;
                windows(&mut entry.windows);
                batch.push(entry);
                batch.len() - 1
            }
        };
        &mut batch[index]
    }
}

#[inline]
fn fold<K: Hash + Eq, V, A: Aggregator<V>>(
    accs: &mut FxHashMap<K, A::Acc>,
    agg: &A,
    key: K,
    value: &V,
) {
    if let Some(acc) = accs.get_mut(&key) {
        agg.add(acc, value);
    } else {
        let mut acc = agg.init();
        agg.add(&mut acc, value);
        accs.insert(key, acc);
    }
}

/// The state of one window on one worker.
struct Slot<K, Acc> {
    window: Window,
    /// Each key's accumulator and the revision its next result carries (0 until its first).
    accs: FxHashMap<K, (Acc, u32)>,
    /// Held until the window fires, at the earliest time its result may carry.
    cap: Option<Capability<Time>>,
    fired: bool,
}

/// One window's state in a checkpoint.
#[derive(Serialize, Deserialize)]
struct SavedWindow<K, Acc> {
    window: Window,
    fired: bool,
    /// Each key's accumulator and next revision.
    keys: Vec<SavedKey<K, Acc>>,
}

/// The windows of one worker, by end (for fixed-size windows the end identifies the window).
struct Windows<K, Acc> {
    slots: BTreeMap<(Time, Time), Slot<K, Acc>>,
    /// Partials read at or after their window's end (late), by time: applied in time order
    /// once the frontier has passed their time, each time's corrections once. What a window
    /// emits then depends only on the records' times, not on when the partials arrived.
    late: Waiting<K, Acc>,
    corrections: Vec<((Time, Time), K)>,
    lateness: u64,
    granularity: Granularity,
}

impl<K: Data + Hash + Eq, Acc: Data> Store for Windows<K, Acc> {
    type Key = K;
    type Acc = Acc;
    type Saved = Vec<SavedWindow<K, Acc>>;
    const VERSION: u32 = 1;

    fn new(lateness: u64, granularity: Granularity) -> Self {
        let (slots, late, corrections) = (BTreeMap::new(), BTreeMap::new(), Vec::new());
        Windows { slots, late, corrections, lateness, granularity }
    }

    /// Those on time merge into their window, late ones wait for the frontier.
    fn absorb<V, A: Aggregator<V, Acc = Acc>>(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<Partial<K, Acc>>,
        agg: &A,
    ) {
        let (time, granularity) = (*cap.time(), self.granularity);
        // Partials come in runs of one window: look its slot up once per run.
        let mut current: Option<&mut Slot<K, Acc>> = None;
        for (key, window, partial) in data.drain(..) {
            if time >= window.end {
                let late = self.late.entry(time).or_insert_with(|| (cap.clone(), Vec::new()));
                late.1.push((key, window, partial));
                continue;
            }
            let slot = match current {
                Some(slot) if slot.window == window => slot,
                _ => {
                    let slot = self.slots.entry((window.end, window.start)).or_insert_with(|| {
                        Slot { window, accs: FxHashMap::default(), cap: None, fired: false }
                    });
                    // On time: the frontier has not reached the window's end: not fired.
                    debug_assert!(!slot.fired, "an on-time partial for a fired window");
                    // The result carries event time end - 1; hold the earliest time allowed.
                    let at = time.max(granularity.quantize(window.end - 1));
                    if slot.cap.as_ref().is_none_or(|c| at < *c.time()) {
                        slot.cap = Some(cap.delayed(&at));
                    }
                    slot
                }
            };
            match slot.accs.get_mut(&key) {
                Some((acc, _)) => agg.merge(acc, partial),
                None => {
                    slot.accs.insert(key, (partial, 0));
                }
            }
            current = Some(slot);
        }
    }

    fn waiting(&self) -> &Waiting<K, Acc> {
        &self.late
    }

    fn waiting_mut(&mut self) -> &mut Waiting<K, Acc> {
        &mut self.late
    }

    fn free(&mut self, watermark: Time) {
        let lateness = self.lateness;
        while let Some(entry) = self.slots.first_entry() {
            if entry.get().window.end.saturating_add(lateness) > watermark {
                break;
            }
            entry.remove();
        }
    }

    /// Fires the windows ending at or before `time` that have not fired.
    fn fire<V, A, O>(&mut self, time: Time, agg: &A, output: &mut O)
    where
        A: Aggregator<V, Acc = Acc>,
        O: Output<K, A::Out>,
    {
        for (_, slot) in self.slots.range_mut(..(time.saturating_add(1), 0)) {
            if slot.fired {
                continue;
            }
            slot.fired = true;
            let Some(cap) = slot.cap.take() else { continue };
            let window = slot.window;
            let mut results: Vec<_> = (slot.accs.iter_mut())
                .map(|(key, (acc, revision))| {
                    let result = WindowResult {
                        key: key.clone(),
                        window,
                        value: agg.finish(acc),
                        revision: *revision,
                    };
                    *revision += 1;
                    result
                })
                .collect();
            output(&cap, &mut results);
        }
    }

    /// Merges the late partials of one time into their (fired) windows and emits a
    /// correction per key and window they changed; a key's first result is revision 0 even
    /// when it comes from late records only.
    fn correct<V, A, O>(
        &mut self,
        cap: &Capability<Time>,
        partials: Vec<Partial<K, Acc>>,
        agg: &A,
        late_updates: &LateCounter,
        output: &mut O,
    ) where
        A: Aggregator<V, Acc = Acc>,
        O: Output<K, A::Out>,
    {
        for (key, window, partial) in partials {
            let id = (window.end, window.start);
            // Fired just before if it had on-time records; new (and so fired) otherwise.
            let slot = self.slots.entry(id).or_insert_with(|| Slot {
                window,
                accs: FxHashMap::default(),
                cap: None,
                fired: true,
            });
            debug_assert!(slot.fired, "a late partial for a window that has not fired");
            match slot.accs.get_mut(&key) {
                Some((acc, _)) => agg.merge(acc, partial),
                None => {
                    slot.accs.insert(key.clone(), (partial, 0));
                }
            }
            self.corrections.push((id, key));
        }
        let mut seen = rustc_hash::FxHashSet::default();
        self.corrections.retain(|c| seen.insert(c.clone()));
        late_updates.increment(self.corrections.len() as u64);
        let mut results = Vec::with_capacity(self.corrections.len());
        for (id, key) in self.corrections.drain(..) {
            let slot = self.slots.get_mut(&id).expect("corrected windows exist");
            let (acc, revision) = slot.accs.get_mut(&key).expect("corrected keys exist");
            results.push(WindowResult {
                key,
                window: slot.window,
                value: agg.finish(acc),
                revision: *revision,
            });
            *revision += 1;
        }
        output(cap, &mut results);
    }

    fn snapshot(&self) -> Vec<SavedWindow<K, Acc>> {
        let keys = |s: &Slot<K, Acc>| {
            let key = |(key, (acc, revision)): (&K, &(Acc, u32))| SavedKey {
                key: key.clone(),
                acc: acc.clone(),
                revision: *revision,
            };
            s.accs.iter().map(key).collect()
        };
        let window =
            |s: &Slot<K, Acc>| SavedWindow { window: s.window, fired: s.fired, keys: keys(s) };
        self.slots.values().map(window).collect()
    }

    /// Takes back the keys this worker owns from every saved part; a window not yet fired
    /// holds `initial` delayed to the later of its result time and the cut.
    fn restore(&mut self, restore: Restore<Vec<SavedWindow<K, Acc>>>, initial: &Capability<Time>) {
        let granularity = self.granularity;
        for saved in restore.states.iter().flatten() {
            let window = saved.window;
            let slot = self.slots.entry((window.end, window.start)).or_insert_with(|| Slot {
                window,
                accs: FxHashMap::default(),
                cap: None,
                fired: saved.fired,
            });
            for SavedKey { key, acc, revision } in &saved.keys {
                if restore.owns(key_hash(key)) {
                    slot.accs.insert(key.clone(), (acc.clone(), *revision));
                }
            }
            if !saved.fired && slot.cap.is_none() && !slot.accs.is_empty() {
                let at = restore.cut.max(granularity.quantize(window.end - 1));
                slot.cap = Some(initial.delayed(&at));
            }
        }
        self.slots.retain(|_, slot| !slot.accs.is_empty());
    }

    fn entries(&self) -> usize {
        self.slots.values().map(|slot| slot.accs.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};
    use timely::dataflow::operators::capture::{Capture, Extract};
    use timely::dataflow::operators::vec::Map;
    use timely::dataflow::InputHandle;
    use tributary_runtime::{EventTime, Timestamped};

    use crate::{Count, KeyBy, Tumbling};

    #[derive(Clone, Serialize, Deserialize)]
    struct R {
        key: u32,
        ts: EventTime,
    }

    impl Timestamped for R {
        fn event_time(&self) -> EventTime {
            self.ts
        }
    }

    /// `(key, count, revision)` of every result of one-second windows with ten seconds of
    /// allowed lateness, for `(timely time, record)` inputs sent in order.
    fn results(inputs: Vec<(u64, R)>) -> Vec<(u32, u64, u32)> {
        let (tx, rx) = std::sync::mpsc::channel();
        timely::execute_directly(move |worker| {
            let mut input = InputHandle::new();
            worker.dataflow::<u64, _, _>(|scope| {
                input
                    .to_stream(scope)
                    .key_by(|r: &R| r.key)
                    .window(Tumbling::new(Duration::from_secs(1)))
                    .allowed_lateness(Duration::from_secs(10))
                    .aggregate(Count)
                    .map(|w| (w.key, w.value, w.revision))
                    .capture_into(tx);
            });
            for (time, record) in inputs {
                input.advance_to(time);
                input.send(record);
            }
        });
        rx.extract().into_iter().flat_map(|(_, results)| results).collect()
    }

    #[test]
    fn a_key_whose_first_records_are_late_starts_at_revision_0() {
        // Key 1 on time; key 0's two readings of the window [0, 1000) both arrive after the
        // window fired, within the allowed lateness, at two later times.
        let got = results(vec![
            (200, R { key: 1, ts: 200 }),
            (1500, R { key: 0, ts: 500 }),
            (2500, R { key: 0, ts: 600 }),
        ]);
        assert_eq!(got, vec![(1, 1, 0), (0, 1, 0), (0, 2, 1)]);
    }

    #[test]
    fn a_window_whose_only_records_are_late_emits_revision_0_first() {
        let got = results(vec![
            (1500, R { key: 0, ts: 500 }),
            (1500, R { key: 0, ts: 700 }),
            (2500, R { key: 0, ts: 600 }),
        ]);
        // The two readings at one time are one result; the next time corrects it.
        assert_eq!(got, vec![(0, 2, 0), (0, 3, 1)]);
    }
}
