//! Stream–table join: each stream record looks up its key in a table kept as a
//! differential-dataflow arrangement.
//!
//! A [`Table`] is built from a changelog: per key, a new value or a deletion, each at an event
//! time. Changes are arranged with differential's upsert operator, at their event time (or,
//! for a change read behind its source's watermark, at the timely time it was read: an
//! arrangement cannot take updates in its past). The arrangement therefore holds every
//! version of every key, and a lookup at time `t` accumulates the updates at times `<= t`: the
//! table *as it was at `t`*.
//!
//! Versions are stored newest first (`(Reverse(time), value)`), so a lookup seeks in each
//! batch straight to the first version at or before its time. The lookup operator holds a
//! stream record until the table's frontier has passed the record's event time (every change
//! up to then has arrived), then reads the arrangement in key order. It compacts the
//! arrangement to the smallest time a held or future accepted record can ask for (its stream
//! input's frontier minus the allowed lateness): older versions are merged away, so the
//! arrangement keeps one value per live key plus the recent versions, and memory stays flat on
//! an endless changelog of a fixed key set.
//!
//! With [`TableJoin::latest`], records are joined at once with the table as it is now
//! (processing-time lookup, like Flink's lookup join) and nothing is held back.
//!
//! Both run on the runtime's stateful driver and take part in checkpoints: the table's
//! versions below a cut are saved as upserts and replayed at their times on a restore; the
//! lookup saves the records still waiting for the table (docs/architecture.md,
//! "Checkpoints").

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::rc::Rc;
use std::time::Duration;

use differential_dataflow::operators::arrange::{upsert, Arranged, TraceAgent};
use differential_dataflow::trace::cursor::{Cursor, Navigable};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::trace::TraceReader;
use differential_dataflow::Hashable;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Capability;
use timely::progress::Antichain;
use tributary_runtime::checkpoint::Restore;
use tributary_runtime::logging::activation;
use tributary_runtime::metrics as m;
use tributary_runtime::stateful::{self, BinaryState, Emitter, KeyedState, UnaryState};
use tributary_runtime::time::millis;
use tributary_runtime::{job_context, Data, EventTime, Events, Granularity, Time, Timestamped};

use super::{too_late, Enriched, HeldCapabilities};
use crate::key_by::Keyed;
use crate::window::{instrument, WithLate};

/// The arrangement a table is kept in: by key, each version of the value with the time it
/// took effect, newest first (so a lookup stops at the first version in force).
pub type TableTrace<K, V> = TraceAgent<ValSpine<K, Version<V>, Time, isize>>;

/// A version of a table value: the time it took effect (ordered newest first) and the value
/// (always `Some`; `None` only serves as the smallest value when a lookup seeks to a time).
pub type Version<V> = (Reverse<Time>, Option<V>);

/// One change to a table: from `ts` on, the key has `value`, or no value if `None`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change<V> {
    /// The new value, or `None` to delete the key.
    pub value: Option<V>,
    /// The event time the change takes effect, in milliseconds.
    pub ts: EventTime,
}

impl<V> Timestamped for Change<V> {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

/// A table: a differential-dataflow arrangement of each key's values over event time,
/// partitioned across workers by key.
pub struct Table<'scope, K: Data + Ord + Debug, V: Data + Ord + Debug> {
    arranged: Arranged<'scope, TableTrace<K, V>>,
    /// How far behind a checkpoint's cut the as-of lookups of this table may still read (the
    /// largest allowed lateness among them): the versions a checkpoint must keep.
    history: Rc<Cell<u64>>,
}

/// One upsert of a table's arrangement: from `time` on, `key` has this version, or none.
type Upsert<K, V> = (K, Option<Version<V>>, Time);

