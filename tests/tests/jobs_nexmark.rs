//! The Nexmark queries of the `nexmark` job, each against a naive recomputation over the same
//! events, listed here by the job's generator model with the job's settings.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};
use tributary_connectors::generator::{Bid, Generate, NexmarkEvent as Event};
use tributary_connectors::{NexmarkConfig, NexmarkEvents, Pace};

/// 60 000 events at 1 000 per second of event time: a minute, six 10 s windows.
const EVENTS: usize = 60_000;
const RATE: usize = 1_000;
/// The generator's first event time (`pace.start`, 2026-01-01T00:00:00Z).
const BASE: u64 = 1_767_225_600_000;
const TEN_S: u64 = 10_000;

fn generator() -> NexmarkEvents {
    let config = NexmarkConfig {
        pace: Pace { events_per_second: RATE as f64, ..NexmarkConfig::default().pace },
    };
    NexmarkEvents::new(&config).expect("valid settings")
}

/// The events the job's generator makes: same start and rate, in order.
fn events() -> Vec<Event> {
    let generator = generator();
    let model = generator.model();
    let mut text = model.start(0, 1);
    (0..EVENTS as u64).map(|i| model.event(&mut text, i).1).collect()
}

/// Runs query `query` on two workers and returns its rows, sorted.
fn run(query: &str) -> Vec<Value> {
    let query = format!("job.query=\"{query}\"");
    let events = format!("job.events.pace.events={EVENTS}");
    let rate = format!("job.events.pace.events_per_second={RATE}");
    let out = support::run_job(
        "nexmark",
        &["--workers", "2", "--set", &query, "--set", &events, "--set", &rate],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect();
    sorted(rows)
}

fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|r| r.to_string());
    rows
}

