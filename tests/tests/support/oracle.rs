//! The harness of the operator oracle tests: a source that replays records in a given arrival
//! order with a bounded-disorder watermark, the timely time the runtime gives each record,
//! and a runner on 1 or more workers.
//!
//! The feed emits one record per activation and advances its watermark to the largest event
//! time it has seen minus a bound, so a test knows the timely time of every record (its
//! rounded event time, or the watermark if it is late) and can tell which records an operator
//! must accept, correct or send to its late output.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use timely::dataflow::operators::capture::Event;
use tributary_runtime::{
    Data, Emitter, Flow, Granularity, JobContext, Poll, Result, Source, SourceContext,
    SourceReader, Timestamped,
};

/// Worker `w` of `n` emits records `w, w + n, ...` of `records`, one per activation.
pub struct Feed<R> {
    pub name: &'static str,
    pub records: Arc<Vec<R>>,
    pub bound: u64,
}

impl<R> Feed<R> {
    pub fn new(name: &'static str, records: Vec<R>, bound: u64) -> Self {
        Feed { name, records: Arc::new(records), bound }
    }
}

pub struct FeedReader<R> {
    records: Arc<Vec<R>>,
    next: usize,
    step: usize,
    bound: u64,
    max_seen: Option<u64>,
}

impl<R: Data + Timestamped + Send + Sync> Source for Feed<R> {
    type Item = R;
    type Reader = FeedReader<R>;
    fn name(&self) -> &str {
        self.name
    }
    fn reader(&self, ctx: &SourceContext) -> Result<FeedReader<R>> {
        Ok(FeedReader {
            records: Arc::clone(&self.records),
            next: ctx.worker_index,
            step: ctx.workers,
            bound: self.bound,
            max_seen: None,
        })
    }
}

impl<R: Data + Timestamped> SourceReader for FeedReader<R> {
    type Item = R;
    fn poll(&mut self, out: &mut Emitter<'_, R>) -> Result<Poll> {
        let Some(r) = self.records.get(self.next) else { return Ok(Poll::Done) };
        self.next += self.step;
        let ts = r.event_time();
        let max = self.max_seen.map_or(ts, |m| m.max(ts));
        self.max_seen = Some(max);
        out.emit(ts, r.clone());
        out.advance_watermark(max.saturating_sub(self.bound));
        // One record per activation: the driver moves its capability between records.
        Ok(Poll::Pending(Duration::ZERO))
    }
}

/// The timely time at which each record of a feed travels (by position), as the source
/// driver stamps it.
pub fn stamps<R: Timestamped>(
    records: &[R],
    bound: u64,
    g: Granularity,
    workers: usize,
) -> Vec<u64> {
    let mut times = vec![0; records.len()];
    for w in 0..workers {
        let (mut floor, mut max_seen) = (0, None::<u64>);
        for (i, r) in records.iter().enumerate().skip(w).step_by(workers) {
            let ts = r.event_time();
            times[i] = g.quantize(ts).max(floor);
            let max = max_seen.map_or(ts, |m| m.max(ts));
            max_seen = Some(max);
            floor = floor.max(g.quantize(max.saturating_sub(bound)));
        }
    }
    times
}

/// Runs `build` on `workers` workers of one process, with the given granularity.
pub fn execute<F>(granularity: u64, workers: usize, build: F)
where
    F: for<'a> Fn(&mut Flow<'a>) + Send + Sync + 'static,
{
    try_execute(granularity, workers, build);
}

/// [`execute`], returning the failure the job recorded (a source's error, say), if any.
pub fn try_execute<F>(
    granularity: u64,
    workers: usize,
    build: F,
) -> Option<tributary_runtime::Error>
where
    F: for<'a> Fn(&mut Flow<'a>) + Send + Sync + 'static,
{
    let context =
        JobContext::new("oracle", Granularity::from_millis(granularity).expect("positive"));
    let state = Arc::clone(&context.state);
    let mut worker_config = timely::WorkerConfig::default();
    context.install(&mut worker_config);
    let config = timely::Config {
        communication: timely::CommunicationConfig::Process(workers),
        worker: worker_config,
    };
    timely::execute(config, move |worker| {
        worker.dataflow::<u64, _, _>(|scope| {
            let mut flow = Flow::new(scope);
            build(&mut flow);
        });
    })
    .expect("timely starts")
    .join()
    .into_iter()
    .for_each(|r| r.expect("no worker panicked"));
    state.take_failure()
}

/// Runs `source` to its end on `workers` workers: its records, and its dead letters as
/// (location, reason), sorted.
#[allow(dead_code)] // Not every test binary reads dead letters.
pub fn read_with_dead_letters<S: Source>(
    source: S,
    workers: usize,
) -> (Vec<S::Item>, Vec<(String, String)>) {
    use std::sync::Mutex;
    use timely::dataflow::operators::capture::Capture;
    use timely::dataflow::operators::vec::Map;

    let (tx, rx) = mpsc::channel();
    let (dead_tx, dead_rx) = mpsc::channel();
    let (tx, dead_tx) = (Mutex::new(tx), Mutex::new(dead_tx));
    execute(100, workers, move |flow| {
        let (records, dead) = flow.source_with_errors(&source);
        records.capture_into(tx.lock().expect("not poisoned").clone());
        dead.map(|d| (d.location, d.reason))
            .capture_into(dead_tx.lock().expect("not poisoned").clone());
    });
    let mut dead = messages(dead_rx);
    dead.sort();
    (messages(rx), dead)
}

/// The records of a captured stream, in the order each worker sent them.
pub fn messages<D>(rx: mpsc::Receiver<Event<u64, Vec<D>>>) -> Vec<D> {
    timed_messages(rx).into_iter().map(|(_, d)| d).collect()
}

/// Every record a capture received, with the timely time it was sent at.
pub fn timed_messages<D>(rx: mpsc::Receiver<Event<u64, Vec<D>>>) -> Vec<(u64, D)> {
    rx.try_iter()
        .flat_map(|e| match e {
            Event::Messages(stamp, data) => {
                let time = *stamp.expect_singleton();
                data.into_iter().map(|d| (time, d)).collect()
            }
            Event::Progress(_) => Vec::new(),
        })
        .collect()
}