impl<'scope, K, V> Keyed<'scope, K, Change<V>>
where
    K: Data + Hash + Ord + Debug,
    V: Data + Ord + Debug,
{
    /// Arranges a changelog into a table. Two changes of a key at the same millisecond are
    /// resolved as differential's upsert does: the greater value wins, and a value wins over
    /// a deletion.
    pub fn into_table(self, name: &str) -> Table<'scope, K, V> {
        let stream = self.into_stream();
        let scope = stream.scope();
        let (operator, late_changes) = instrument(&scope, "table", name, m::LATE_UPDATES);
        // Changes read behind the watermark take effect when they were read.
        let worker = scope.index();
        // A restored checkpoint's table, handed over by the table's checkpoint operator
        // (built below, so before the first activation) and sent once, at its times.
        let restored: Rc<RefCell<Vec<Upsert<K, V>>>> = Rc::default();
        let replay = Rc::clone(&restored);
        let upserts = stream.unary(Pipeline, &operator.clone(), move |cap, _info| {
            let mut initial = Some(cap);
            move |input, output| {
                let _activation = activation(&operator, worker);
                if let Some(cap) = initial.take() {
                    let mut replay = std::mem::take(&mut *replay.borrow_mut());
                    replay.sort_by_key(|(_, _, time)| *time);
                    for upserts in replay.chunk_by(|a, b| a.2 == b.2) {
                        let time = upserts[0].2;
                        output.session(&cap.delayed(&time)).give_iterator(upserts.iter().cloned());
                    }
                }
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return data.clear() };
                    let late = data.iter().filter(|(_, c)| c.ts < time).count();
                    if late > 0 {
                        late_changes.increment(late as u64);
                    }
                    output.session(&cap).give_iterator(data.drain(..).map(|(k, c)| {
                        let at = c.ts.max(time);
                        (k, c.value.map(|v| (Reverse(at), Some(v))), at)
                    }));
                });
            }
        });
        let arranged = upsert::arrange_from_upsert::<
            ValBuilder<K, Version<V>, Time, isize>,
            ValSpine<K, Version<V>, Time, isize>,
            K,
            Version<V>,
        >(upserts, &format!("table:{name}"));
        let history = Rc::new(Cell::new(0));
        checkpoint_table(&arranged, &format!("table-checkpoint:{name}"), restored, &history);
        Table { arranged, history }
    }
}

impl<'scope, K, V> Keyed<'scope, K, V>
where
    K: Data + Hash + Ord + Debug,
    V: Data + Ord + Debug + Timestamped,
{
    /// A table of each key's latest record by event time: every record is an upsert of its
    /// key at its own event time.
    pub fn into_latest_table(self, name: &str) -> Table<'scope, K, V> {
        let changes = self.into_stream().map(|(k, v)| {
            let ts = v.event_time();
            (k, Change { value: Some(v), ts })
        });
        Keyed::new(changes).into_table(name)
    }
}

/// Makes a table take part in the job's checkpoints (if it takes any): an operator on the
/// stateful driver reads the arrangement's frontier and, at a checkpoint's cut, saves the
/// table's versions below the cut as upserts; on a restore it hands them to the table's
/// first operator. Its frontier is limited to a pending cut, so it holds the arrangement's
/// compaction at the cut less the lookups' lateness: the versions a restored lookup may read
/// are still there to save.
fn checkpoint_table<K, V>(
    arranged: &Arranged<'_, TableTrace<K, V>>,
    name: &str,
    restored: Rc<RefCell<Vec<Upsert<K, V>>>>,
    history: &Rc<Cell<u64>>,
) where
    K: Data + Hash + Ord + Debug,
    V: Data + Ord + Debug,
{
    if job_context(&arranged.stream.scope()).checkpoints.is_none() {
        return;
    }
    let state = TableCheckpoint {
        trace: Some(arranged.trace.clone()),
        restored,
        history: Rc::clone(history),
        compaction: 0,
        prepared: Vec::new(),
    };
    // The batches are read through the trace; only their times matter.
    let frontier = arranged.stream.clone().map(|_| ());
    stateful::unary(frontier, Pipeline, name, state);
}

/// A table's versions in a checkpoint, as the upserts that rebuild it.
#[derive(Serialize, Deserialize)]
struct SavedTable<K, V> {
    upserts: Vec<Upsert<K, V>>,
}

