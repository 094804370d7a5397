//! Interval join: a left record `a` meets every right record `b` of its key with
//! `b.ts ∈ [a.ts + lower, a.ts + upper]`.
//!
//! Both sides are routed by key. An arriving record is matched against the other side's
//! stored records of its key, emitting each pair as soon as its second record arrives (at the
//! later of the two records' timely times, so no result is earlier than its inputs), and
//! is then stored until no record of the other side can match it any more: a left record
//! until the right input's frontier passes `a.ts + upper` (plus the right side's reach and
//! the allowed lateness), a right record until the left input's frontier passes
//! `b.ts - lower` (likewise). A left outer join emits an unmatched left record when it is
//! freed, at the timely time it was read, so the operator holds back its output frontier by
//! the interval's reach (inner joins hold nothing back).

use std::collections::BTreeMap;
use std::hash::Hash;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use tributary_runtime::checkpoint::Restore;
use tributary_runtime::stateful::{self, BinaryState, Emitter, KeyedState};
use tributary_runtime::time::millis;
use tributary_runtime::{job_context, Data, EventTime, Events, Granularity, Time, Timestamped};

use super::{HeldCapabilities, Joined, Joins};
use crate::key_by::{key_hash, Keyed};

/// Two keyed streams and a relative interval, waiting for the join.
pub struct IntervalJoin<'scope, K, L, R> {
    left: Keyed<'scope, K, L>,
    right: Keyed<'scope, K, R>,
    lower: i64,
    upper: i64,
    left_outer: bool,
    lateness: u64,
}

/// A signed span in milliseconds, as `Duration` cannot be negative.
fn signed(d: Duration, negative: bool) -> i64 {
    let ms = i64::try_from(millis(d)).unwrap_or(i64::MAX);
    if negative {
        -ms
    } else {
        ms
    }
}

impl<'scope, K: Data + Hash + Eq, L: Data + Timestamped> Keyed<'scope, K, L> {
    /// Joins this stream with `right`: a left record at `a.ts` meets each right record of
    /// its key with `b.ts` in `[a.ts + lower, a.ts + upper]`. Bounds are signed durations:
    /// `(Duration, bool)` with `true` meaning negative, e.g. `(ten_s, true)` for −10 s.
    ///
    /// # Panics
    /// If `lower > upper`.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use timely::dataflow::operators::capture::{Capture, Extract};
    /// use timely::dataflow::operators::vec::Map;
    /// use timely::dataflow::operators::ToStream;
    /// use tributary_operators::KeyBy;
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
    /// // Orders and the payments that follow them within 5 s, per user.
    /// let captured = timely::example(|scope| {
    ///     let orders = [ev(1, 1000, 0), ev(2, 1000, 0)].to_stream(scope).container::<Vec<_>>();
    ///     let payments = [ev(1, 4000, 0), ev(2, 9000, 0)].to_stream(scope).container::<Vec<_>>();
    ///     let five_s = Duration::from_secs(5);
    ///     orders.key_by(|o| o.key)
    ///         .interval_join(payments.key_by(|p| p.key), (Duration::ZERO, false), (five_s, false))
    ///         .join()
    ///         .map(|j| (j.key, j.left.ts, j.right.map(|r| r.ts)))
    ///         .capture()
    /// });
    /// let rows: Vec<_> = captured.extract().into_iter().flat_map(|(_, rs)| rs).collect();
    /// assert_eq!(rows, vec![(1, 1000, Some(4000))]);
    /// ```
    pub fn interval_join<R: Data + Timestamped>(
        self,
        right: Keyed<'scope, K, R>,
        lower: (Duration, bool),
        upper: (Duration, bool),
    ) -> IntervalJoin<'scope, K, L, R> {
        let (lower, upper) = (signed(lower.0, lower.1), signed(upper.0, upper.1));
        assert!(
            lower <= upper,
            "interval join: lower bound {lower} ms above upper bound {upper} ms"
        );
        IntervalJoin { left: self, right, lower, upper, left_outer: false, lateness: 0 }
    }
}

