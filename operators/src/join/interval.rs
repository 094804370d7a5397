//! Interval join: a left record `a` meets every right record `b` of its key with
//! `b.ts ∈ [a.ts + lower, a.ts + upper]`.
//!
//! Both sides are routed by key. An arriving record is matched against the other side's
//! stored records of its key, emitting each pair as soon as its second record arrives, and
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
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use tributary_runtime::metrics as m;
use tributary_runtime::time::millis;
use tributary_runtime::{job_context, Data, EventTime, Events, Granularity, Time, Timestamped};

use super::{too_late, HeldCapabilities, Joined, Joins};
use crate::key_by::{key_hash, Keyed};
use crate::window::instrument;

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
        let granularity = job_context(&scope).granularity;
        let name = format!("interval[{lower}ms, {upper}ms]");
        let (operator, late_dropped) = instrument(&scope, "interval-join", &name, m::LATE_DROPPED);
        // How far past its own event time a record's pairs can lie.
        let reach_left = upper.max(0) as u64;
        let reach_right = lower.min(0).unsigned_abs();
        // A left row is done when no accepted right record can have b.ts <= a.ts + upper.
        let (l, ll) = (lateness as i64, reach_right as i64);
        let left_expiry = move |ts: EventTime| (ts as i64 + upper + ll + l + 1).max(0) as Time;
        let lr = reach_left as i64;
        let right_expiry = move |ts: EventTime| (ts as i64 - lower + lr + l + 1).max(0) as Time;

        tributary_runtime::checkpoint::unsupported(&scope, &operator);
        let mut builder = OperatorBuilder::new(operator.clone(), scope);
        let mut left_in = builder.new_input(left, Exchange::new(|(k, _): &(K, L)| key_hash(k)));
        let mut right_in = builder.new_input(right, Exchange::new(|(k, _): &(K, R)| key_hash(k)));
        let (joined_out, joined) = builder.new_output();
        let (late_left_out, late_left) = builder.new_output();
        let (late_right_out, late_right) = builder.new_output();
        let mut joined_out = OutputBuilder::from(joined_out);
        let mut late_left_out = OutputBuilder::from(late_left_out);
        let mut late_right_out = OutputBuilder::from(late_right_out);

        builder.build(move |_capabilities| {
            let mut lefts: Side<K, L> = Side::new();
            let mut rights: Side<K, R> = Side::new();
            // For the outer rows of unmatched left records.
            let mut held = HeldCapabilities::new();
            let mut too_late_left: Vec<(K, L)> = Vec::new();
            let mut too_late_right: Vec<(K, R)> = Vec::new();
            move |frontiers| {
                let mut joined_out = joined_out.activate();
                let mut late_left_out = late_left_out.activate();
                let mut late_right_out = late_right_out.activate();

                left_in.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return data.clear() };
                    let mut session = joined_out.session(&cap);
                    for (key, a) in data.drain(..) {
                        let ts = a.event_time();
                        if too_late(time, granularity.quantize(ts), ts, reach_left, lateness) {
                            too_late_left.push((key, a));
                            continue;
                        }
                        let mut matched = false;
                        if let Some(rows) = rights.rows(&key) {
                            let (from, to) = (ts as i64 + lower, ts as i64 + upper);
                            for b in rows.iter_mut() {
                                if (from..=to).contains(&(b.ts as i64)) {
                                    b.matched = true;
                                    matched = true;
                                    session.give(Joined {
                                        key: key.clone(),
                                        left: a.clone(),
                                        right: Some(b.value.clone()),
                                    });
                                }
                            }
                        }
                        if left_outer {
                            held.hold(time, || cap.delayed(&time, 0));
                        }
                        let row = Row { ts, value: a, time, matched };
                        lefts.insert(key, row, left_expiry(ts), granularity);
                    }
                    drop(session);
                    if !too_late_left.is_empty() {
                        late_dropped.increment(too_late_left.len() as u64);
                        tracing::debug!(operator = %operator, time, side = "left",
                            records = too_late_left.len(), "records too late for the join");
                        late_left_out.session(&cap).give_container(&mut too_late_left);
                        too_late_left.clear();
                    }
                });

                right_in.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return data.clear() };
                    let mut session = joined_out.session(&cap);
                    for (key, b) in data.drain(..) {
                        let ts = b.event_time();
                        if too_late(time, granularity.quantize(ts), ts, reach_right, lateness) {
                            too_late_right.push((key, b));
                            continue;
                        }
                        if let Some(rows) = lefts.rows(&key) {
                            let (from, to) = (ts as i64 - upper, ts as i64 - lower);
                            for a in rows.iter_mut() {
                                if (from..=to).contains(&(a.ts as i64)) {
                                    a.matched = true;
                                    session.give(Joined {
                                        key: key.clone(),
                                        left: a.value.clone(),
                                        right: Some(b.clone()),
                                    });
                                }
                            }
                        }
                        let row = Row { ts, value: b, time, matched: false };
                        rights.insert(key, row, right_expiry(ts), granularity);
                    }
                    drop(session);
                    if !too_late_right.is_empty() {
                        late_dropped.increment(too_late_right.len() as u64);
                        tracing::debug!(operator = %operator, time, side = "right",
                            records = too_late_right.len(), "records too late for the join");
                        late_right_out.session(&cap).give_container(&mut too_late_right);
                        too_late_right.clear();
                    }
                });

                let frontier = |i: usize| frontiers[i].frontier().first().copied();
                let right_frontier = frontier(1).unwrap_or(Time::MAX);
                let mut outer_rows: Vec<(Time, Joined<K, L, R>)> = Vec::new();
                lefts.expire(right_frontier, granularity, left_expiry, |key, row| {
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
                for (time, joined) in outer_rows {
                    joined_out.session(held.get(time)).give(joined);
                    held.release(time);
                }
                rights.expire(
                    frontier(0).unwrap_or(Time::MAX),
                    granularity,
                    right_expiry,
                    |_, _| {},
                );
            }
        });
        Joins { joined, late_left, late_right }
    }
}