/// The checkpointed state of a table: its trace, read at each cut.
struct TableCheckpoint<K: Data + Ord + Debug, V: Data + Ord + Debug> {
    /// `None` once the changelog has ended and the final table was taken.
    trace: Option<TableTrace<K, V>>,
    /// Where a restore leaves the upserts for the table's first operator.
    restored: Rc<RefCell<Vec<Upsert<K, V>>>>,
    /// How far behind the frontier the table's lookups may read.
    history: Rc<Cell<u64>>,
    compaction: Time,
    /// The table at the last cut (or, once ended, the whole table).
    prepared: Vec<Upsert<K, V>>,
}

impl<K, V> KeyedState for TableCheckpoint<K, V>
where
    K: Data + Hash + Ord + Debug,
    V: Data + Ord + Debug,
{
    type Output = ();
    type Saved = SavedTable<K, V>;
    const VERSION: u32 = 1;

    fn restore(&mut self, restore: Restore<Self::Saved>, _initial: &Capability<Time>) {
        let upserts = restore.states.iter().flat_map(|saved| &saved.upserts);
        let owned = upserts.filter(|(k, _, _)| restore.owns(k.hashed())).cloned();
        self.restored.borrow_mut().extend(owned);
    }

    /// Versions no lookup can read from here on (older than the frontier less their
    /// lateness) are merged away; at the end the whole table holds for every later
    /// checkpoint.
    fn advance(&mut self, frontiers: &[Time], _output: &mut Emitter<'_, '_, ()>) {
        let Some(trace) = self.trace.as_mut() else { return };
        if frontiers[0] == Time::MAX {
            self.prepared = snapshot(trace, Time::MAX);
            self.trace = None;
            return;
        }
        let bound = frontiers[0].saturating_sub(self.history.get());
        if bound > self.compaction {
            self.compaction = bound;
            trace.set_logical_compaction(Antichain::from_elem(bound).borrow());
            trace.set_physical_compaction(Antichain::from_elem(bound).borrow());
        }
    }

    fn prepare_save(&mut self, cut: Time) {
        if let Some(trace) = self.trace.as_mut() {
            self.prepared = snapshot(trace, cut);
        }
    }

    fn snapshot(&self) -> Self::Saved {
        SavedTable { upserts: self.prepared.clone() }
    }

    /// The upserts of the last table saved.
    fn entries(&self) -> usize {
        self.prepared.len()
    }
}

impl<K, V> UnaryState for TableCheckpoint<K, V>
where
    K: Data + Hash + Ord + Debug,
    V: Data + Ord + Debug,
{
    type Input = ();

    fn absorb(&mut self, _: &Capability<Time>, data: &mut Vec<()>, _: &mut Emitter<'_, '_, ()>) {
        data.clear();
    }
}

/// The table's versions below `cut`, as the upserts that rebuild it: per key, in time order,
/// one at each time its value (or its absence) changed.
fn snapshot<K, V>(trace: &mut TableTrace<K, V>, cut: Time) -> Vec<Upsert<K, V>>
where
    K: Data + Ord + Debug,
    V: Data + Ord + Debug,
{
    let batches = trace.batches_through(Antichain::new().borrow()).unwrap_or_default();
    let mut updates: Vec<(K, Time, Version<V>, isize)> = Vec::new();
    for batch in &batches {
        let mut cursor = batch.cursor();
        while let Some(key) = cursor.get_key(batch) {
            while let Some(version) = cursor.get_val(batch) {
                cursor.map_times(batch, |time, diff| {
                    if *time < cut {
                        updates.push((key.clone(), *time, version.clone(), *diff));
                    }
                });
                cursor.step_val(batch);
            }
            cursor.step_key(batch);
        }
    }
    updates.sort_unstable();
    let mut upserts = Vec::new();
    let mut live: BTreeMap<Version<V>, isize> = BTreeMap::new();
    let mut current: Option<Version<V>> = None;
    let mut updates = updates.into_iter().peekable();
    while let Some((key, time, version, diff)) = updates.next() {
        *live.entry(version).or_default() += diff;
        let same_key_and_time = updates.peek().is_some_and(|(k, t, _, _)| *k == key && *t == time);
        if same_key_and_time {
            continue;
        }
        // Upserts keep at most one version of a key in force.
        live.retain(|_, count| *count != 0);
        let now = live.iter().find(|(_, count)| **count > 0).map(|(v, _)| v.clone());
        let last_of_key = updates.peek().is_none_or(|(k, _, _, _)| *k != key);
        if now != current {
            current = now;
            upserts.push((key, current.clone(), time));
        }
        if last_of_key {
            live.clear();
            current = None;
        }
    }
    upserts
}

