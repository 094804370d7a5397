//! Tributary's runtime: the job API, the time model, configuration, and the drivers that run
//! sources and sinks on timely-dataflow workers.
//!
//! Nothing here knows about Kafka or Parquet: connectors implement [`Source`] and [`Sink`],
//! operators extend timely streams, and job binaries tie them together with [`Job`].

pub mod checkpoint;
pub mod cluster;
pub mod config;
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
pub use config::{Config, LogFormat, RunArgs, RuntimeConfig, WatermarkConfig};
pub use dead_letter::DeadLetter;
pub use error::{ConfigError, Error, Result};
pub use flow::{job_context, Data, Events, Flow, JobContext, JobState};
pub use flow_control::Traffic;
pub use job::{Job, EXIT_CONFIG, EXIT_FAILURE};
pub use sink::{Sink, SinkContext, SinkExt, SinkWriter};
pub use source::{
    source_error, Emitter, Ingested, IngestionTime, Poll, Source, SourceContext, SourceReader,
};
pub use time::{EventTime, Granularity, HumanDuration, Time, Timestamped};

/// Re-exported so that jobs and connectors use the same timely as the runtime.
pub use timely;
