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
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use tributary_runtime::metrics as m;
use tributary_runtime::time::millis;
use tributary_runtime::{job_context, Data, EventTime, Events, Time, Timestamped};

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
        let granularity = job_context(&scope).granularity;
        let name = assigner.describe();
        let (operator, late_dropped) = instrument(&scope, "window-join", &name, m::LATE_DROPPED);
        let late_updates = instrument(&scope, "window-join", &name, m::LATE_UPDATES).1;
        let outer = kind != JoinKind::Inner;

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
            let mut slots: BTreeMap<(Time, Time), Slot<K, L, R>> = BTreeMap::new();
            let mut windows: Vec<Window> = Vec::new();
            let mut too_late_left: Vec<(K, L)> = Vec::new();
            let mut too_late_right: Vec<(K, R)> = Vec::new();
            move |frontiers| {
                let mut joined_out = joined_out.activate();
                let mut late_left_out = late_left_out.activate();
                let mut late_right_out = late_right_out.activate();

                left_in.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return data.clear() };
                    let mut session = joined_out.session(&cap);
                    let mut accepted_late = 0;
                    for (key, l) in data.drain(..) {
                        windows.clear();
                        assigner.assign(l.event_time(), |w| {
                            if time < w.end.saturating_add(lateness) {
                                windows.push(w);
                            }
                        });
                        if windows.is_empty() {
                            too_late_left.push((key, l));
                            continue;
                        }
                        for &w in &windows {
                            let slot =
                                slot(&mut slots, w, time, granularity, |at| cap.delayed(&at, 0));
                            let (lefts, rights) = slot.keys.entry(key.clone()).or_default();
                            if slot.fired {
                                accepted_late += 1;
                                for r in rights.iter() {
                                    session.give(pair(&key, w, l.clone(), r.clone()));
                                }
                            }
                            lefts.push(l.clone());
                        }
                    }
                    drop(session);
                    late_updates.increment(accepted_late);
                    if !too_late_left.is_empty() {
                        late_dropped.increment(too_late_left.len() as u64);
                        tracing::debug!(operator = %operator, time, side = "left",
                            records = too_late_left.len(), "records too late for every window");
                        late_left_out.session(&cap).give_container(&mut too_late_left);
                        too_late_left.clear();
                    }
                });

                right_in.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return data.clear() };
                    let mut session = joined_out.session(&cap);
                    let mut accepted_late = 0;
                    for (key, r) in data.drain(..) {
                        windows.clear();
                        assigner.assign(r.event_time(), |w| {
                            if time < w.end.saturating_add(lateness) {
                                windows.push(w);
                            }
                        });
                        if windows.is_empty() {
                            too_late_right.push((key, r));
                            continue;
                        }
                        for &w in &windows {
                            let slot =
                                slot(&mut slots, w, time, granularity, |at| cap.delayed(&at, 0));
                            let (lefts, rights) = slot.keys.entry(key.clone()).or_default();
                            if slot.fired {
                                accepted_late += 1;
                                for l in lefts.iter() {
                                    session.give(pair(&key, w, l.clone(), r.clone()));
                                }
                            }
                            rights.push(r.clone());
                        }
                    }
                    drop(session);
                    late_updates.increment(accepted_late);
                    if !too_late_right.is_empty() {
                        late_dropped.increment(too_late_right.len() as u64);
                        tracing::debug!(operator = %operator, time, side = "right",
                            records = too_late_right.len(), "records too late for every window");
                        late_right_out.session(&cap).give_container(&mut too_late_right);
                        too_late_right.clear();
                    }
                });

                // The watermark of the join is the earlier of its two inputs' frontiers.
                let watermark = frontiers
                    .iter()
                    .map(|f| f.frontier().first().copied().unwrap_or(Time::MAX))
                    .min()
                    .unwrap_or(Time::MAX);
                for (_, slot) in slots.range_mut(..(watermark.saturating_add(1), 0)) {
                    if slot.fired {
                        continue;
                    }
                    slot.fired = true;
                    let Some(cap) = slot.cap.take() else { continue };
                    let mut session = joined_out.session(&cap);
                    for (key, (lefts, rights)) in &slot.keys {
                        for l in lefts {
                            for r in rights {
                                session.give(pair(key, slot.window, l.clone(), r.clone()));
                            }
                        }
                    }
                    drop(session);
                    if outer {
                        slot.cap = Some(cap);
                    }
                }
                while let Some(entry) = slots.first_entry() {
                    if entry.get().window.end.saturating_add(lateness) > watermark {
                        break;
                    }
                    let slot = entry.remove();
                    if let (true, Some(cap)) = (outer, slot.cap.as_ref()) {
                        let mut session = joined_out.session(cap);
                        for (key, (lefts, rights)) in slot.keys {
                            if rights.is_empty() {
                                for l in lefts {
                                    session.give(outer_row(&key, slot.window, Some(l), None));
                                }
                            } else if lefts.is_empty() && kind == JoinKind::FullOuter {
                                for r in rights {
                                    session.give(outer_row(&key, slot.window, None, Some(r)));
                                }
                            }
                        }
                    }
                }
            }
        });
        Joins { joined, late_left, late_right }
    }
}

/// The records of one window on one worker.
struct Slot<K, L, R> {
    window: Window,
    /// Each key's left and right records.
    keys: FxHashMap<K, (Vec<L>, Vec<R>)>,
    /// Held until the window fires (outer joins: until it is freed).
    cap: Option<Capability<Time>>,
    fired: bool,
}

/// The slot of window `w`, created if new; its capability is lowered to what a record read
/// at `time` allows.
fn slot<K, L, R>(
    slots: &mut BTreeMap<(Time, Time), Slot<K, L, R>>,
    w: Window,
    time: Time,
    granularity: tributary_runtime::Granularity,
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
