//! What a running job is doing, for people: the `/status` JSON and page (see
//! [`crate::serve`]), the progress line on a terminal and the summary at exit.
//!
//! Sources, sinks, late-record counters and the checkpoint agent write plain atomics into
//! the process's [`Status`]; with the HTTP endpoint on, every worker also reads timely's own
//! log for its operators and channels ([`watch`]). A reporter thread ([`Reporter`]) turns all
//! of it into a [`Snapshot`] once a second: totals, rates over the last second, watermarks,
//! lags and memory.

mod graph;
mod progress;
mod traffic;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

pub use graph::watch;
pub(crate) use graph::WorkerGraph;
pub(crate) use progress::clear_line;
pub use progress::{Progress, Summary};
pub use traffic::Traffic;

use crate::time::Time;

/// Locks a mutex, taking over one poisoned by a panicked worker (the data stays readable).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one worker of a source or a sink has done, written by its driver.
#[derive(Debug, Default)]
pub struct Endpoint {
    /// The source's or sink's name.
    pub name: String,
    /// The worker's global index.
    pub worker: usize,
    records: AtomicU64,
    bytes: AtomicU64,
    dead_letters: AtomicU64,
    /// The watermark as a timely time, `u64::MAX` once finished (sources only).
    watermark: AtomicU64,
    /// Records not read yet, per partition (Kafka readers).
    backlog: Mutex<Vec<(String, u64)>>,
}

impl Endpoint {
    /// Sets the records this worker has read or written so far.
    pub fn set_records(&self, records: u64) {
        self.records.store(records, Ordering::Relaxed);
    }

    /// Adds bytes read from outside (sources).
    pub fn add_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds written records.
    pub fn add_records(&self, records: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
    }

    /// Sets the dead letters this worker has produced so far.
    pub fn set_dead_letters(&self, letters: u64) {
        self.dead_letters.store(letters, Ordering::Relaxed);
    }

    /// Sets the worker's watermark.
    pub fn set_watermark(&self, watermark: Time) {
        self.watermark.store(watermark, Ordering::Relaxed);
    }

    /// Sets the records each partition still holds beyond the reader's position.
    pub fn set_backlog(&self, backlog: Vec<(String, u64)>) {
        *lock(&self.backlog) = backlog;
    }
}

/// A counter of late records an operator dropped ([`crate::metrics::LATE_DROPPED`]) or
/// accepted as updates ([`crate::metrics::LATE_UPDATES`]): the Prometheus series and the
/// process's total for the status page and summary.
#[derive(Debug, Clone)]
pub struct LateCounter {
    counter: metrics::Counter,
    status: Arc<Status>,
    updates: bool,
}

impl LateCounter {
    /// A counter of `metric` (one of the two above) with `labels`.
    pub fn new(
        status: Arc<Status>,
        metric: &'static str,
        labels: &[(&'static str, String)],
    ) -> Self {
        let updates = metric == crate::metrics::LATE_UPDATES;
        LateCounter { counter: metrics::counter!(metric, labels), status, updates }
    }

    /// Counts `records` late records.
    pub fn increment(&self, records: u64) {
        self.counter.increment(records);
        let total =
            if self.updates { &self.status.late_updates } else { &self.status.late_records };
        total.fetch_add(records, Ordering::Relaxed);
    }
}

/// The state an operator keeps on one worker, in entries (keys × windows for window
/// aggregates, stored records for joins): a gauge ([`crate::metrics::STATE_ENTRIES`]) and a
/// column of the status page. Counting may walk the state, so [`StateGauge::update`] does it
/// at most once per [`STATUS_EVERY`].
#[derive(Debug)]
pub struct StateGauge {
    gauge: metrics::Gauge,
    status: Arc<Status>,
    operator: String,
    worker: usize,
    at: Option<Instant>,
}

impl StateGauge {
    /// The gauge of `operator` on `worker`.
    pub fn new(status: Arc<Status>, operator: &str, worker: usize) -> Self {
        let labels = [
            (crate::metrics::OPERATOR, operator.to_owned()),
            (crate::metrics::WORKER, worker.to_string()),
        ];
        let gauge = metrics::gauge!(crate::metrics::STATE_ENTRIES, &labels);
        StateGauge { gauge, status, operator: operator.to_owned(), worker, at: None }
    }

    /// Sets the gauge to `entries()`, unless it was set less than [`STATUS_EVERY`] ago.
    pub fn update(&mut self, entries: impl FnOnce() -> usize) {
        let now = Instant::now();
        if self.at.is_some_and(|at| now - at < STATUS_EVERY) {
            return;
        }
        self.at = Some(now);
        let entries = entries() as u64;
        self.gauge.set(entries as f64);
        lock(&self.status.state).insert((self.operator.clone(), self.worker), entries);
    }
}

/// The latest checkpoint and the counts so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointStatus {
    /// Complete checkpoints.
    pub completed: u64,
    /// Failed checkpoints.
    pub failed: u64,
    /// The latest complete one.
    pub last: Option<LastCheckpoint>,
}

/// One complete checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct LastCheckpoint {
    /// Its number.
    pub id: u64,
    /// Its cut, in event-time milliseconds.
    pub cut: Time,
    /// Bytes of state and positions.
    pub bytes: u64,
    /// From its start to its manifest.
    pub duration_ms: u64,
    /// When it completed.
    #[serde(skip)]
    pub at: Option<Instant>,
}

