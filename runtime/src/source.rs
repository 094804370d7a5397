//! The source interface and the timely operator that drives every source.
//!
//! A [`Source`] is resolved once per process, before the workers start (files listed, config
//! checked); each worker then asks it for a [`SourceReader`] for its share of the input. The
//! driver polls the reader, stamps each record with its quantized event time (never below the
//! source's watermark: late records travel at the watermark and keep their exact event time
//! inside), and holds its capability at the reader's watermark, so the source's frontier is
//! its watermark.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::{ConnectLoop, Feedback};

use crate::checkpoint::Checkpointer;
use crate::config::WatermarkConfig;
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::flow::{job_context, Data, Events, Flow};
use crate::flow_control::Running;
use crate::metrics as m;
use crate::time::{millis, EventTime, Granularity, Time, Timestamped};

/// Where a worker's reader stands in the job.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The source's name.
    pub name: String,
    /// This worker's index among all workers.
    pub worker_index: usize,
    /// The number of workers in the job.
    pub workers: usize,
    /// Whether the job takes checkpoints: positions are then durable only through
    /// [`SourceReader::committed`].
    pub checkpointed: bool,
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

    /// Where the reader stands, for a checkpoint; called when the source's watermark passes
    /// a checkpoint's cut (and when it finishes). The position must let [`restore`]
    /// re-read exactly the records at or after the cut: the reader's current position, and,
    /// per split, the earliest position of a record for which [`Emitter::emit`] returned
    /// `true` since the last call (those are re-read, keeping only records that
    /// [`Cut::includes`]). Encode with [`crate::checkpoint::encode`].
    ///
    /// `checkpoint` is the number of the checkpoint the position is for (see
    /// [`committed`](SourceReader::committed)).
    ///
    /// [`restore`]: SourceReader::restore
    fn checkpoint(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        let _ = checkpoint;
        Err(Error::Checkpoint("this source does not support checkpoints".to_owned()))
    }

    /// Checkpoint `checkpoint` is complete: its positions are durable (a Kafka reader
    /// commits them to its consumer group).
    fn committed(&mut self, checkpoint: u64) {
        let _ = checkpoint;
    }

    /// Continues from the positions of every reader of the source in the checkpoint the job
    /// restarts from (all old workers' when the job was rescaled: take the splits this
    /// reader owns). Called before the first poll.
    fn restore(&mut self, cut: Cut, positions: Vec<Vec<u8>>) -> Result<()> {
        let _ = (cut, positions);
        Err(Error::Checkpoint("this source does not support checkpoints".to_owned()))
    }

    /// Flow control: the queues between workers are full (`true`, no poll comes until the
    /// next call) or have drained (`false`). A reader that fetches ahead (Kafka) stops
    /// fetching while paused.
    fn set_paused(&mut self, paused: bool) -> Result<()> {
        let _ = paused;
        Ok(())
    }

    /// Records each split still holds beyond the reader's position, as `(split, records)`
    /// (a Kafka reader: `topic/partition` and its consumer lag), for metrics and the status
    /// page. Called about once a second; `None` (the default) when the reader cannot tell.
    fn backlog(&mut self) -> Option<Vec<(String, u64)>> {
        None
    }
}

/// The cut of the checkpoint a source restarts from, for deciding which re-read records to
/// keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Records at timely times from here on were not part of the checkpoint.
    pub time: Time,
    /// The job's granularity, which turns event times into timely times.
    pub granularity: Granularity,
}

impl Cut {
    /// Whether a record read before the cut, with this event time, was not part of the
    /// checkpoint (and must be emitted again).
    #[inline]
    pub fn includes(&self, event_time: EventTime) -> bool {
        self.granularity.quantize(event_time) >= self.time
    }