/// One stored record.
#[derive(Clone, Serialize, Deserialize)]
struct Row<V> {
    ts: EventTime,
    value: V,
    /// The timely time it was read at (for the outer row's capability).
    time: Time,
    matched: bool,
}

/// One key's stored records of one side, and the earliest visit scheduled for them.
struct KeyRows<V> {
    rows: Vec<Row<V>>,
    visit: Option<Time>,
}

/// One side's stored records: per key, and the keys to visit when the other side's frontier
/// reaches a time.
struct Side<K, V> {
    keys: FxHashMap<K, KeyRows<V>>,
    visits: BTreeMap<Time, Vec<K>>,
}

impl<K: Hash + Eq + Clone, V> Side<K, V> {
    fn new() -> Self {
        Side { keys: FxHashMap::default(), visits: BTreeMap::new() }
    }

    /// The stored records, over all keys.
    fn len(&self) -> usize {
        self.keys.values().map(|k| k.rows.len()).sum()
    }

    /// The stored records of `key`.
    fn rows(&mut self, key: &K) -> Option<&mut Vec<Row<V>>> {
        self.keys.get_mut(key).map(|k| &mut k.rows)
    }

    /// Stores a row that may be freed once the other side's frontier reaches `expiry`.
    fn insert(&mut self, key: K, row: Row<V>, expiry: Time, granularity: Granularity) {
        // Frontiers move in steps of the granularity: visit at the step.
        let at = granularity.ceil(expiry);
        let entry =
            self.keys.entry(key.clone()).or_insert(KeyRows { rows: Vec::new(), visit: None });
        entry.rows.push(row);
        if entry.visit.is_none_or(|v| at < v) {
            entry.visit = Some(at);
            self.visits.entry(at).or_default().push(key);
        }
    }

    /// Each key's stored records, for a checkpoint.
    fn snapshot(&self) -> SavedSide<K, V>
    where
        V: Clone,
    {
        SavedSide {
            keys: self.keys.iter().map(|(k, rows)| (k.clone(), rows.rows.clone())).collect(),
        }
    }

    /// Frees the rows whose expiry the other side's `frontier` has reached, passing each to
    /// `freed`.
    fn expire(
        &mut self,
        frontier: Time,
        granularity: Granularity,
        expiry: impl Fn(EventTime) -> Time,
        mut freed: impl FnMut(&K, Row<V>),
    ) {
        while let Some(entry) = self.visits.first_entry() {
            if *entry.key() > frontier {
                break;
            }
            for key in entry.remove() {
                let Some(state) = self.keys.get_mut(&key) else { continue };
                if state.visit.is_some_and(|v| v <= frontier) {
                    state.visit = None;
                }
                let rows = &mut state.rows;
                let mut i = 0;
                while i < rows.len() {
                    if expiry(rows[i].ts) <= frontier {
                        freed(&key, rows.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                // Rows that arrived out of order expire later: visit again for them.
                match rows.iter().map(|r| expiry(r.ts)).min() {
                    None => {
                        self.keys.remove(&key);
                    }
                    Some(next) => {
                        let at = granularity.ceil(next);
                        if state.visit.is_none_or(|v| at < v) {
                            state.visit = Some(at);
                            self.visits.entry(at).or_default().push(key);
                        }
                    }
                }
            }
        }
    }
}

impl<'scope, K, L, R> IntervalJoin<'scope, K, L, R>
where
    K: Data + Hash + Eq,
    L: Data + Timestamped,
    R: Data + Timestamped,
{
    /// Also emits each left record that matched nothing, once its interval has passed.
    pub fn left_outer(mut self) -> Self {
        self.left_outer = true;
        self
    }

    /// Accepts records up to `lateness` behind the watermark (beyond their reach).
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = millis(lateness);
        self
    }

    /// The join's results; too-late records are counted and dropped.
    pub fn join(self) -> Events<'scope, Joined<K, L, R>> {
        self.join_with_late().joined
    }

    /// The join's results and the too-late records of each side.
    pub fn join_with_late(self) -> Joins<'scope, Joined<K, L, R>, K, L, R> {
        let IntervalJoin { left, right, lower, upper, left_outer, lateness } = self;
        let (left, right) = (left.into_stream(), right.into_stream());
        let scope = left.scope();
        let state = State {
            lefts: Side::new(),
            rights: Side::new(),
            held: HeldCapabilities::new(),
            bounds: Bounds { lower, upper, lateness, granularity: job_context(&scope).granularity },
            left_outer,
            later: Vec::new(),
            results: Vec::new(),
        };
        let exchange = (
            Exchange::new(|(k, _): &(K, L)| key_hash(k)),
            Exchange::new(|(k, _): &(K, R)| key_hash(k)),
        );
        let name = format!("interval-join:interval[{lower}ms, {upper}ms]");
        let (joined, late_left, late_right) = stateful::binary(left, right, exchange, &name, state);
        Joins { joined, late_left, late_right }
    }
}