/// A keyed stream and a table, waiting for the join.
pub struct TableJoin<'scope, 'table, K: Data + Ord + Debug, L, V: Data + Ord + Debug> {
    stream: Keyed<'scope, K, L>,
    table: &'table Table<'scope, K, V>,
    latest: bool,
    left_outer: bool,
    lateness: u64,
}

impl<'scope, K: Data + Hash + Eq + Ord + Debug, L: Data + Timestamped> Keyed<'scope, K, L> {
    /// Enriches each record with `table`'s value for its key at the record's event time.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::capture::{Capture, Extract};
    /// use timely::dataflow::operators::vec::Map;
    /// use timely::dataflow::operators::ToStream;
    /// use tributary_operators::{Change, KeyBy, Keyed};
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
    ///     // Device 7 is at site "a" from 0 ms and at site "b" from 1000 ms.
    ///     let registry = [(7u32, "a", 0u64), (7, "b", 1000)].to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .map(|(d, site, ts)| (d, Change { value: Some(site.to_string()), ts }));
    ///     let table = Keyed::new(registry).into_table("registry");
    ///     // Readings of device 7 at 500 ms and 1500 ms.
    ///     [ev(7, 500, 0), ev(7, 1500, 0)].to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .key_by(|r| r.key)
    ///         .join_table(&table)
    ///         .join()
    ///         .map(|e| (e.left.ts, e.right))
    ///         .capture()
    /// });
    /// let mut rows: Vec<_> = captured.extract().into_iter().flat_map(|(_, rs)| rs).collect();
    /// rows.sort();
    /// assert_eq!(rows, vec![(500, Some("a".into())), (1500, Some("b".into()))]);
    /// ```
    pub fn join_table<'table, V: Data + Ord + Debug>(
        self,
        table: &'table Table<'scope, K, V>,
    ) -> TableJoin<'scope, 'table, K, L, V> {
        TableJoin { stream: self, table, latest: false, left_outer: true, lateness: 0 }
    }
}

impl<'scope, K, L, V> TableJoin<'scope, '_, K, L, V>
where
    K: Data + Hash + Ord + Debug,
    L: Data + Timestamped,
    V: Data + Ord + Debug,
{
    /// Joins each record with the table as it is when the record is processed, not as it
    /// was at the record's event time. Nothing is held back and no record is late.
    pub fn latest(mut self) -> Self {
        self.latest = true;
        self
    }

    /// Drops records whose key has no value (the default keeps them, with `None`).
    pub fn inner(mut self) -> Self {
        self.left_outer = false;
        self
    }

    /// Accepts records up to `lateness` behind the watermark; the table keeps its versions
    /// that long.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = millis(lateness);
        self
    }

    /// The enriched records; too-late records are counted and dropped.
    pub fn join(self) -> Events<'scope, Enriched<K, L, V>> {
        self.join_with_late().0
    }

    /// The enriched records and the too-late ones (the table side never has late records:
    /// a late change takes effect when it is read).
    pub fn join_with_late(self) -> WithLate<'scope, Enriched<K, L, V>, K, L> {
        let mode = if self.latest { Mode::Latest } else { Mode::AsOf };
        lookup(self.stream, self.table, mode, self.left_outer, self.lateness, |_, _| true)
    }
}

