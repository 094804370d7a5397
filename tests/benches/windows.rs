//! Window benchmarks: events per second per worker for tumbling, sliding and session window
//! counts on generated in-memory events, next to a hand-written timely operator doing the same
//! tumbling count behind the same source, and to the pure timely limit (one operator that
//! makes the events in place and counts them: no source driver, no exchange), with each row's
//! ratio to that limit; and a soak run that reports memory as the stream goes on.
//!
//! ```sh
//! cargo bench -p tributary-tests --bench windows                      # the table
//! cargo bench -p tributary-tests --bench windows -- --events 50000000
//! cargo bench -p tributary-tests --bench windows -- --only sliding     # rows naming it
//! cargo bench -p tributary-tests --bench windows -- --soak            # 100M events, RSS
//! ```
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::{Handle, Probe};
use tributary_operators::{Count, KeyBy, Sliding, Tumbling};
use tributary_runtime::{Events, Granularity, Time};

mod common;
use common::{memory, run, run_without_flow_control, Ev, Input, MapLen};

/// The pure timely limit: one timely operator on one worker makes `input`'s events in place
/// (the same keys and times as its source) and counts them per key in one-minute tumbling
/// windows, firing a window once its events are all made. What any Tributary pipeline on the
/// same events can at best approach on one worker.
fn limit(input: &Input) -> (Duration, u64) {
    let input = input.clone();
    timely::execute_directly(move |worker| {
        let probe = Handle::new();
        let results = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let counted = std::rc::Rc::clone(&results);
        worker.dataflow::<Time, _, _>(|scope| {
            let counts: Events<'_, u64> = source(scope, "limit", |cap, info| {
                let activator = scope.activator_for(info.address);
                let mut cap = Some(cap);
                let mut next = 0u64;
                let mut windows: BTreeMap<u64, FxHashMap<u64, u64>> = BTreeMap::new();
                let size = 60_000;
                move |output| {
                    let Some(c) = cap.as_mut() else { return };
                    let end = input.events.min(next + 8192);
                    for i in next..end {
                        let ev = input.event(i);
                        let window = ev.ts - ev.ts % size + size;
                        *windows.entry(window).or_default().entry(ev.key).or_insert(0) += 1;
                    }
                    next = end;
                    let watermark =
                        if next >= input.events { u64::MAX } else { input.watermark(next) };
                    while let Some(entry) = windows.first_entry() {
                        if *entry.key() > watermark {
                            break;
                        }
                        let counts = entry.remove();
                        counted.set(counted.get() + counts.len() as u64);
                        output.session(c).give_iterator(counts.into_values());
                    }
                    if next >= input.events {
                        cap = None;
                    } else {
                        activator.activate();
                    }
                }
            });
            counts.probe_with(&probe);
        });
        let started = Instant::now();
        while !probe.done() {
            worker.step();
        }
        (started.elapsed(), results.get())
    })
}

