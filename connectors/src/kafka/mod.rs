//! Kafka: a source reading every partition of some topics across all workers, and a sink
//! writing through an idempotent producer, or transactions for exactly-once output (rdkafka,
//! bundled librdkafka).

mod config;
mod sink;
mod source;
pub mod txn;

pub use config::{Delivery, KafkaSinkConfig, KafkaSourceConfig, KeyMode, StartAt};
pub use sink::{prepared_transactions, Deliveries, KafkaSink, KafkaWriter, KeyFn};
pub use source::{
    ChangelogDecoder, ChangelogRecord, Decode, KafkaReader, KafkaRecord, KafkaSource, RawDecoder,
    RawRecord, SerdeDecoder, FETCH_QUEUE_BACKOFF_MS,
};
