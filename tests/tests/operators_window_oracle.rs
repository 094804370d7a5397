//! Oracle tests for windowed aggregation: random keyed records, out of order, some behind the
//! watermark, with random allowed lateness and time granularity, run on 1 and 2 workers and
//! compared with a naive recomputation.
//!
//! The feed (`support/oracle.rs`) tells the oracle the timely time of every record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::capture::Capture;
use timely::dataflow::operators::vec::Map;
use tributary_operators::{Count, KeyBy, Sliding, Sum, Tumbling, Window, WindowResult};
use tributary_runtime::{EventTime, Flow, Granularity, Timestamped};

mod support;
use support::oracle::{self, messages, Feed};

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

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tumbling(u64),
    Sliding(u64, u64),
    Session(u64),
}

#[derive(Debug, Clone)]
struct Case {
    kind: Kind,
    records: Vec<Rec>,
    bound: u64,
    lateness: u64,
    granularity: u64,
}

/// The timely time at which each record travels, by id.
fn stamps(case: &Case, workers: usize) -> BTreeMap<u32, u64> {
    let g = Granularity::from_millis(case.granularity).expect("positive");
    let times = oracle::stamps(&case.records, case.bound, g, workers);
    case.records.iter().zip(times).map(|(r, t)| (r.id, t)).collect()
}

type Results = BTreeMap<(u8, Window), (u64, i64)>;

/// A result of the operator under test: (count, sum) per key and window.
type Output = WindowResult<u8, (u64, i64)>;

/// The naive answer: final results per key and window, and the ids of too-late records.
fn oracle(case: &Case, workers: usize) -> (Results, BTreeSet<u32>) {
    let t = stamps(case, workers);
    let g = Granularity::from_millis(case.granularity).expect("positive");
    let l = case.lateness;
    let mut results = Results::new();
    let mut late = BTreeSet::new();
    let mut add = |key, w, x| {
        let e: &mut (u64, i64) = results.entry((key, w)).or_default();
        e.0 += 1;
        e.1 += x;
    };
    match case.kind {
        Kind::Tumbling(size) | Kind::Sliding(size, _) => {
            let slide = match case.kind {
                Kind::Sliding(_, slide) => slide,
                _ => size,
            };
            for r in &case.records {
                let mut accepted = false;
                let mut start = r.ts.saturating_sub(size) / slide * slide;
                while start <= r.ts {
                    let w = Window { start, end: start + size };
                    if w.contains(r.ts) && t[&r.id] < w.end + l {
                        add(r.key, w, r.x);
                        accepted = true;
                    }
                    start += slide;
                }
                if !accepted {
                    late.insert(r.id);
                }
            }
        }
        Kind::Session(gap) => {
            let mut by_key: BTreeMap<u8, Vec<&Rec>> = BTreeMap::new();
            for r in &case.records {
                let is_late = t[&r.id] > g.quantize(r.ts);
                if is_late && t[&r.id] >= r.ts + l {
                    late.insert(r.id);
                } else {
                    by_key.entry(r.key).or_default().push(r);
                }
            }
            for (key, mut rs) in by_key {
                rs.sort_by_key(|r| r.ts);
                let mut current: Option<(Window, u64, i64)> = None;
                for r in rs {
                    match &mut current {
                        Some((w, n, sum)) if r.ts < w.end => {
                            w.end = w.end.max(r.ts + gap);
                            *n += 1;
                            *sum += r.x;
                        }
                        _ => {
                            if let Some((w, n, sum)) = current.take() {
                                results.insert((key, w), (n, sum));
                            }
                            current = Some((Window { start: r.ts, end: r.ts + gap }, 1, r.x));
                        }
                    }
                }
                if let Some((w, n, sum)) = current {
                    results.insert((key, w), (n, sum));
                }
            }
        }
    }
    (results, late)
}

/// Runs `build` over the case's records on `workers` workers, with the case's granularity.
fn execute<F>(case: &Case, workers: usize, build: F)
where
    F: for<'a> Fn(&mut Flow<'a>, tributary_runtime::Events<'a, Rec>) + Send + Sync + 'static,
{
    let feed = Feed::new("feed", case.records.clone(), case.bound);
    oracle::execute(case.granularity, workers, move |flow| {
        let records = flow.source(&feed);
        build(flow, records);
    });
}

/// Runs the window operator on `workers` workers; returns the results in the order each
/// worker emitted them, and the ids of the records in the late output.
fn run(case: &Case, workers: usize) -> (Vec<Output>, BTreeSet<u32>) {
    let (results_tx, results_rx) = mpsc::channel();
    let (late_tx, late_rx) = mpsc::channel();
    let senders = Mutex::new((results_tx, late_tx));
    let (kind, lateness) = (case.kind, Duration::from_millis(case.lateness));
    execute(case, workers, move |_, records| {
        let (results_tx, late_tx) = senders.lock().expect("not poisoned").clone();
        let keyed = records.key_by(|r: &Rec| r.key);
        let agg = (Count, Sum(|r: &Rec| r.x));
        let ms = Duration::from_millis;
        let (results, late) = match kind {
            Kind::Tumbling(size) => keyed
                .window(Tumbling::new(ms(size)))
                .allowed_lateness(lateness)
                .aggregate_with_late(agg),
            Kind::Sliding(size, slide) => keyed
                .window(Sliding::new(ms(size), ms(slide)))
                .allowed_lateness(lateness)
                .aggregate_with_late(agg),
            Kind::Session(gap) => {
                keyed.session_window(ms(gap)).allowed_lateness(lateness).aggregate_with_late(agg)
            }
        };
        results.capture_into(results_tx);
        late.map(|(_, r)| r.id).capture_into(late_tx);
    });
    (messages(results_rx), messages(late_rx).into_iter().collect())
}

