//! The Kafka sink: serialised records, keyed by the job, through an idempotent producer or,
//! with `delivery = "exactly-once"`, through one Kafka transaction per checkpoint.
//!
//! A record that cannot be delivered after librdkafka's own retries fails the job: the error
//! is reported on the next write or at the end, never dropped. The producer is flushed when
//! the input ends.
//!
//! **Exactly once** (two-phase commit, as Flink's Kafka sink): each worker writes the records
//! up to a checkpoint's cut in a transaction of its own, `transactional.id` =
//! `<prefix>-<worker>-<n>` where `n` is one more than the checkpoint before it (or the run's
//! first checkpoint). At the checkpoint the transaction is flushed and its producer id and
//! epoch saved (phase one); once the checkpoint is complete everywhere it is committed (phase
//! two). Records after the cut go to the next transaction, with its own id, so a transaction
//! id is only ever used for one checkpoint's records. A restarted job commits every
//! transaction the restored checkpoint lists ([`super::txn::commit_prepared`]; committing a
//! committed one again is harmless), then opens, and so aborts, the ids the crashed run may
//! have left open after it (`n` = the checkpoint + 1 and + 2, for every old worker it takes
//! over).
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
use serde::{Deserialize, Serialize};
use tributary_runtime::checkpoint::{decode, encode};
use tributary_runtime::{ConfigError, Error, Result, Sink, SinkContext, SinkWriter, Time};

use super::config::{Delivery, KafkaSinkConfig, KeyMode};
use super::txn::{commit_prepared, Prepared};
use crate::error::ConnectorError;
use crate::format::{Encoder, Part};

/// How long the sink waits for every record to be acknowledged at the end.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long transactional calls (init, commit, abort) may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a prepared transaction may stay open at the broker (librdkafka's
/// `transaction.timeout.ms`, unless set in `properties`): a job down for longer loses the
/// output of its latest checkpoint (the restart reports it). Kafka's default cap.
const TXN_OPEN_FOR: &str = "900000";

/// The key of a record in Kafka.
pub type KeyFn<D> = Arc<dyn Fn(&D) -> Option<Vec<u8>> + Send + Sync>;

/// Whether a record deletes its key (is sent as a tombstone).
pub type TombstoneFn<D> = Arc<dyn Fn(&D) -> bool + Send + Sync>;

/// Writes records of type `D` to a Kafka topic.
pub struct KafkaSink<D> {
    name: String,
    config: KafkaSinkConfig,
    encoder: Encoder,
    /// With `key_format`: how keys are written.
    key_encoder: Option<Encoder>,
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
        if config.properties.contains_key("transactional.id") {
            return Err(ConfigError::new(
                "properties.transactional.id",
                "is set by the sink; use `transactional_id_prefix` with `delivery = \"exactly-once\"`",
            ));
        }
        if config.transactional_id_prefix.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::new("transactional_id_prefix", "must not be empty"));
        }
        if config.delivery == Delivery::ExactlyOnce
            && !super::txn::supported(&config.brokers)
                .map_err(|e| ConfigError::new("brokers", e.to_string()))?
        {
            return Err(ConfigError::new(
                "delivery",
                format!(
                    "\"exactly-once\" needs Kafka transactions, which the broker at {} does not \
                     offer (no EndTxn API): use \"at-least-once\"",
                    config.brokers
                ),
            ));
        }
        let encoder = Encoder::new(config.format, config.schema.as_deref(), &config.topic)?;
        let key_encoder = config
            .key_format
            .map(|format| {
                let target = (config.topic.as_str(), Part::Key);
                Encoder::for_part(format, config.key_schema.as_deref(), target)
            })
            .transpose()
            .map_err(crate::format::for_keys)?;
        if key_encoder.is_none() && config.key_schema.is_some() {
            return Err(ConfigError::new("key_schema", "set `key_format` too"));
        }
        Ok(KafkaSink {
            name: name.to_owned(),
            config: config.clone(),
            encoder,
            key_encoder,
            key: None,
            tombstone: None,
        })
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

/// Collects the first delivery failure reported by librdkafka's callbacks, and the producer id
/// and epoch of a transactional producer (from librdkafka's statistics).
#[derive(Default)]
pub struct Deliveries {
    failure: Mutex<Option<ConnectorError>>,
    producer: Mutex<Option<(i64, i16)>>,
}