/// A batch of a table's arrangement and its cursor.
type Batch<K, V> = <ValSpine<K, Version<V>, Time, isize> as TraceReader>::Batch;
type BatchCursor<K, V> = <Batch<K, V> as Navigable>::Cursor;

/// The value of `key` in `batches` at time `at` (or now, if `None`).
///
/// Versions are ordered newest first, so the answer is the first version (at or before
/// `at`) found in any batch, provided its updates (spread over batches: an insertion in one,
/// its retraction in another) still add up to one at `at`. Keys must be asked in order:
/// the cursors only move forward between keys.
fn read<'b, K: Data + Ord + Debug, V: Data + Ord + Debug>(
    batches: &'b [Batch<K, V>],
    cursors: &mut [BatchCursor<K, V>],
    key: &K,
    at: Option<Time>,
) -> Option<&'b V> {
    let mut newest: Option<&'b Version<V>> = None;
    for (cursor, batch) in cursors.iter_mut().zip(batches) {
        cursor.seek_key(batch, key);
        if cursor.get_key(batch) != Some(key) {
            continue;
        }
        cursor.rewind_vals(batch);
        if let Some(at) = at {
            cursor.seek_val(batch, &(Reverse(at), None));
        }
        if let Some(version) = cursor.get_val(batch) {
            newest = Some(newest.map_or(version, |n| n.min(version)));
        }
    }
    let newest = newest?;
    let mut count = 0;
    for (cursor, batch) in cursors.iter_mut().zip(batches) {
        if cursor.get_key(batch) != Some(key) {
            continue;
        }
        cursor.seek_val(batch, newest);
        if cursor.get_val(batch) == Some(newest) {
            cursor.map_times(batch, |t, d| {
                if at.is_none_or(|at| *t <= at) {
                    count += *d;
                }
            });
        }
    }
    (count > 0).then_some(newest.1.as_ref()).flatten()
}

/// When a record reads the table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// At the record's event time, once the table is complete up to it.
    AsOf,
    /// Now.
    Latest,
}

/// Joins `stream` with `table`; `accept(record_time, value)` can reject a found value (the
/// as-of join's staleness limit).
pub(super) fn lookup<'scope, K, L, V>(
    stream: Keyed<'scope, K, L>,
    table: &Table<'scope, K, V>,
    mode: Mode,
    left_outer: bool,
    lateness: u64,
    accept: impl Fn(EventTime, &V) -> bool + 'static,
) -> WithLate<'scope, Enriched<K, L, V>, K, L>
where
    K: Data + Hash + Ord + Debug,
    L: Data + Timestamped,
    V: Data + Ord + Debug,
{
    let stream = stream.into_stream();
    let scope = stream.scope();
    let name = if mode == Mode::Latest { "latest" } else { "as-of" };
    if mode == Mode::AsOf {
        table.history.set(table.history.get().max(lateness));
    }
    let state = Lookup {
        trace: table.arranged.trace.clone(),
        mode,
        left_outer,
        lateness,
        granularity: job_context(&scope).granularity,
        accept,
        pending: BTreeMap::new(),
        held: HeldCapabilities::new(),
        ready: Vec::new(),
        results: Vec::new(),
        rows: Vec::new(),
        compaction: Antichain::from_elem(0),
    };
    // Records are routed as the table's upsert operator routes its keys; the table's batches
    // are read through the trace, only their times matter.
    let pacts = (Exchange::new(|(k, _): &(K, L)| k.hashed()), Pipeline);
    let table_frontier = table.arranged.stream.clone().map(|_| ());
    let operator = format!("table-join:{name}");
    let (joined, late, _) = stateful::binary(stream, table_frontier, pacts, &operator, state);
    (joined, late)
}

/// The stream records a lookup still has to join, in a checkpoint: those waiting for the
/// table to be complete up to their event time (restored at the cut).
#[derive(Serialize, Deserialize)]
struct SavedLookup<K, L> {
    waiting: Vec<(K, L)>,
}

