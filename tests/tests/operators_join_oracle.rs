//! Oracle tests for the joins: two random keyed streams, each out of order with its own
//! watermark bound, some records behind their watermark, random allowed lateness and time
//! granularity, run on 1 and 2 workers and compared with a naive nested-loop join.
//!
//! The feeds (`support/oracle.rs`) tell the oracle the timely time of every record, so it
//! knows which records each join must accept and which it must send to its late output.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::capture::Capture;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concat;
use tributary_operators::{
    Change, JoinKind, KeyBy, Keyed, Sliding, Tumbling, Window, WindowAssigner,
};
use tributary_runtime::{EventTime, Events, Granularity, Timestamped};

mod support;
use support::oracle::{self, timed_messages, Feed};

/// A record of either side; ids are unique across both sides.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Rec {
    id: u32,
    key: u8,
    ts: u64,
    x: i64,
}

impl Timestamped for Rec {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

#[derive(Debug, Clone)]
struct Side {
    records: Vec<Rec>,
    bound: u64,
}

#[derive(Debug, Clone)]
struct Case {
    left: Side,
    right: Side,
    lateness: u64,
    granularity: u64,
}

/// A side's records with the timely time each travels at.
type Stamped<'c> = Vec<(u64, &'c Rec)>;

impl Case {
    fn g(&self) -> Granularity {
        Granularity::from_millis(self.granularity).expect("positive")
    }

    /// Each side's records with the timely time they travel at on `workers` workers.
    fn stamped(&self, workers: usize) -> (Stamped<'_>, Stamped<'_>) {
        (self.stamp(&self.left, workers), self.stamp(&self.right, workers))
    }

    fn stamp<'s>(&self, side: &'s Side, workers: usize) -> Stamped<'s> {
        let times = oracle::stamps(&side.records, side.bound, self.g(), workers);
        times.into_iter().zip(side.records.iter()).collect()
    }
}

/// Records of one side, in arrival order: event time on a 10 ms grid plus a random delay.
fn side(first_id: u32) -> impl Strategy<Value = Side> {
    let records = prop::collection::vec((0u8..3, 0u64..60, -20i64..20, 0u64..100), 0..60);
    (records, 0u64..10).prop_map(move |(raw, bound)| {
        let mut records: Vec<(u64, Rec)> = raw
            .into_iter()
            .enumerate()
            .map(|(i, (key, ts, x, delay))| {
                let rec = Rec { id: first_id + i as u32, key, ts: ts * 10, x };
                (ts * 10 + delay * 10, rec)
            })
            .collect();
        records.sort_by_key(|(arrival, r)| (*arrival, r.id));
        Side { records: records.into_iter().map(|(_, r)| r).collect(), bound: bound * 100 }
    })
}

fn case() -> impl Strategy<Value = Case> {
    let granularity = prop::sample::select(vec![1u64, 50, 100]);
    let lateness = prop_oneof![Just(0u64), 1u64..15];
    (side(0), side(1000), lateness, granularity).prop_map(|(left, right, lateness, granularity)| {
        Case { left, right, lateness: lateness * 100, granularity }
    })
}

/// Runs `build` on the case's two feeds; returns what it captured, in the order sent.
fn run<T, F>(case: &Case, workers: usize, build: F) -> Vec<T>
where
    T: timely::ExchangeData + Clone,
    F: for<'a> Fn(Events<'a, Rec>, Events<'a, Rec>) -> Events<'a, T> + Send + Sync + 'static,
{
    run_timed(case, workers, build).into_iter().map(|(_, t)| t).collect()
}

/// As [`run`], with the timely time of each captured record.
fn run_timed<T, F>(case: &Case, workers: usize, build: F) -> Vec<(u64, T)>
where
    T: timely::ExchangeData + Clone,
    F: for<'a> Fn(Events<'a, Rec>, Events<'a, Rec>) -> Events<'a, T> + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let left = Feed::new("left", case.left.records.clone(), case.left.bound);
    let right = Feed::new("right", case.right.records.clone(), case.right.bound);
    oracle::execute(case.granularity, workers, move |flow| {
        let (l, r) = (flow.source(&left), flow.source(&right));
        build(l, r).capture_into(tx.lock().expect("not poisoned").clone());
    });
    timed_messages(rx)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// A joined row as ids: (left id, right id), `None` for the missing side of an outer row.
type Row = (Option<u32>, Option<u32>);

// ----- window join -----

#[derive(Debug, Clone, Copy)]
enum Windows {
    Tumbling(u64),
    Sliding(u64, u64),
}

