//! Tributary's connectors: generators, files, Parquet, Kafka, stdout and a discard sink, and
//! the record formats they share (JSON, CSV, Avro with a schema registry).
//!
//! Each connector implements [`tributary_runtime::Source`] or [`tributary_runtime::Sink`] and
//! has a typed, serde-deserialised config (`deny_unknown_fields`) checked before the workers
//! start.

pub mod discard;
pub mod error;
pub mod file;
pub mod format;
pub mod generator;
pub mod input;
pub mod kafka;
pub mod output;
pub mod parquet;
mod rate;
mod replay;
pub mod stdout;
pub mod store;

pub use discard::DiscardSink;
pub use error::ConnectorError;
pub use file::{FileSink, FileSinkConfig, FileSource, FileSourceConfig};
pub use format::Format;
pub use generator::{
    DeviceInfo, DeviceRegistry, Generator, Instrument, Instruments, IotConfig, IotReadings,
    MarketConfig, NexmarkConfig, NexmarkEvent, NexmarkEvents, Pace, Quote, Quotes, SensorKind,
    SensorReading, Trade, Trades,
};
pub use input::{AnySource, Input};
pub use kafka::{KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig};
pub use output::{AnySink, Output};
pub use parquet::{ParquetSink, ParquetSinkConfig};
pub use stdout::StdoutSink;