/// The interval, the allowed lateness and what follows from them.
#[derive(Clone, Copy)]
struct Bounds {
    lower: i64,
    upper: i64,
    lateness: u64,
    granularity: Granularity,
}

impl Bounds {
    /// How far past its own event time a left record's pairs can lie.
    fn reach_left(&self) -> u64 {
        self.upper.max(0) as u64
    }

    /// How far past its own event time a right record's pairs can lie.
    fn reach_right(&self) -> u64 {
        self.lower.min(0).unsigned_abs()
    }

    /// A left row is done when no accepted right record can have `b.ts <= a.ts + upper`:
    /// once the right frontier reaches this.
    fn left_expiry(&self) -> impl Fn(EventTime) -> Time {
        let shift = self.upper + self.reach_right() as i64 + self.lateness as i64 + 1;
        move |ts| (ts as i64 + shift).max(0) as Time
    }

    /// A right row is done once the left frontier reaches this.
    fn right_expiry(&self) -> impl Fn(EventTime) -> Time {
        let shift = -self.lower + self.reach_left() as i64 + self.lateness as i64 + 1;
        move |ts| (ts as i64 + shift).max(0) as Time
    }

    /// Moves the records of a batch read at `time` that are too late to `too_late`.
    fn split_late<K, V: Timestamped>(
        &self,
        time: Time,
        reach: u64,
        data: &mut Vec<(K, V)>,
        too_late: &mut Vec<(K, V)>,
    ) {
        let late = |v: &V| {
            let ts = v.event_time();
            super::too_late(time, self.granularity.quantize(ts), ts, reach, self.lateness)
        };
        if data.iter().any(|(_, v)| late(v)) {
            let (kept, late): (Vec<_>, Vec<_>) = data.drain(..).partition(|(_, v)| !late(v));
            *data = kept;
            too_late.extend(late);
        }
    }
}

/// One side's stored records in a checkpoint, by key.
#[derive(Serialize, Deserialize)]
struct SavedSide<K, V> {
    keys: Vec<(K, Vec<Row<V>>)>,
}

/// Both sides' stored records in a checkpoint.
#[derive(Serialize, Deserialize)]
struct SavedRows<K, L, R> {
    lefts: SavedSide<K, L>,
    rights: SavedSide<K, R>,
}

/// The stored records of both sides on one worker.
struct State<K, L, R> {
    lefts: Side<K, L>,
    rights: Side<K, R>,
    /// For the outer rows of unmatched left records.
    held: HeldCapabilities,
    bounds: Bounds,
    left_outer: bool,
    /// Pairs whose stored record was read at a later timely time than the batch that
    /// matched it: they go out at that later time, never before either record's.
    later: Vec<(Time, Joined<K, L, R>)>,
    /// The pairs of the batch being absorbed.
    results: Vec<Joined<K, L, R>>,
}

