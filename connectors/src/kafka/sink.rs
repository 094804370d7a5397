//! The Kafka sink: serialised records, keyed by the job, through an idempotent producer.
//!
//! A record that cannot be delivered after librdkafka's own retries fails the job: the error
//! is reported on the next write or at the end, never dropped. The producer is flushed when
//! the input ends.
//!
//! **Changelog (upsert) mode**: with a key function and a tombstone predicate
//! ([`KafkaSink::tombstones`]), a record the predicate marks as a deletion is sent as its key
//! with a null value, the tombstone by which a compacted topic (and Kafka Streams' `KTable`,
//! Flink's `upsert-kafka`) forgets the key. Every other record is an upsert of its key.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientConfig;
use serde::Serialize;
use tributary_runtime::{ConfigError, Error, Result, Sink, SinkContext, SinkWriter, Time};

use super::config::{KafkaSinkConfig, KeyMode};
use crate::file::Format;

/// How long the sink waits for every record to be acknowledged at the end.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// The key of a record in Kafka.
pub type KeyFn<D> = Arc<dyn Fn(&D) -> Option<Vec<u8>> + Send + Sync>;

/// Whether a record deletes its key (is sent as a tombstone).
pub type TombstoneFn<D> = Arc<dyn Fn(&D) -> bool + Send + Sync>;

/// Writes records of type `D` to a Kafka topic.
pub struct KafkaSink<D> {
    name: String,
    config: KafkaSinkConfig,
    key: Option<KeyFn<D>>,
    tombstone: Option<TombstoneFn<D>>,
}

impl<D> KafkaSink<D> {
    /// Checks the settings and that the topic exists; keys are relative to the sink's table.
    pub fn new(name: &str, config: &KafkaSinkConfig) -> Result<Self, ConfigError> {
        const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
        if !CODECS.contains(&config.compression.as_str()) {
            return Err(ConfigError::new("compression", format!("must be one of {CODECS:?}")));
        }
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("log_level", "3")
            .create()
            .map_err(|e| ConfigError::new("brokers", e.to_string()))?;
        let metadata = probe
            .fetch_metadata(Some(&config.topic), Duration::from_secs(10))
            .map_err(|e| ConfigError::new("brokers", format!("{}: {e}", config.brokers)))?;
        let exists = metadata
            .topics()
            .first()
            .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Err(ConfigError::new(
                "topic",
                format!("`{}` does not exist on {}", config.topic, config.brokers),
            ));
        }
        Ok(KafkaSink { name: name.to_owned(), config: config.clone(), key: None, tombstone: None })
    }

    /// Keys each record with `key(&record)` (used when `key = "record"`).
    pub fn keyed(mut self, key: impl Fn(&D) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// Changelog mode: a record for which `deletes(&record)` holds is sent as its key with a
    /// null value (a tombstone) instead of its serialised form.
    pub fn tombstones(mut self, deletes: impl Fn(&D) -> bool + Send + Sync + 'static) -> Self {
        self.tombstone = Some(Arc::new(deletes));
        self
    }
}

/// Collects the first delivery failure reported by librdkafka's callbacks.
#[derive(Default)]
pub struct Deliveries {
    failure: Mutex<Option<String>>,
}

impl Deliveries {
    fn fail(&self, reason: String) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(reason);
    }

    fn take(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::Fatal)) {
            self.fail(format!("fatal producer error: {reason}"));
        } else {
            tracing::warn!(error = %error, reason, "Kafka producer error; retrying");
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            use rdkafka::message::Message;
            self.fail(format!(
                "record to {}/{} not delivered: {error}",
                message.topic(),
                message.partition()
            ));
        }
    }
}

impl<D: Serialize + 'static> Sink<D> for KafkaSink<D> {
    type Writer = KafkaWriter<D>;

    fn name(&self) -> &str {
        &self.name
    }

    fn writer(&self, ctx: &SinkContext) -> Result<KafkaWriter<D>> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.config.brokers)
            .set("enable.idempotence", "true")
            .set("compression.type", &self.config.compression)
            .set("linger.ms", self.config.linger.0.as_millis().to_string())
            .set("log_level", "3");
        for (k, v) in &self.config.properties {
            c.set(k, v);
        }
        let producer = c
            .create_with_context(Deliveries::default())
            .map_err(|e| Error::Sink { sink: self.name.clone(), reason: e.to_string() })?;
        Ok(KafkaWriter {
            name: self.name.clone(),
            topic: self.config.topic.clone(),
            format: self.config.format,
            key: match self.config.key {
                KeyMode::Record => self.key.clone(),
                KeyMode::None => None,
            },
            tombstone: self.tombstone.clone(),
            producer: Some(producer),
            buf: Vec::new(),
            bytes: ctx.bytes_counter(),
            marker: PhantomData,
        })
    }
}

