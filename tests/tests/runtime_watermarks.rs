//! Watermarks across the workers of a source: idle workers stop holding the job back, idle
//! jobs advance with processing time when asked, and alignment keeps a fast worker within
//! the allowed drift of the slowest one, of its own source or of another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::capture::{Capture, Event};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concatenate;
use tributary_operators::{Count, KeyBy, Tumbling};
use tributary_runtime::{
    Emitter, EventTime, Flow, Granularity, HumanDuration, JobContext, JobState, Poll, Result,
    Source, SourceContext, SourceReader, Timestamped, WatermarkConfig,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    ts: u64,
}

impl Timestamped for Tick {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

/// Per worker: emit event times `0, step, 2 step, ...` below `until`, one per poll, waiting
/// `pause` between polls; then stay alive without data until the job stops.
#[derive(Clone)]
struct Plan {
    step: u64,
    until: u64,
    pause: Duration,
}

struct Ticks {
    name: &'static str,
    plans: Vec<Plan>,
    /// The largest event time each worker has emitted.
    emitted: Arc<Vec<AtomicU64>>,
}

struct TickReader {
    plan: Plan,
    next: u64,
    emitted: Arc<Vec<AtomicU64>>,
    worker: usize,
}

impl Source for Ticks {
    type Item = Tick;
    type Reader = TickReader;
    fn name(&self) -> &str {
        self.name
    }
    fn reader(&self, ctx: &SourceContext) -> Result<TickReader> {
        Ok(TickReader {
            plan: self.plans[ctx.worker_index].clone(),
            next: 0,
            emitted: Arc::clone(&self.emitted),
            worker: ctx.worker_index,
        })
    }
}

impl SourceReader for TickReader {
    type Item = Tick;
    fn poll(&mut self, out: &mut Emitter<'_, Tick>) -> Result<Poll> {
        if self.next >= self.plan.until {
            return Ok(Poll::Pending(Duration::from_millis(5)));
        }
        out.emit(self.next, Tick { ts: self.next });
        self.emitted[self.worker].store(self.next, Ordering::SeqCst);
        out.advance_watermark(self.next + 1);
        self.next += self.plan.step;
        Ok(if self.plan.pause.is_zero() { Poll::Ready } else { Poll::Pending(self.plan.pause) })
    }
}

/// The largest event time each worker of a source has emitted.
type Emitted = Arc<Vec<AtomicU64>>;

/// Runs 1-second tumbling counts over `plans` (one per worker) until `done` says the
/// results seen so far suffice, then stops the job. Returns the windows' starts and counts in
/// arrival order, and the sources' emitted maxima.
fn run_until(
    plans: Vec<Plan>,
    watermarks: WatermarkConfig,
    done: impl Fn(&[(u64, u64)]) -> bool,
) -> (Vec<(u64, u64)>, Emitted) {
    let (seen, mut emitted) = run_sources(vec![plans], watermarks, done);
    (seen, emitted.remove(0))
}

/// Like [`run_until`], with several sources (each with one plan per worker) counted together.
fn run_sources(
    sources: Vec<Vec<Plan>>,
    watermarks: WatermarkConfig,
    done: impl Fn(&[(u64, u64)]) -> bool,
) -> (Vec<(u64, u64)>, Vec<Emitted>) {
    let workers = sources[0].len();
    let names = ["ticks", "ticks-2", "ticks-3"];
    let sources: Vec<Ticks> = sources
        .into_iter()
        .zip(names)
        .map(|(plans, name)| Ticks {
            name,
            plans,
            emitted: Arc::new((0..workers).map(|_| AtomicU64::new(0)).collect()),
        })
        .collect();
    let emitted = sources.iter().map(|s| Arc::clone(&s.emitted)).collect();
    let sources = Arc::new(sources);
    let context = JobContext::new("watermarks", Granularity::from_millis(10).expect("positive"))
        .with_watermarks(watermarks);
    let state: Arc<JobState> = Arc::clone(&context.state);
    let mut worker_config = timely::WorkerConfig::default();
    context.install(&mut worker_config);
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let config = timely::Config {
        communication: timely::CommunicationConfig::Process(workers),
        worker: worker_config,
    };
    let guards = timely::execute(config, move |worker| {
        let tx = tx.lock().expect("not poisoned").clone();
        let sources = Arc::clone(&sources);
        worker.dataflow::<u64, _, _>(|scope| {
            let mut flow = Flow::new(scope);
            let streams: Vec<_> = sources.iter().map(|s| flow.source(s)).collect();
            scope
                .concatenate(streams)
                .key_by(|_| ())
                .window(Tumbling::new(Duration::from_secs(1)))
                .aggregate(Count)
                .map(|r| (r.window.start, r.value))
                .capture_into(tx);
        });
    })
    .expect("timely starts");

    // Wait for results as they come; the deadline only bounds a failing test.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done(&seen) {
        if std::time::Instant::now() > deadline {
            break;
        }
        // Wake at least every 20 ms so that `done` can also look at the clock.
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Event::Messages(_, data)) => seen.extend(data),
            Ok(Event::Progress(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    state.request_stop();
    for result in guards.join() {
        result.expect("no worker panicked");
    }
    (seen, emitted)
}

fn windows_before(seen: &[(u64, u64)], end: u64) -> usize {
    seen.iter().filter(|(start, _)| start + 1000 <= end).count()
}

#[test]
fn an_idle_worker_stops_holding_the_watermark_back() {
    let busy = Plan { step: 100, until: 10_000, pause: Duration::ZERO };
    let silent = Plan { step: 100, until: 0, pause: Duration::ZERO };
    let watermarks = WatermarkConfig {
        idle_timeout: Some(HumanDuration(Duration::from_millis(50))),
        ..WatermarkConfig::default()
    };
    // Windows up to 9 s can only fire while the job runs if worker 1's silence is ignored.
    let (seen, _) =
        run_until(vec![busy, silent], watermarks, |seen| windows_before(seen, 9_000) == 9);
    let mut counts: Vec<(u64, u64)> = seen.into_iter().filter(|(s, _)| *s < 9_000).collect();
    counts.sort();
    assert_eq!(counts, (0..9).map(|w| (w * 1000, 10)).collect::<Vec<_>>());
}

#[test]
fn without_idleness_a_silent_worker_holds_every_window() {
    let busy = Plan { step: 100, until: 10_000, pause: Duration::ZERO };
    let silent = Plan { step: 100, until: 0, pause: Duration::ZERO };
    // Stop as soon as the busy worker has emitted everything and then some time has passed.
    let started = std::time::Instant::now();
    let (seen, _) = run_until(vec![busy, silent], WatermarkConfig::default(), |seen| {
        !seen.is_empty() || started.elapsed() > Duration::from_millis(500)
    });
    // Windows fire only at the stop, when every source ends.
    assert!(seen.is_empty(), "nothing fires while a worker holds time 0: {seen:?}");
}

#[test]
fn an_idle_job_advances_with_processing_time_when_asked() {
    let quiet_after_2_5s = Plan { step: 100, until: 2_600, pause: Duration::ZERO };
    let watermarks = WatermarkConfig {
        idle_timeout: Some(HumanDuration(Duration::from_millis(50))),
        idle_advance: true,
        ..WatermarkConfig::default()
    };
    // The window [2 s, 3 s) needs the watermark at 3 s: it only moves with the wall clock.
    let (seen, _) = run_until(vec![quiet_after_2_5s], watermarks, |seen| {
        seen.iter().any(|(start, _)| *start == 2000)
    });
    assert!(seen.contains(&(2000, 6)), "{seen:?}");
}

#[test]
fn alignment_keeps_a_fast_worker_near_the_slowest() {
    let fast = Plan { step: 10, until: 20_000, pause: Duration::ZERO };
    let slow = Plan { step: 10, until: 20_000, pause: Duration::from_millis(1) };
    let watermarks = WatermarkConfig {
        max_drift: Some(HumanDuration(Duration::from_millis(500))),
        ..WatermarkConfig::default()
    };
    let (seen, emitted) =
        run_until(vec![fast, slow], watermarks, |seen| windows_before(seen, 5_000) == 5);
    assert!(windows_before(&seen, 5_000) == 5, "{seen:?}");
    // When the slow worker had reached about 5 s, the fast one must not be far beyond it.
    let (fast_at, slow_at) = (emitted[0].load(Ordering::SeqCst), emitted[1].load(Ordering::SeqCst));
    assert!(
        fast_at <= slow_at + 500 + 300,
        "fast worker at {fast_at} ms, slow at {slow_at} ms: drift beyond 500 ms"
    );
}

#[test]
fn alignment_keeps_a_fast_source_near_the_slowest_source() {
    // One worker, two sources: a join's inputs.
    let fast = Plan { step: 10, until: 20_000, pause: Duration::ZERO };
    let slow = Plan { step: 10, until: 20_000, pause: Duration::from_millis(1) };
    let watermarks = WatermarkConfig {
        max_drift: Some(HumanDuration(Duration::from_millis(500))),
        ..WatermarkConfig::default()
    };
    let (seen, emitted) = run_sources(vec![vec![fast], vec![slow]], watermarks, |seen| {
        windows_before(seen, 5_000) == 5
    });
    assert!(windows_before(&seen, 5_000) == 5, "{seen:?}");
    let (fast_at, slow_at) =
        (emitted[0][0].load(Ordering::SeqCst), emitted[1][0].load(Ordering::SeqCst));
    assert!(
        fast_at <= slow_at + 500 + 300,
        "fast source at {fast_at} ms, slow source at {slow_at} ms: drift beyond 500 ms"
    );
}
