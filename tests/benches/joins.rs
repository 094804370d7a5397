//! Join benchmarks: events per second per worker for the window join, the interval join, the
//! stream–table join and the as-of join on two generated in-memory streams; and soak runs
//! that report memory as the stream goes on.
//!
//! ```sh
//! cargo bench -p tributary-tests --bench joins                       # the table
//! cargo bench -p tributary-tests --bench joins -- --events 10000000
//! cargo bench -p tributary-tests --bench joins -- --only as-of --workers 2
//! cargo bench -p tributary-tests --bench joins -- --soak interval    # 50M events, RSS
//! cargo bench -p tributary-tests --bench joins -- --soak asof
//! ```
#![allow(clippy::print_stdout)]

use std::time::Duration;

use timely::dataflow::operators::vec::Map;
use tributary_operators::{Change, KeyBy, Keyed, Tumbling};
use tributary_runtime::Events;

mod common;
use common::{memory, report, run2, Ev, Input, MapLen};

/// 1 s tumbling window join over 10k keys: about one record per key, side and window.
fn window_join<'a>(l: Events<'a, Ev>, r: Events<'a, Ev>) -> Events<'a, u64> {
    l.key_by(|e: &Ev| e.key)
        .window_join(r.key_by(|e: &Ev| e.key), Tumbling::new(Duration::from_secs(1)))
        .join()
        .map_len()
}

/// Right records within ±500 ms of the left record.
fn interval_join<'a>(l: Events<'a, Ev>, r: Events<'a, Ev>) -> Events<'a, u64> {
    let half_s = Duration::from_millis(500);
    l.key_by(|e: &Ev| e.key)
        .interval_join(r.key_by(|e: &Ev| e.key), (half_s, true), (half_s, false))
        .join()
        .map_len()
}

/// Each left record enriched with the right side's value (a table of upserts) at its time.
fn table_join<'a>(l: Events<'a, Ev>, r: Events<'a, Ev>) -> Events<'a, u64> {
    let changes = r.map(|e| (e.key, Change { value: Some(e.ts), ts: e.ts }));
    let table = Keyed::new(changes).into_table("bench");
    l.key_by(|e: &Ev| e.key).join_table(&table).join().map_len()
}

/// Each trade with the latest quote of its symbol at or before it.
fn asof_join<'a>(l: Events<'a, Ev>, r: Events<'a, Ev>) -> Events<'a, u64> {
    l.key_by(|e: &Ev| e.key)
        .asof_join(r.key_by(|e: &Ev| e.key))
        .max_staleness(Duration::from_secs(10))
        .join()
        .map_len()
}

/// Two sides of `events / 2` records each, 10 per ms of event time, up to 1 s out of order.
fn sides(events: u64, keys: u64, report_every: Option<u64>) -> (Input, Input) {
    let left = Input {
        name: "left",
        seed: 7,
        events: events / 2,
        keys,
        per_ms: 10,
        disorder: 1000,
        report_every,
    };
    let right = Input { name: "right", seed: 11, report_every: None, ..left.clone() };
    (left, right)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let events: u64 = flag("--events").and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let workers: Option<usize> = flag("--workers").and_then(|w| w.parse().ok());
    if let Some(join) = flag("--soak") {
        let events = flag("--events").and_then(|v| v.parse().ok()).unwrap_or(50_000_000);
        let w = workers.unwrap_or(1);
        let (left, right) = sides(events, 10_000, Some(events / 20));
        println!(
            "soak: {join} join, {}M events (half per side), 10k keys, {w} worker(s)",
            events / 1_000_000
        );
        let result = match join.as_str() {
            "interval" => run2(&left, &right, w, interval_join),
            "asof" => run2(&left, &right, w, asof_join),
            other => panic!("--soak takes interval or asof, not {other}"),
        };
        let (rss, peak) = memory();
        println!(
            "soak done: {:.1} s, {:.2}M events/s, {} results, RSS {rss:.1} MiB, peak {peak:.1} MiB",
            result.0.as_secs_f64(),
            events as f64 / result.0.as_secs_f64() / 1e6,
            result.1
        );
        return;
    }

    let (left, right) = sides(events, 10_000, None);
    let (trades, quotes) = sides(events, 1_000, None);
    println!("| benchmark (granularity 100 ms, disorder 1 s, two sides) | events | workers | time | events/s | per worker | results |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    // `--only as-of --workers 2` runs one line of the table.
    let only = flag("--only").map_or("", |s| s.as_str());
    let workers: Vec<usize> = workers.map_or(vec![1, 2], |w| vec![w]);
    type Join = for<'a> fn(Events<'a, Ev>, Events<'a, Ev>) -> Events<'a, u64>;
    let joins: [(&str, Join, (&Input, &Input)); 4] = [
        ("window join, tumbling 1 s, 10k keys", window_join, (&left, &right)),
        ("interval join, ±500 ms, 10k keys", interval_join, (&left, &right)),
        ("table join (as of), 10k keys", table_join, (&left, &right)),
        ("as-of join, 1k symbols, staleness 10 s", asof_join, (&trades, &quotes)),
    ];
    for &w in &workers {
        for (name, join, (l, r)) in joins.iter().filter(|(name, ..)| name.contains(only)) {
            report(name, events, w, run2(l, r, w, *join));
        }
    }
}