/// One worker's producer.
pub struct KafkaWriter<D> {
    name: String,
    topic: String,
    format: Format,
    key: Option<KeyFn<D>>,
    tombstone: Option<TombstoneFn<D>>,
    producer: Option<BaseProducer<Deliveries>>,
    buf: Vec<u8>,
    /// Keys and values handed to the producer.
    bytes: metrics::Counter,
    marker: PhantomData<fn(D)>,
}

impl<D> KafkaWriter<D> {
    fn error(&self, reason: impl std::fmt::Display) -> Error {
        Error::Sink { sink: self.name.clone(), reason: format!("topic `{}`: {reason}", self.topic) }
    }

    fn check(&self) -> Result<()> {
        match self.producer.as_ref().and_then(|p| p.context().take()) {
            Some(reason) => Err(self.error(reason)),
            None => Ok(()),
        }
    }
}

impl<D: Serialize + 'static> SinkWriter<D> for KafkaWriter<D> {
    fn write(&mut self, records: &mut Vec<D>) -> Result<()> {
        let Some(producer) = self.producer.as_ref() else { return Ok(()) };
        let mut bytes = 0;
        for record in records.drain(..) {
            self.buf.clear();
            let deletes = self.tombstone.as_ref().is_some_and(|t| t(&record));
            let encoded = match self.format {
                _ if deletes => Ok(()),
                Format::Json => {
                    serde_json::to_writer(&mut self.buf, &record).map_err(|e| e.to_string())
                }
                Format::Csv => {
                    let mut w =
                        csv::WriterBuilder::new().has_headers(false).from_writer(&mut self.buf);
                    w.serialize(&record)
                        .and_then(|()| w.flush().map_err(Into::into))
                        .map_err(|e| e.to_string())
                }
            };
            if let Err(e) = encoded {
                return Err(Error::Sink { sink: self.name.clone(), reason: e });
            }
            if self.format == Format::Csv && self.buf.last() == Some(&b'\n') {
                self.buf.pop();
            }
            let key = self.key.as_ref().and_then(|k| k(&record));
            bytes += key.as_ref().map_or(0, |k| k.len()) + if deletes { 0 } else { self.buf.len() };
            let mut message = BaseRecord::to(&self.topic);
            if !deletes {
                message = message.payload(&self.buf);
            }
            if let Some(key) = &key {
                message = message.key(key);
            }
            loop {
                match producer.send(message) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), m)) => {
                        // The producer's queue is full: serve deliveries, then retry.
                        message = m;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => {
                        return Err(Error::Sink {
                            sink: self.name.clone(),
                            reason: format!("topic `{}`: {e}", self.topic),
                        })
                    }
                }
            }
        }
        self.bytes.increment(bytes as u64);
        producer.poll(Duration::ZERO);
        self.check()
    }

    fn progress(&mut self, frontier: Option<Time>) -> Result<()> {
        if let Some(producer) = self.producer.as_ref() {
            producer.poll(Duration::ZERO);
            if frontier.is_none() {
                producer.flush(FLUSH_TIMEOUT).map_err(|e| self.error(format!("flush: {e}")))?;
                self.check()?;
                self.producer = None;
                return Ok(());
            }
        }
        self.check()
    }

    /// At least once (Tansu has no transactions): every record of the checkpoint is
    /// acknowledged by the broker before the checkpoint completes; records after the cut may
    /// be written again after a restore (the idempotent producer removes only retries).
    // todo(#7): a transactional mode (one transaction per checkpoint, committed on
    // `commit`, `transactional.id` per sink worker) for exactly-once; tested on the mock
    // cluster, since Tansu does not support transactions.
    fn prepare(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        if let Some(producer) = self.producer.as_ref() {
            producer.flush(FLUSH_TIMEOUT).map_err(|e| self.error(format!("flush: {e}")))?;
        }
        self.check()?;
        Ok(Vec::new())
    }

    fn restore(&mut self, _prepared: Vec<Vec<u8>>) -> Result<()> {
        Ok(())
    }
}