/// When this process's sources first sent records of each event time, so that a sink can
/// tell how long ago the input a result completes came in (see [`Status::ingested`]).
#[derive(Debug, Default)]
struct IngestClock(Mutex<BTreeMap<Time, Instant>>);

/// Event times the clock remembers, at most (a source notes at most one per
/// [`NOTE_EVERY`]: minutes of history). The older half goes when it is full.
const CLOCK_CAPACITY: usize = 1 << 16;

/// How often one source worker notes the time it sent records at, at most.
pub const NOTE_EVERY: Duration = Duration::from_millis(10);

/// Latency buckets: bucket `i` holds latencies up to `2^(i/2)` milliseconds (1 ms to 50 days).
const LATENCY_BUCKETS: usize = 64;

/// A histogram of latencies in milliseconds, in buckets growing by √2.
#[derive(Debug)]
struct Latencies([AtomicU64; LATENCY_BUCKETS]);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Latencies {
    fn record(&self, latency: Duration) {
        let millis = latency.as_secs_f64() * 1e3;
        let bucket = if millis <= 1.0 { 0 } else { (2.0 * millis.log2()).ceil() as usize };
        self.0[bucket.min(LATENCY_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The 50th and 99th percentiles (bucket upper bounds) and the count.
    fn summary(&self) -> Option<LatencyStatus> {
        let counts: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let quantile = |q: f64| {
            let rank = (q * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            let bucket = counts.iter().position(|&c| {
                seen += c;
                seen >= rank
            });
            2f64.powf(bucket.unwrap_or(LATENCY_BUCKETS - 1) as f64 / 2.0)
        };
        let buckets = counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (2f64.powf(i as f64 / 2.0), c))
            .collect();
        Some(LatencyStatus {
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            results: total,
            buckets,
        })
    }
}

/// End-to-end latency: from a source first sending records of an event time to a sink
/// writing results at that time.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStatus {
    /// Median, in milliseconds (the upper bound of its √2-wide bucket).
    pub p50_ms: f64,
    /// 99th percentile, in milliseconds (likewise).
    pub p99_ms: f64,
    /// Measurements: one per sink worker and timestamp written.
    pub results: u64,
    /// The histogram: `(upper bound in milliseconds, measurements)` of each non-empty
    /// bucket, in order.
    pub buckets: Vec<(f64, u64)>,
}

impl LatencyStatus {
    /// The histogram as `upper_ms=count` pairs separated by commas, e.g. `1=40,1.41=3`.
    pub fn buckets_text(&self) -> String {
        let pairs: Vec<String> = self
            .buckets
            .iter()
            .map(|(ms, n)| format!("{}={n}", (ms * 100.0).round() / 100.0))
            .collect();
        pairs.join(",")
    }
}

/// The status of one process of a job.
#[derive(Debug)]
pub struct Status {
    job: Arc<str>,
    cluster: Mutex<(usize, usize, usize)>,
    started: Instant,
    started_at: SystemTime,
    sources: Mutex<Vec<Arc<Endpoint>>>,
    sinks: Mutex<Vec<Arc<Endpoint>>>,
    graphs: Mutex<BTreeMap<usize, WorkerGraph>>,
    checkpoints: Mutex<CheckpointStatus>,
    late_records: AtomicU64,
    late_updates: AtomicU64,
    ingest: IngestClock,
    latencies: Latencies,
    /// Entries per operator name and worker (see [`StateGauge`]).
    state: Mutex<BTreeMap<(String, usize), u64>>,
    latest: Mutex<Option<Arc<Snapshot>>>,
}

impl Status {
    /// The status of a process of job `job`, starting now.
    pub fn new(job: &str) -> Self {
        Status {
            job: job.into(),
            cluster: Mutex::new((0, 1, 1)),
            started: Instant::now(),
            started_at: SystemTime::now(),
            sources: Mutex::default(),
            sinks: Mutex::default(),
            graphs: Mutex::default(),
            checkpoints: Mutex::default(),
            late_records: AtomicU64::new(0),
            late_updates: AtomicU64::new(0),
            ingest: IngestClock::default(),
            latencies: Latencies::default(),
            state: Mutex::default(),
            latest: Mutex::default(),
        }
    }

    /// Sets this process's index, the number of processes and the workers per process.
    pub fn set_cluster(&self, process: usize, processes: usize, workers: usize) {
        *lock(&self.cluster) = (process, processes, workers);
    }

    /// Registers one worker of a source.
    pub fn source(&self, name: &str, worker: usize) -> Arc<Endpoint> {
        let endpoint = Arc::new(Endpoint { name: name.to_owned(), worker, ..Endpoint::default() });
        lock(&self.sources).push(Arc::clone(&endpoint));
        endpoint
    }

    /// Registers one worker of a sink.
    pub fn sink(&self, name: &str, worker: usize) -> Arc<Endpoint> {
        let endpoint = Arc::new(Endpoint { name: name.to_owned(), worker, ..Endpoint::default() });
        lock(&self.sinks).push(Arc::clone(&endpoint));
        endpoint
    }

    /// A source worker sent records at timely time `time` and later ones (told at most once
    /// per [`NOTE_EVERY`]).
    pub fn ingested(&self, time: Time, at: Instant) {
        let mut times = lock(&self.ingest.0);
        times.entry(time).or_insert(at);
        if times.len() > CLOCK_CAPACITY {
            if let Some(&middle) = times.keys().nth(CLOCK_CAPACITY / 2) {
                *times = times.split_off(&middle);
            }
        }
    }

    /// A sink writes results at timely time `time`: records how long ago the latest input at
    /// or before `time` came in, and returns it (`None` when no source of this process has
    /// sent anything at or before `time` lately).
    pub fn emitted(&self, time: Time, now: Instant) -> Option<Duration> {
        let since = lock(&self.ingest.0).range(..=time).next_back().map(|(_, at)| *at)?;
        let latency = now.saturating_duration_since(since);
        self.latencies.record(latency);
        Some(latency)
    }

    /// Records a complete checkpoint.
    pub fn checkpoint_completed(&self, id: u64, cut: Time, bytes: u64, duration: Duration) {
        let mut checkpoints = lock(&self.checkpoints);
        checkpoints.completed += 1;
        checkpoints.last = Some(LastCheckpoint {
            id,
            cut,
            bytes,
            duration_ms: duration.as_millis() as u64,
            at: Some(Instant::now()),
        });
    }

    /// Records a failed checkpoint.
    pub fn checkpoint_failed(&self) {
        lock(&self.checkpoints).failed += 1;
    }

    /// Replaces one worker's operator graph and counts (see [`watch`]).
    pub(crate) fn set_graph(&self, worker: usize, graph: WorkerGraph) {
        lock(&self.graphs).insert(worker, graph);
    }

    /// The latest snapshot the reporter took; `None` before the first.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        lock(&self.latest).clone()
    }

    /// Takes a snapshot now, with rates measured since `previous`, and keeps it as the latest.
    pub fn snapshot(&self, previous: Option<&Snapshot>) -> Arc<Snapshot> {
        self.snapshot_at(previous, Instant::now())
    }

    fn snapshot_at(&self, previous: Option<&Snapshot>, now: Instant) -> Arc<Snapshot> {
        let elapsed = previous
            .map(|p| now.saturating_duration_since(p.taken).as_secs_f64())
            .filter(|&s| s > 0.0);
        let rate = |current: u64, before: Option<u64>| match (elapsed, before) {
            (Some(seconds), Some(before)) => current.saturating_sub(before) as f64 / seconds,
            _ => 0.0,
        };
        let wall = crate::time::now_event_time();
        let endpoints = |list: &Mutex<Vec<Arc<Endpoint>>>, old: Option<&Vec<EndpointStatus>>| {
            lock(list)
                .iter()
                .map(|e| {
                    let records = e.records.load(Ordering::Relaxed);
                    let before = old
                        .and_then(|o| o.iter().find(|p| p.name == e.name && p.worker == e.worker));
                    let watermark = e.watermark.load(Ordering::Relaxed);
                    let watermark = (watermark > 0 && watermark != u64::MAX).then_some(watermark);
                    EndpointStatus {
                        name: e.name.clone(),
                        worker: e.worker,
                        records,
                        records_per_s: rate(records, before.map(|b| b.records)),
                        bytes: e.bytes.load(Ordering::Relaxed),
                        dead_letters: e.dead_letters.load(Ordering::Relaxed),
                        watermark: watermark.map(format_time),
                        watermark_lag_s: watermark.map(|w| wall.saturating_sub(w) as f64 / 1e3),
                        finished: e.watermark.load(Ordering::Relaxed) == u64::MAX,
                        backlog: lock(&e.backlog)
                            .iter()
                            .map(|(partition, records)| Backlog {
                                partition: partition.clone(),
                                records: *records,
                            })
                            .collect(),
                    }
                })
                .collect::<Vec<_>>()
        };
        let sources = endpoints(&self.sources, previous.map(|p| &p.sources));
        let sinks = endpoints(&self.sinks, previous.map(|p| &p.sinks));
        let (mut operators, edges) = graph::merge(&lock(&self.graphs), previous, elapsed);
        let state = lock(&self.state);
        for op in &mut operators {
            let entries = state.iter().filter(|((name, _), _)| *name == op.name).map(|(_, n)| n);
            op.state_entries = entries.copied().reduce(|a, b| a + b);
        }
        drop(state);
        let records_in = sources.iter().map(|s| s.records).sum();
        let records_out = sinks.iter().map(|s| s.records).sum();
        let bytes_in = sources.iter().map(|s| s.bytes).sum();
        let (process, processes, workers) = *lock(&self.cluster);
        let memory = Memory::read();
        let snapshot = Arc::new(Snapshot {
            job: self.job.to_string(),
            process,
            processes,
            workers,
            started: humantime::format_rfc3339_millis(self.started_at).to_string(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            records_in,
            records_in_per_s: rate(records_in, previous.map(|p| p.records_in)),
            records_out,
            records_out_per_s: rate(records_out, previous.map(|p| p.records_out)),
            bytes_in,
            late_records: self.late_records.load(Ordering::Relaxed),
            late_updates: self.late_updates.load(Ordering::Relaxed),
            dead_letters: sources.iter().map(|s| s.dead_letters).sum(),
            watermark: sources
                .iter()
                .filter(|s| !s.finished)
                .filter_map(|s| s.watermark.clone())
                .min(),
            watermark_lag_s: sources
                .iter()
                .filter(|s| !s.finished)
                .filter_map(|s| s.watermark_lag_s)
                .reduce(f64::max),
            memory,
            latency: self.latencies.summary(),
            checkpoints: lock(&self.checkpoints).clone(),
            sources,
            sinks,
            operators,
            edges,
            taken: now,
        });
        *lock(&self.latest) = Some(Arc::clone(&snapshot));
        snapshot
    }
}

/// Event-time milliseconds as an RFC 3339 timestamp.
fn format_time(millis: Time) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
    humantime::format_rfc3339_millis(time).to_string()
}

/// The process's memory, from the operating system.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    /// Resident set size now.
    pub rss_bytes: u64,
    /// The largest resident set size so far.
    pub peak_rss_bytes: u64,
}

