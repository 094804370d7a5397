//! The timely operator that drives every source: it polls the reader, stamps each record
//! with its quantized event time, holds its capabilities at the reader's watermark, takes part
//! in checkpoints and in watermark alignment, and pauses under flow control.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::{ConnectLoop, Feedback};

use super::alignment::{active_minimum, Board, Status};
use super::emitter::Buckets;
use super::{source_error, Cut, Emitter, Poll, Source, SourceContext, SourceReader};
use crate::checkpoint::Checkpointer;
use crate::config::WatermarkConfig;
use crate::context::{job_context, Data, Events};
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::flow::Flow;
use crate::flow_control::Running;
use crate::metrics as m;
use crate::time::{millis, Granularity, Time};

/// Records per activation before the driver yields to other operators.
const BATCH: usize = 8192;
/// Polls per activation at most.
const POLLS_PER_ACTIVATION: usize = 8;
/// The longest a waiting source sleeps before it looks at the stop flag again.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Dead letters logged in full per reader; after that one log line per thousand.
const LOGGED_DEAD_LETTERS: u64 = 10;

impl<'scope> Flow<'scope> {
    /// Reads `source` on every worker. Records that cannot be read go to the job's dead-letter
    /// output (see [`Flow::take_dead_letters`]).
    pub fn source<S: Source>(&mut self, source: &S) -> Events<'scope, S::Item> {
        let (ok, err) = self.source_with_errors(source);
        self.add_dead_letters(err);
        ok
    }

    /// Reads `source` on every worker, returning its records and its dead letters.
    pub fn source_with_errors<S: Source>(
        &mut self,
        source: &S,
    ) -> (Events<'scope, S::Item>, Events<'scope, DeadLetter>) {
        let scope = self.scope();
        let name = source.name().to_owned();
        let job = job_context(&scope);
        let ctx = SourceContext {
            name: name.clone(),
            worker_index: scope.index(),
            workers: scope.peers(),
            checkpointed: job.checkpoints.is_some(),
        };
        let reader = source.reader(&ctx);
        let state = Arc::clone(self.state());
        let status = Arc::clone(&job.status);
        let granularity = self.granularity();
        let watermarks = job.watermarks;

        // Each worker's driver tells every other one its watermark and whether it is idle, on
        // a loop that is connected to none of the data outputs: it never holds them back.
        let (status_handle, status_loop) = scope.feedback::<Vec<Status>>(1);
        let operator = format!("source:{name}");
        let mut builder = OperatorBuilder::new(operator.clone(), scope);
        let info = builder.operator_info();
        let mut status_input = builder.new_input_connection(status_loop, Pipeline, []);
        let (ok_output, ok_stream) = builder.new_output_connection([]);
        let (err_output, err_stream) = builder.new_output_connection([]);
        let (status_output, status_stream) = builder.new_output_connection([]);
        let statuses = status_stream.broadcast();
        statuses.clone().connect_loop(status_handle);
        self.source_progress.push(statuses);
        let activator = scope.activator_for(Rc::clone(&info.address));
        let checkpointer = job.checkpointer(&scope, &operator, &info.address);
        let throttle = self.throttle.clone();
        let running = throttle.running();

        builder.build(move |mut capabilities| {
            let status_cap = capabilities.pop().expect("three outputs, three capabilities");
            let err_cap = capabilities.pop().expect("three outputs, three capabilities");
            let ok_cap = capabilities.pop().expect("three outputs, three capabilities");
            let caps = Caps { ok: ok_cap, err: err_cap, status: status_cap };
            let driver = reader.and_then(|reader| {
                let endpoint = status.source(&ctx.name, ctx.worker_index);
                let driver =
                    Driver::new(ctx, reader, caps, granularity, watermarks, checkpointer, running);
                driver.map(|mut driver| {
                    driver.endpoint = endpoint;
                    driver.status = Some(status);
                    driver
                })
            });
            let mut driver = match driver {
                Ok(driver) => Some(driver),
                Err(error) => {
                    state.fail(error);
                    None
                }
            };
            let boards = Rc::clone(&self.watermarks);
            let mine = {
                let mut boards = boards.borrow_mut();
                boards.push(Board::default());
                boards.len() - 1
            };
            let mut ok_output = OutputBuilder::from(ok_output);
            let mut err_output = OutputBuilder::from(err_output);
            let mut status_output = OutputBuilder::from(status_output);
            move |_frontiers| {
                // Always drain the status loop, even when done, so the dataflow can finish.
                status_input.for_each(|_, statuses| {
                    boards.borrow_mut()[mine].update(statuses.drain(..));
                });
                let Some(d) = driver.as_mut() else { return };
                let _activation = crate::logging::activation(&operator, d.ctx.worker_index);
                let outcome = if state.stop_requested() {
                    tracing::info!(source = %d.ctx.name, worker = d.ctx.worker_index,
                        records = d.records, "source stopped on request");
                    Ok(Poll::Done)
                } else if d.is_paused() {
                    Ok(Poll::Pending(PAUSE_WAIT))
                } else if throttle.holds() {
                    d.set_throttled(true).map(|()| Poll::Pending(PAUSE_WAIT))
                } else {
                    let (others, idle) = {
                        let boards = boards.borrow();
                        let me = d.ctx.worker_index;
                        let others = active_minimum(&boards, mine, me, d.ctx.workers);
                        (others, boards[mine].idle_maximum(me))
                    };
                    d.set_throttled(false)
                        .and_then(|()| d.activate(others, idle, &mut ok_output, &mut err_output))
                };
                d.report(matches!(outcome, Ok(Poll::Done)));
                let outcome =
                    outcome.and_then(|poll| d.checkpoint(poll == Poll::Done).map(|()| poll));
                match outcome {
                    Ok(Poll::Done) => {
                        if !state.stop_requested() {
                            tracing::info!(source = %d.ctx.name, worker = d.ctx.worker_index,
                                records = d.records, dead_letters = d.dead_letters,
                                "source finished");
                        }
                        d.publish(&mut status_output, true);
                        driver = None;
                    }
                    Ok(poll) => {
                        d.publish(&mut status_output, false);
                        match poll {
                            Poll::Pending(wait) => activator.activate_after(wait.min(MAX_WAIT)),
                            _ => activator.activate(),
                        }
                    }
                    Err(error) => {
                        state.fail(error);
                        d.publish(&mut status_output, true);
                        driver = None;
                    }
                }
            }
        });
        (ok_stream, err_stream)
    }
}

