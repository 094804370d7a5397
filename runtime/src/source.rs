//! The source interface and the timely operator that drives every source.
//!
//! A [`Source`] is resolved once per process, before the workers start (files listed, config
//! checked); each worker then asks it for a [`SourceReader`] for its share of the input. The
//! driver polls the reader, stamps each record with its quantized event time (never below the
//! source's watermark: late records travel at the watermark and keep their exact event time
//! inside), and holds its capability at the reader's watermark, so the source's frontier is
//! its watermark.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;

use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::flow::{Data, Events, Flow};
use crate::metrics as m;
use crate::time::{EventTime, Granularity, Time};

/// Where a worker's reader stands in the job.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The source's name.
    pub name: String,
    /// This worker's index among all workers.
    pub worker_index: usize,
    /// The number of workers in the job.
    pub workers: usize,
}

/// A source of records, resolved before the workers start.
pub trait Source: Send + Sync + 'static {
    /// The records it produces.
    type Item: Data;
    /// One worker's share of the input.
    type Reader: SourceReader<Item = Self::Item>;

    /// A stable, human name for logs and metrics.
    fn name(&self) -> &str;

    /// Opens this worker's share. Called once on every worker; a worker with no share returns
    /// a reader that is done at once.
    fn reader(&self, ctx: &SourceContext) -> Result<Self::Reader>;
}

/// What a reader says after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// More records may be available now: poll again soon.
    Ready,
    /// Nothing available now: poll again after at most this long.
    Pending(Duration),
    /// This reader has read everything; its watermark becomes infinite.
    Done,
}

/// One worker's share of a source.
pub trait SourceReader: 'static {
    /// The records it produces.
    type Item;

    /// Emits up to [`Emitter::room`] records and advances the watermark.
    fn poll(&mut self, out: &mut Emitter<'_, Self::Item>) -> Result<Poll>;
}

/// Records waiting to be sent, grouped by timely timestamp.
struct Buckets<D> {
    buckets: Vec<(Time, Vec<D>)>,
    last: usize,
    spare: Vec<Vec<D>>,
}

impl<D> Buckets<D> {
    fn new() -> Self {
        Buckets { buckets: Vec::new(), last: 0, spare: Vec::new() }
    }

    #[inline]
    fn push(&mut self, time: Time, item: D) {
        if let Some((t, v)) = self.buckets.get_mut(self.last) {
            if *t == time {
                v.push(item);
                return;
            }
        }
        self.push_slow(time, item);
    }

    #[cold]
    fn push_slow(&mut self, time: Time, item: D) {
        if let Some(i) = self.buckets.iter().position(|(t, _)| *t == time) {
            self.last = i;
            self.buckets[i].1.push(item);
        } else {
            let mut v = self.spare.pop().unwrap_or_default();
            v.push(item);
            self.last = self.buckets.len();
            self.buckets.push((time, v));
        }
    }
}

/// The handle a reader emits records through.
pub struct Emitter<'a, D> {
    floor: Time,
    granularity: Granularity,
    buckets: &'a mut Buckets<D>,
    dead_letters: &'a mut Vec<DeadLetter>,
    watermark: Option<EventTime>,
    room: usize,
    emitted: usize,
}