    /// Like [`Cut::includes`], for a record that a reader emits with
    /// [`Emitter::emit_in`]: judged by the time it gets from its split's watermark.
    #[inline]
    pub fn includes_in(&self, split_watermark: EventTime, event_time: EventTime) -> bool {
        self.granularity.quantize(event_time.max(split_watermark)) >= self.time
    }
}

/// Records waiting to be sent, grouped by timely timestamp.
struct Buckets<D> {
    buckets: Vec<(Time, Vec<D>)>,
    /// The bucket of each time, for records out of order (a poll of a source with a disorder
    /// bound of seconds spans tens of times): a direct-mapped cache of `(time, bucket + 1)`
    /// by a hash of the time, then, for times that collide in it, a map.
    near: Box<[(Time, u32); NEAR]>,
    index: FxHashMap<Time, usize>,
    last: usize,
    spare: Vec<Vec<D>>,
}

/// Slots of [`Buckets::near`]: a poll rarely spans more distinct times than this.
const NEAR: usize = 256;

/// The slot of `time` in [`Buckets::near`] (Fibonacci hashing: times are multiples of the
/// granularity, so their low bits alone would collide).
#[inline]
fn near_slot(time: Time) -> usize {
    (time.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - NEAR.trailing_zeros())) as usize
}

