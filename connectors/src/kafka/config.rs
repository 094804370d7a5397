//! Kafka connector settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tributary_runtime::time::parse_event_time;
use tributary_runtime::{ConfigError, EventTime, HumanDuration};

use crate::format::{Format, SchemaConfig};

/// Where a Kafka source starts reading each partition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// The oldest retained record.
    #[default]
    Earliest,
    /// Only records produced after the job starts.
    Latest,
    /// The consumer group's committed offsets (earliest where the group has none).
    Committed,
    /// The first record at or after this time (RFC 3339).
    Timestamp(String),
}

impl StartAt {
    /// The start time of [`StartAt::Timestamp`], checked.
    pub(crate) fn timestamp(&self) -> Result<Option<EventTime>, ConfigError> {
        match self {
            StartAt::Timestamp(t) => {
                parse_event_time(t).map(Some).map_err(|e| ConfigError::new("start.timestamp", e))
            }
            _ => Ok(None),
        }
    }
}

/// Settings of a Kafka source (`kind = "kafka"` in an input table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Topics to read; all their partitions are spread over all workers.
    pub topics: Vec<String>,
    /// Consumer group that the job commits its offsets to (for lag tools and `committed`).
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Where to start.
    #[serde(default)]
    pub start: StartAt,
    /// Record format: `json`, `csv`, `avro` or `protobuf`.
    #[serde(default)]
    pub format: Format,
    /// Where Avro and Protobuf take their schemas: an Avro reader schema in a `file` or
    /// `inline`, a Protobuf descriptor set `file` and `message`, and/or a `registry` the
    /// records' writer schemas are looked up in.
    #[serde(default)]
    pub schema: Option<Box<SchemaConfig>>,
    /// Changelog (table) sources: the format of record keys. By default a key is UTF-8 text;
    /// with a format (and `key_schema` for Avro, Protobuf and JSON Schema, e.g. a registry)
    /// the key is decoded, and a string key is itself while any other key (a Debezium key
    /// record, say) is its compact JSON text.
    #[serde(default)]
    pub key_format: Option<Format>,
    /// Where a schema-based `key_format` takes its schemas (as `schema` for values).
    #[serde(default)]
    pub key_schema: Option<Box<SchemaConfig>>,
    /// How far event time may go backwards within a partition before records count as late.
    #[serde(default)]
    pub max_out_of_orderness: Option<HumanDuration>,
    /// A partition without records for this long stops holding the source's watermark back.
    #[serde(default = "default_idle")]
    pub partition_idle_timeout: HumanDuration,
    /// Read only the records present when the job starts, then finish (a bounded job).
    #[serde(default)]
    pub bounded: bool,
    /// How often to look for new partitions of the topics.
    #[serde(default = "default_discovery")]
    pub partition_discovery: HumanDuration,
    /// How often to commit the offsets read to the consumer group.
    #[serde(default = "default_commit")]
    pub commit_interval: HumanDuration,
    /// Replays the topics at most this many records a second over all workers (history at
    /// its original pace, for a backtest say); as fast as possible when absent.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Any librdkafka consumer property, e.g. `"security.protocol" = "SASL_SSL"`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_group() -> String {
    "tributary".to_owned()
}

fn default_idle() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_discovery() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_commit() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

impl KafkaSourceConfig {
    /// A source of `topics` on `brokers` with the defaults.
    pub fn new(brokers: impl Into<String>, topics: &[&str]) -> Self {
        KafkaSourceConfig {
            brokers: brokers.into(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            group_id: default_group(),
            start: StartAt::default(),
            format: Format::Json,
            schema: None,
            key_format: None,
            key_schema: None,
            max_out_of_orderness: None,
            partition_idle_timeout: default_idle(),
            bounded: false,
            partition_discovery: default_discovery(),
            commit_interval: default_commit(),
            rate: None,
            properties: BTreeMap::new(),
        }
    }
}

/// How a Kafka sink keys its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    /// The key the job gives each record (records of a key go to one partition, in order).
    #[default]
    Record,
    /// No key: records are spread over the partitions.
    None,
}

/// Settings of a Kafka sink (`kind = "kafka"` in an output table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// The topic written to; it must exist.
    pub topic: String,
    /// Record format: `json`, `csv`, `avro` or `protobuf`.
    #[serde(default)]
    pub format: Format,
    /// The schema of the records (Avro: a `file`, `inline`, or the latest of a registry
    /// `subject`; Protobuf: a descriptor set `file` and `message`, or the latest schema of the
    /// subject); with a `registry`, records carry its id.
    #[serde(default)]
    pub schema: Option<Box<SchemaConfig>>,
    /// Keying.
    #[serde(default)]
    pub key: KeyMode,
    /// The format keys are written in: by default the job's key bytes as they are; with a
    /// format, the key (which must then be UTF-8 text) is written as a string in it, e.g.
    /// `avro` with a registry `key_schema` of `"string"` under `<topic>-key`.
    #[serde(default)]
    pub key_format: Option<Format>,
    /// The schema of the keys for a schema-based `key_format` (as `schema` for values).
    #[serde(default)]
    pub key_schema: Option<Box<SchemaConfig>>,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd` (librdkafka's `compression.type`).
    #[serde(default = "default_compression")]
    pub compression: String,
    /// How long the producer waits to fill a batch (librdkafka's `linger.ms`).
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    /// What a restart after a crash guarantees about the records in the topic.
    #[serde(default)]
    pub delivery: Delivery,
    /// The start of the sink's `transactional.id`s (`<prefix>-<worker>-<n>`) with
    /// `delivery = "exactly-once"`; defaults to `<job id>-<sink name>`. Two jobs writing at
    /// the same time must not share it.
    #[serde(default)]
    pub transactional_id_prefix: Option<String>,
    /// Any librdkafka producer property; `enable.idempotence` is on unless set here.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// What a Kafka sink guarantees when the job restarts from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Every record is in the topic at least once: the records a job wrote after its latest
    /// checkpoint are written again after a crash. An idempotent producer (no duplicates from
    /// its own retries).
    #[default]
    AtLeastOnce,
    /// Every record once, for consumers with `isolation.level = read_committed`: the records
    /// of a checkpoint go in one Kafka transaction per worker, committed when the checkpoint
    /// is complete (and by the restarted job if the process died first). Needs checkpoints
    /// and a broker with transactions; output becomes visible once per checkpoint interval.
    ExactlyOnce,
}

fn default_compression() -> String {
    "lz4".to_owned()
}

fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(5))
}

impl KafkaSinkConfig {
    /// A sink to `topic` on `brokers` with the defaults.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            format: Format::Json,
            schema: None,
            key: KeyMode::Record,
            key_format: None,
            key_schema: None,
            compression: default_compression(),
            linger: default_linger(),
            delivery: Delivery::AtLeastOnce,
            transactional_id_prefix: None,
            properties: BTreeMap::new(),
        }
    }
}
