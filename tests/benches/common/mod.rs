//! Shared by the operator benchmarks: a generated keyed input with bounded disorder, a
//! runner that counts a pipeline's results, memory readings and the report line.
#![allow(dead_code, clippy::print_stdout)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use tributary_connectors::generator::mix;
use tributary_runtime::checkpoint::{CheckpointConfig, Checkpoints, LocalDir};
use tributary_runtime::flow_control::DEFAULT_MAX_IN_FLIGHT;
use tributary_runtime::{
    Emitter, EventTime, Events, Flow, Granularity, HumanDuration, JobContext, Poll, Result, Source,
    SourceContext, SourceReader, Time, Timestamped, Traffic, WatermarkConfig,
};

/// The benchmark's record: a key and an event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ev {
    pub key: u64,
    pub ts: u64,
}

impl Timestamped for Ev {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

/// `events` records over `keys` random keys, `per_ms` per millisecond of event time, each up
/// to `disorder` ms early.
#[derive(Clone)]
pub struct Input {
    /// Names the source and seeds its keys and disorder.
    pub name: &'static str,
    pub seed: u64,
    pub events: u64,
    pub keys: u64,
    pub per_ms: u64,
    pub disorder: u64,
    /// Print memory every this many events (soak runs).
    pub report_every: Option<u64>,
}

impl Input {
    /// Event `i`: a pure function of the seed and `i`.
    #[inline]
    pub fn event(&self, i: u64) -> Ev {
        let h = mix(self.seed, i);
        let ts = 1_000_000 + i / self.per_ms - h % (self.disorder + 1);
        Ev { key: (h >> 20) % self.keys, ts }
    }

    /// A lower bound of the event times of all events from `next` on.
    #[inline]
    pub fn watermark(&self, next: u64) -> EventTime {
        (1_000_000 + next / self.per_ms).saturating_sub(self.disorder)
    }
}

pub struct InputReader {
    input: Input,
    next: u64,
    step: u64,
    next_report: u64,
}

impl Source for Input {
    type Item = Ev;
    type Reader = InputReader;
    fn name(&self) -> &str {
        self.name
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
            let ev = i.event(self.next);
            out.emit(ev.ts, ev);
            self.next += self.step;
        }
        if self.next >= self.next_report {
            let (rss, peak) = memory();
            println!(
                "  {:>6.1}M {} records: RSS {rss:>6.1} MiB, peak {peak:>6.1} MiB",
                self.next as f64 / 1e6,
                i.name
            );
            self.next_report += i.report_every.unwrap_or(u64::MAX);
        }
        out.advance_watermark(i.watermark(self.next));
        Ok(Poll::Ready)
    }

    /// The position, so that the benchmarks can take checkpoints; they never restore (the
    /// default `restore` refuses).
    fn checkpoint(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        tributary_runtime::checkpoint::encode(&self.next)
    }
}

/// Current and peak resident memory of this process, in MiB (from `/proc/self/status`).
pub fn memory() -> (f64, f64) {
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
pub fn run<F>(input: &Input, workers: usize, build: F) -> (Duration, u64)
where
    F: for<'a> Fn(Events<'a, Ev>) -> Events<'a, u64> + Send + Sync + 'static,
{
    run_with(vec![input.clone()], workers, None, None, DEFAULT_MAX_IN_FLIGHT, move |mut streams| {
        build(streams.remove(0))
    })
}

/// Like [`run`], without flow control (nothing counts the records between workers).
pub fn run_without_flow_control<F>(input: &Input, workers: usize, build: F) -> (Duration, u64)
where
    F: for<'a> Fn(Events<'a, Ev>) -> Events<'a, u64> + Send + Sync + 'static,
{
    run_with(vec![input.clone()], workers, None, None, 0, move |mut streams| {
        build(streams.remove(0))
    })
}

/// Like [`run`], taking checkpoints every `interval` into `dir`.
pub fn run_checkpointed<F>(
    input: &Input,
    workers: usize,
    dir: &std::path::Path,
    interval: Duration,
    build: F,
) -> (Duration, u64)
where
    F: for<'a> Fn(Events<'a, Ev>) -> Events<'a, u64> + Send + Sync + 'static,
{
    let checkpoints = Some((dir.to_owned(), interval));
    run_with(
        vec![input.clone()],
        workers,
        None,
        checkpoints,
        DEFAULT_MAX_IN_FLIGHT,
        move |mut streams| build(streams.remove(0)),
    )
}

