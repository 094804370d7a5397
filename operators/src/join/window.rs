//! Window join: records of two keyed streams that share a key and a window.
//!
//! Both sides are routed by key and buffered per window. When the frontier of both inputs
//! reaches a window's end, the window fires: every left record is paired with every right
//! record of its key. A late record within the allowed lateness is paired with the window's
//! records of the other side at once. Outer rows (a key with records on one side only) are
//! emitted when the window's state is freed, at `end + allowed_lateness`, because until then
//! a late record may still match them. Records too late for every window go to the late
//! outputs. Results carry event time `end - 1`, like window aggregates.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use tributary_runtime::checkpoint::Restore;
use tributary_runtime::metrics as m;
use tributary_runtime::stateful::{self, BinaryState, Emitter, KeyedState};
use tributary_runtime::status::LateCounter;
use tributary_runtime::time::millis;
use tributary_runtime::{job_context, Data, EventTime, Events, Granularity, Time, Timestamped};

use super::{JoinKind, Joins};
use crate::key_by::{key_hash, Keyed};
use crate::window::{instrument, Window, WindowAssigner};

/// One result of a window join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowJoined<K, L, R> {
    /// The key both records share.
    pub key: K,
    /// The window both records fall in.
    pub window: Window,
    /// The left record; `None` for an unmatched right record of a full outer join.
    pub left: Option<L>,
    /// The right record; `None` for an unmatched left record of an outer join.
    pub right: Option<R>,
}

impl<K, L, R> Timestamped for WindowJoined<K, L, R> {
    fn event_time(&self) -> EventTime {
        self.window.end - 1
    }
}

/// Two keyed streams and a window assigner, waiting for the join.
pub struct WindowJoin<'scope, K, L, R, W> {
    left: Keyed<'scope, K, L>,
    right: Keyed<'scope, K, R>,
    assigner: W,
    kind: JoinKind,
    lateness: u64,
}

impl<'scope, K: Data + Hash + Eq, L: Data + Timestamped> Keyed<'scope, K, L> {
    /// Joins this stream with `right` on key and window: each record meets the other side's
    /// records of its key in every window the assigner puts both in.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use timely::dataflow::operators::capture::{Capture, Extract};
    /// use timely::dataflow::operators::vec::Map;
    /// use timely::dataflow::operators::ToStream;
    /// use tributary_operators::{JoinKind, KeyBy, Tumbling};
    /// use serde::{Deserialize, Serialize};
    /// use tributary_runtime::Timestamped;
    ///
    /// #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    /// struct Ev { key: u32, ts: u64, x: i32 }
    /// impl Timestamped for Ev {
    ///     fn event_time(&self) -> u64 { self.ts }
    /// }
    /// fn ev(key: u32, ts: u64, x: i32) -> Ev { Ev { key, ts, x } }
    ///
    /// let captured = timely::example(|scope| {
    ///     let left = [ev(1, 100, 0), ev(2, 200, 0)].to_stream(scope).container::<Vec<_>>();
    ///     let right = [ev(1, 900, 7), ev(1, 1500, 8)].to_stream(scope).container::<Vec<_>>();
    ///     left.key_by(|l| l.key)
    ///         .window_join(right.key_by(|r| r.key), Tumbling::new(Duration::from_secs(1)))
    ///         .kind(JoinKind::LeftOuter)
    ///         .join()
    ///         .map(|j| (j.key, j.window.start, j.right.map(|r| r.x)))
    ///         .capture()
    /// });
    /// let mut rows: Vec<_> = captured.extract().into_iter().flat_map(|(_, rs)| rs).collect();
    /// rows.sort();
    /// // Sensor 1 meets the reading of its window; sensor 2 has none.
    /// assert_eq!(rows, vec![(1, 0, Some(7)), (2, 0, None)]);
    /// ```
    pub fn window_join<R, W>(
        self,
        right: Keyed<'scope, K, R>,
        assigner: W,
    ) -> WindowJoin<'scope, K, L, R, W>
    where
        R: Data + Timestamped,
        W: WindowAssigner,
    {
        WindowJoin { left: self, right, assigner, kind: JoinKind::Inner, lateness: 0 }
    }
}

