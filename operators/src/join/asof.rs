//! As-of join: each left record meets the latest right record of its key at or before the
//! left record's event time, optionally no older than a staleness limit.
//!
//! The right side becomes a [`Table`](super::Table) of each key's latest record (every right
//! record is an upsert of its key at its event time), and left records look it up at their
//! event time once the right side is complete up to it. This is the trade–quote join of
//! market data: "the quote in force when the trade happened".

use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use tributary_runtime::time::millis;
use tributary_runtime::{Data, Events, Timestamped};

use super::table::{lookup, Mode};
use super::Enriched;
use crate::key_by::Keyed;
use crate::window::WithLate;

/// A left stream and a right stream, waiting for the as-of join.
pub struct AsOfJoin<'scope, K, L, R> {
    left: Keyed<'scope, K, L>,
    right: Keyed<'scope, K, R>,
    max_staleness: Option<u64>,
    left_outer: bool,
    lateness: u64,
}

impl<'scope, K: Data + Hash + Eq + Ord + Debug, L: Data + Timestamped> Keyed<'scope, K, L> {
    /// Joins each record with the latest `right` record of its key at or before its event
    /// time. Right records need `Ord`: two at the same millisecond resolve to the greater.
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
    /// let captured = timely::example(|scope| {
    ///     // Quotes of symbol 1 with bid x, and trades of symbol 1.
    ///     let quotes = [ev(1, 100, 10), ev(1, 300, 11)].to_stream(scope).container::<Vec<_>>();
    ///     let trades = [ev(1, 50, 0), ev(1, 200, 0), ev(1, 400, 0)].to_stream(scope).container::<Vec<_>>();
    ///     trades.key_by(|t| t.key)
    ///         .asof_join(quotes.key_by(|q| q.key))
    ///         .join()
    ///         .map(|e| (e.left.ts, e.right.map(|q| q.x)))
    ///         .capture()
    /// });
    /// let mut rows: Vec<_> = captured.extract().into_iter().flat_map(|(_, rs)| rs).collect();
    /// rows.sort();
    /// assert_eq!(rows, vec![(50, None), (200, Some(10)), (400, Some(11))]);
    /// ```
    pub fn asof_join<R: Data + Ord + Debug + Timestamped>(
        self,
        right: Keyed<'scope, K, R>,
    ) -> AsOfJoin<'scope, K, L, R> {
        AsOfJoin { left: self, right, max_staleness: None, left_outer: true, lateness: 0 }
    }
}

impl<'scope, K, L, R> AsOfJoin<'scope, K, L, R>
where
    K: Data + Hash + Ord + Debug,
    L: Data + Timestamped,
    R: Data + Ord + Debug + Timestamped,
{
    /// Ignores right records older than `staleness` at the left record's time.
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.max_staleness = Some(millis(staleness));
        self
    }

    /// Drops left records without a (fresh enough) right record; the default keeps them
    /// with `None`.
    pub fn inner(mut self) -> Self {
        self.left_outer = false;
        self
    }

    /// Accepts left records up to `lateness` behind the watermark.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = millis(lateness);
        self
    }

    /// The joined records; too-late left records are counted and dropped.
    pub fn join(self) -> Events<'scope, Enriched<K, L, R>> {
        self.join_with_late().0
    }

    /// The joined records and the too-late left records.
    pub fn join_with_late(self) -> WithLate<'scope, Enriched<K, L, R>, K, L> {
        let table = self.right.into_latest_table("as-of");
        let staleness = self.max_staleness;
        let fresh = move |at: u64, r: &R| staleness.is_none_or(|s| r.event_time() + s >= at);
        lookup(self.left, &table, Mode::AsOf, self.left_outer, self.lateness, fresh)
    }
}