/// Runs `build` over two inputs (a left and a right stream), their watermarks aligned within
/// ten seconds of event time (`max_drift`): the generators run unpaced, and without alignment
/// one input can run minutes of event time ahead of the other, which a join must buffer.
/// (Alignment reports travel every 20 ms, so a tighter bound would cap the rate instead.)
pub fn run2<F>(left: &Input, right: &Input, workers: usize, build: F) -> (Duration, u64)
where
    F: for<'a> Fn(Events<'a, Ev>, Events<'a, Ev>) -> Events<'a, u64> + Send + Sync + 'static,
{
    let drift = Some(Duration::from_secs(10));
    let inputs = vec![left.clone(), right.clone()];
    run_with(inputs, workers, drift, None, DEFAULT_MAX_IN_FLIGHT, move |mut streams| {
        let right = streams.remove(1);
        build(streams.remove(0), right)
    })
}

fn run_with<F>(
    inputs: Vec<Input>,
    workers: usize,
    max_drift: Option<Duration>,
    checkpoints: Option<(std::path::PathBuf, Duration)>,
    max_in_flight: u64,
    build: F,
) -> (Duration, u64)
where
    F: for<'a> Fn(Vec<Events<'a, Ev>>) -> Events<'a, u64> + Send + Sync + 'static,
{
    let inputs = Arc::new(inputs);
    let results = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&results);
    let watermarks =
        WatermarkConfig { max_drift: max_drift.map(HumanDuration), ..WatermarkConfig::default() };
    let mut context = JobContext::new("bench", Granularity::DEFAULT)
        .with_watermarks(watermarks)
        .with_max_in_flight(max_in_flight);
    if let Some((dir, interval)) = checkpoints {
        let config = CheckpointConfig {
            dir: Some(dir.clone()),
            interval: HumanDuration(interval),
            keep: usize::MAX,
            job_id: None,
        };
        let store = Arc::new(LocalDir::new(dir));
        let checkpoints =
            Checkpoints::open(&config, "bench", store, 0, workers).expect("checkpoints open");
        context = context.with_checkpoints(Arc::new(checkpoints));
    }
    let mut worker = timely::WorkerConfig::default();
    context.install(&mut worker);
    let communication = if workers == 1 {
        timely::CommunicationConfig::Thread
    } else {
        timely::CommunicationConfig::Process(workers)
    };
    let started = Instant::now();
    timely::execute(timely::Config { communication, worker }, move |worker| {
        let inputs = Arc::clone(&inputs);
        let counted = Arc::clone(&counted);
        let traffic = if max_in_flight > 0 { Traffic::watch(worker) } else { None };
        worker.dataflow::<Time, _, _>(|scope| {
            let mut flow = Flow::new(scope);
            if let Some(traffic) = traffic {
                flow.limit_in_flight(traffic);
            }
            let streams = inputs.iter().map(|input| flow.source(input)).collect();
            build(streams).sink(Pipeline, "count", move |(input, _)| {
                input.for_each(|_, rows| {
                    counted.fetch_add(rows.len() as u64, Ordering::Relaxed);
                    rows.clear();
                });
            });
            flow.finish();
        });
    })
    .expect("timely starts")
    .join()
    .into_iter()
    .for_each(|r| r.expect("no worker panicked"));
    (started.elapsed(), results.load(Ordering::Relaxed))
}

/// Prints a Markdown table row: `events` input records in `elapsed`, `rows` results.
pub fn report(name: &str, events: u64, workers: usize, (elapsed, rows): (Duration, u64)) {
    let rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "| {name:<44} | {:>6.1}M | {workers} | {:>6.2} s | {:>7.2}M | {:>7.2}M | {rows:>9} |",
        events as f64 / 1e6,
        elapsed.as_secs_f64(),
        rate / 1e6,
        rate / workers as f64 / 1e6,
    );
}

/// Maps any stream to a stream of unit-size markers, one per record, for counting results.
pub trait MapLen<'a> {
    fn map_len(self) -> Events<'a, u64>;
}

impl<'a, D: tributary_runtime::Data> MapLen<'a> for Events<'a, D> {
    fn map_len(self) -> Events<'a, u64> {
        use timely::dataflow::operators::vec::Map;
        self.map(|_| 1u64)
    }
}