/// The final state of a result stream: the highest revision per key and window; for
/// sessions, a result also replaces every earlier result of its key that it overlaps.
fn final_state(kind: Kind, results: Vec<Output>) -> Results {
    let mut state: BTreeMap<(u8, Window), ((u64, i64), u32)> = BTreeMap::new();
    for r in results {
        if let Kind::Session(_) = kind {
            state.retain(|(k, w), _| {
                !(*k == r.key && w.start < r.window.end && r.window.start < w.end && *w != r.window)
            });
        }
        match state.get(&(r.key, r.window)) {
            Some((_, revision)) if *revision >= r.revision => {}
            _ => {
                state.insert((r.key, r.window), (r.value, r.revision));
            }
        }
    }
    state.into_iter().map(|(k, (v, _))| (k, v)).collect()
}

fn case() -> impl Strategy<Value = Case> {
    // Times on a 10 ms grid and sizes on a 50 ms grid, so that window ends, watermarks and
    // lateness limits coincide often and the boundaries of every rule get exercised.
    let kind = prop_oneof![
        (1u64..16).prop_map(|n| Kind::Tumbling(n * 50)),
        (1u64..8, 1u64..4).prop_map(|(n, slide)| Kind::Sliding(slide * 50 * n, slide * 50)),
        (1u64..12).prop_map(|n| Kind::Session(n * 50)),
    ];
    let records = prop::collection::vec((0u8..4, 0u64..600, -50i64..50, 0u64..100), 0..150);
    let granularity = prop::sample::select(vec![1u64, 50, 100]);
    // No allowed lateness is the common case and the strictest; give it half the cases.
    let lateness = prop_oneof![Just(0u64), 1u64..15];
    (kind, records, 0u64..10, lateness, granularity).prop_map(
        |(kind, raw, bound, lateness, granularity)| {
            let (bound, lateness) = (bound * 100, lateness * 100);
            let raw: Vec<_> =
                raw.into_iter().map(|(key, ts, x, delay)| (key, ts * 10, x, delay * 10)).collect();
            // Arrival order: event time plus a random delay of up to one second.
            let mut records: Vec<(u64, Rec)> = raw
                .into_iter()
                .enumerate()
                .map(|(i, (key, ts, x, delay))| (ts + delay, Rec { id: i as u32, key, ts, x }))
                .collect();
            records.sort_by_key(|(arrival, r)| (*arrival, r.id));
            Case {
                kind,
                records: records.into_iter().map(|(_, r)| r).collect(),
                bound,
                lateness,
                granularity,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn window_aggregation_equals_a_naive_recomputation(case in case()) {
        for workers in [1, 2] {
            let (expected, expected_late) = oracle(&case, workers);
            let (results, late) = run(&case, workers);
            prop_assert!(
                results.iter().all(|r| r.value.0 > 0),
                "no empty window is emitted"
            );
            prop_assert_eq!(final_state(case.kind, results), expected, "{} workers", workers);
            prop_assert_eq!(late, expected_late, "late records with {} workers", workers);
        }
    }
}

#[test]
fn a_late_record_within_the_lateness_corrects_its_window() {
    // Watermark bound 0: every record behind the largest seen is late.
    let rec = |id, ts| Rec { id, key: 1, ts, x: 1 };
    let case = Case {
        kind: Kind::Tumbling(1000),
        records: vec![
            rec(0, 100),
            rec(1, 2500),
            rec(2, 2600),
            rec(3, 2700),
            rec(4, 200),
            rec(5, 9000),
            rec(6, 300),
        ],
        bound: 0,
        lateness: 5000,
        granularity: 100,
    };
    let (results, late) = run(&case, 1);
    let zero: Vec<(u32, u64)> =
        results.iter().filter(|r| r.window.start == 0).map(|r| (r.revision, r.value.0)).collect();
    // [0, 1000) fires with record 0 once the watermark passes 2500; record 4 (read at
    // watermark 2700) corrects it; record 6 comes after the watermark passed 0 + 1000 + 5000.
    assert_eq!(zero, vec![(0, 1), (1, 2)]);
    assert_eq!(late, BTreeSet::from([6]));
}

/// Runs the continuously updated keyed sum; returns `(time, key, revision, sum)` updates.
fn run_keyed(case: &Case, workers: usize) -> Vec<(u64, u8, u32, i64)> {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    execute(case, workers, move |_, records| {
        records
            .key_by(|r: &Rec| r.key)
            .aggregate(Sum(|r: &Rec| r.x))
            .map(|u| (u.time, u.key, u.revision, u.value))
            .capture_into(tx.lock().expect("not poisoned").clone());
    });
    let mut updates = messages(rx);
    updates.sort();
    updates
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn keyed_aggregate_updates_equal_running_sums(case in case()) {
        for workers in [1, 2] {
            // At each timely time with records of a key, the key's sum over all its records
            // up to and including that time, and a revision counting its earlier updates.
            let times = stamps(&case, workers);
            let mut by_time: BTreeMap<(u64, u8), i64> = BTreeMap::new();
            for r in &case.records {
                *by_time.entry((times[&r.id], r.key)).or_default() += r.x;
            }
            let mut running: BTreeMap<u8, (u32, i64)> = BTreeMap::new();
            let mut expected = Vec::new();
            for ((time, key), x) in by_time {
                let (updates, sum) = running.entry(key).or_default();
                *sum += x;
                expected.push((time, key, *updates, *sum));
                *updates += 1;
            }
            expected.sort();
            prop_assert_eq!(run_keyed(&case, workers), expected, "{} workers", workers);
        }
    }
}