impl Windows {
    fn windows(self, ts: u64) -> Vec<Window> {
        let (size, slide) = match self {
            Windows::Tumbling(size) => (size, size),
            Windows::Sliding(size, slide) => (size, slide),
        };
        let mut out = Vec::new();
        let mut start = ts.saturating_sub(size) / slide * slide;
        while start <= ts {
            let w = Window { start, end: start + size };
            if w.contains(ts) {
                out.push(w);
            }
            start += slide;
        }
        out
    }
}

type WindowRow = (u8, Window, Row);

fn window_oracle(
    case: &Case,
    windows: Windows,
    kind: JoinKind,
    workers: usize,
) -> (Vec<WindowRow>, BTreeSet<u32>) {
    let (left, right) = case.stamped(workers);
    let mut late = BTreeSet::new();
    // Accepted (key, window, id) of each side.
    let mut accept = |side: &[(u64, &Rec)]| {
        let mut kept = Vec::new();
        for (t, r) in side {
            let ws: Vec<_> =
                windows.windows(r.ts).into_iter().filter(|w| *t < w.end + case.lateness).collect();
            if ws.is_empty() {
                late.insert(r.id);
            }
            kept.extend(ws.into_iter().map(|w| (r.key, w, r.id)));
        }
        kept
    };
    let (lefts, rights) = (accept(&left), accept(&right));
    let mut rows = Vec::new();
    for &(k, w, l) in &lefts {
        let mut matched = false;
        for &(k2, w2, r) in &rights {
            if k == k2 && w == w2 {
                rows.push((k, w, (Some(l), Some(r))));
                matched = true;
            }
        }
        if !matched && kind != JoinKind::Inner {
            rows.push((k, w, (Some(l), None)));
        }
    }
    if kind == JoinKind::FullOuter {
        for &(k, w, r) in &rights {
            if !lefts.iter().any(|&(k2, w2, _)| k == k2 && w == w2) {
                rows.push((k, w, (None, Some(r))));
            }
        }
    }
    (sorted(rows), late)
}

fn window_run(
    case: &Case,
    windows: Windows,
    kind: JoinKind,
    workers: usize,
) -> (Vec<WindowRow>, BTreeSet<u32>) {
    let lateness = Duration::from_millis(case.lateness);
    let ms = Duration::from_millis;
    split(run(case, workers, move |l, r| match windows {
        Windows::Tumbling(size) => window_join(l, r, Tumbling::new(ms(size)), kind, lateness),
        Windows::Sliding(size, slide) => {
            window_join(l, r, Sliding::new(ms(size), ms(slide)), kind, lateness)
        }
    }))
}

fn window_join<'a, W: WindowAssigner>(
    l: Events<'a, Rec>,
    r: Events<'a, Rec>,
    assigner: W,
    kind: JoinKind,
    lateness: Duration,
) -> Events<'a, Tagged<WindowRow>> {
    let joins = l
        .key_by(|x: &Rec| x.key)
        .window_join(r.key_by(|x: &Rec| x.key), assigner)
        .kind(kind)
        .allowed_lateness(lateness)
        .join_with_late();
    let joined = joins
        .joined
        .map(|j| Tagged::Joined((j.key, j.window, (j.left.map(|l| l.id), j.right.map(|r| r.id)))));
    tag_late(joined, joins.late_left, joins.late_right)
}

/// A join's results and late records in one captured stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Tagged<T> {
    Joined(T),
    Late(u32),
}

fn tag_late<'a, T: tributary_runtime::Data>(
    joined: Events<'a, Tagged<T>>,
    late_left: Events<'a, (u8, Rec)>,
    late_right: Events<'a, (u8, Rec)>,
) -> Events<'a, Tagged<T>> {
    joined
        .concat(late_left.map(|(_, r)| Tagged::Late(r.id)))
        .concat(late_right.map(|(_, r)| Tagged::Late(r.id)))
}

/// The joined rows, sorted, and the ids of the late records.
fn split<T: Ord>(rows: Vec<Tagged<T>>) -> (Vec<T>, BTreeSet<u32>) {
    let mut joined = Vec::new();
    let mut late = BTreeSet::new();
    for row in rows {
        match row {
            Tagged::Joined(row) => joined.push(row),
            Tagged::Late(id) => {
                late.insert(id);
            }
        }
    }
    (sorted(joined), late)
}