impl<'scope, K, L, R, W> WindowJoin<'scope, K, L, R, W>
where
    K: Data + Hash + Eq,
    L: Data + Timestamped,
    R: Data + Timestamped,
    W: WindowAssigner,
{
    /// Inner (the default), left outer or full outer.
    pub fn kind(mut self, kind: JoinKind) -> Self {
        self.kind = kind;
        self
    }

    /// Keeps each window's records for `lateness` after its end, so late records still join.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = millis(lateness);
        self
    }

    /// The join's results; too-late records are counted and dropped.
    pub fn join(self) -> Events<'scope, WindowJoined<K, L, R>> {
        self.join_with_late().joined
    }

    /// The join's results and the records too late for every window, per side.
    pub fn join_with_late(self) -> Joins<'scope, WindowJoined<K, L, R>, K, L, R> {
        let WindowJoin { left, right, assigner, kind, lateness } = self;
        let (left, right) = (left.into_stream(), right.into_stream());
        let scope = left.scope();
        let name = assigner.describe();
        let (operator, late_updates) = instrument(&scope, "window-join", &name, m::LATE_UPDATES);
        let state = State {
            slots: BTreeMap::new(),
            windows: Vec::new(),
            results: Vec::new(),
            assigner,
            lateness,
            kind,
            granularity: job_context(&scope).granularity,
            late_updates,
        };
        let exchange = (
            Exchange::new(|(k, _): &(K, L)| key_hash(k)),
            Exchange::new(|(k, _): &(K, R)| key_hash(k)),
        );
        let (joined, late_left, late_right) =
            stateful::binary(left, right, exchange, &operator, state);
        Joins { joined, late_left, late_right }
    }
}

/// One key's left and right records in one window.
type Entry<L, R> = (Vec<L>, Vec<R>);

/// The records of one window on one worker.
struct Slot<K, L, R> {
    window: Window,
    /// Each key's left and right records.
    keys: FxHashMap<K, Entry<L, R>>,
    /// Held until the window fires (outer joins: until it is freed).
    cap: Option<Capability<Time>>,
    fired: bool,
}

/// One window's records in a checkpoint.
#[derive(Serialize, Deserialize)]
struct SavedWindow<K, L, R> {
    window: Window,
    fired: bool,
    /// Each key's left and right records.
    keys: Vec<(K, Entry<L, R>)>,
}

/// A side's records in a key's entry, and the other side's.
type Split<L, R, Me, Other> = fn(&mut Entry<L, R>) -> (&mut Vec<Me>, &[Other]);

/// One side of the join: where its records live in a key's entry (with the other side's
/// records beside them), and how a record of it pairs with one of the other side.
struct Side<K, L, R, Me, Other> {
    split: Split<L, R, Me, Other>,
    pair: fn(&K, Window, Me, Other) -> WindowJoined<K, L, R>,
}

fn left_side<K: Clone, L, R>() -> Side<K, L, R, L, R> {
    fn split<L, R>(entry: &mut Entry<L, R>) -> (&mut Vec<L>, &[R]) {
        (&mut entry.0, &entry.1)
    }
    Side { split, pair }
}

fn right_side<K: Clone, L, R>() -> Side<K, L, R, R, L> {
    fn split<L, R>(entry: &mut Entry<L, R>) -> (&mut Vec<R>, &[L]) {
        (&mut entry.1, &entry.0)
    }
    Side { split, pair: |key, window, r, l| pair(key, window, l, r) }
}

/// The open windows of one worker, by end (for fixed-size windows the end identifies the
/// window), and what judging and firing them needs.
struct State<K, L, R, W> {
    slots: BTreeMap<(Time, Time), Slot<K, L, R>>,
    /// Scratch: the windows a record joins in.
    windows: Vec<Window>,
    /// Scratch: the pairs of a batch.
    results: Vec<WindowJoined<K, L, R>>,
    assigner: W,
    lateness: u64,
    kind: JoinKind,
    granularity: Granularity,
    /// Counts the late records accepted (paired at once with a fired window).
    late_updates: LateCounter,
}