impl Memory {
    /// Reads `VmRSS` and `VmHWM` from `/proc/self/status` (zeros where there is none).
    pub fn read() -> Memory {
        let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        Memory { rss_bytes: field("VmRSS:"), peak_rss_bytes: field("VmHWM:") }
    }
}

/// A process's status at one moment, as `/status` serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The job's name.
    pub job: String,
    /// This process's index.
    pub process: usize,
    /// Processes in the job.
    pub processes: usize,
    /// Worker threads in this process.
    pub workers: usize,
    /// When the process started (RFC 3339).
    pub started: String,
    /// Seconds since then.
    pub uptime_s: f64,
    /// Records this process's sources read.
    pub records_in: u64,
    /// ... per second, over the last second.
    pub records_in_per_s: f64,
    /// Records this process's sinks wrote.
    pub records_out: u64,
    /// ... per second, over the last second.
    pub records_out_per_s: f64,
    /// Bytes this process's sources read from outside (Kafka keys and values, file lines).
    pub bytes_in: u64,
    /// Records too late for any window or join.
    pub late_records: u64,
    /// Late records accepted as updates.
    pub late_updates: u64,
    /// Records that did not decode.
    pub dead_letters: u64,
    /// The smallest watermark of the running source workers.
    pub watermark: Option<String>,
    /// The largest wall clock minus watermark of the running source workers, in seconds.
    pub watermark_lag_s: Option<f64>,
    /// Memory use.
    pub memory: Memory,
    /// End-to-end latency since the start; `None` before the first result.
    pub latency: Option<LatencyStatus>,
    /// Checkpoints.
    pub checkpoints: CheckpointStatus,
    /// One entry per source and worker.
    pub sources: Vec<EndpointStatus>,
    /// One entry per sink and worker.
    pub sinks: Vec<EndpointStatus>,
    /// The dataflow's operators, summed over this process's workers (with the endpoint on).
    pub operators: Vec<OperatorStatus>,
    /// The channels between them.
    pub edges: Vec<EdgeStatus>,
    #[serde(skip)]
    taken: Instant,
}

