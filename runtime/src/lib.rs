//! Tributary's runtime: the job API, the time model, configuration, and the drivers that run
//! sources and sinks on timely-dataflow workers.
//!
//! Nothing here knows about Kafka or Parquet: connectors implement [`Source`] and [`Sink`],
//! operators extend timely streams, and job binaries tie them together with [`Job`].

pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod context;
pub mod dead_letter;
pub mod error;
pub mod flow;
pub mod flow_control;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod serve;
pub mod sink;
pub mod source;
pub mod stateful;
pub mod status;
pub mod time;

pub use checkpoint::{CheckpointConfig, Checkpointer};
pub use config::{Config, RunArgs, RuntimeConfig, WatermarkConfig};
pub use context::{job_context, Data, Events, JobContext, JobState};
pub use dead_letter::DeadLetter;
pub use error::{ConfigError, Error, Result};
pub use flow::Flow;
pub use job::{Job, EXIT_CONFIG, EXIT_FAILURE, EXIT_FATAL};
pub use logging::LogFormat;
pub use sink::{Sink, SinkContext, SinkExt, SinkWriter};
pub use source::{
    source_error, Emitter, Ingested, IngestionTime, Poll, Source, SourceContext, SourceReader,
};
pub use status::Traffic;
pub use time::{EventTime, Granularity, HumanDuration, Time, Timestamped};

/// Re-exported so that jobs and connectors use the same timely as the runtime.
pub use timely;