impl<D> Buckets<D> {
    fn new() -> Self {
        Buckets {
            buckets: Vec::new(),
            near: Box::new([(0, 0); NEAR]),
            index: FxHashMap::default(),
            last: 0,
            spare: Vec::new(),
        }
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

    #[inline]
    fn push_slow(&mut self, time: Time, item: D) {
        let slot = &mut self.near[near_slot(time)];
        let i = if slot.1 != 0 && slot.0 == time {
            slot.1 as usize - 1
        } else {
            self.find_or_add(time)
        };
        self.last = i;
        self.buckets[i].1.push(item);
    }

    /// The bucket of `time`, a new one if it has none; cached in `near` if its slot is free.
    #[cold]
    fn find_or_add(&mut self, time: Time) -> usize {
        let next = self.buckets.len();
        let i = *self.index.entry(time).or_insert(next);
        if i == next {
            self.buckets.push((time, self.spare.pop().unwrap_or_default()));
        }
        let slot = &mut self.near[near_slot(time)];
        if slot.1 == 0 {
            *slot = (time, i as u32 + 1);
        }
        i
    }

    /// Hands each bucket to `send` (which leaves the vector empty for reuse) and starts over.
    fn drain(&mut self, mut send: impl FnMut(Time, &mut Vec<D>)) {
        for (time, mut batch) in self.buckets.drain(..) {
            self.near[near_slot(time)].1 = 0;
            send(time, &mut batch);
            batch.clear();
            self.spare.push(batch);
        }
        self.index.clear();
        self.last = 0;
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
    /// Bytes the reader took from outside during this poll.
    bytes: u64,
    /// The cut of a pending checkpoint.
    cut: Time,
}

impl<D> Emitter<'_, D> {
    /// Emits a record with its event time. A record below the current watermark is late: it
    /// is sent at the watermark and keeps its event time inside.
    ///
    /// Returns whether the record falls at or after the cut of a pending checkpoint, which a
    /// reader that takes part in checkpoints must note (see [`SourceReader::checkpoint`]).
    #[inline]
    pub fn emit(&mut self, event_time: EventTime, item: D) -> bool {
        let time = self.granularity.quantize(event_time).max(self.floor);
        self.push(time, item)
    }

    /// Emits a record of a split (a Kafka partition, a file unit) whose own watermark, before
    /// this record, is `split_watermark`. The record travels at its rounded event time or, if
    /// it is behind that watermark (late), at the watermark rounded: its timely time, and with
    /// it whether it is late for a window, then depends only on the split's records before
    /// it, not on the worker count or on how the reader interleaves its splits, so a restored
    /// reader gives every re-read record the time the crashed run gave it. (Only when the
    /// source's watermark is ahead of the split's, which idleness and processing-time advance
    /// can do, is the record sent at the source's watermark instead.)
    ///
    /// Returns what [`Emitter::emit`] returns.
    #[inline]
    pub fn emit_in(&mut self, split_watermark: EventTime, event_time: EventTime, item: D) -> bool {
        let time = self.granularity.quantize(event_time.max(split_watermark)).max(self.floor);
        self.push(time, item)
    }

    #[inline]
    fn push(&mut self, time: Time, item: D) -> bool {
        self.buckets.push(time, item);
        self.emitted += 1;
        time >= self.cut
    }

    /// Counts bytes the reader took from outside (a Kafka record's key and value, a file's
    /// lines), for `tributary_source_bytes_total`. Readers of generated data count none.
    #[inline]
    pub fn add_bytes(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
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

/// What one [`poll_once`] of a reader produced.
#[derive(Debug)]
pub struct Polled<D> {
    /// The reader's answer.
    pub poll: Poll,
    /// The records emitted, with the timely time each was sent at, grouped by time.
    pub records: Vec<(Time, D)>,
    /// For each record, whether [`Emitter::emit`] reported it at or after the cut.
    pub after_cut: Vec<bool>,
    /// The dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// The watermark the reader promised, if it advanced one.
    pub watermark: Option<EventTime>,
}

/// Polls `reader` once outside a dataflow, as the source driver does, so that a reader's
/// checkpoint and restore logic can be tested alone: at most `room` records, with `cut` as the
/// pending checkpoint's cut (`None`: no checkpoint pending).
///
/// # Examples
/// ```
/// use tributary_runtime::source::{poll_once, Poll, SourceReader};
/// use tributary_runtime::{Emitter, Granularity, Result};
///
/// struct Three;
/// impl SourceReader for Three {
///     type Item = u64;
///     fn poll(&mut self, out: &mut Emitter<'_, u64>) -> Result<Poll> {
///         for t in [100, 250, 300] {
///             out.emit(t, t);
///         }
///         Ok(Poll::Done)
///     }
/// }
///
/// let polled = poll_once(&mut Three, 10, Granularity::DEFAULT, Some(200)).unwrap();
/// assert_eq!(polled.records, vec![(100, 100), (200, 250), (300, 300)]);
/// assert_eq!(polled.after_cut, vec![false, true, true]);
/// ```
pub fn poll_once<R: SourceReader>(
    reader: &mut R,
    room: usize,
    granularity: Granularity,
    cut: Option<Time>,
) -> Result<Polled<R::Item>> {
    let mut buckets = Buckets::new();
    let mut dead_letters = Vec::new();
    let mut out = Emitter {
        floor: 0,
        granularity,
        buckets: &mut buckets,
        dead_letters: &mut dead_letters,
        watermark: None,
        room,
        emitted: 0,
        bytes: 0,
        cut: cut.unwrap_or(Time::MAX),
    };
    let poll = reader.poll(&mut out)?;
    let watermark = out.watermark;
    let cut = out.cut;
    let mut records = Vec::new();
    buckets.drain(|time, batch| records.extend(batch.drain(..).map(|d| (time, d))));
    let after_cut = records.iter().map(|(time, _)| *time >= cut).collect();
    Ok(Polled { poll, records, after_cut, dead_letters, watermark })
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
            checkpointed: job_context(&scope).checkpoints.is_some(),
        };
        let reader = source.reader(&ctx);
        let state = Arc::clone(self.state());
        let status = Arc::clone(&job_context(&scope).status);
        let granularity = self.granularity();
        let watermarks = job_context(&scope).watermarks;

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
        let checkpointer = Checkpointer::register(&scope, &operator, &info.address);
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

/// One source worker's report to its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    pub(crate) worker: u32,
    /// The worker's watermark; `Time::MAX` once it has finished.
    pub(crate) watermark: Time,
    pub(crate) idle: bool,
}

/// The latest report of every worker of one source.
#[derive(Default)]
pub(crate) struct Board {
    reports: Vec<Option<(Time, bool)>>,
}

impl Board {
    fn update(&mut self, statuses: impl Iterator<Item = Status>) {
        for Status { worker, watermark, idle } in statuses {
            let worker = worker as usize;
            if self.reports.len() <= worker {
                self.reports.resize(worker + 1, None);
            }
            self.reports[worker] = Some((watermark, idle));
        }
    }

    /// The smallest watermark among the workers that are neither idle nor finished, leaving
    /// out `me`. A worker not heard from yet counts as active at time 0.
    fn active_minimum(&self, me: Option<usize>, workers: usize) -> Option<Time> {
        (0..workers)
            .filter(|&w| Some(w) != me)
            .filter_map(|w| match self.reports.get(w).copied().flatten() {
                None => Some(0),
                Some((wm, idle)) => (!idle && wm != Time::MAX).then_some(wm),
            })
            .min()
    }

    /// The largest watermark among the idle (not finished) workers, leaving out `me`.
    fn idle_maximum(&self, me: usize) -> Option<Time> {
        (self.reports.iter().enumerate())
            .filter(|&(w, _)| w != me)
            .filter_map(|(_, report)| match *report {
                Some((wm, true)) if wm != Time::MAX => Some(wm),
                _ => None,
            })
            .max()
    }
}

/// One board per source of the job, on each worker.
pub(crate) type Boards = Rc<RefCell<Vec<Board>>>;

/// The smallest watermark of any active worker of any source, leaving out worker `me` of
/// source `mine`: alignment treats all the job's sources as one group, so a join's inputs
/// stay within `max_drift` of each other too.
fn active_minimum(boards: &[Board], mine: usize, me: usize, workers: usize) -> Option<Time> {
    boards
        .iter()
        .enumerate()
        .filter_map(|(i, board)| board.active_minimum((i == mine).then_some(me), workers))
        .min()
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
        self.reader
            .restore(cut, restore.states)
            .map_err(|e| source_error(&self.ctx, format!("cannot restore: {e}")))?;
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

/// Reports a source failure in the runtime's error type.
pub fn source_error(ctx: &SourceContext, reason: impl std::fmt::Display) -> Error {
    Error::Source { source_name: ctx.name.clone(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::dataflow::operators::capture::{Capture, Extract};

    /// When every worker of a source is idle, each follows the highest idle watermark, so a
    /// worker that went quiet before its busy peer's last report does not hold the job back.
    #[test]
    fn idle_workers_follow_the_highest_idle_watermark() {
        let mut board = Board::default();
        let status = |worker, watermark, idle| Status { worker, watermark, idle };
        board.update(
            [status(0, 9_900, true), status(1, 0, true), status(2, Time::MAX, false)].into_iter(),
        );
        assert_eq!(board.active_minimum(Some(1), 3), None, "nobody active");
        assert_eq!(board.idle_maximum(1), Some(9_900));
        assert_eq!(board.idle_maximum(0), Some(0), "finished workers do not count");
        board.update([status(0, 9_900, false)].into_iter());
        assert_eq!(board.active_minimum(Some(1), 3), Some(9_900));
    }

    #[test]
    fn buckets_group_out_of_order_records_by_time_in_arrival_order() {
        let mut buckets = Buckets::new();
        for round in 0..2u64 {
            let times = [5, 3, 5, 5, 9, 3, 1, 9, 5];
            for (i, t) in times.iter().enumerate() {
                buckets.push(*t, (round, i));
            }
            let mut got = Vec::new();
            buckets.drain(|t, batch| got.push((t, std::mem::take(batch))));
            let bucket = |t, is: &[usize]| (t, is.iter().map(|&i| (round, i)).collect::<Vec<_>>());
            let expected = vec![
                bucket(5, &[0, 2, 3, 8]),
                bucket(3, &[1, 5]),
                bucket(9, &[4, 7]),
                bucket(1, &[6]),
            ];
            assert_eq!(got, expected, "round {round}");
        }
    }

    /// More distinct times than the cache has slots, out of order, over several rounds:
    /// every record lands in its time's bucket, buckets in order of first appearance.
    #[test]
    fn buckets_group_many_times_like_a_map() {
        let mut buckets = Buckets::new();
        let mut state = 0x9e37_79b9_u64;
        for round in 0..3u64 {
            let mut expected: Vec<(Time, Vec<u64>)> = Vec::new();
            for i in 0..20_000u64 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let time = (state % (NEAR as u64 * 4)) * 100 + round;
                buckets.push(time, i);
                match expected.iter_mut().find(|(t, _)| *t == time) {
                    Some((_, v)) => v.push(i),
                    None => expected.push((time, vec![i])),
                }
            }
            let mut got = Vec::new();
            buckets.drain(|t, batch| got.push((t, std::mem::take(batch))));
            assert!(
                got == expected,
                "round {round}: {} buckets, {} expected",
                got.len(),
                expected.len()
            );
        }
    }

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

/// A record stamped with the wall-clock time its source read it (see [`IngestionTime`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ingested<D> {
    /// When the source read the record, epoch milliseconds: its event time from here on.
    pub at: EventTime,
    /// The record.
    pub value: D,
}

impl<D> Timestamped for Ingested<D> {
    fn event_time(&self) -> EventTime {
        self.at
    }
}

/// Ingestion time, as in Flink: reads `S` and stamps every record with the wall-clock time
/// it was read at, as [`Ingested`]; the source's watermark follows the wall clock. Windows
/// downstream then group records by when they arrived, like Nexmark's processing-time
/// windows (`PROCTIME()`), with the usual guarantees of event time from the stamp on.
///
/// Ingestion times are not replayable, so such a source takes no part in checkpoints (a job
/// with checkpoints turned on fails at start).
#[derive(Debug, Clone)]
pub struct IngestionTime<S>(pub S);

impl<S: Source> Source for IngestionTime<S> {
    type Item = Ingested<S::Item>;
    type Reader = IngestionReader<S::Reader>;

    fn name(&self) -> &str {
        self.0.name()
    }

    fn reader(&self, ctx: &SourceContext) -> Result<Self::Reader> {
        if ctx.checkpointed {
            return Err(Error::Checkpoint(format!(
                "source {}: ingestion times cannot be replayed from a checkpoint",
                ctx.name
            )));
        }
        Ok(IngestionReader { reader: self.0.reader(ctx)?, buckets: Buckets::new() })
    }
}

/// One worker's share of an [`IngestionTime`] source.
pub struct IngestionReader<R: SourceReader> {
    reader: R,
    buckets: Buckets<R::Item>,
}

impl<R: SourceReader> SourceReader for IngestionReader<R> {
    type Item = Ingested<R::Item>;

    fn poll(&mut self, out: &mut Emitter<'_, Self::Item>) -> Result<Poll> {
        let room = out.room();
        let mut inner = Emitter {
            floor: out.floor,
            granularity: out.granularity,
            buckets: &mut self.buckets,
            dead_letters: &mut *out.dead_letters,
            watermark: None,
            room,
            emitted: 0,
            bytes: 0,
            cut: out.cut,
        };
        let poll = self.reader.poll(&mut inner)?;
        out.bytes += inner.bytes;
        let at = crate::time::now_event_time();
        self.buckets.drain(|_, batch| {
            for value in batch.drain(..) {
                out.emit(at, Ingested { at, value });
            }
        });
        out.advance_watermark(at);
        Ok(poll)
    }

    fn set_paused(&mut self, paused: bool) -> Result<()> {
        self.reader.set_paused(paused)
    }

    fn backlog(&mut self) -> Option<Vec<(String, u64)>> {
        self.reader.backlog()
    }
}