impl<K, L, R, W> State<K, L, R, W>
where
    K: Data + Hash + Eq,
    L: Data + Timestamped,
    R: Data + Timestamped,
    W: WindowAssigner,
{
    /// Fills `self.windows` with the windows a record of event time `ts` read at `time`
    /// still joins in; `false` if there are none (the record is too late).
    fn assign(&mut self, time: Time, ts: EventTime) -> bool {
        let (windows, lateness) = (&mut self.windows, self.lateness);
        windows.clear();
        self.assigner.assign(ts, |w| {
            if time < w.end.saturating_add(lateness) {
                windows.push(w);
            }
        });
        !windows.is_empty()
    }

    /// Moves the records of a batch read at `time` that are too late for every window to
    /// `too_late`.
    fn split_late<V: Timestamped>(
        &mut self,
        time: Time,
        data: &mut Vec<(K, V)>,
        too_late: &mut Vec<(K, V)>,
    ) {
        let mut kept = Vec::with_capacity(data.len());
        for (key, v) in data.drain(..) {
            if self.assign(time, v.event_time()) {
                kept.push((key, v));
            } else {
                too_late.push((key, v));
            }
        }
        *data = kept;
    }

    /// Adds a batch of one side read at `cap` (none too late) to its windows, pairing
    /// records that arrive after their window fired with the other side at once.
    fn absorb<Me: Clone + Timestamped, Other: Clone>(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<(K, Me)>,
        side: Side<K, L, R, Me, Other>,
        output: &mut Emitter<'_, '_, WindowJoined<K, L, R>>,
    ) {
        let time = *cap.time();
        let mut accepted_late = 0;
        let mut results = std::mem::take(&mut self.results);
        for (key, v) in data.drain(..) {
            let assigned = self.assign(time, v.event_time());
            debug_assert!(assigned, "a too-late record absorbed");
            for &w in &self.windows {
                let slot = slot(&mut self.slots, w, time, self.granularity, |at| cap.delayed(&at));
                let (mine, others) = (side.split)(slot.keys.entry(key.clone()).or_default());
                if slot.fired {
                    accepted_late += 1;
                    results
                        .extend(others.iter().map(|o| (side.pair)(&key, w, v.clone(), o.clone())));
                }
                mine.push(v.clone());
            }
        }
        self.late_updates.increment(accepted_late);
        output.give(cap, &mut results);
        self.results = results;
    }

    /// Fires the windows `watermark` has passed, then frees those past their lateness (with
    /// their outer rows).
    fn fire(&mut self, watermark: Time, output: &mut Emitter<'_, '_, WindowJoined<K, L, R>>) {
        let outer = self.kind != JoinKind::Inner;
        let mut results = Vec::new();
        for (_, slot) in self.slots.range_mut(..(watermark.saturating_add(1), 0)) {
            if slot.fired {
                continue;
            }
            slot.fired = true;
            let Some(cap) = slot.cap.take() else { continue };
            for (key, (lefts, rights)) in &slot.keys {
                for l in lefts {
                    results.extend(
                        rights.iter().map(|r| pair(key, slot.window, l.clone(), r.clone())),
                    );
                }
            }
            output.give(&cap, &mut results);
            if outer {
                slot.cap = Some(cap);
            }
        }
        while let Some(entry) = self.slots.first_entry() {
            if entry.get().window.end.saturating_add(self.lateness) > watermark {
                break;
            }
            let slot = entry.remove();
            let (true, Some(cap)) = (outer, slot.cap.as_ref()) else { continue };
            for (key, (lefts, rights)) in slot.keys {
                if rights.is_empty() {
                    results.extend(
                        lefts.into_iter().map(|l| outer_row(&key, slot.window, Some(l), None)),
                    );
                } else if lefts.is_empty() && self.kind == JoinKind::FullOuter {
                    results.extend(
                        rights.into_iter().map(|r| outer_row(&key, slot.window, None, Some(r))),
                    );
                }
            }
            output.give(cap, &mut results);
        }
    }
}