/// One worker of a source or sink.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    /// Its name.
    pub name: String,
    /// The worker.
    pub worker: usize,
    /// Records read or written.
    pub records: u64,
    /// ... per second.
    pub records_per_s: f64,
    /// Bytes read from outside: Kafka keys and values, file lines (sources; 0 for
    /// generators and sinks).
    pub bytes: u64,
    /// Records that did not decode (sources).
    pub dead_letters: u64,
    /// The watermark (sources; RFC 3339).
    pub watermark: Option<String>,
    /// Wall clock minus watermark, in seconds.
    pub watermark_lag_s: Option<f64>,
    /// Whether the worker has read everything.
    pub finished: bool,
    /// Records not read yet, per partition.
    pub backlog: Vec<Backlog>,
}

/// Records a partition holds beyond a reader's position.
#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    /// `topic/partition`.
    pub partition: String,
    /// The records.
    pub records: u64,
}

/// One operator of the dataflow.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorStatus {
    /// Its address in the dataflow, e.g. `"0.3"`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Records it took in on all its inputs.
    pub records_in: u64,
    /// Records it sent on all its outputs.
    pub records_out: u64,
    /// ... per second.
    pub records_in_per_s: f64,
    /// ... per second.
    pub records_out_per_s: f64,
    /// The share of one worker's time spent in it over the last second (summed over workers).
    pub busy: f64,
    /// Seconds spent in it so far, over all workers.
    pub busy_s: f64,
    /// The state it keeps, in entries, over all workers (operators that report it).
    pub state_entries: Option<u64>,
}

