//! Flow control: while one worker lags, the others' sources pause instead of filling its
//! queues. Measured independently of the controller: the records worker 0 handed to the
//! exchange for worker 1 minus the records worker 1 took in.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use tributary_runtime::{
    Emitter, EventTime, Flow, Granularity, JobContext, Poll, Result, Source, SourceContext,
    SourceReader, Time, Traffic,
};

/// `count` numbers, all read by worker 0, 100 per millisecond of event time.
struct Numbers {
    count: u64,
}

struct NumbersReader {
    next: u64,
    end: u64,
}

impl Source for Numbers {
    type Item = u64;
    type Reader = NumbersReader;

    fn name(&self) -> &str {
        "numbers"
    }

    fn reader(&self, ctx: &SourceContext) -> Result<NumbersReader> {
        let end = if ctx.worker_index == 0 { self.count } else { 0 };
        Ok(NumbersReader { next: 0, end })
    }
}

impl SourceReader for NumbersReader {
    type Item = u64;

    fn poll(&mut self, out: &mut Emitter<'_, u64>) -> Result<Poll> {
        while self.next < self.end && !out.is_full() {
            out.emit(self.next / 100 as EventTime, self.next);
            self.next += 1;
        }
        out.advance_watermark(self.next / 100);
        Ok(if self.next < self.end { Poll::Ready } else { Poll::Done })
    }
}

#[derive(Default)]
struct Queue {
    sent: AtomicU64,
    received: AtomicU64,
    peak: AtomicU64,
}

/// Runs `events` numbers from worker 0 through an exchange (odd numbers to worker 1, which
/// spends `cost` on each) with flow control at `limit` (0: off). Returns the queue and what
/// the controllers saw at most.
fn run(events: u64, limit: u64, cost: Duration) -> (Arc<Queue>, Vec<i64>) {
    let queue = Arc::new(Queue::default());
    let shared = Arc::clone(&queue);
    let mut worker = timely::WorkerConfig::default();
    JobContext::new("flow", Granularity::DEFAULT).with_max_in_flight(limit).install(&mut worker);
    let config = timely::Config { communication: timely::CommunicationConfig::Process(2), worker };
    let guards = timely::execute(config, move |worker| {
        let queue = Arc::clone(&shared);
        let traffic = Traffic::watch(worker).expect("two workers log their messages");
        let peak = traffic.clone();
        worker.dataflow::<Time, _, _>(|scope| {
            let mut flow = Flow::new(scope);
            flow.limit_in_flight(traffic);
            let numbers = flow.source(&Numbers { count: events });
            let me = scope.index();
            let counted = Arc::clone(&queue);
            numbers
                .unary(Pipeline, "count sends", move |_, _| {
                    move |input, output| {
                        input.for_each(|time, data| {
                            if me == 0 {
                                let odd = data.iter().filter(|n| *n % 2 == 1).count() as u64;
                                let sent = counted.sent.fetch_add(odd, SeqCst) + odd;
                                let queued = sent - counted.received.load(SeqCst);
                                counted.peak.fetch_max(queued, SeqCst);
                            }
                            output.session(&time).give_container(data);
                        });
                    }
                })
                .sink(Exchange::new(|n: &u64| *n), "slow", move |(input, _)| {
                    input.for_each(|_, data| {
                        if me == 1 {
                            queue.received.fetch_add(data.len() as u64, SeqCst);
                            let until = Instant::now() + cost * data.len() as u32;
                            while Instant::now() < until {
                                std::hint::spin_loop();
                            }
                        }
                        data.clear();
                    });
                });
            flow.finish();
        });
        while worker.step_or_park(None) {}
        peak.peak_in_flight()
    })
    .expect("timely starts");
    let peaks = guards.join().into_iter().map(|r| r.expect("no worker panicked")).collect();
    (queue, peaks)
}

#[test]
fn a_lagging_worker_pauses_the_sources_instead_of_queueing_without_bound() {
    const EVENTS: u64 = 400_000;
    const LIMIT: u64 = 5_000;
    let cost = Duration::from_micros(2);

    let (free, _) = run(EVENTS, 0, cost);
    let (limited, peaks) = run(EVENTS, LIMIT, cost);

    for queue in [&free, &limited] {
        assert_eq!(queue.sent.load(SeqCst), EVENTS / 2);
        assert_eq!(queue.received.load(SeqCst), EVENTS / 2, "every record arrives");
    }
    let (free, limited) = (free.peak.load(SeqCst), limited.peak.load(SeqCst));
    // Without flow control worker 0 reads everything long before worker 1 has taken half in.
    assert!(free > 100_000, "without flow control the queue grows to {free}");
    // With it the queue stays within the limit plus what a source sends between two looks at
    // the controller (a batch of 8192 records, and one more while the counts travel).
    assert!(limited <= LIMIT + 2 * 8192, "with a limit of {LIMIT} the queue grew to {limited}");
    assert!(
        peaks.iter().any(|&p| p > LIMIT as i64),
        "the controllers saw the queue fill: {peaks:?}"
    );
}
