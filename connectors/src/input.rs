//! [`Input`]: the choice of a record source in a job's configuration.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tributary_runtime::{ConfigError, Data, DeadLetter, Events, Flow, Timestamped};

use crate::file::{FileSource, FileSourceConfig};
use crate::kafka::{KafkaSource, KafkaSourceConfig};

/// Where a job reads records: `{ kind = "file", path = "in/" }` or
/// `{ kind = "kafka", brokers = "host:9092", topics = ["readings"] }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Input {
    /// JSON-lines or CSV files.
    File(FileSourceConfig),
    /// Kafka topics.
    Kafka(KafkaSourceConfig),
}

impl Input {
    /// Resolves the source; keys in errors are relative to the input's table.
    pub fn build<D: DeserializeOwned>(&self, name: &str) -> Result<AnySource<D>, ConfigError> {
        Ok(match self {
            Input::File(c) => AnySource::File(FileSource::new(name, c)?),
            Input::Kafka(c) => AnySource::Kafka(KafkaSource::new(name, c)?),
        })
    }
}

/// A source chosen at run time.
pub enum AnySource<D> {
    /// See [`FileSource`].
    File(FileSource<D>),
    /// See [`KafkaSource`].
    Kafka(KafkaSource<D>),
}

impl<D: Data + DeserializeOwned + Timestamped> AnySource<D> {
    /// Reads the source on every worker; undecodable records go to the job's dead letters.
    pub fn read<'scope>(&self, flow: &mut Flow<'scope>) -> Events<'scope, D> {
        match self {
            AnySource::File(s) => flow.source(s),
            AnySource::Kafka(s) => flow.source(s),
        }
    }

    /// Reads the source on every worker, returning its records and dead letters.
    pub fn read_with_errors<'scope>(
        &self,
        flow: &mut Flow<'scope>,
    ) -> (Events<'scope, D>, Events<'scope, DeadLetter>) {
        match self {
            AnySource::File(s) => flow.source_with_errors(s),
            AnySource::Kafka(s) => flow.source_with_errors(s),
        }
    }
}
