//! Ingestion time: a source's records stamped with the wall-clock time they were read.

use serde::{Deserialize, Serialize};

use super::emitter::Buckets;
use super::{Emitter, Poll, Source, SourceContext, SourceReader};
use crate::error::{Error, Result};
use crate::time::{EventTime, Timestamped};

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