fn windows() -> impl Strategy<Value = Windows> {
    prop_oneof![
        (1u64..12).prop_map(|n| Windows::Tumbling(n * 50)),
        (1u64..6, 1u64..4).prop_map(|(n, slide)| Windows::Sliding(slide * 50 * n, slide * 50)),
    ]
}

fn kind() -> impl Strategy<Value = JoinKind> {
    prop::sample::select(vec![JoinKind::Inner, JoinKind::LeftOuter, JoinKind::FullOuter])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn window_join_equals_a_nested_loop_join(case in case(), windows in windows(), kind in kind()) {
        for workers in [1, 2] {
            let expected = window_oracle(&case, windows, kind, workers);
            prop_assert_eq!(window_run(&case, windows, kind, workers), expected, "{} workers", workers);
        }
    }
}

// ----- interval join -----

fn interval_oracle<'c>(
    case: &'c Case,
    (lower, upper): (i64, i64),
    left_outer: bool,
    workers: usize,
) -> (Vec<(u8, Row)>, BTreeSet<u32>) {
    let (left, right) = case.stamped(workers);
    let g = case.g();
    let mut late = BTreeSet::new();
    let reach_left = upper.max(0) as u64;
    let reach_right = lower.min(0).unsigned_abs();
    let mut accept = |side: &[(u64, &'c Rec)], reach: u64| {
        let mut kept = Vec::new();
        for &(t, r) in side {
            let is_late = t > g.quantize(r.ts);
            if is_late && t >= r.ts + reach + case.lateness {
                late.insert(r.id);
            } else {
                kept.push(r);
            }
        }
        kept
    };
    let (lefts, rights) = (accept(&left, reach_left), accept(&right, reach_right));
    let mut rows = Vec::new();
    for a in &lefts {
        let mut matched = false;
        for b in &rights {
            let (from, to) = (a.ts as i64 + lower, a.ts as i64 + upper);
            if a.key == b.key && (from..=to).contains(&(b.ts as i64)) {
                rows.push((a.key, (Some(a.id), Some(b.id))));
                matched = true;
            }
        }
        if !matched && left_outer {
            rows.push((a.key, (Some(a.id), None)));
        }
    }
    (sorted(rows), late)
}

/// The join's rows and late records; panics if a pair is sent at a timely time before one of
/// its records' (a result must never be earlier than its inputs).
fn interval_run(
    case: &Case,
    (lower, upper): (i64, i64),
    left_outer: bool,
    workers: usize,
) -> (Vec<(u8, Row)>, BTreeSet<u32>) {
    let lateness = Duration::from_millis(case.lateness);
    let signed = |ms: i64| (Duration::from_millis(ms.unsigned_abs()), ms < 0);
    let (left, right) = case.stamped(workers);
    let stamps: BTreeMap<u32, u64> = left.iter().chain(&right).map(|(t, r)| (r.id, *t)).collect();
    let timed = run_timed(case, workers, move |l, r| {
        let join = l.key_by(|x: &Rec| x.key).interval_join(
            r.key_by(|x: &Rec| x.key),
            signed(lower),
            signed(upper),
        );
        let join = if left_outer { join.left_outer() } else { join };
        let joins = join.allowed_lateness(lateness).join_with_late();
        let joined =
            joins.joined.map(|j| Tagged::Joined((j.key, (Some(j.left.id), j.right.map(|r| r.id)))));
        tag_late(joined, joins.late_left, joins.late_right)
    });
    for (time, row) in &timed {
        if let Tagged::Joined((_, (l, r))) = row {
            for id in l.iter().chain(r) {
                assert!(*time >= stamps[id], "{row:?} sent at {time}, before record {id}");
            }
        }
    }
    split(timed.into_iter().map(|(_, row)| row).collect())
}

fn interval() -> impl Strategy<Value = (i64, i64)> {
    (-6i64..6, 0i64..6).prop_map(|(lower, width)| (lower * 50, (lower + width) * 50))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn interval_join_equals_a_nested_loop_join(
        case in case(),
        interval in interval(),
        left_outer in any::<bool>(),
    ) {
        for workers in [1, 2] {
            let expected = interval_oracle(&case, interval, left_outer, workers);
            prop_assert_eq!(
                interval_run(&case, interval, left_outer, workers),
                expected,
                "{} workers",
                workers
            );
        }
    }
}

// ----- stream-table and as-of joins -----

/// The right side as a table changelog: a record with `x` divisible by 5 deletes its key.
fn change(r: &Rec) -> Change<i64> {
    Change { value: (r.x % 5 != 0).then_some(r.x), ts: r.ts }
}

/// The left records a table join accepts (by id), and the ids it must send to the late output.
fn accepted_left<'c>(case: &Case, left: &[(u64, &'c Rec)]) -> (Vec<&'c Rec>, BTreeSet<u32>) {
    let g = case.g();
    let mut late = BTreeSet::new();
    let mut kept = Vec::new();
    for &(t, r) in left {
        if t > g.quantize(r.ts) && t >= r.ts + case.lateness {
            late.insert(r.id);
        } else {
            kept.push(r);
        }
    }
    (kept, late)
}