/// A channel between two operators.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeStatus {
    /// The sending operator's id.
    pub from: String,
    /// The receiving operator's id.
    pub to: String,
    /// Records sent on it.
    pub records: u64,
    /// ... per second.
    pub records_per_s: f64,
}

/// Takes a snapshot every second, keeps process gauges up to date and draws the progress
/// line, until dropped.
pub struct Reporter {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the reporter takes a snapshot.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

impl Reporter {
    /// Starts the reporter thread for `status`; `progress` draws the line on stderr.
    pub fn start(status: Arc<Status>, mut progress: Option<Progress>) -> Reporter {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let rss = metrics::gauge!(crate::metrics::RESIDENT_MEMORY);
        let thread = std::thread::Builder::new()
            .name("tributary-status".into())
            .spawn(move || {
                let mut previous = None;
                loop {
                    let snapshot = status.snapshot(previous.as_deref());
                    rss.set(snapshot.memory.rss_bytes as f64);
                    if let Some(progress) = progress.as_mut() {
                        progress.draw(&snapshot);
                    }
                    previous = Some(snapshot);
                    match stopped.recv_timeout(STATUS_EVERY) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
                if let Some(progress) = progress.as_mut() {
                    progress.clear();
                }
            })
            .ok();
        Reporter { stop: Some(stop), thread }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_are_bucket_bounds() {
        let latencies = Latencies::default();
        assert!(latencies.summary().is_none());
        for _ in 0..98 {
            latencies.record(Duration::from_millis(3));
        }
        latencies.record(Duration::from_secs(1));
        latencies.record(Duration::from_secs(1));
        let summary = latencies.summary().expect("measured");
        // 3 ms falls in the bucket up to 2^(4/2) = 4 ms; 1 s in the one up to 2^(20/2) ms.
        assert_eq!((summary.p50_ms, summary.p99_ms, summary.results), (4.0, 1024.0, 100));
        assert_eq!(summary.buckets, vec![(4.0, 98), (1024.0, 2)]);
        assert_eq!(summary.buckets_text(), "4=98,1024=2");
        latencies.record(Duration::from_secs(1 << 40));
        assert!(latencies.summary().is_some(), "huge values land in the last bucket");
    }

    #[test]
    fn latency_is_measured_from_the_latest_input_at_or_before_a_result() {
        let status = Status::new("job");
        let start = Instant::now();
        status.ingested(1_000, start);
        status.ingested(2_000, start + Duration::from_millis(40));
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(status.emitted(1_999, at(50)), Some(Duration::from_millis(50)));
        assert_eq!(status.emitted(2_000, at(50)), Some(Duration::from_millis(10)));
        assert_eq!(status.emitted(999, at(50)), None, "nothing that early came in");
        // The first instant a time was sent at counts, not later ones.
        status.ingested(2_000, at(45));
        assert_eq!(status.emitted(2_500, at(60)), Some(Duration::from_millis(20)));
    }

    #[test]
    fn snapshots_total_the_workers_and_rate_against_the_previous_one() {
        let status = Status::new("job");
        let (a, b) = (status.source("in", 0), status.source("in", 1));
        let out = status.sink("out", 0);
        a.set_records(100);
        b.set_records(50);
        a.set_watermark(1_767_225_600_000);
        b.set_watermark(u64::MAX);
        let first = status.snapshot(None);
        assert_eq!((first.records_in, first.records_in_per_s), (150, 0.0));
        assert_eq!(
            first.watermark.as_deref(),
            Some("2026-01-01T00:00:00.000Z"),
            "finished b is out"
        );
        a.set_records(300);
        out.add_records(7);
        let second = status.snapshot_at(Some(&first), first.taken + Duration::from_secs(2));
        assert_eq!((second.records_in, second.records_out), (350, 7));
        assert_eq!((second.records_in_per_s, second.sources[0].records_per_s), (100.0, 100.0));
        assert_eq!(second.records_out_per_s, 3.5);
        assert_eq!(second.sources[1].records_per_s, 0.0);
        assert!(Arc::ptr_eq(&status.latest().expect("kept"), &second));
    }
}
