//! Window benchmarks: events per second per worker for tumbling, sliding and session window
//! counts on generated in-memory events, next to a hand-written timely operator doing the same
//! tumbling count; and a soak run that reports memory as the stream goes on.
//!
//! ```sh
//! cargo bench -p tributary-tests --bench windows                      # the table
//! cargo bench -p tributary-tests --bench windows -- --events 50000000
//! cargo bench -p tributary-tests --bench windows -- --soak            # 100M events, RSS
//! ```
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use tributary_connectors::generator::mix;
use tributary_operators::{Count, KeyBy, Sliding, Tumbling};
use tributary_runtime::{
    Emitter, EventTime, Events, Flow, Granularity, JobContext, Poll, Result, Source, SourceContext,
    SourceReader, Time, Timestamped,
};

/// The benchmark's record: a key and an event time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Ev {
    key: u64,
    ts: u64,
}

impl Timestamped for Ev {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

/// `events` records over `keys` random keys, `per_ms` per millisecond of event time, each up
/// to `disorder` ms early.
#[derive(Clone)]
struct Input {
    events: u64,
    keys: u64,
    per_ms: u64,
    disorder: u64,
    /// Print memory every this many events (soak runs).
    report_every: Option<u64>,
}

struct InputReader {
    input: Input,
    next: u64,
    step: u64,
    next_report: u64,
}

impl Source for Input {
    type Item = Ev;
    type Reader = InputReader;
    fn name(&self) -> &str {
        "bench"
    }
    fn reader(&self, ctx: &SourceContext) -> Result<InputReader> {
        Ok(InputReader {
            input: self.clone(),
            next: ctx.worker_index as u64,
            step: ctx.workers as u64,
            next_report: self.report_every.unwrap_or(u64::MAX),
        })
    }
}

impl SourceReader for InputReader {
    type Item = Ev;
    fn poll(&mut self, out: &mut Emitter<'_, Ev>) -> Result<Poll> {
        let i = &self.input;
        for _ in 0..out.room() {
            if self.next >= i.events {
                return Ok(Poll::Done);
            }
            let h = mix(7, self.next);
            let due = 1_000_000 + self.next / i.per_ms;
            let ts = due - h % (i.disorder + 1);
            out.emit(ts, Ev { key: (h >> 20) % i.keys, ts });
            self.next += self.step;
        }
        if self.next >= self.next_report {
            let (rss, peak) = memory();
            println!(
                "  {:>5}M events: RSS {rss:>6.1} MiB, peak {peak:>6.1} MiB",
                self.next / 1_000_000
            );
            self.next_report += i.report_every.unwrap_or(u64::MAX);
        }
        out.advance_watermark((1_000_000 + self.next / i.per_ms).saturating_sub(i.disorder));
        Ok(Poll::Ready)
    }
}

/// Current and peak resident memory of this process, in MiB (from `/proc/self/status`).
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs `build` over `input` on `workers` workers; returns the elapsed time and the number
/// of results the pipeline emitted.
fn run<F>(input: &Input, workers: usize, build: F) -> (Duration, u64)
where
    F: for<'a> Fn(Events<'a, Ev>) -> Events<'a, u64> + Send + Sync + 'static,
{
    let input = Arc::new(input.clone());
    let results = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&results);
    let context = JobContext::new("bench", Granularity::DEFAULT);
    let mut worker = timely::WorkerConfig::default();
    context.install(&mut worker);
    let communication = if workers == 1 {
        timely::CommunicationConfig::Thread
    } else {
        timely::CommunicationConfig::Process(workers)
    };
    let started = Instant::now();
    timely::execute(timely::Config { communication, worker }, move |worker| {
        let input = Arc::clone(&input);
        let counted = Arc::clone(&counted);
        worker.dataflow::<Time, _, _>(|scope| {
            let mut flow = Flow::new(scope);
            build(flow.source(&*input)).sink(Pipeline, "count", move |(input, _)| {
                input.for_each(|_, rows| {
                    counted.fetch_add(rows.len() as u64, Ordering::Relaxed);
                    rows.clear();
                });
            });
        });
    })
    .expect("timely starts")
    .join()
    .into_iter()
    .for_each(|r| r.expect("no worker panicked"));
    (started.elapsed(), results.load(Ordering::Relaxed))
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

fn report(name: &str, input: &Input, workers: usize, (elapsed, rows): (Duration, u64)) {
    let rate = input.events as f64 / elapsed.as_secs_f64();
    println!(
        "| {name:<44} | {:>6.1}M | {workers} | {:>6.2} s | {:>7.2}M | {:>7.2}M | {rows:>9} |",
        input.events as f64 / 1e6,
        elapsed.as_secs_f64(),
        rate / 1e6,
        rate / workers as f64 / 1e6,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let events: u64 = flag("--events").and_then(|v| v.parse().ok()).unwrap_or(20_000_000);
    if args.iter().any(|a| a == "--soak") {
        let input = Input {
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

    let few = Input { events, keys: 100, per_ms: 100, disorder: 1000, report_every: None };
    let many = Input { keys: 1_000_000, ..few.clone() };
    let sessions = Input { keys: 10_000, ..few.clone() };
    println!("| benchmark (granularity 100 ms, disorder 1 s) | events | workers | time | events/s | per worker | results |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    report("source and a map, no window", &few, 1, run(&few, 1, |s| s.map_len()));
    report(
        "hand-written timely tumbling 1m count, 100 keys",
        &few,
        1,
        run(&few, 1, move |s| baseline(s, 60_000)),
    );
    report("tumbling 1m count, 100 keys", &few, 1, run(&few, 1, tumbling));
    report("tumbling 1m count, 100 keys", &few, 2, run(&few, 2, tumbling));
    report(
        "hand-written timely tumbling 1m count, 1M keys",
        &many,
        1,
        run(&many, 1, move |s| baseline(s, 60_000)),
    );
    report("tumbling 1m count, 1M keys", &many, 1, run(&many, 1, tumbling));
    report("sliding 1m/10s count, 100 keys", &few, 1, run(&few, 1, sliding));
    report("session 100ms gap count, 10k keys", &sessions, 1, run(&sessions, 1, session));
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

/// Maps any stream to a stream of unit-size markers, one per record, for counting results.
trait MapLen<'a> {
    fn map_len(self) -> Events<'a, u64>;
}

impl<'a, D: tributary_runtime::Data> MapLen<'a> for Events<'a, D> {
    fn map_len(self) -> Events<'a, u64> {
        use timely::dataflow::operators::vec::Map;
        self.map(|_| 1u64)
    }
}