/// The capabilities of a running source worker.
struct Caps {
    ok: Capability<Time>,
    err: Capability<Time>,
    status: Capability<Time>,
}

impl Caps {
    /// Moves the data capabilities to `time` if it is later.
    fn advance(&mut self, time: Time) {
        if time > *self.ok.time() {
            self.ok.downgrade(&time);
            self.err.downgrade(&time);
            self.status.downgrade(&time);
        }
    }
}

/// How often a source worker reports its watermark to its peers, at most.
const WATERMARK_EVERY: Duration = Duration::from_millis(20);
/// How long a source worker paused by watermark alignment waits before it looks again.
const ALIGNMENT_WAIT: Duration = Duration::from_millis(10);
/// How long a source worker paused for a checkpoint waits before it looks again.
const PAUSE_WAIT: Duration = Duration::from_millis(1);

/// The per-worker state of a running source.
struct Driver<R: SourceReader> {
    ctx: SourceContext,
    reader: R,
    caps: Caps,
    granularity: Granularity,
    watermarks: WatermarkConfig,
    buckets: Buckets<R::Item>,
    letters: Vec<DeadLetter>,
    records: u64,
    dead_letters: u64,
    records_counter: metrics::Counter,
    bytes_counter: metrics::Counter,
    dead_counter: metrics::Counter,
    watermark_lag: metrics::Gauge,
    /// When the reader last emitted a record (or started).
    last_record: Instant,
    /// Since when every worker of the source has been idle, and the watermark then.
    all_idle_since: Option<(Instant, Time)>,
    idle: bool,
    /// What this worker last reported, and when.
    reported: Option<(Time, bool, Instant)>,
    checkpointer: Option<Checkpointer>,
    /// The latest time a record was sent at.
    sent_high: Time,
    /// The latest complete checkpoint the reader was told of.
    committed: u64,
    /// Whether flow control has paused the reader.
    throttled: bool,
    /// What the status page and progress line show of this worker.
    endpoint: Arc<crate::status::Endpoint>,
    /// The process's status, told when records of a new time go out (for latency).
    status: Option<Arc<crate::status::Status>>,
    /// The earliest time records went out at since the last report, and when the status was
    /// last told of such a time.
    sent_low: Option<Time>,
    noted: Option<Instant>,
    /// When the reader's backlog was last asked for, and a lag gauge per split.
    backlog_at: Option<Instant>,
    lag_gauges: Vec<(String, metrics::Gauge)>,
    _running: Running,
}

