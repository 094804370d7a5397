//! The stdout sink: JSON lines on standard output, for local runs.

use std::io::Write;
use std::marker::PhantomData;

use serde::Serialize;
use tributary_runtime::{Error, Result, Sink, SinkContext, SinkWriter, Time};

use crate::error::ConnectorError;

/// Prints records as JSON lines. Each batch is written under the stdout lock, so lines of
/// different workers never interleave.
#[derive(Debug, Clone, Default)]
pub struct StdoutSink<D> {
    marker: PhantomData<fn(D)>,
}

impl<D> StdoutSink<D> {
    /// A stdout sink.
    pub fn new() -> Self {
        StdoutSink { marker: PhantomData }
    }
}

impl<D: Serialize + 'static> Sink<D> for StdoutSink<D> {
    type Writer = StdoutWriter<D>;

    fn name(&self) -> &str {
        "stdout"
    }

    fn writer(&self, ctx: &SinkContext) -> Result<StdoutWriter<D>> {
        Ok(StdoutWriter { buf: Vec::new(), bytes: ctx.bytes_counter(), marker: PhantomData })
    }
}

/// One worker's stdout writer.
pub struct StdoutWriter<D> {
    buf: Vec<u8>,
    bytes: metrics::Counter,
    marker: PhantomData<fn(D)>,
}

/// The runtime's error for writing to stdout failing (`InvalidData`: a record JSON cannot hold).
fn failed(source: std::io::Error) -> Error {
    ConnectorError::Io { op: "cannot write", path: "stdout".into(), source }.at_sink("stdout")
}

impl<D: Serialize + 'static> SinkWriter<D> for StdoutWriter<D> {
    fn write(&mut self, records: &mut Vec<D>) -> Result<()> {
        self.buf.clear();
        for r in records.drain(..) {
            serde_json::to_writer(&mut self.buf, &r).map_err(|e| failed(e.into()))?;
            self.buf.push(b'\n');
        }
        std::io::stdout().lock().write_all(&self.buf).map_err(failed)?;
        self.bytes.increment(self.buf.len() as u64);
        Ok(())
    }

    fn progress(&mut self, _frontier: Option<Time>) -> Result<()> {
        std::io::stdout().lock().flush().map_err(failed)
    }

    /// At least once: standard output cannot take lines back, so lines after the cut are
    /// printed again after a restore.
    fn prepare(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        std::io::stdout().lock().flush().map_err(failed)?;
        Ok(Vec::new())
    }

    fn restore(&mut self, _prepared: Vec<Vec<u8>>) -> Result<()> {
        Ok(())
    }
}