impl<K, L, R> State<K, L, R>
where
    K: Data + Hash + Eq,
    L: Data + Timestamped,
    R: Data + Timestamped,
{
    /// Matches a batch of left records read at `cap` (none too late) with the stored right
    /// records, then stores them.
    fn match_left(&mut self, cap: &Capability<Time>, data: &mut Vec<(K, L)>) {
        let time = *cap.time();
        let Bounds { lower, upper, granularity, .. } = self.bounds;
        let expiry = self.bounds.left_expiry();
        let results = &mut self.results;
        for (key, a) in data.drain(..) {
            let ts = a.event_time();
            let mut matched = false;
            if let Some(rows) = self.rights.rows(&key) {
                let (from, to) = (ts as i64 + lower, ts as i64 + upper);
                for b in rows.iter_mut().filter(|b| (from..=to).contains(&(b.ts as i64))) {
                    b.matched = true;
                    matched = true;
                    let right = Some(b.value.clone());
                    let joined = Joined { key: key.clone(), left: a.clone(), right };
                    if b.time > time {
                        self.later.push((b.time, joined));
                    } else {
                        results.push(joined);
                    }
                }
            }
            if self.left_outer {
                self.held.hold(time, || cap.clone());
            }
            let row = Row { ts, value: a, time, matched };
            self.lefts.insert(key, row, expiry(ts), granularity);
        }
    }

    /// Matches a batch of right records read at `cap` (none too late) with the stored left
    /// records, then stores them.
    fn match_right(&mut self, cap: &Capability<Time>, data: &mut Vec<(K, R)>) {
        let time = *cap.time();
        let Bounds { lower, upper, granularity, .. } = self.bounds;
        let expiry = self.bounds.right_expiry();
        let results = &mut self.results;
        for (key, b) in data.drain(..) {
            let ts = b.event_time();
            if let Some(rows) = self.lefts.rows(&key) {
                let (from, to) = (ts as i64 - upper, ts as i64 - lower);
                for a in rows.iter_mut().filter(|a| (from..=to).contains(&(a.ts as i64))) {
                    a.matched = true;
                    let joined =
                        Joined { key: key.clone(), left: a.value.clone(), right: Some(b.clone()) };
                    if a.time > time {
                        self.later.push((a.time, joined));
                    } else {
                        results.push(joined);
                    }
                }
            }
            let row = Row { ts, value: b, time, matched: false };
            self.rights.insert(key, row, expiry(ts), granularity);
        }
    }

    /// Sends the batch's pairs at `cap`, and the pairs that must wait for a later time at
    /// that time.
    fn emit(&mut self, cap: &Capability<Time>, output: &mut Emitter<'_, '_, Joined<K, L, R>>) {
        output.give(cap, &mut self.results);
        self.later.sort_by_key(|(time, _)| *time);
        let mut pairs = self.later.drain(..).peekable();
        while let Some((time, joined)) = pairs.next() {
            self.results.push(joined);
            if pairs.peek().is_none_or(|(next, _)| *next != time) {
                output.give(&cap.delayed(&time), &mut self.results);
            }
        }
    }

    /// Frees the left rows the right frontier has passed (emitting the outer rows of
    /// unmatched ones) and the right rows the left frontier has passed.
    fn expire(
        &mut self,
        left_frontier: Time,
        right_frontier: Time,
        output: &mut Emitter<'_, '_, Joined<K, L, R>>,
    ) {
        let granularity = self.bounds.granularity;
        let (left_outer, held) = (self.left_outer, &mut self.held);
        let mut outer_rows: Vec<(Time, Joined<K, L, R>)> = Vec::new();
        self.lefts.expire(right_frontier, granularity, self.bounds.left_expiry(), |key, row| {
            if left_outer {
                if !row.matched {
                    let joined = Joined { key: key.clone(), left: row.value, right: None };
                    outer_rows.push((row.time, joined));
                } else {
                    held.release(row.time);
                }
            }
        });
        outer_rows.sort_by_key(|(time, _)| *time);
        let mut results = Vec::new();
        let mut rows = outer_rows.into_iter().peekable();
        while let Some((time, joined)) = rows.next() {
            results.push(joined);
            if rows.peek().is_none_or(|(next, _)| *next != time) {
                let count = results.len();
                output.give(held.get(time), &mut results);
                for _ in 0..count {
                    held.release(time);
                }
            }
        }
        self.rights.expire(left_frontier, granularity, self.bounds.right_expiry(), |_, _| {});
    }
}