impl Deliveries {
    fn fail(&self, error: ConnectorError) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(error);
    }

    fn take(&self) -> Option<ConnectorError> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn producer(&self) -> Option<(i64, i16)> {
        *self.producer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The part of librdkafka's statistics with the producer id (`eos`, see its STATISTICS.md).
#[derive(Deserialize)]
struct Stats {
    eos: Option<Eos>,
}

#[derive(Deserialize)]
struct Eos {
    idemp_state: String,
    producer_id: i64,
    producer_epoch: i16,
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::Fatal)) {
            // A new producer (another run) starts afresh.
            let reason = format!("fatal producer error: {reason}");
            self.fail(ConnectorError::Broker { reason, retryable: true });
        } else {
            tracing::warn!(error = %error, reason, "Kafka producer error; retrying");
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Ok(Stats { eos: Some(eos) }) = serde_json::from_slice(statistics) {
            if eos.idemp_state == "Assigned" && eos.producer_id >= 0 {
                let id = Some((eos.producer_id, eos.producer_epoch));
                *self.producer.lock().unwrap_or_else(|p| p.into_inner()) = id;
            }
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            use rdkafka::message::Message;
            let fenced = matches!(
                error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::InvalidProducerEpoch | RDKafkaErrorCode::ProducerFenced)
            );
            let why = if fenced {
                " (the producer is fenced: a newer run of the job took its transactional id \
                 over, so this run must stop)"
            } else {
                ""
            };
            let context =
                format!("record to {}/{} not delivered{why}", message.topic(), message.partition());
            self.fail(ConnectorError::kafka(context, error.clone()));
        }
    }
}

impl<D: Serialize + 'static> Sink<D> for KafkaSink<D> {
    type Writer = KafkaWriter<D>;

    fn name(&self) -> &str {
        &self.name
    }

    fn writer(&self, ctx: &SinkContext) -> Result<KafkaWriter<D>> {
        let exactly_once = self.config.delivery == Delivery::ExactlyOnce;
        if exactly_once && !ctx.checkpointed {
            return Err(Error::Config(ConfigError::new(
                "delivery",
                format!(
                    "sink `{}`: \"exactly-once\" commits a transaction per checkpoint: set \
                     runtime.checkpoint.dir, or use \"at-least-once\"",
                    self.name
                ),
            )));
        }
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.config.brokers)
            .set("enable.idempotence", "true")
            .set("compression.type", &self.config.compression)
            .set("linger.ms", self.config.linger.0.as_millis().to_string())
            .set("log_level", "3");
        if exactly_once {
            // The producer id and epoch of a transaction come from the statistics.
            client.set("statistics.interval.ms", "100");
            client.set("transaction.timeout.ms", TXN_OPEN_FOR);
        }
        for (k, v) in &self.config.properties {
            client.set(k, v);
        }
        let prefix = match &self.config.transactional_id_prefix {
            Some(prefix) => prefix.clone(),
            None => format!("{}-{}", ctx.job, self.name),
        };
        let mode = if exactly_once {
            Mode::ExactlyOnce
        } else {
            let producer = client
                .create_with_context(Deliveries::default())
                .map_err(|e| ConnectorError::kafka("producer", e).at_sink(&self.name))?;
            Mode::AtLeastOnce(Some(producer))
        };
        Ok(KafkaWriter {
            name: self.name.clone(),
            topic: self.config.topic.clone(),
            encoder: self.encoder.clone(),
            key_encoder: self.key_encoder.clone(),
            key: match self.config.key {
                KeyMode::Record => self.key.clone(),
                KeyMode::None => None,
            },
            tombstone: self.tombstone.clone(),
            buf: Vec::new(),
            bytes: ctx.bytes_counter(),
            marker: PhantomData,
            mode,
            txns: Transactions {
                client,
                prefix,
                worker: ctx.worker_index,
                workers: ctx.workers,
                open: None,
                prepared: Vec::new(),
                next: ctx.first_checkpoint.max(1),
            },
        })
    }
}

/// One worker's producer(s).
pub struct KafkaWriter<D> {
    name: String,
    topic: String,
    encoder: Encoder,
    key_encoder: Option<Encoder>,
    key: Option<KeyFn<D>>,
    tombstone: Option<TombstoneFn<D>>,
    buf: Vec<u8>,
    /// Keys and values handed to the producer.
    bytes: metrics::Counter,
    marker: PhantomData<fn(D)>,
    mode: Mode,
    /// The transactions of `delivery = "exactly-once"` (and the settings of any producer).
    txns: Transactions,
}

