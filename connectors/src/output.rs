//! [`Output`]: the choice of a simple sink in a job's configuration.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tributary_runtime::{ConfigError, Result, Sink, SinkContext, SinkWriter, Time};

use crate::discard::{DiscardSink, DiscardWriter};
use crate::file::{FileSink, FileSinkConfig, FileWriter};
use crate::kafka::{KafkaSink, KafkaSinkConfig, KafkaWriter};
use crate::parquet::{LocalStore, ParquetSink, ParquetSinkConfig, ParquetWriter};
use crate::stdout::{StdoutSink, StdoutWriter};

/// Where a job writes its results: `{ kind = "stdout" }`,
/// `{ kind = "file", path = "out/", format = "csv" }`,
/// `{ kind = "parquet", path = "out/", partition_by = "dt={window_start:%Y-%m-%d}" }`,
/// `{ kind = "kafka", brokers = "host:9092", topic = "stats" }` or `{ kind = "discard" }`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Output {
    /// JSON lines on standard output.
    #[default]
    Stdout,
    /// One file per worker in a directory.
    File(FileSinkConfig),
    /// Parquet files in a directory.
    Parquet(ParquetSinkConfig),
    /// A Kafka topic.
    Kafka(KafkaSinkConfig),
    /// Nowhere: records are counted and dropped (benchmarks).
    Discard,
}

impl Output {
    /// Resolves the sink; keys in errors are relative to the output's table.
    pub fn build<D: Serialize + DeserializeOwned + 'static>(
        &self,
        name: &str,
    ) -> Result<AnySink<D>, ConfigError> {
        Ok(match self {
            Output::Stdout => AnySink::Stdout(StdoutSink::new()),
            Output::File(config) => AnySink::File(FileSink::new(name, config)?),
            Output::Parquet(config) => AnySink::Parquet(Box::new(ParquetSink::new(name, config)?)),
            Output::Kafka(config) => AnySink::Kafka(KafkaSink::new(name, config)?),
            Output::Discard => AnySink::Discard(DiscardSink::new()),
        })
    }
}

/// A sink chosen at run time.
pub enum AnySink<D> {
    /// See [`StdoutSink`].
    Stdout(StdoutSink<D>),
    /// See [`FileSink`].
    File(FileSink<D>),
    /// See [`ParquetSink`].
    Parquet(Box<ParquetSink<D>>),
    /// See [`KafkaSink`].
    Kafka(KafkaSink<D>),
    /// See [`DiscardSink`].
    Discard(DiscardSink<D>),
}

impl<D> AnySink<D> {
    /// Sets the Kafka key of each record (other sinks have no keys).
    pub fn keyed(self, key: impl Fn(&D) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        match self {
            AnySink::Kafka(s) => AnySink::Kafka(s.keyed(key)),
            other => other,
        }
    }

    /// Changelog mode for Kafka: records for which `deletes` holds are sent as tombstones
    /// (key, null value); other sinks write every record as it is.
    pub fn tombstones(self, deletes: impl Fn(&D) -> bool + Send + Sync + 'static) -> Self {
        match self {
            AnySink::Kafka(s) => AnySink::Kafka(s.tombstones(deletes)),
            other => other,
        }
    }
}

/// The writer of an [`AnySink`].
pub enum AnyWriter<D> {
    /// See [`StdoutWriter`].
    Stdout(StdoutWriter<D>),
    /// See [`FileWriter`].
    File(FileWriter<D>),
    /// See [`ParquetWriter`].
    Parquet(Box<ParquetWriter<D, LocalStore>>),
    /// See [`KafkaWriter`].
    Kafka(Box<KafkaWriter<D>>),
    /// See [`DiscardWriter`].
    Discard(DiscardWriter),
}

impl<D: Serialize + 'static> Sink<D> for AnySink<D> {
    type Writer = AnyWriter<D>;

    fn name(&self) -> &str {
        match self {
            AnySink::Stdout(s) => s.name(),
            AnySink::File(s) => s.name(),
            AnySink::Parquet(s) => s.name(),
            AnySink::Kafka(s) => s.name(),
            AnySink::Discard(s) => s.name(),
        }
    }

    fn writer(&self, ctx: &SinkContext) -> Result<AnyWriter<D>> {
        Ok(match self {
            AnySink::Stdout(s) => AnyWriter::Stdout(s.writer(ctx)?),
            AnySink::File(s) => AnyWriter::File(s.writer(ctx)?),
            AnySink::Parquet(s) => AnyWriter::Parquet(Box::new(s.writer(ctx)?)),
            AnySink::Kafka(s) => AnyWriter::Kafka(Box::new(s.writer(ctx)?)),
            AnySink::Discard(s) => AnyWriter::Discard(s.writer(ctx)?),
        })
    }
}

/// Calls the same method on whichever writer an [`AnyWriter`] holds.
macro_rules! each {
    ($writer:expr, $w:ident => $call:expr) => {
        match $writer {
            AnyWriter::Stdout($w) => $call,
            AnyWriter::File($w) => $call,
            AnyWriter::Parquet(boxed) => {
                let $w = &mut **boxed;
                $call
            }
            AnyWriter::Kafka(boxed) => {
                let $w = &mut **boxed;
                $call
            }
            AnyWriter::Discard($w) => $call,
        }
    };
}

impl<D: Serialize + 'static> SinkWriter<D> for AnyWriter<D> {
    fn write(&mut self, records: &mut Vec<D>) -> Result<()> {
        each!(self, w => SinkWriter::<D>::write(w, records))
    }

    fn progress(&mut self, frontier: Option<Time>) -> Result<()> {
        each!(self, w => SinkWriter::<D>::progress(w, frontier))
    }

    fn prepare(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        each!(self, w => SinkWriter::<D>::prepare(w, checkpoint))
    }

    fn commit(&mut self, checkpoint: u64) -> Result<()> {
        each!(self, w => SinkWriter::<D>::commit(w, checkpoint))
    }

    fn restore(&mut self, prepared: Vec<Vec<u8>>) -> Result<()> {
        each!(self, w => SinkWriter::<D>::restore(w, prepared))
    }

    fn discard(&mut self) {
        each!(self, w => SinkWriter::<D>::discard(w))
    }
}
