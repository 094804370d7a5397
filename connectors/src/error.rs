//! [`ConnectorError`]: why a connector failed, with its cause, and whether a restart may help.

use std::path::PathBuf;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tributary_runtime::Error;

/// A connector's failure (not a bad record: those are dead letters). It keeps the error it
/// comes from as its [`source`](std::error::Error::source), and knows whether running the job
/// again may get past it ([`ConnectorError::is_retryable`]); [`ConnectorError::at_source`]
/// and [`ConnectorError::at_sink`] turn it into the runtime's error, naming the connector.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// librdkafka failed an operation.
    #[error("{context}: {source}")]
    Kafka {
        /// What was being done, and on what (`topic `t``, `commit of `id``).
        context: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },

    /// The broker failed or refused a request of our own Kafka protocol client (finishing a
    /// prepared transaction, reading record batches), or librdkafka reported a failed
    /// delivery through its callbacks.
    #[error("{reason}")]
    Broker {
        /// What failed, and the broker's error.
        reason: String,
        /// Whether a later attempt may succeed (a coordinator that moved, a broker that was
        /// down), as opposed to an answer that stands (a fenced producer, an aborted
        /// transaction).
        retryable: bool,
    },

    /// A file could not be read, written, listed or published.
    #[error("{op} `{path}`: {source}", path = path.display())]
    Io {
        /// What was being done, e.g. "cannot open".
        op: &'static str,
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A Parquet file could not be written.
    #[error("{context}: {source}")]
    Parquet {
        /// The file concerned, or what was being done.
        context: String,
        /// The parquet crate's error.
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// A record could not be put in the sink's format: it will not fit on a retry either.
    #[error("{context}: {reason}")]
    Encode {
        /// What was being encoded (`key`, `record`).
        context: &'static str,
        /// Why the encoder refused it.
        reason: String,
    },

    /// A checkpoint's saved position does not fit the input (files changed or gone, fewer
    /// partitions, another configuration): restoring it again cannot succeed.
    #[error("cannot restore from the checkpoint: {0}")]
    Restore(String),
}

impl ConnectorError {
    /// A librdkafka error while doing `context`.
    pub fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        ConnectorError::Kafka { context: context.into(), source }
    }

    /// Whether running the job again (from its last checkpoint) may get past this failure.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectorError::Kafka { source, .. } => kafka_retryable(source),
            ConnectorError::Broker { retryable, .. } => *retryable,
            ConnectorError::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::AlreadyExists
            ),
            // Parquet's failures below us are I/O (a full disk): worth another run.
            ConnectorError::Parquet { .. } => true,
            ConnectorError::Encode { .. } | ConnectorError::Restore(_) => false,
        }
    }

    /// The runtime's error for source `name` failing with this.
    pub fn at_source(self, name: &str) -> Error {
        let retryable = self.is_retryable();
        Error::Source { source_name: name.to_owned(), cause: Box::new(self), retryable }
    }

    /// The runtime's error for sink `name` failing with this.
    pub fn at_sink(self, name: &str) -> Error {
        let retryable = self.is_retryable();
        Error::Sink { sink: name.to_owned(), cause: Box::new(self), retryable }
    }
}

/// Whether a librdkafka failure may pass on another run: not when the broker refuses for
/// good (authorization, a topic that does not exist, a record too large) or the producer was
/// fenced by a newer run of the job.
fn kafka_retryable(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    if let KafkaError::Transaction(e) = error {
        if e.is_fatal() && !e.is_retriable() {
            return false;
        }
    }
    !matches!(
        error.rdkafka_error_code(),
        Some(
            C::Fatal
                | C::ProducerFenced
                | C::InvalidProducerEpoch
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::MessageSizeTooLarge
                | C::InvalidConfig
        )
    )
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_connector_error_keeps_its_cause_and_says_whether_to_retry() {
        let refused = ConnectorError::kafka(
            "topic `t`",
            KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        assert!(!refused.is_retryable());
        let error = refused.at_sink("out");
        assert!(!error.is_retryable());
        assert!(error.to_string().starts_with("sink `out` failed: topic `t`: "), "{error}");
        let cause = error.source().expect("the connector error is the cause");
        assert!(cause.source().is_some_and(|e| e.is::<KafkaError>()), "librdkafka's error is kept");

        let timeout =
            ConnectorError::kafka("flush", KafkaError::Flush(RDKafkaErrorCode::MessageTimedOut));
        assert!(timeout.is_retryable());
        let io = |kind| ConnectorError::Io {
            op: "cannot write",
            path: "/x".into(),
            source: std::io::Error::from(kind),
        };
        assert!(io(std::io::ErrorKind::StorageFull).is_retryable());
        assert!(!io(std::io::ErrorKind::NotFound).at_source("files").is_retryable());
        assert!(!ConnectorError::Restore("gone".into()).is_retryable());
    }
}