enum Mode {
    /// One idempotent producer for the whole run (`None` once the input has ended).
    AtLeastOnce(Option<BaseProducer<Deliveries>>),
    /// One transactional producer per checkpoint, in [`Transactions`].
    ExactlyOnce,
}

/// A worker's Kafka transactions.
struct Transactions {
    /// Producer settings, without `transactional.id`.
    client: ClientConfig,
    prefix: String,
    worker: usize,
    workers: usize,
    /// The transaction taking records, if any was written since the last checkpoint.
    open: Option<Transaction>,
    /// Transactions flushed for a checkpoint (its number first), awaiting its completion.
    prepared: Vec<(u64, Transaction)>,
    /// The number in the id of the next transaction.
    next: u64,
}

/// One transaction and the producer that runs it.
struct Transaction {
    id: String,
    producer: BaseProducer<Deliveries>,
}

/// The transactions that a Kafka sink's checkpoint state lists: those prepared for the
/// checkpoint and not known to be committed when it was taken. A restore commits them. For
/// tools and tests that inspect a checkpoint; empty for an at-least-once sink.
pub fn prepared_transactions(state: &[u8]) -> Result<Vec<Prepared>> {
    if state.is_empty() {
        return Ok(Vec::new());
    }
    Ok(decode::<Saved>(state)?.prepared)
}

/// What an exactly-once writer saves in a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    /// The worker that saved it.
    worker: usize,
    /// Transactions prepared and not known to be committed, oldest first.
    prepared: Vec<Prepared>,
}

impl Transactions {
    fn id(&self, worker: usize, n: u64) -> String {
        format!("{}-{worker}-{n}", self.prefix)
    }

    /// A producer that owns transactional id `id`: fences every older producer of that id
    /// and aborts the transaction such a producer left open.
    fn producer(&self, id: &str) -> Result<BaseProducer<Deliveries>, ConnectorError> {
        let failed = |e| ConnectorError::kafka(format!("transactional id `{id}`"), e);
        let producer: BaseProducer<Deliveries> = self
            .client
            .clone()
            .set("transactional.id", id)
            .create_with_context(Deliveries::default())
            .map_err(failed)?;
        producer.init_transactions(TXN_TIMEOUT).map_err(failed)?;
        Ok(producer)
    }

    /// The open transaction, begun now if there is none.
    fn open(&mut self) -> Result<&BaseProducer<Deliveries>, ConnectorError> {
        let txn = match self.open.take() {
            Some(txn) => txn,
            None => {
                let id = self.id(self.worker, self.next);
                let producer = self.producer(&id)?;
                let begun = producer.begin_transaction();
                begun.map_err(|e| ConnectorError::kafka(format!("`{id}`"), e))?;
                tracing::debug!(transaction = %id, "transaction begun");
                Transaction { id, producer }
            }
        };
        Ok(&self.open.insert(txn).producer)
    }

    /// Phase one: flushes the open transaction for checkpoint `checkpoint`; returns what
    /// commits every transaction not yet known to be committed.
    fn prepare(&mut self, checkpoint: u64) -> Result<Saved, ConnectorError> {
        if let Some(txn) = self.open.take() {
            let flushed = txn.producer.flush(FLUSH_TIMEOUT);
            flushed.map_err(|e| ConnectorError::kafka(format!("`{}` flush", txn.id), e))?;
            if let Some(error) = txn.producer.context().take() {
                return Err(error);
            }
            self.prepared.push((checkpoint, txn));
        }
        self.next = checkpoint + 1;
        let prepared = self.prepared.iter().map(|(_, t)| t.prepared()).collect::<Result<_, _>>()?;
        Ok(Saved { worker: self.worker, prepared })
    }