/// The state of a table lookup.
struct Lookup<K: Data + Ord + Debug, L, V: Data + Ord + Debug, A> {
    trace: TableTrace<K, V>,
    mode: Mode,
    left_outer: bool,
    lateness: u64,
    granularity: Granularity,
    accept: A,
    /// Records waiting for the table to be complete up to their event time, by that time,
    /// with the timely time they were read at (their output's capability is held there).
    pending: BTreeMap<EventTime, Vec<(Time, K, L)>>,
    held: HeldCapabilities,
    ready: Vec<(Time, K, L)>,
    results: Vec<(Time, Enriched<K, L, V>)>,
    rows: Vec<Enriched<K, L, V>>,
    compaction: Antichain<Time>,
}

impl<K, L, V, A> Lookup<K, L, V, A>
where
    K: Data + Hash + Ord + Debug,
    L: Data + Timestamped,
    V: Data + Ord + Debug,
    A: Fn(EventTime, &V) -> bool + 'static,
{
    /// The time at which a record reads the table.
    fn read_at(&self, l: &L) -> EventTime {
        if self.mode == Mode::Latest {
            0
        } else {
            l.event_time()
        }
    }

    /// Joins the ready records, in key order, and sends them at their times.
    fn join_ready(&mut self, output: &mut Emitter<'_, '_, Enriched<K, L, V>>) {
        if self.ready.is_empty() {
            return;
        }
        self.ready.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        let batches = self.trace.batches_through(Antichain::new().borrow()).unwrap_or_default();
        let mut cursors: Vec<_> = batches.iter().map(Navigable::cursor).collect();
        for (time, key, left) in self.ready.drain(..) {
            let at = left.event_time();
            let as_of = (self.mode == Mode::AsOf).then_some(at);
            let value = read(&batches, &mut cursors, &key, as_of);
            let right = value.filter(|v| (self.accept)(at, v)).cloned();
            if right.is_some() || self.left_outer {
                self.results.push((time, Enriched { key, left, right }));
            } else {
                self.held.release(time);
            }
        }
        self.results.sort_by_key(|(time, _)| *time);
        let mut results = self.results.drain(..).peekable();
        while let Some((time, first)) = results.next() {
            self.rows.push(first);
            while let Some((_, row)) = results.next_if(|(t, _)| *t == time) {
                self.rows.push(row);
            }
            let n = self.rows.len();
            output.give(self.held.get(time), &mut self.rows);
            for _ in 0..n {
                self.held.release(time);
            }
        }
    }

    /// Versions older than any record may still ask for can be merged away: records still to
    /// come are accepted only at or after the stream frontier minus the lateness, and the
    /// waiting ones at their own event time.
    fn compact(&mut self, stream: Option<Time>, table: Option<Time>) {
        let bound = match self.mode {
            Mode::AsOf => (self.pending.keys().next().copied().into_iter())
                .chain(stream.map(|f| f.saturating_sub(self.lateness)))
                .min(),
            // Reads accumulate everything; only a finished trace cannot be read.
            Mode::Latest => table.or_else(|| stream.and(self.compaction.first().copied())),
        };
        let advanced = match (bound, self.compaction.first()) {
            (Some(bound), Some(&current)) => bound > current,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if advanced {
            self.compaction = bound.map_or_else(Antichain::new, Antichain::from_elem);
            self.trace.set_logical_compaction(self.compaction.borrow());
            self.trace.set_physical_compaction(self.compaction.borrow());
        }
    }
}

impl<K, L, V, A> KeyedState for Lookup<K, L, V, A>
where
    K: Data + Hash + Ord + Debug,
    L: Data + Timestamped,
    V: Data + Ord + Debug,
    A: Fn(EventTime, &V) -> bool + 'static,
{
    type Output = Enriched<K, L, V>;
    type Saved = SavedLookup<K, L>;
    const VERSION: u32 = 1;

    /// The records this worker owns wait again, read at the cut.
    fn restore(&mut self, mut restore: Restore<Self::Saved>, initial: &Capability<Time>) {
        let cut = restore.cut;
        let states = std::mem::take(&mut restore.states);
        for (k, l) in states.into_iter().flat_map(|saved| saved.waiting) {
            if restore.owns(k.hashed()) {
                self.held.hold(cut, || initial.delayed(&cut));
                self.pending.entry(self.read_at(&l)).or_default().push((cut, k, l));
            }
        }
    }

    /// Records whose event time the table's frontier has passed are joined.
    fn advance(&mut self, frontiers: &[Time], output: &mut Emitter<'_, '_, Self::Output>) {
        let open = |f: Time| (f != Time::MAX).then_some(f);
        let (stream, table) = (open(frontiers[0]), open(frontiers[1]));
        while let Some(entry) = self.pending.first_entry() {
            if self.mode == Mode::AsOf && table.is_some_and(|f| f <= *entry.key()) {
                break;
            }
            self.ready.append(&mut entry.remove());
        }
        self.join_ready(output);
        self.compact(stream, table);
    }

    /// Records read below the cut that still wait (their event time is at or after it) wait
    /// at the cut.
    fn prepare_save(&mut self, cut: Time) {
        for (time, _, _) in self.pending.values_mut().flatten() {
            *time = (*time).max(cut);
        }
        self.held.lift(cut);
    }

    fn snapshot(&self) -> Self::Saved {
        let waiting = self.pending.values().flatten();
        SavedLookup { waiting: waiting.map(|(_, k, l)| (k.clone(), l.clone())).collect() }
    }

    fn entries(&self) -> usize {
        self.pending.values().map(Vec::len).sum()
    }
}

impl<K, L, V, A> BinaryState for Lookup<K, L, V, A>
where
    K: Data + Hash + Ord + Debug,
    L: Data + Timestamped,
    V: Data + Ord + Debug,
    A: Fn(EventTime, &V) -> bool + 'static,
{
    type Left = (K, L);
    type Right = ();
    const SPLITS_LATE: bool = true;

    fn absorb_left(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<(K, L)>,
        _output: &mut Emitter<'_, '_, Self::Output>,
    ) {
        let time = *cap.time();
        for (k, l) in data.drain(..) {
            self.held.hold(time, || cap.clone());
            self.pending.entry(self.read_at(&l)).or_default().push((time, k, l));
        }
    }

    fn absorb_right(
        &mut self,
        _: &Capability<Time>,
        data: &mut Vec<()>,
        _: &mut Emitter<'_, '_, Self::Output>,
    ) {
        data.clear();
    }

    /// An as-of lookup takes records up to its lateness behind the watermark; a lookup of
    /// the latest value takes every record.
    fn split_late_left(&mut self, time: Time, data: &mut Vec<(K, L)>, late: &mut Vec<(K, L)>) {
        if self.mode == Mode::Latest {
            return;
        }
        let (granularity, lateness) = (self.granularity, self.lateness);
        let is_late = |l: &L| {
            let e = l.event_time();
            too_late(time, granularity.quantize(e), e, 0, lateness)
        };
        if data.iter().any(|(_, l)| is_late(l)) {
            let (too_late, kept) = data.drain(..).partition(|(_, l)| is_late(l));
            *late = too_late;
            *data = kept;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use timely::dataflow::operators::capture::{Capture, Extract};
    use timely::dataflow::operators::probe::Handle;
    use timely::dataflow::operators::Probe;
    use timely::dataflow::InputHandle;

    use super::*;
    use crate::KeyBy;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Reading {
        device: u32,
        ts: EventTime,
    }

    impl Timestamped for Reading {
        fn event_time(&self) -> EventTime {
            self.ts
        }
    }

    /// The table has key 1 = "old" from 0 ms and "new" from 5000 ms; a reading at 100 ms
    /// arrives after the table has both. As of its event time it sees "old"; with `latest` it
    /// sees "new".
    fn join_reading_after_the_table(latest: bool) -> Vec<Option<String>> {
        let (tx, rx) = mpsc::channel();
        timely::execute_directly(move |worker| {
            let mut changes = InputHandle::new();
            let mut readings = InputHandle::new();
            let table_probe = Handle::new();
            worker.dataflow::<Time, _, _>(|scope| {
                let table = Keyed::new(changes.to_stream(scope)).into_table("devices");
                table.arranged.stream.clone().probe_with(&table_probe);
                let join =
                    readings.to_stream(scope).key_by(|r: &Reading| r.device).join_table(&table);
                let join = if latest { join.latest() } else { join };
                join.join().map(|e| e.right).capture_into(tx);
            });
            // The table is complete up to 6000 ms before the reading is sent.
            changes.send((1u32, Change { value: Some("old".to_string()), ts: 0 }));
            changes.send((1u32, Change { value: Some("new".to_string()), ts: 5000 }));
            changes.advance_to(6000);
            readings.advance_to(100);
            while table_probe.less_than(&6000) {
                worker.step();
            }
            readings.send(Reading { device: 1, ts: 100 });
        });
        rx.extract().into_iter().flat_map(|(_, rows)| rows).collect()
    }

    #[test]
    fn a_table_join_reads_the_table_at_the_records_time_or_now() {
        assert_eq!(join_reading_after_the_table(false), vec![Some("old".to_string())]);
        assert_eq!(join_reading_after_the_table(true), vec![Some("new".to_string())]);
    }

    /// The value of `key` at `time` among `upserts` (`(key, value, time)`, any order): the
    /// latest at or before `time`; of two at the same time, the one `pick` prefers.
    fn value_at<V: Clone + Ord>(
        upserts: &[(u8, Option<V>, Time)],
        key: u8,
        time: Time,
        pick: impl Fn(&Option<V>, &Option<V>) -> std::cmp::Ordering,
    ) -> Option<V> {
        let of_key = upserts.iter().filter(|(k, _, t)| *k == key && *t <= time);
        let latest = of_key.max_by(|a, b| a.2.cmp(&b.2).then_with(|| pick(&a.1, &b.1)))?;
        latest.1.clone()
    }

    proptest::proptest! {
        /// A table's snapshot at a cut, read as upserts, gives every key the value the
        /// changelog gave it at every time below the cut.
        #[test]
        fn a_snapshot_rebuilds_the_table_below_its_cut(
            changes in proptest::collection::vec((0u8..4, proptest::option::of(0u8..3), 0u64..40), 0..40),
            cut in 0u64..45,
        ) {
            let input = changes.clone();
            let snapshot = timely::execute_directly(move |worker| {
                let mut changelog = InputHandle::new();
                let probe = Handle::new();
                let mut trace = worker.dataflow::<Time, _, _>(|scope| {
                    let table = Keyed::new(changelog.to_stream(scope)).into_table("t");
                    table.arranged.stream.clone().probe_with(&probe);
                    table.arranged.trace.clone()
                });
                for (key, value, ts) in input {
                    changelog.send((key, Change { value, ts }));
                }
                changelog.advance_to(100);
                while probe.less_than(&100) {
                    worker.step();
                }
                snapshot(&mut trace, cut)
            });
            // Upserts resolve a tie at one time as differential's upsert does: the greater
            // version wins and a value wins over a deletion.
            let versions: Vec<Upsert<u8, u8>> = changes
                .iter()
                .map(|(k, v, ts)| (*k, v.map(|v| (Reverse(*ts), Some(v))), *ts))
                .collect();
            for key in 0..4 {
                for time in 0..cut {
                    let expected = value_at(&versions, key, time, |a, b| a.cmp(b));
                    let rebuilt = value_at(&snapshot, key, time, |_, _| std::cmp::Ordering::Equal);
                    proptest::prop_assert_eq!(&rebuilt, &expected, "key {} at {}: {:?}", key, time, snapshot);
                }
            }
            // One upsert per key and time, and only below the cut.
            let mut seen: Vec<(u8, Time)> = snapshot.iter().map(|(k, _, t)| (*k, *t)).collect();
            seen.dedup();
            proptest::prop_assert_eq!(seen.len(), snapshot.len());
            proptest::prop_assert!(snapshot.iter().all(|(_, _, t)| *t < cut));
        }
    }
}
