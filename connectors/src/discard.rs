//! The discard sink: counts records and drops them, for benchmarks (a "blackhole").

use std::marker::PhantomData;

use tributary_runtime::{Result, Sink, SinkContext, SinkWriter, Time};

/// Drops every record; the runtime still counts them (`tributary_sink_records_total`, the
/// status page, the summary) and measures their latency.
#[derive(Debug, Clone, Default)]
pub struct DiscardSink<D> {
    marker: PhantomData<fn(D)>,
}

impl<D> DiscardSink<D> {
    /// A discard sink.
    pub fn new() -> Self {
        DiscardSink { marker: PhantomData }
    }
}

impl<D: 'static> Sink<D> for DiscardSink<D> {
    type Writer = DiscardWriter;

    fn name(&self) -> &str {
        "discard"
    }

    fn writer(&self, _ctx: &SinkContext) -> Result<DiscardWriter> {
        Ok(DiscardWriter)
    }
}

/// One worker's discard writer.
#[derive(Debug)]
pub struct DiscardWriter;

impl<D> SinkWriter<D> for DiscardWriter {
    fn write(&mut self, records: &mut Vec<D>) -> Result<()> {
        records.clear();
        Ok(())
    }

    fn progress(&mut self, _frontier: Option<Time>) -> Result<()> {
        Ok(())
    }

    /// Nothing to hold back: exactly once trivially.
    fn prepare(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn restore(&mut self, _prepared: Vec<Vec<u8>>) -> Result<()> {
        Ok(())
    }
}