    /// Phase two: commits the transactions of checkpoints up to `checkpoint`.
    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let done = self.prepared.iter().take_while(|(c, _)| *c <= checkpoint).count();
        for (c, txn) in self.prepared.drain(..done) {
            let committed = txn.producer.commit_transaction(TXN_TIMEOUT);
            committed.map_err(|e| ConnectorError::kafka(format!("commit of `{}`", txn.id), e))?;
            tracing::debug!(transaction = %txn.id, checkpoint = c, "transaction committed");
        }
        Ok(())
    }

    /// Aborts every transaction (the job stops without a last checkpoint; a restart writes
    /// their records again).
    fn abort(&mut self) {
        let open = self.open.take().into_iter();
        for txn in self.prepared.drain(..).map(|(_, t)| t).chain(open) {
            if let Err(e) = txn.producer.abort_transaction(Duration::from_secs(5)) {
                tracing::warn!(transaction = %txn.id, error = %e, "abort failed; the broker aborts it after transaction.timeout.ms, or a restart does");
            }
        }
    }

    /// Commits what the restored checkpoint's workers prepared (those this worker takes over)
    /// and, with `abort_later`, aborts whatever they may have left open after it.
    fn restore(
        &mut self,
        brokers: &str,
        states: Vec<Vec<u8>>,
        abort_later: bool,
    ) -> Result<(), ConnectorError> {
        for state in states.iter().filter(|s| !s.is_empty()) {
            let saved: Saved = decode(state).map_err(|e| ConnectorError::Restore(e.to_string()))?;
            if saved.worker % self.workers != self.worker {
                continue;
            }
            for txn in &saved.prepared {
                commit_prepared(brokers, txn)?;
                tracing::info!(transaction = %txn.id, "prepared transaction committed on restore");
            }
            // A run restored from this checkpoint names its transactions `next` and, once it
            // has prepared that one, `next + 1`.
            for n in [self.next, self.next + 1].into_iter().filter(|_| abort_later) {
                drop(self.producer(&self.id(saved.worker, n))?);
            }
        }
        Ok(())
    }
}

impl Transaction {
    /// Its id, producer id and epoch, waiting for librdkafka's statistics to tell them.
    fn prepared(&self) -> Result<Prepared, ConnectorError> {
        let deadline = std::time::Instant::now() + TXN_TIMEOUT;
        loop {
            if let Some((producer_id, epoch)) = self.producer.context().producer() {
                return Ok(Prepared { id: self.id.clone(), producer_id, epoch });
            }
            if std::time::Instant::now() > deadline {
                let reason = format!("`{}`: librdkafka reported no producer id", self.id);
                return Err(ConnectorError::Broker { reason, retryable: true });
            }
            self.producer.poll(Duration::from_millis(20));
        }
    }
}

impl<D> KafkaWriter<D> {
    /// The runtime's error for this sink failing with `error`.
    fn error(&self, error: ConnectorError) -> Error {
        error.at_sink(&self.name)
    }

    /// Every producer with records in flight.
    fn producers(&self) -> impl Iterator<Item = &BaseProducer<Deliveries>> {
        let single = match &self.mode {
            Mode::AtLeastOnce(p) => p.as_ref(),
            Mode::ExactlyOnce => None,
        };
        single.into_iter().chain(self.txns.open.as_ref().map(|t| &t.producer))
    }

    fn check(&self) -> Result<()> {
        match self.producers().find_map(|p| p.context().take()) {
            Some(reason) => Err(self.error(reason)),
            None => Ok(()),
        }
    }
}