fn bids() -> Vec<Bid> {
    events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Bid(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn bid_json(b: &Bid) -> Value {
    json!({"auction": b.auction, "bidder": b.bidder, "price": b.price, "channel": b.channel,
           "url": b.url, "date_time": b.date_time, "extra": b.extra})
}

#[test]
fn q0_passes_every_bid_through() {
    let expected = sorted(bids().iter().map(bid_json).collect());
    assert!(expected.len() > 50_000, "{} bids", expected.len());
    assert_eq!(expected[0]["date_time"].as_u64().map(|t| t >= BASE), Some(true));
    assert_eq!(run("q0"), expected);
}

#[test]
fn q1_converts_prices_and_q2_selects_auctions() {
    let expected: Vec<Value> = bids()
        .iter()
        .map(|b| {
            json!({"auction": b.auction, "bidder": b.bidder, "price": 0.908 * b.price as f64,
                   "date_time": b.date_time, "extra": b.extra})
        })
        .collect();
    // serde_json reads floats to within one unit in the last place: prices compare so.
    let without_price = |rows: Vec<Value>| -> Vec<(String, f64)> {
        let mut rows: Vec<(String, f64)> = rows
            .into_iter()
            .map(|mut r| {
                let price = r["price"].as_f64().expect("a price");
                r["price"] = Value::Null;
                (r.to_string(), price)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        rows
    };
    let (actual, expected) = (without_price(run("q1")), without_price(expected));
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(&expected) {
        assert!(a.0 == e.0 && (a.1 - e.1).abs() <= 1e-12 * e.1.abs(), "q1: {a:?} != {e:?}");
    }
    let expected: Vec<Value> = bids()
        .iter()
        .filter(|b| b.auction % 123 == 0)
        .map(|b| json!({"auction": b.auction, "price": b.price}))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(run("q2"), sorted(expected));
}

#[test]
fn q3_finds_local_items() {
    let mut persons = HashMap::new();
    let mut expected = Vec::new();
    for event in events() {
        match event {
            Event::Person(p) if ["OR", "ID", "CA"].contains(&&*p.state) => {
                persons.insert(p.id, p);
            }
            Event::Auction(a) if a.category == 10 => {
                // The map holds the sellers registered so far (a temporal join).
                if let Some(p) = persons.get(&a.seller).filter(|p| p.date_time <= a.date_time) {
                    expected.push(json!({"name": p.name, "city": p.city, "state": p.state,
                                         "id": a.id}));
                }
            }
            _ => {}
        }
    }
    assert!(!expected.is_empty());
    assert_eq!(run("q3"), sorted(expected));
}

#[test]
fn q4_averages_winning_prices_per_category() {
    // The SQL: each auction's highest bid within [opening, expiry], averaged per category.
    // The job's updates, per category in time order, must end at the average over every
    // event, and each one must be the average over the events up to its time (the end of its
    // tick of the default granularity, 100 ms).
    let events = events();
    let average_until = |until: u64| -> BTreeMap<u64, (f64, u64)> {
        let mut auctions = HashMap::new();
        let mut winning: HashMap<u64, u64> = HashMap::new();
        for e in events.iter().filter(|e| tributary_runtime::Timestamped::event_time(*e) <= until) {
            match e {
                Event::Auction(a) => {
                    auctions.insert(a.id, (a.category, a.date_time, a.expires));
                }
                Event::Bid(b) => {
                    if let Some(&(_, opened, expires)) = auctions.get(&b.auction) {
                        if (opened..=expires).contains(&b.date_time) {
                            let w = winning.entry(b.auction).or_default();
                            *w = (*w).max(b.price);
                        }
                    }
                }
                Event::Person(_) => {}
            }
        }
        let mut sums: BTreeMap<u64, (u128, u64)> = BTreeMap::new();
        for (auction, price) in winning {
            let sum = sums.entry(auctions[&auction].0).or_default();
            *sum = (sum.0 + u128::from(price), sum.1 + 1);
        }
        sums.into_iter().map(|(c, (sum, n))| (c, (sum as f64 / n as f64, n))).collect()
    };
    let mut updates: BTreeMap<u64, Vec<(u64, f64, u64)>> = BTreeMap::new();
    for row in run("q4") {
        let field = |f: &str| row[f].as_u64().expect("an integer");
        let avg = row["avg_price"].as_f64().expect("a price");
        updates.entry(field("category")).or_default().push((
            field("date_time"),
            avg,
            field("auctions"),
        ));
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    let all = average_until(u64::MAX);
    assert_eq!(updates.keys().collect::<Vec<_>>(), all.keys().collect::<Vec<_>>());
    for (category, list) in &mut updates {
        list.sort_by_key(|u| u.0);
        let &(_, avg, n) = list.last().expect("an update");
        let (expected, expected_n) = all[category];
        assert!(close(avg, expected) && n == expected_n, "q4 {category}: {avg} over {n}");
        assert!(list.windows(2).all(|w| w[0].0 < w[1].0), "one update per time");
    }
    // Spot checks of intermediate updates against the events up to their time.
    let list = &updates[&10];
    assert!(list.len() > 100, "{} updates", list.len());
    for &(time, avg, n) in list.iter().step_by(list.len() / 7) {
        // An update at timely time `time` accounts for the events of its 100 ms tick.
        let (expected, expected_n) = average_until(time + 99)[&10];
        assert!(close(avg, expected) && n == expected_n, "q4 at {time}: {avg} over {n}");
    }
}

#[test]
fn q5_finds_the_hot_items_of_each_sliding_window() {
    // Windows of 10 s every 2 s: a bid at t is in the windows starting at the multiples of
    // 2 s in (t - 10 s, t].
    let mut counts: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    for b in bids() {
        let last = b.date_time - b.date_time % 2_000;
        let mut start = last;
        while start + TEN_S > b.date_time {
            *counts.entry(start).or_default().entry(b.auction).or_default() += 1;
            if start < 2_000 {
                break;
            }
            start -= 2_000;
        }
    }
    let mut expected = Vec::new();
    for (start, auctions) in &counts {
        let max = auctions.values().max().copied().unwrap_or_default();
        for (auction, &num) in auctions.iter().filter(|(_, &n)| n == max) {
            expected.push(json!({"auction": auction, "num": num, "starttime": start,
                                 "endtime": start + TEN_S}));
        }
    }
    assert!(counts.len() >= 30, "{} windows", counts.len());
    assert_eq!(run("q5"), sorted(expected));
}

#[test]
fn q7_finds_the_highest_bids_of_each_window() {
    let mut windows: BTreeMap<u64, Vec<Bid>> = BTreeMap::new();
    for b in bids() {
        windows.entry(b.date_time - b.date_time % TEN_S).or_default().push(b);
    }
    let mut expected = Vec::new();
    for bids in windows.values() {
        let max = bids.iter().map(|b| b.price).max().unwrap_or_default();
        expected.extend(bids.iter().filter(|b| b.price == max).map(bid_json));
    }
    assert!(windows.len() >= 6);
    assert_eq!(run("q7"), sorted(expected));
}

#[test]
fn q8_finds_new_users_who_opened_auctions() {
    let window = |t: u64| t - t % TEN_S;
    let mut persons = Vec::new();
    let mut sellers = BTreeSet::new();
    for event in events() {
        match event {
            Event::Person(p) => persons.push(p),
            Event::Auction(a) => {
                sellers.insert((a.seller, window(a.date_time)));
            }
            Event::Bid(_) => {}
        }
    }
    let expected: Vec<Value> = persons
        .iter()
        .filter(|p| sellers.contains(&(p.id, window(p.date_time))))
        .map(|p| json!({"id": p.id, "name": p.name, "starttime": window(p.date_time)}))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(run("q8"), sorted(expected));
}

#[test]
fn q11_counts_bids_per_user_session() {
    let mut times: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for b in bids() {
        times.entry(b.bidder).or_default().push(b.date_time);
    }
    let mut expected = Vec::new();
    for (bidder, mut times) in times {
        times.sort_unstable();
        let (mut start, mut last, mut count) = (times[0], times[0], 0u64);
        for t in times {
            if t >= last + TEN_S {
                expected.push(json!({"bidder": bidder, "bid_count": count, "starttime": start,
                                     "endtime": last + TEN_S}));
                (start, count) = (t, 0);
            }
            last = t;
            count += 1;
        }
        expected.push(json!({"bidder": bidder, "bid_count": count, "starttime": start,
                             "endtime": last + TEN_S}));
    }
    assert_eq!(run("q11"), sorted(expected));
}

#[test]
fn q12_counts_bids_per_bidder_in_processing_time_windows() {
    // Windows of wall-clock time are not reproducible: check what must hold whatever the
    // timing. Every bid is counted once, in 10 s windows aligned to the epoch, between the
    // job's start and its end.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let rows = run("q12");
    let ended = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let mut counted: BTreeMap<u64, u64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for row in &rows {
        let field = |f: &str| row[f].as_u64().expect("an integer");
        let (start, end) = (field("starttime"), field("endtime"));
        assert_eq!((start % TEN_S, end - start), (0, TEN_S), "{row}");
        assert!(start + TEN_S > started && start <= ended, "{row} outside {started}..{ended}");
        assert!(seen.insert((field("bidder"), start)), "one row per bidder and window: {row}");
        *counted.entry(field("bidder")).or_default() += field("bid_count");
    }
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for b in bids() {
        *expected.entry(b.bidder).or_default() += 1;
    }
    assert_eq!(counted, expected);
}

#[test]
fn q12_refuses_checkpoints_as_ingestion_times_cannot_be_replayed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let checkpoints = format!("runtime.checkpoint.dir={:?}", dir.path().display().to_string());
    let out = support::run_job(
        "nexmark",
        &[
            "--set",
            "job.query=\"q12\"",
            "--set",
            "job.events.pace.events=1000",
            "--set",
            &checkpoints,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("ingestion times cannot be replayed"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing was counted");
}
