//! Joins of keyed streams in event time.
//!
//! | join | matches | state | emits |
//! |---|---|---|---|
//! | [`window_join`](crate::Keyed::window_join) | same key, same window | the open windows' records | pairs when the window fires |
//! | [`interval_join`](crate::Keyed::interval_join) | same key, `b.ts ∈ [a.ts + lower, a.ts + upper]` | each record until its interval has passed | a pair as soon as both sides are in |
//! | [`join_table`](crate::Keyed::join_table) | same key, the table's value at `a.ts` | a differential-dataflow arrangement of the table | once the table is complete up to `a.ts` |
//! | [`asof_join`](crate::Keyed::asof_join) | same key, the latest right record at or before `a.ts` | an arrangement of each key's latest right record | once the right side is complete up to `a.ts` |
//!
//! All four are append-only: a result is never retracted. Outer rows (a record without a
//! match) are emitted only once no match can arrive any more, so late records never have to
//! take one back.
//!
//! **Lateness.** A record travels at timely time `t`: its rounded event time, or its source's
//! watermark if it was read behind it (see `docs/architecture.md`). It is *late* when `t` is
//! above its rounded event time. A late record is accepted while `t < e + reach + lateness`,
//! where `e` is its event time and `reach` how far past `e` its results can lie (a window join
//! judges by the window end instead, exactly like windowed aggregation). Accepted late records
//! produce the results they would have produced on time (later); records beyond that go to the
//! late outputs of the `*_with_late` variants and are counted in
//! `tributary_operator_late_records_total`. The rule needs no frontier, so state can be freed
//! from frontiers alone and an accepted record never misses a match.

mod asof;
mod interval;
mod table;
mod window;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::Capability;
use tributary_runtime::{EventTime, Events, Time, Timestamped};

pub use asof::AsOfJoin;
pub use interval::IntervalJoin;
pub use table::{Change, Table, TableJoin};
pub use window::{WindowJoin, WindowJoined};

/// Which unmatched records a join keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JoinKind {
    /// Only pairs.
    #[default]
    Inner,
    /// Pairs, and each left record without a match (with `None` on the right).
    LeftOuter,
    /// Pairs, and each record of either side without a match.
    FullOuter,
}

/// A join's results with the records that came too late to take part, per side.
pub struct Joins<'scope, J, K, L, R> {
    /// The join's results.
    pub joined: Events<'scope, J>,
    /// Left records too late for the join.
    pub late_left: Events<'scope, (K, L)>,
    /// Right records too late for the join.
    pub late_right: Events<'scope, (K, R)>,
}

/// A left record with its match from the right, if any: the result of an interval join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined<K, L, R> {
    /// The key both records share.
    pub key: K,
    /// The left record.
    pub left: L,
    /// The matching right record; `None` for an unmatched left record of an outer join.
    pub right: Option<R>,
}

/// A pair happened when its later record did.
impl<K, L: Timestamped, R: Timestamped> Timestamped for Joined<K, L, R> {
    fn event_time(&self) -> EventTime {
        let left = self.left.event_time();
        self.right.as_ref().map_or(left, |r| left.max(r.event_time()))
    }
}

/// A stream record with the table value (or latest right record) it was joined with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enriched<K, L, T> {
    /// The key.
    pub key: K,
    /// The stream record.
    pub left: L,
    /// The table's value for the key at the record's event time, if it had one.
    pub right: Option<T>,
}

/// An enriched record keeps its stream record's event time.
impl<K, L: Timestamped, T> Timestamped for Enriched<K, L, T> {
    fn event_time(&self) -> EventTime {
        self.left.event_time()
    }
}

/// Whether a record read at timely time `time` with event time `e` is too late for a join
/// whose results lie up to `reach` past `e`: it is late (read behind the watermark) and its
/// results' span plus the allowed lateness has passed.
#[inline]
pub(crate) fn too_late(
    time: Time,
    quantized: Time,
    e: EventTime,
    reach: u64,
    lateness: u64,
) -> bool {
    time > quantized && time >= e.saturating_add(reach).saturating_add(lateness)
}

/// Capabilities held for records whose output is still to come, counted per time.
pub(crate) struct HeldCapabilities {
    held: BTreeMap<Time, (Capability<Time>, usize)>,
}

impl HeldCapabilities {
    pub(crate) fn new() -> Self {
        HeldCapabilities { held: BTreeMap::new() }
    }

    /// Holds `make()` at `time` for one more record.
    pub(crate) fn hold(&mut self, time: Time, make: impl FnOnce() -> Capability<Time>) {
        self.held.entry(time).or_insert_with(|| (make(), 0)).1 += 1;
    }

    /// The capability held at `time`.
    pub(crate) fn get(&self, time: Time) -> &Capability<Time> {
        &self.held.get(&time).expect("a capability is held for every pending record").0
    }

    /// Moves every hold below `cut` to `cut`.
    pub(crate) fn lift(&mut self, cut: Time) {
        let above = self.held.split_off(&cut);
        let below = std::mem::replace(&mut self.held, above);
        let Some((cap, _)) = below.values().next() else { return };
        let lifted = cap.delayed(&cut);
        let count: usize = below.values().map(|(_, n)| n).sum();
        self.held.entry(cut).or_insert_with(|| (lifted, 0)).1 += count;
    }

    /// Releases one record's hold at `time`.
    pub(crate) fn release(&mut self, time: Time) {
        if let Some(entry) = self.held.get_mut(&time) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.held.remove(&time);
            }
        }
    }
}