/// The versions of the right side: each record's key, the time it takes effect (its event
/// time, or the time it was read if later) and the record.
fn versions<'c>(right: &[(u64, &'c Rec)]) -> Vec<(u8, u64, &'c Rec)> {
    right.iter().map(|&(t, r)| (r.key, r.ts.max(t), r)).collect()
}

type Lookup = (u32, Option<i64>);

fn table_oracle(case: &Case, inner: bool, workers: usize) -> (Vec<Lookup>, BTreeSet<u32>) {
    let (left, right) = case.stamped(workers);
    let (lefts, late) = accepted_left(case, &left);
    let versions = versions(&right);
    let mut rows = Vec::new();
    for a in lefts {
        // The last change at or before a.ts; same time: the greater value, a value over None.
        let value = versions
            .iter()
            .filter(|(k, at, _)| *k == a.key && *at <= a.ts)
            .map(|(_, at, r)| (*at, change(r).value))
            .max()
            .and_then(|(_, v)| v);
        if value.is_some() || !inner {
            rows.push((a.id, value));
        }
    }
    (sorted(rows), late)
}

fn asof_oracle(
    case: &Case,
    staleness: Option<u64>,
    workers: usize,
) -> (Vec<Lookup>, BTreeSet<u32>) {
    let (left, right) = case.stamped(workers);
    let (lefts, late) = accepted_left(case, &left);
    let versions = versions(&right);
    let mut rows = Vec::new();
    for a in lefts {
        let latest = versions
            .iter()
            .filter(|(k, at, _)| *k == a.key && *at <= a.ts)
            .map(|(_, at, r)| (*at, *r))
            .max()
            .map(|(_, r)| r)
            .filter(|r| staleness.is_none_or(|s| r.ts + s >= a.ts));
        rows.push((a.id, latest.map(|r| r.x)));
    }
    (sorted(rows), late)
}

fn table_run(case: &Case, inner: bool, workers: usize) -> (Vec<Lookup>, BTreeSet<u32>) {
    let lateness = Duration::from_millis(case.lateness);
    split(run(case, workers, move |l, r| {
        let table = Keyed::new(r.map(|r| (r.key, change(&r)))).into_table("oracle");
        let join = l.key_by(|x: &Rec| x.key).join_table(&table).allowed_lateness(lateness);
        let join = if inner { join.inner() } else { join };
        let (joined, late) = join.join_with_late();
        let joined = joined.map(|e| Tagged::Joined((e.left.id, e.right)));
        joined.concat(late.map(|(_, r)| Tagged::Late(r.id)))
    }))
}

fn asof_run(case: &Case, staleness: Option<u64>, workers: usize) -> (Vec<Lookup>, BTreeSet<u32>) {
    let lateness = Duration::from_millis(case.lateness);
    split(run(case, workers, move |l, r| {
        let join = l.key_by(|x: &Rec| x.key).asof_join(r.key_by(|x: &Rec| x.key));
        let join = match staleness {
            Some(s) => join.max_staleness(Duration::from_millis(s)),
            None => join,
        };
        let (joined, late) = join.allowed_lateness(lateness).join_with_late();
        let joined = joined.map(|e| Tagged::Joined((e.left.id, e.right.map(|r| r.x))));
        joined.concat(late.map(|(_, r)| Tagged::Late(r.id)))
    }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn table_join_sees_the_table_as_of_each_record(case in case(), inner in any::<bool>()) {
        for workers in [1, 2] {
            let expected = table_oracle(&case, inner, workers);
            prop_assert_eq!(table_run(&case, inner, workers), expected, "{} workers", workers);
        }
    }

    #[test]
    fn asof_join_finds_the_latest_right_record(
        case in case(),
        staleness in prop::option::of((0u64..10).prop_map(|s| s * 50)),
    ) {
        for workers in [1, 2] {
            let expected = asof_oracle(&case, staleness, workers);
            prop_assert_eq!(asof_run(&case, staleness, workers), expected, "{} workers", workers);
        }
    }
}