impl<D> Emitter<'_, D> {
    /// Emits a record with its event time. A record below the current watermark is late: it
    /// is sent at the watermark and keeps its event time inside.
    #[inline]
    pub fn emit(&mut self, event_time: EventTime, item: D) {
        let time = self.granularity.quantize(event_time).max(self.floor);
        self.buckets.push(time, item);
        self.emitted += 1;
    }

    /// Sends a record that could not be read to the dead-letter output.
    pub fn dead_letter(&mut self, letter: DeadLetter) {
        self.dead_letters.push(letter);
    }

    /// Promises that no further record will have an event time below `watermark`, except
    /// late ones. Watermarks never go back; a smaller value is ignored.
    pub fn advance_watermark(&mut self, watermark: EventTime) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
    }

    /// How many more records this poll may emit.
    pub fn room(&self) -> usize {
        self.room.saturating_sub(self.emitted)
    }

    /// Whether this poll has emitted as many records as it may.
    pub fn is_full(&self) -> bool {
        self.emitted >= self.room
    }
}

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
        let ctx = SourceContext {
            name: name.clone(),
            worker_index: scope.index(),
            workers: scope.peers(),
        };
        let reader = source.reader(&ctx);
        let state = Arc::clone(self.state());
        let granularity = self.granularity();

        let mut builder = OperatorBuilder::new(format!("source:{name}"), scope);
        let info = builder.operator_info();
        let (ok_output, ok_stream) = builder.new_output();
        let (err_output, err_stream) = builder.new_output();
        let activator = scope.activator_for(Rc::clone(&info.address));

        builder.build(move |mut capabilities| {
            let err_cap = capabilities.pop().expect("two outputs, two capabilities");
            let ok_cap = capabilities.pop().expect("two outputs, two capabilities");
            let mut driver = match reader {
                Ok(reader) => Some(Driver::new(ctx, reader, ok_cap, err_cap, granularity)),
                Err(error) => {
                    state.fail(error);
                    None
                }
            };
            let mut ok_output = OutputBuilder::from(ok_output);
            let mut err_output = OutputBuilder::from(err_output);
            move |_frontiers| {
                let Some(d) = driver.as_mut() else { return };
                if state.stop_requested() {
                    tracing::info!(source = %d.ctx.name, worker = d.ctx.worker_index,
                        records = d.records, "source stopped on request");
                    driver = None;
                    return;
                }
                match d.step(&mut ok_output, &mut err_output) {
                    Ok(Poll::Ready) => activator.activate(),
                    Ok(Poll::Pending(wait)) => activator.activate_after(wait.min(MAX_WAIT)),
                    Ok(Poll::Done) => {
                        tracing::info!(source = %d.ctx.name, worker = d.ctx.worker_index,
                            records = d.records, dead_letters = d.dead_letters,
                            "source finished");
                        driver = None;
                    }
                    Err(error) => {
                        state.fail(error);
                        driver = None;
                    }
                }
            }
        });
        (ok_stream, err_stream)
    }
}

/// The per-worker state of a running source.
struct Driver<R: SourceReader> {
    ctx: SourceContext,
    reader: R,
    ok_cap: Capability<Time>,
    err_cap: Capability<Time>,
    granularity: Granularity,
    buckets: Buckets<R::Item>,
    letters: Vec<DeadLetter>,
    records: u64,
    dead_letters: u64,
    records_counter: metrics::Counter,
    dead_counter: metrics::Counter,
}

impl<R: SourceReader> Driver<R>
where
    R::Item: Data,
{
    fn new(
        ctx: SourceContext,
        reader: R,
        ok_cap: Capability<Time>,
        err_cap: Capability<Time>,
        granularity: Granularity,
    ) -> Self {
        let labels = [(m::SOURCE, ctx.name.clone()), (m::WORKER, ctx.worker_index.to_string())];
        Driver {
            records_counter: metrics::counter!(m::SOURCE_RECORDS, &labels),
            dead_counter: metrics::counter!(m::DEAD_LETTERS, &labels),
            ctx,
            reader,
            ok_cap,
            err_cap,
            granularity,
            buckets: Buckets::new(),
            letters: Vec::new(),
            records: 0,
            dead_letters: 0,
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
        for _ in 0..POLLS_PER_ACTIVATION {
            let mut out = Emitter {
                floor: *self.ok_cap.time(),
                granularity: self.granularity,
                buckets: &mut self.buckets,
                dead_letters: &mut self.letters,
                watermark: None,
                room: BATCH - emitted,
                emitted: 0,
            };
            status = self.reader.poll(&mut out)?;
            emitted += out.emitted;
            if out.watermark.is_some() {
                watermark = out.watermark;
            }
            if status != Poll::Ready || emitted >= BATCH {
                break;
            }
        }
        self.send(ok, err);
        if let Some(w) = watermark {
            let time = self.granularity.quantize(w);
            if time > *self.ok_cap.time() {
                self.ok_cap.downgrade(&time);
                self.err_cap.downgrade(&time);
            }
        }
        Ok(status)
    }

    fn send(
        &mut self,
        ok: &mut OutputBuilder<Time, timely::container::CapacityContainerBuilder<Vec<R::Item>>>,
        err: &mut OutputBuilder<Time, timely::container::CapacityContainerBuilder<Vec<DeadLetter>>>,
    ) {
        let mut ok = ok.activate();
        for (time, mut batch) in self.buckets.buckets.drain(..) {
            self.records += batch.len() as u64;
            self.records_counter.increment(batch.len() as u64);
            if time == *self.ok_cap.time() {
                ok.session(&self.ok_cap).give_container(&mut batch);
            } else {
                let cap = self.ok_cap.delayed(&time);
                ok.session(&cap).give_container(&mut batch);
            }
            batch.clear();
            self.buckets.spare.push(batch);
        }
        self.buckets.last = 0;
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
        err.activate().session(&self.err_cap).give_container(&mut self.letters);
        self.letters.clear();
    }
}

/// Reports a source failure in the runtime's error type.
pub fn source_error(ctx: &SourceContext, reason: impl std::fmt::Display) -> Error {
    Error::Source { source_name: ctx.name.clone(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
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