impl<R: SourceReader> Driver<R>
where
    R::Item: Data,
{
    fn new(
        ctx: SourceContext,
        reader: R,
        caps: Caps,
        granularity: Granularity,
        watermarks: WatermarkConfig,
        checkpointer: Option<Checkpointer>,
        running: Running,
    ) -> Result<Self> {
        let labels = [(m::SOURCE, ctx.name.clone()), (m::WORKER, ctx.worker_index.to_string())];
        let mut driver = Driver {
            records_counter: metrics::counter!(m::SOURCE_RECORDS, &labels),
            bytes_counter: metrics::counter!(m::SOURCE_BYTES, &labels),
            dead_counter: metrics::counter!(m::DEAD_LETTERS, &labels),
            watermark_lag: metrics::gauge!(m::WATERMARK_LAG, &labels),
            ctx,
            reader,
            caps,
            granularity,
            watermarks,
            buckets: Buckets::new(),
            letters: Vec::new(),
            records: 0,
            dead_letters: 0,
            last_record: Instant::now(),
            all_idle_since: None,
            idle: false,
            reported: None,
            checkpointer,
            sent_high: 0,
            committed: 0,
            throttled: false,
            endpoint: Arc::default(),
            status: None,
            sent_low: None,
            noted: None,
            backlog_at: None,
            lag_gauges: Vec::new(),
            _running: running,
        };
        driver.restore()?;
        Ok(driver)
    }

    /// Continues from the checkpoint the job restarts from: the reader from its positions,
    /// the watermark from the cut.
    fn restore(&mut self) -> Result<()> {
        let Some(checkpointer) = &self.checkpointer else { return Ok(()) };
        let Some(restore) = checkpointer.restore::<Vec<u8>>()? else { return Ok(()) };
        let cut = Cut { time: restore.cut, granularity: self.granularity };
        self.reader.restore(cut, restore.states).map_err(|e| match e {
            // The reader named itself already.
            e @ Error::Source { .. } => e,
            e => source_error(&self.ctx, format!("cannot restore: {e}")),
        })?;
        self.caps.advance(restore.cut);
        tracing::info!(source = %self.ctx.name, worker = self.ctx.worker_index, cut = restore.cut,
            "source restored");
        Ok(())
    }

    /// Pauses or resumes the reader for flow control.
    fn set_throttled(&mut self, throttled: bool) -> Result<()> {
        if throttled != self.throttled {
            self.throttled = throttled;
            tracing::debug!(source = %self.ctx.name, worker = self.ctx.worker_index, throttled,
                "flow control");
            self.reader.set_paused(throttled).map_err(|e| source_error(&self.ctx, e))?;
        }
        Ok(())
    }

    /// Whether a checkpoint holds this worker's sources still.
    fn is_paused(&self) -> bool {
        self.checkpointer.as_ref().is_some_and(|c| c.is_paused())
    }

    /// Tells the checkpoints how far this worker has gone, and saves the reader's position
    /// once the watermark passes a pending cut (or the reader is done).
    fn checkpoint(&mut self, done: bool) -> Result<()> {
        let Some(checkpointer) = self.checkpointer.as_mut() else { return Ok(()) };
        checkpointer.raise_high(self.sent_high.max(*self.caps.ok.time()));
        let committed = checkpointer.committed();
        if committed > self.committed {
            self.committed = committed;
            self.reader.committed(committed);
        }
        let saving = checkpointer.pending().is_some_and(|cut| done || *self.caps.ok.time() >= cut);
        let ctx = &self.ctx;
        let position = |reader: &mut R, id| {
            reader.checkpoint(id).map_err(|e| source_error(ctx, format!("checkpoint: {e}")))
        };
        if saving {
            let position = position(&mut self.reader, checkpointer.next_id())?;
            checkpointer.save(&position)?;
        }
        if done {
            // Nothing left to re-read: this position holds for every later checkpoint.
            let position = position(&mut self.reader, checkpointer.next_id())?;
            checkpointer.finish(&position)?;
        }
        Ok(())
    }

    /// One activation: unless alignment pauses this worker, polls the reader and sends what
    /// it emitted; then applies idleness. `others` is the slowest active worker of any of the
    /// job's sources, `idle_peers` the highest watermark of this source's idle workers.
    fn activate(
        &mut self,
        others: Option<Time>,
        idle_peers: Option<Time>,
        ok: &mut OutputBuilder<Time, timely::container::CapacityContainerBuilder<Vec<R::Item>>>,
        err: &mut OutputBuilder<Time, timely::container::CapacityContainerBuilder<Vec<DeadLetter>>>,
    ) -> Result<Poll> {
        let now = Instant::now();
        if let (Some(drift), Some(slowest)) = (self.watermarks.max_drift, others) {
            if *self.caps.ok.time() > slowest.saturating_add(millis(drift.0)) {
                return Ok(Poll::Pending(ALIGNMENT_WAIT));
            }
        }
        let before = self.records;
        let poll = self.step(ok, err)?;
        if self.records > before {
            self.last_record = now;
        }
        self.idle = poll != Poll::Done
            && self.watermarks.idle_timeout.is_some_and(|t| now - self.last_record >= t.0);
        if !self.idle {
            self.all_idle_since = None;
        } else if let Some(slowest) = others {
            // Idle: follow the slowest active worker instead of holding the watermark back.
            self.all_idle_since = None;
            self.caps.advance(self.granularity.quantize(slowest));
        } else {
            // Every worker is idle: the source's watermark is the highest of theirs (Flink's
            // rule too), or a worker that went idle before the last active one reported its
            // progress would hold the job back for good.
            if let Some(highest) = idle_peers {
                self.caps.advance(self.granularity.quantize(highest));
            }
            if self.watermarks.idle_advance {
                // Let event time advance with processing time.
                let (since, from) = *self.all_idle_since.get_or_insert((now, *self.caps.ok.time()));
                let target = from.saturating_add(millis(now - since));
                self.caps.advance(self.granularity.quantize(target));
            }
        }
        let lag = crate::time::now_event_time().saturating_sub(*self.caps.ok.time());
        self.watermark_lag.set(lag as f64 / 1e3);
        Ok(match poll {
            Poll::Ready => Poll::Ready,
            Poll::Pending(wait) if self.idle => Poll::Pending(wait.min(WATERMARK_EVERY)),
            other => other,
        })
    }

    /// Updates what the status page shows of this worker, and the reader's backlog (consumer
    /// lag) about once a second.
    fn report(&mut self, done: bool) {
        let endpoint = &self.endpoint;
        endpoint.set_records(self.records);
        endpoint.set_dead_letters(self.dead_letters);
        endpoint.set_watermark(if done { Time::MAX } else { *self.caps.ok.time() });
        let now = Instant::now();
        // Latency: records at or after `low` went out now. Between notes a result is timed
        // from the previous one, at most `NOTE_EVERY` too early.
        if let Some(low) = self.sent_low.take() {
            if self.noted.is_none_or(|at| now - at >= crate::status::NOTE_EVERY) {
                self.noted = Some(now);
                if let Some(status) = &self.status {
                    status.ingested(low, now);
                }
            }
        }
        if self.backlog_at.is_some_and(|at| now - at < crate::status::STATUS_EVERY) {
            return;
        }
        self.backlog_at = Some(now);
        let Some(backlog) = self.reader.backlog() else { return };
        for (split, records) in &backlog {
            let gauge = match self.lag_gauges.iter().find(|(s, _)| s == split) {
                Some((_, gauge)) => gauge,
                None => {
                    let labels =
                        [(m::SOURCE, self.ctx.name.clone()), (m::PARTITION, split.clone())];
                    self.lag_gauges
                        .push((split.clone(), metrics::gauge!(m::PARTITION_LAG, &labels)));
                    &self.lag_gauges[self.lag_gauges.len() - 1].1
                }
            };
            gauge.set(*records as f64);
        }
        self.endpoint.set_backlog(backlog);
    }

    /// Tells the peers this worker's watermark and idleness when they changed (at most every
    /// [`WATERMARK_EVERY`]), or that it is finished.
    fn publish(
        &mut self,
        out: &mut OutputBuilder<Time, timely::container::CapacityContainerBuilder<Vec<Status>>>,
        done: bool,
    ) {
        // Published even with one worker: the job's other sources align with it.
        let watermark = if done { Time::MAX } else { *self.caps.ok.time() };
        let now = Instant::now();
        let changed = self.reported.is_none_or(|(w, i, at)| {
            (w != watermark || i != self.idle) && (done || now - at >= WATERMARK_EVERY)
        });
        if changed {
            self.reported = Some((watermark, self.idle, now));
            let status =
                Status { worker: self.ctx.worker_index as u32, watermark, idle: self.idle };
            out.activate().session(&self.caps.status).give(status);
        }
    }

    /// Polls the reader a few times, sends what it emitted, and moves the capabilities to
    /// its watermark.
    fn step(
        &mut self,
        ok: &mut OutputBuilder<Time, timely::container::CapacityContainerBuilder<Vec<R::Item>>>,
        err: &mut OutputBuilder<Time, timely::container::CapacityContainerBuilder<Vec<DeadLetter>>>,
    ) -> Result<Poll> {
        let mut status = Poll::Ready;
        let mut watermark = None;
        let mut emitted = 0;
        let cut = self.checkpointer.as_ref().and_then(|c| c.pending()).unwrap_or(Time::MAX);
        for _ in 0..POLLS_PER_ACTIVATION {
            let mut out = Emitter {
                floor: *self.caps.ok.time(),
                granularity: self.granularity,
                buckets: &mut self.buckets,
                dead_letters: &mut self.letters,
                watermark: None,
                room: BATCH - emitted,
                emitted: 0,
                bytes: 0,
                cut,
            };
            status = self.reader.poll(&mut out)?;
            emitted += out.emitted;
            if out.bytes > 0 {
                self.bytes_counter.increment(out.bytes);
                self.endpoint.add_bytes(out.bytes);
            }
            if out.watermark.is_some() {
                watermark = out.watermark;
            }
            if status != Poll::Ready || emitted >= BATCH {
                break;
            }
        }
        self.send(ok, err);
        if let Some(w) = watermark {
            self.caps.advance(self.granularity.quantize(w));
        }
        Ok(status)
    }

    fn send(
        &mut self,
        ok: &mut OutputBuilder<Time, timely::container::CapacityContainerBuilder<Vec<R::Item>>>,
        err: &mut OutputBuilder<Time, timely::container::CapacityContainerBuilder<Vec<DeadLetter>>>,
    ) {
        let mut ok = ok.activate();
        self.buckets.drain(|time, batch| {
            self.sent_high = self.sent_high.max(time);
            self.sent_low = Some(self.sent_low.map_or(time, |low| low.min(time)));
            self.records += batch.len() as u64;
            self.records_counter.increment(batch.len() as u64);
            if time == *self.caps.ok.time() {
                ok.session(&self.caps.ok).give_container(batch);
            } else {
                let cap = self.caps.ok.delayed(&time);
                ok.session(&cap).give_container(batch);
            }
        });
        if self.letters.is_empty() {
            return;
        }
        for letter in &self.letters {
            self.dead_letters += 1;
            if self.dead_letters <= LOGGED_DEAD_LETTERS || self.dead_letters.is_multiple_of(1000) {
                tracing::warn!(source = %self.ctx.name, location = %letter.location,
                    reason = %letter.reason, total = self.dead_letters, "dead letter");
            }
        }
        self.dead_counter.increment(self.letters.len() as u64);
        err.activate().session(&self.caps.err).give_container(&mut self.letters);
        self.letters.clear();
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::EventTime;
    use timely::dataflow::operators::capture::{Capture, Extract};

    /// One scripted poll: `(event time, value)` records, then a watermark.
    type Step = (Vec<(EventTime, u64)>, Option<EventTime>);

    /// Replays scripted polls.
    struct Script(Vec<Step>);

    impl Source for Script {
        type Item = u64;
        type Reader = ScriptReader;
        fn name(&self) -> &str {
            "script"
        }
        fn reader(&self, _: &SourceContext) -> Result<ScriptReader> {
            Ok(ScriptReader(self.0.clone().into_iter().rev().collect()))
        }
    }

    struct ScriptReader(Vec<Step>);

    impl SourceReader for ScriptReader {
        type Item = u64;
        fn poll(&mut self, out: &mut Emitter<'_, u64>) -> Result<Poll> {
            let Some((records, watermark)) = self.0.pop() else { return Ok(Poll::Done) };
            for (t, v) in records {
                if v == 666 {
                    out.dead_letter(DeadLetter::new("script", format!("#{t}"), "bad", b"666"));
                } else {
                    out.emit(t, v);
                }
            }
            if let Some(w) = watermark {
                out.advance_watermark(w);
            }
            // One poll per activation keeps the script's watermarks between its batches.
            Ok(Poll::Pending(Duration::ZERO))
        }
    }

    #[test]
    fn records_travel_at_their_quantized_time_or_the_watermark_if_late() {
        let script = Script(vec![
            (vec![(150, 1), (50, 2), (250, 3)], Some(120)),
            // 20 and 110 are behind the watermark (100 after rounding): late.
            (vec![(20, 4), (110, 5), (399, 6), (7, 666)], Some(400)),
            (vec![(90, 7)], None),
        ]);
        let (ok, err) = timely::example(move |scope| {
            let mut flow = Flow::new(scope);
            let (ok, err) = flow.source_with_errors(&script);
            (ok.capture(), err.capture())
        });
        let ok = ok.extract();
        assert_eq!(
            ok,
            vec![
                (0, vec![2]),
                (100, vec![1, 4, 5]),
                (200, vec![3]),
                (300, vec![6]),
                (400, vec![7])
            ]
        );
        let err = err.extract();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].0, 100, "dead letters travel at the watermark");
        assert_eq!(err[0].1[0].location, "#7");
    }
}