impl<D: Serialize + 'static> SinkWriter<D> for KafkaWriter<D> {
    fn write(&mut self, records: &mut Vec<D>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let KafkaWriter {
            name, topic, encoder, key_encoder, key, tombstone, buf, mode, txns, ..
        } = self;
        let mut bytes = 0;
        let result = (|| {
            // The producer the records go to.
            let producer = match mode {
                Mode::AtLeastOnce(producer) => producer.as_ref(),
                Mode::ExactlyOnce => Some(txns.open().map_err(|e| e.at_sink(name))?),
            };
            let Some(producer) = producer else { return Ok(()) };
            for record in records.drain(..) {
                buf.clear();
                let deletes = tombstone.as_ref().is_some_and(|t| t(&record));
                if !deletes {
                    if let Err(reason) = encoder.encode(&record, buf) {
                        return Err(
                            ConnectorError::Encode { context: "record", reason }.at_sink(name)
                        );
                    }
                }
                let key = key.as_ref().and_then(|k| k(&record));
                let key = match (key, &*key_encoder) {
                    (Some(key), Some(key_encoder)) => {
                        let failed = |reason| {
                            ConnectorError::Encode { context: "key", reason }.at_sink(name)
                        };
                        let text = String::from_utf8(key)
                            .map_err(|e| failed(format!("not UTF-8 text: {e}")))?;
                        let mut encoded = Vec::new();
                        key_encoder.encode(&text, &mut encoded).map_err(failed)?;
                        Some(encoded)
                    }
                    (key, _) => key,
                };
                bytes += key.as_ref().map_or(0, |k| k.len()) + if deletes { 0 } else { buf.len() };
                let mut message = BaseRecord::to(topic);
                if !deletes {
                    message = message.payload(&*buf);
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
                            let context = format!("topic `{topic}`");
                            return Err(ConnectorError::kafka(context, e).at_sink(name));
                        }
                    }
                }
            }
            producer.poll(Duration::ZERO);
            Ok(())
        })();
        self.bytes.increment(bytes as u64);
        result?;
        self.check()
    }

    fn progress(&mut self, frontier: Option<Time>) -> Result<()> {
        for producer in self.producers() {
            producer.poll(Duration::ZERO);
        }
        if let (Mode::AtLeastOnce(producer @ Some(_)), None) = (&mut self.mode, frontier) {
            if let Some(p) = producer.take() {
                let topic = &self.topic;
                let flushed = p.flush(FLUSH_TIMEOUT);
                let flushed =
                    flushed.map_err(|e| ConnectorError::kafka(format!("topic `{topic}` flush"), e));
                let failure = p.context().take();
                if let Some(error) = flushed.err().or(failure) {
                    return Err(self.error(error));
                }
            }
        }
        self.check()
    }

    /// At least once: every record of the checkpoint is acknowledged by the broker before the
    /// checkpoint completes; records after the cut may be written again after a restore (the
    /// idempotent producer removes only retries). Exactly once: phase one of the two-phase
    /// commit (see the module documentation).
    fn prepare(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        match &self.mode {
            Mode::AtLeastOnce(producer) => {
                if let Some(producer) = producer {
                    let flushed = producer.flush(FLUSH_TIMEOUT);
                    let topic = &self.topic;
                    flushed.map_err(|e| {
                        self.error(ConnectorError::kafka(format!("topic `{topic}` flush"), e))
                    })?;
                }
                self.check()?;
                Ok(Vec::new())
            }
            Mode::ExactlyOnce => {
                let saved = self.txns.prepare(checkpoint).map_err(|e| self.error(e))?;
                encode(&saved)
            }
        }
    }

    fn commit(&mut self, checkpoint: u64) -> Result<()> {
        self.txns.commit(checkpoint).map_err(|e| self.error(e))
    }

    /// Commits the transactions the restored checkpoint lists (in either mode: a job may
    /// switch from exactly once to at least once) and, exactly once, aborts the ones a crashed
    /// run may have left open after it.
    fn restore(&mut self, prepared: Vec<Vec<u8>>) -> Result<()> {
        let brokers = self.txns.client.get("bootstrap.servers").unwrap_or_default().to_owned();
        let exactly_once = matches!(self.mode, Mode::ExactlyOnce);
        let result = self.txns.restore(&brokers, prepared, exactly_once);
        result.map_err(|e| self.error(e))
    }

    fn discard(&mut self) {
        self.txns.abort();
    }
}

#[cfg(test)]
mod tests {
    //! Faults injected with librdkafka's mock cluster. Everything else about transactions is
    //! tested against Apache Kafka, read back by `read_committed` consumers
    //! (`tests/tests/connectors_kafka_transactions.rs`).

    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;

    #[test]
    fn a_failed_commit_fails_the_sink() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("out", 2, 1).expect("topic");
        let mut config = KafkaSinkConfig::new(mock.bootstrap_servers(), "out");
        config.delivery = Delivery::ExactlyOnce;
        let ctx = SinkContext {
            name: "out".into(),
            worker_index: 0,
            workers: 1,
            checkpointed: true,
            job: "job".into(),
            first_checkpoint: 1,
        };
        let sink = KafkaSink::new("out", &config).expect("sink");
        let mut w: KafkaWriter<u64> = sink.writer(&ctx).expect("writer");
        w.write(&mut vec![1, 2]).expect("write");
        w.prepare(1).expect("prepare");
        mock.request_errors(
            RDKafkaApiKey::EndTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TXN_STATE],
        );
        let error = w.commit(1).expect_err("the commit fails").to_string();
        assert!(error.contains("commit of `job-out-0-1`"), "{error}");
    }
}