/// The same tumbling count as a single hand-written timely operator: one hash map per
/// window, fired on the frontier. No pre-aggregation, no exchange.
fn baseline<'a>(stream: Events<'a, Ev>, size: u64) -> Events<'a, u64> {
    let granularity = Granularity::DEFAULT;
    stream.unary_frontier(Pipeline, "baseline", move |_, _| {
        let mut windows: BTreeMap<
            u64,
            (timely::dataflow::operators::Capability<Time>, FxHashMap<u64, u64>),
        > = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let Some(&time) = cap.least() else { return data.clear() };
                for ev in data.drain(..) {
                    let end = ev.ts - ev.ts % size + size;
                    let (_, counts) = windows.entry(end).or_insert_with(|| {
                        let at = time.max(granularity.quantize(end - 1));
                        (cap.delayed(&at, 0), FxHashMap::default())
                    });
                    *counts.entry(ev.key).or_insert(0) += 1;
                }
            });
            let watermark = frontier.frontier().first().copied().unwrap_or(Time::MAX);
            while let Some(entry) = windows.first_entry() {
                if *entry.key() > watermark {
                    break;
                }
                let (cap, counts) = entry.remove();
                output.session(&cap).give_iterator(counts.into_values());
            }
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let events: u64 = flag("--events").and_then(|v| v.parse().ok()).unwrap_or(20_000_000);
    if args.iter().any(|a| a == "--soak") {
        let input = Input {
            name: "bench",
            seed: 7,
            events: 100_000_000,
            keys: 100_000,
            per_ms: 10,
            disorder: 1000,
            report_every: Some(10_000_000),
        };
        println!(
            "soak: 100M events, 100k keys, 10 events per ms of event time, 1-minute tumbling count"
        );
        let (elapsed, rows) = run(&input, 1, tumbling);
        let (rss, peak) = memory();
        println!(
            "soak done: {:.1} s, {:.2}M events/s, {rows} results, RSS {rss:.1} MiB, peak {peak:.1} MiB",
            elapsed.as_secs_f64(),
            input.events as f64 / elapsed.as_secs_f64() / 1e6
        );
        return;
    }

    let few = Input {
        name: "bench",
        seed: 7,
        events,
        keys: 100,
        per_ms: 100,
        disorder: 1000,
        report_every: None,
    };
    let many = Input { keys: 1_000_000, ..few.clone() };
    let sessions = Input { keys: 10_000, ..few.clone() };
    println!("| benchmark (granularity 100 ms, disorder 1 s) | events | workers | time | events/s | per worker | of the limit | results |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let pure = limit(&few);
    let ceiling = few.events as f64 / pure.0.as_secs_f64();
    // `--only TEXT`: the rows whose name contains TEXT (the limit always runs: the ratios).
    let only = flag("--only");
    let report = |name: &str, events: u64, workers: usize, run: &dyn Fn() -> (Duration, u64)| {
        if only.is_some_and(|o| !name.contains(o.as_str())) {
            return;
        }
        let (elapsed, rows) = run();
        let rate = events as f64 / elapsed.as_secs_f64();
        let per_worker = rate / workers as f64;
        println!(
            "| {name:<44} | {:>6.1}M | {workers} | {:>6.2} s | {:>7.2}M | {:>7.2}M | {:>5.1} % | {rows:>9} |",
            events as f64 / 1e6,
            elapsed.as_secs_f64(),
            rate / 1e6,
            per_worker / 1e6,
            100.0 * per_worker / ceiling,
        );
    };
    report("pure timely limit: made and counted in place", few.events, 1, &|| pure);
    report("source and a map, no window", few.events, 1, &|| run(&few, 1, |s| s.map_len()));
    report("hand-written timely tumbling 1m count, 100 keys", few.events, 1, &|| {
        run(&few, 1, move |s| baseline(s, 60_000))
    });
    report("tumbling 1m count, 100 keys", few.events, 1, &|| run(&few, 1, tumbling));
    report("tumbling 1m count, 100 keys", few.events, 2, &|| run(&few, 2, tumbling));
    report("same, without flow control", few.events, 2, &|| {
        run_without_flow_control(&few, 2, tumbling)
    });
    report("hand-written timely tumbling 1m count, 1M keys", many.events, 1, &|| {
        run(&many, 1, move |s| baseline(s, 60_000))
    });
    report("tumbling 1m count, 1M keys", many.events, 1, &|| run(&many, 1, tumbling));
    report("sliding 1m/10s count, 100 keys", few.events, 1, &|| run(&few, 1, sliding));
    report("session 100ms gap count, 10k keys", sessions.events, 1, &|| run(&sessions, 1, session));
}

fn tumbling(s: Events<'_, Ev>) -> Events<'_, u64> {
    let minute = Duration::from_secs(60);
    s.key_by(|e: &Ev| e.key).window(Tumbling::new(minute)).aggregate(Count).map_len()
}

fn sliding(s: Events<'_, Ev>) -> Events<'_, u64> {
    let (size, slide) = (Duration::from_secs(60), Duration::from_secs(10));
    s.key_by(|e: &Ev| e.key).window(Sliding::new(size, slide)).aggregate(Count).map_len()
}

fn session(s: Events<'_, Ev>) -> Events<'_, u64> {
    let gap = Duration::from_millis(100);
    s.key_by(|e: &Ev| e.key).session_window(gap).aggregate(Count).map_len()
}
