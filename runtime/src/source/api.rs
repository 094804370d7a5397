//! What a source implements: [`Source`] (resolved once per process) and [`SourceReader`]
//! (one per worker), and what the driver tells it ([`SourceContext`], [`Cut`]).

use std::time::Duration;

use super::Emitter;
use crate::context::Data;
use crate::error::{Error, Result};
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

/// Reports a source failure in the runtime's error type, as one another run may get past
/// (build an [`Error::Source`] with the cause itself to keep it, or to say a retry cannot
/// help).
pub fn source_error(ctx: &SourceContext, reason: impl std::fmt::Display) -> Error {
    let cause = reason.to_string().into();
    Error::Source { source_name: ctx.name.clone(), cause, retryable: true }
}