impl<K, L, R, W> KeyedState for State<K, L, R, W>
where
    K: Data + Hash + Eq,
    L: Data + Timestamped,
    R: Data + Timestamped,
    W: WindowAssigner,
{
    type Output = WindowJoined<K, L, R>;
    type Saved = Vec<SavedWindow<K, L, R>>;
    const VERSION: u32 = 1;

    /// Takes back the keys this worker owns from every saved part; a window that still has
    /// results to emit holds `initial` delayed to the later of its result time and the cut.
    fn restore(&mut self, restore: Restore<Self::Saved>, initial: &Capability<Time>) {
        for saved in restore.states.iter().flatten() {
            let (window, fired) = (saved.window, saved.fired);
            let slot = self.slots.entry((window.end, window.start)).or_insert_with(|| Slot {
                window,
                keys: FxHashMap::default(),
                cap: None,
                fired,
            });
            for (key, entry) in &saved.keys {
                if restore.owns(key_hash(key)) {
                    slot.keys.insert(key.clone(), entry.clone());
                }
            }
            let emits = !fired || self.kind != JoinKind::Inner;
            if emits && slot.cap.is_none() && !slot.keys.is_empty() {
                let at = restore.cut.max(self.granularity.quantize(window.end - 1));
                slot.cap = Some(initial.delayed(&at));
            }
        }
        self.slots.retain(|_, slot| !slot.keys.is_empty());
    }

    /// The watermark of the join is the earlier of its two inputs' frontiers.
    fn advance(&mut self, frontiers: &[Time], output: &mut Emitter<'_, '_, Self::Output>) {
        self.fire(frontiers[0].min(frontiers[1]), output);
    }

    /// Fired windows of an outer join wait for their outer rows at the cut instead, so that
    /// the operator holds no capability below it.
    fn prepare_save(&mut self, cut: Time) {
        for cap in self.slots.values_mut().filter_map(|s| s.cap.as_mut()) {
            if *cap.time() < cut {
                *cap = cap.delayed(&cut);
            }
        }
    }

    fn snapshot(&self) -> Self::Saved {
        let keys = |s: &Slot<K, L, R>| s.keys.iter().map(|(k, e)| (k.clone(), e.clone())).collect();
        let window =
            |s: &Slot<K, L, R>| SavedWindow { window: s.window, fired: s.fired, keys: keys(s) };
        self.slots.values().map(window).collect()
    }

    fn entries(&self) -> usize {
        let entry = |(l, r): &Entry<L, R>| l.len() + r.len();
        self.slots.values().flat_map(|s| s.keys.values().map(entry)).sum()
    }
}

impl<K, L, R, W> BinaryState for State<K, L, R, W>
where
    K: Data + Hash + Eq,
    L: Data + Timestamped,
    R: Data + Timestamped,
    W: WindowAssigner,
{
    type Left = (K, L);
    type Right = (K, R);
    const SPLITS_LATE: bool = true;

    fn absorb_left(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<(K, L)>,
        output: &mut Emitter<'_, '_, Self::Output>,
    ) {
        self.absorb(cap, data, left_side(), output);
    }

    fn absorb_right(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<(K, R)>,
        output: &mut Emitter<'_, '_, Self::Output>,
    ) {
        self.absorb(cap, data, right_side(), output);
    }

    fn split_late_left(&mut self, time: Time, data: &mut Vec<(K, L)>, late: &mut Vec<(K, L)>) {
        self.split_late(time, data, late);
    }

    fn split_late_right(&mut self, time: Time, data: &mut Vec<(K, R)>, late: &mut Vec<(K, R)>) {
        self.split_late(time, data, late);
    }
}

/// The slot of window `w`, created if new; its capability is lowered to what a record read
/// at `time` allows.
fn slot<K, L, R>(
    slots: &mut BTreeMap<(Time, Time), Slot<K, L, R>>,
    w: Window,
    time: Time,
    granularity: Granularity,
    delayed: impl FnOnce(Time) -> Capability<Time>,
) -> &mut Slot<K, L, R> {
    let slot = slots.entry((w.end, w.start)).or_insert_with(|| Slot {
        window: w,
        keys: FxHashMap::default(),
        cap: None,
        fired: false,
    });
    if !slot.fired {
        let at = time.max(granularity.quantize(w.end - 1));
        if slot.cap.as_ref().is_none_or(|c| at < *c.time()) {
            slot.cap = Some(delayed(at));
        }
    }
    slot
}

fn pair<K: Clone, L, R>(key: &K, window: Window, l: L, r: R) -> WindowJoined<K, L, R> {
    WindowJoined { key: key.clone(), window, left: Some(l), right: Some(r) }
}

fn outer_row<K: Clone, L, R>(
    key: &K,
    window: Window,
    left: Option<L>,
    right: Option<R>,
) -> WindowJoined<K, L, R> {
    WindowJoined { key: key.clone(), window, left, right }
}