impl<K, L, R> KeyedState for State<K, L, R>
where
    K: Data + Hash + Eq,
    L: Data + Timestamped,
    R: Data + Timestamped,
{
    type Output = Joined<K, L, R>;
    type Saved = SavedRows<K, L, R>;
    const VERSION: u32 = 1;

    /// Takes back the keys this worker owns from every saved part. Left rows of an outer join
    /// hold `initial` delayed to the cut for their outer rows.
    fn restore(&mut self, restore: Restore<Self::Saved>, initial: &Capability<Time>) {
        let bounds = self.bounds;
        let (left_expiry, right_expiry) = (bounds.left_expiry(), bounds.right_expiry());
        for SavedRows { lefts, rights } in &restore.states {
            for (key, rows) in lefts.keys.iter().filter(|(k, _)| restore.owns(key_hash(k))) {
                for row in rows {
                    let mut row = row.clone();
                    row.time = row.time.max(restore.cut);
                    if self.left_outer {
                        self.held.hold(row.time, || initial.delayed(&row.time));
                    }
                    let expiry = left_expiry(row.ts);
                    self.lefts.insert(key.clone(), row, expiry, bounds.granularity);
                }
            }
            for (key, rows) in rights.keys.iter().filter(|(k, _)| restore.owns(key_hash(k))) {
                for row in rows {
                    let expiry = right_expiry(row.ts);
                    self.rights.insert(key.clone(), row.clone(), expiry, bounds.granularity);
                }
            }
        }
    }

    fn advance(&mut self, frontiers: &[Time], output: &mut Emitter<'_, '_, Self::Output>) {
        self.expire(frontiers[0], frontiers[1], output);
    }

    /// The left rows read before the cut wait for their outer rows at the cut instead, so
    /// that the operator holds no capability below it.
    fn prepare_save(&mut self, cut: Time) {
        if self.left_outer {
            self.held.lift(cut);
            for rows in self.lefts.keys.values_mut() {
                for row in &mut rows.rows {
                    row.time = row.time.max(cut);
                }
            }
        }
    }

    fn snapshot(&self) -> Self::Saved {
        SavedRows { lefts: self.lefts.snapshot(), rights: self.rights.snapshot() }
    }

    fn entries(&self) -> usize {
        self.lefts.len() + self.rights.len()
    }
}

impl<K, L, R> BinaryState for State<K, L, R>
where
    K: Data + Hash + Eq,
    L: Data + Timestamped,
    R: Data + Timestamped,
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
        self.match_left(cap, data);
        self.emit(cap, output);
    }

    fn absorb_right(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<(K, R)>,
        output: &mut Emitter<'_, '_, Self::Output>,
    ) {
        self.match_right(cap, data);
        self.emit(cap, output);
    }

    fn split_late_left(&mut self, time: Time, data: &mut Vec<(K, L)>, late: &mut Vec<(K, L)>) {
        self.bounds.split_late(time, self.bounds.reach_left(), data, late);
    }

    fn split_late_right(&mut self, time: Time, data: &mut Vec<(K, R)>, late: &mut Vec<(K, R)>) {
        self.bounds.split_late(time, self.bounds.reach_right(), data, late);
    }
}
