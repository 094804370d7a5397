//! The Kafka source: every partition of the topics, spread over every worker, read with
//! per-partition watermarks.
//!
//! Partitions are assigned by the job, not by a consumer-group rebalance: partition `p` of the
//! `i`-th topic goes to worker `(p + i) % workers`, so the assignment is deterministic, even
//! within a topic, and stays put when partitions are added. The job owns its offsets; it
//! commits them to its consumer group only so that lag tools and `start = "committed"` work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tributary_runtime::checkpoint::{decode, encode};
use tributary_runtime::source::Cut;
use tributary_runtime::time::millis;
use tributary_runtime::{
    ConfigError, Data, DeadLetter, Emitter, EventTime, Poll, Result, Source, SourceContext,
    SourceReader, Time, Timestamped,
};

use super::config::{KafkaSourceConfig, StartAt};
use crate::error::ConnectorError;
use crate::format::{DecodeError, ProstDecoder, ValueDecoder};
use crate::rate::Rate;
use crate::replay::Replay;

/// How long start-up and metadata requests may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// librdkafka's `fetch.queue.backoff.ms` for every Kafka source (see [`client_config`]).
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";
/// How long a backlog check of a quiet partition may take.
const IDLE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Turns a Kafka record into a `D`. Each reader (worker) decodes with its own clone of the
/// source's decoder (see [`KafkaSource::with_decoder`]).
pub trait Decode<D>: Send + 'static {
    /// Decodes one record; [`DecodeError::Invalid`] says why it is not a `D` (a dead
    /// letter), [`DecodeError::Unavailable`] stops the job.
    fn decode(&mut self, record: RawRecord<'_>) -> std::result::Result<D, DecodeError>;
}

/// A Kafka record as read, before decoding.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The record key.
    pub key: Option<&'a [u8]>,
    /// The record value.
    pub payload: Option<&'a [u8]>,
    /// The Kafka timestamp in milliseconds, if the record has one.
    pub timestamp: Option<EventTime>,
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Decodes record values in any [`Format`](crate::Format) (JSON, CSV, Avro) into serde
/// records; the key is not read.
#[derive(Clone)]
pub struct SerdeDecoder(pub ValueDecoder);

impl<D: DeserializeOwned> Decode<D> for SerdeDecoder {
    #[inline]
    fn decode(&mut self, record: RawRecord<'_>) -> std::result::Result<D, DecodeError> {
        match record.payload {
            Some(p) if !p.is_empty() => self.0.decode(p),
            _ => Err("empty value".into()),
        }
    }
}

impl<M: prost::Message + prost::Name + Default + 'static> Decode<M> for ProstDecoder<M> {
    #[inline]
    fn decode(&mut self, record: RawRecord<'_>) -> std::result::Result<M, DecodeError> {
        match record.payload {
            Some(p) if !p.is_empty() => ProstDecoder::decode(self, p),
            _ => Err("empty value".into()),
        }
    }
}

/// One record of a changelog topic (a compacted topic): the key and its new value, or `None`
/// for a tombstone (a record without a value), which deletes the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangelogRecord<D> {
    /// The record key, as UTF-8.
    pub key: String,
    /// The decoded value; `None` for a tombstone.
    pub value: Option<D>,
    /// The Kafka timestamp, milliseconds since the epoch: when the change takes effect.
    pub ts: EventTime,
}

impl<D> Timestamped for ChangelogRecord<D> {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

/// Decodes a changelog topic into [`ChangelogRecord`]s: the key as UTF-8 (or in the source's
/// `key_format`), the value in the given format, a record without a value as a deletion, the
/// Kafka timestamp as event time. A record without a key, with a key that is not UTF-8 or does
/// not decode, without a timestamp or with a value that does not decode is an error (a dead
/// letter).
#[derive(Clone)]
pub struct ChangelogDecoder {
    value: ValueDecoder,
    /// `None`: keys are UTF-8 text.
    key: Option<ValueDecoder>,
}

impl ChangelogDecoder {
    /// The decoder of a source's `format`/`schema` and `key_format`/`key_schema` (config keys
    /// relative to the source's table).
    pub fn new(config: &KafkaSourceConfig) -> Result<Self, ConfigError> {
        let value = ValueDecoder::new(config.format, config.schema.as_deref())?;
        let key = config
            .key_format
            .map(|format| ValueDecoder::new(format, config.key_schema.as_deref()))
            .transpose()
            .map_err(crate::format::for_keys)?;
        if key.is_none() && config.key_schema.is_some() {
            return Err(ConfigError::new("key_schema", "set `key_format` too"));
        }
        Ok(ChangelogDecoder { value, key })
    }

    /// A decoder of values with `value`, of keys as UTF-8 text.
    pub fn utf8_keys(value: ValueDecoder) -> Self {
        ChangelogDecoder { value, key: None }
    }

    fn key(&mut self, key: &[u8]) -> std::result::Result<String, DecodeError> {
        let Some(decoder) = &mut self.key else {
            let key = std::str::from_utf8(key).map_err(|e| format!("key is not UTF-8: {e}"))?;
            return Ok(key.to_owned());
        };
        let with_context = |e: DecodeError| match e {
            DecodeError::Invalid(reason) => DecodeError::Invalid(format!("key: {reason}")),
            unavailable => unavailable,
        };
        match decoder.decode::<serde_json::Value>(key).map_err(with_context)? {
            serde_json::Value::String(text) => Ok(text),
            other => Ok(other.to_string()),
        }
    }
}

impl<D: DeserializeOwned> Decode<ChangelogRecord<D>> for ChangelogDecoder {
    fn decode(
        &mut self,
        record: RawRecord<'_>,
    ) -> std::result::Result<ChangelogRecord<D>, DecodeError> {
        let key = record.key.ok_or("a changelog record needs a key")?;
        let key = self.key(key)?;
        let ts = record.timestamp.ok_or("a changelog record needs a Kafka timestamp")?;
        let value = match record.payload {
            None | Some([]) => None,
            Some(value) => Some(self.value.decode(value)?),
        };
        Ok(ChangelogRecord { key, value, ts })
    }
}

/// A Kafka record kept as bytes, with the Kafka timestamp as its event time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub payload: Vec<u8>,
    /// Kafka timestamp, milliseconds since the epoch (0 if the record has none).
    pub timestamp: EventTime,
}

impl Timestamped for KafkaRecord {
    fn event_time(&self) -> EventTime {
        self.timestamp
    }
}

/// Keeps records as [`KafkaRecord`]s.
#[derive(Debug, Clone, Copy)]
pub struct RawDecoder;

impl Decode<KafkaRecord> for RawDecoder {
    fn decode(&mut self, r: RawRecord<'_>) -> std::result::Result<KafkaRecord, DecodeError> {
        Ok(KafkaRecord {
            topic: r.topic.to_owned(),
            partition: r.partition,
            offset: r.offset,
            key: r.key.map(<[u8]>::to_vec),
            payload: r.payload.unwrap_or_default().to_vec(),
            timestamp: r.timestamp.unwrap_or(0),
        })
    }
}

/// Reads records of type `D` from Kafka.
pub struct KafkaSource<D> {
    name: String,
    config: Arc<KafkaSourceConfig>,
    /// Partition counts per topic at start-up.
    partitions: Vec<i32>,
    start_time: Option<EventTime>,
    /// Makes each reader's decoder.
    decoder: Arc<dyn Fn() -> Box<dyn Decode<D>> + Send + Sync>,
}

impl<D: DeserializeOwned> KafkaSource<D> {
    /// A source decoding values in the configured format (JSON, CSV, Avro or Protobuf); it
    /// does not read keys, so a `key_format` is refused (tables read them:
    /// [`ChangelogDecoder`]).
    pub fn new(name: &str, config: &KafkaSourceConfig) -> Result<Self, ConfigError> {
        if config.key_format.is_some() || config.key_schema.is_some() {
            return Err(ConfigError::new(
                "key_format",
                "this source reads record values only; keys are read by table (changelog) sources",
            ));
        }
        let decoder = ValueDecoder::new(config.format, config.schema.as_deref())?;
        Self::with_decoder(name, config, SerdeDecoder(decoder))
    }
}

impl<D> KafkaSource<D> {
    /// A source with its own decoder, cloned for each reader. Checks the settings and that
    /// every topic exists; keys are relative to the source's table.
    pub fn with_decoder(
        name: &str,
        config: &KafkaSourceConfig,
        decoder: impl Decode<D> + Clone + Sync,
    ) -> Result<Self, ConfigError> {
        if config.topics.is_empty() {
            return Err(ConfigError::new("topics", "name at least one topic"));
        }
        if config.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(ConfigError::new("rate", "must be a positive number of records a second"));
        }
        let start_time = config.start.timestamp()?;
        let consumer: BaseConsumer = client_config(config, &config.group_id)
            .create()
            .map_err(|e| ConfigError::new("properties", e.to_string()))?;
        let mut partitions = Vec::new();
        for topic in &config.topics {
            partitions.push(partition_count(&consumer, topic).map_err(|reason| {
                ConfigError::new("topics", format!("`{topic}` on {}: {reason}", config.brokers))
            })?);
        }
        Ok(KafkaSource {
            name: name.to_owned(),
            config: Arc::new(config.clone()),
            partitions,
            start_time,
            decoder: Arc::new(move || Box::new(decoder.clone())),
        })
    }
}

fn client_config(config: &KafkaSourceConfig, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        // librdkafka waits this long before fetching again for a partition whose local queue
        // was full (1 s by default): a reader slower than the fetcher then drains the queue
        // and idles. At 10 ms a full queue (`queued.min.messages`, 100 000 records) always
        // lasts longer than the wait: 3x the records/s of the default in the Kafka bench.
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .set("log_level", "3");
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}

/// The consumer context of a reader: keeps the low and high watermarks (the first offset and
/// the offset after the last record) of each partition from librdkafka's statistics,
/// delivered during polls.
#[derive(Default)]
struct HighWatermarks(std::sync::Mutex<HashMap<(String, i32), (i64, i64)>>);

impl rdkafka::ClientContext for HighWatermarks {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut high = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (name, topic) in statistics.topics {
            for (partition, p) in topic.partitions {
                // `-1` (unknown) until the first fetch response; partition -1 is internal.
                if partition >= 0 && p.hi_offset >= 0 {
                    high.insert((name.clone(), partition), (p.lo_offset.max(0), p.hi_offset));
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for HighWatermarks {}

/// The number of partitions of `topic`, or why it cannot be had.
fn partition_count<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> std::result::Result<i32, ConnectorError> {
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT);
    let metadata = metadata.map_err(|e| ConnectorError::kafka("metadata", e))?;
    let missing = |reason: &str| ConnectorError::Broker { reason: reason.into(), retryable: false };
    let t = metadata.topics().first().ok_or_else(|| missing("no metadata returned"))?;
    if let Some(e) = t.error() {
        let code = rdkafka::error::RDKafkaErrorCode::from(e);
        return Err(ConnectorError::kafka("metadata", KafkaError::MetadataFetch(code)));
    }
    if t.partitions().is_empty() {
        return Err(missing("the topic does not exist or has no partitions"));
    }
    Ok(t.partitions().len() as i32)
}

/// Whether partition `p` of the `topic_index`-th topic belongs to `worker`.
fn owns(topic_index: usize, p: i32, worker: usize, workers: usize) -> bool {
    (p as usize + topic_index) % workers == worker
}

impl<D: Data + Timestamped> Source for KafkaSource<D> {
    type Item = D;
    type Reader = KafkaReader<D>;

    fn name(&self) -> &str {
        &self.name
    }

    fn reader(&self, ctx: &SourceContext) -> Result<KafkaReader<D>> {
        let fail = |e: ConnectorError| e.at_source(&self.name);
        let consumer = client_config(&self.config, &self.config.group_id)
            // librdkafka's statistics carry each partition's high watermark (for the lag).
            .set("statistics.interval.ms", "1000")
            .create_with_context(HighWatermarks::default())
            .map_err(|e| fail(ConnectorError::kafka("consumer", e)))?;
        let mut reader = KafkaReader {
            name: self.name.clone(),
            consumer,
            decoder: (self.decoder)(),
            config: Arc::clone(&self.config),
            worker: ctx.worker_index,
            workers: ctx.workers,
            known: vec![0; self.config.topics.len()],
            parts: Vec::new(),
            lateness: self.config.max_out_of_orderness.map_or(0, |d| millis(d.0)),
            last_discovery: Instant::now(),
            last_commit: Instant::now(),
            committed: Vec::new(),
            checkpointed: ctx.checkpointed,
            to_commit: Vec::new(),
            unassigned: TopicPartitionList::new(),
            rate: self.config.rate.map(|r| Rate::new(r / ctx.workers as f64)),
        };
        let start = match (&self.config.start, self.start_time) {
            (_, Some(t)) => Start::Time(t),
            (StartAt::Latest, _) => Start::Latest,
            (StartAt::Committed, _) => Start::Committed,
            _ => Start::Earliest,
        };
        for (i, count) in self.partitions.iter().enumerate() {
            reader.add_partitions(i, *count, start).map_err(fail)?;
        }
        Ok(reader)
    }
}

#[derive(Debug, Clone, Copy)]
enum Start {
    Earliest,
    Latest,
    Committed,
    Time(EventTime),
}

/// What a reader knows of one of its partitions.
struct Part {
    topic: usize,
    partition: i32,
    /// The offset after the last record read.
    next: Option<i64>,
    /// Bounded jobs: the offset at which the partition ends.
    end: Option<i64>,
    /// The largest event time read from the partition: its watermark is this less
    /// `max_out_of_orderness`, and a record's timely time follows from it.
    max_event_time: Option<EventTime>,
    last_record: Instant,
    /// Quiet for the idle timeout and without a backlog at the last check.
    idle: bool,
    /// When the backlog was last checked.
    idle_checked: Option<Instant>,
    /// The first offset emitted at or after a pending checkpoint's cut, and the partition's
    /// largest event time before it.
    after_cut: Option<(i64, Option<EventTime>)>,
    /// After a restore: the spans re-read that runs before read already, by offset.
    replay: Replay<i64>,
}

/// One partition's position in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    topic: String,
    partition: i32,
    /// Where a restart reads from.
    from: i64,
    /// Records from `from` up to here were read before the cut and are filtered on replay.
    next: i64,
    /// Spans past `next` that the run taking this checkpoint was still re-reading after a
    /// restore of its own: `(until, cut)`, by `until`. A record below `until` (and at or after
    /// the previous span's) was read before a checkpoint cut at `cut`.
    older: Vec<(i64, Time)>,
    /// The partition's largest event time before `from`: a restart re-reads from there with
    /// the watermark the crashed run had, so every record gets the same timely time.
    seen: Option<EventTime>,
}

/// One worker's share of a Kafka source.
pub struct KafkaReader<D> {
    name: String,
    consumer: BaseConsumer<HighWatermarks>,
    decoder: Box<dyn Decode<D>>,
    config: Arc<KafkaSourceConfig>,
    worker: usize,
    workers: usize,
    /// Partitions known per topic.
    known: Vec<i32>,
    parts: Vec<Part>,
    lateness: u64,
    last_discovery: Instant,
    last_commit: Instant,
    /// Offsets as last committed, per part.
    committed: Vec<Option<i64>>,
    /// With checkpoints, offsets are committed to the group only once a checkpoint holding
    /// them is complete.
    checkpointed: bool,
    /// Positions of checkpoints not yet known complete.
    to_commit: Vec<(u64, Vec<Position>)>,
    /// Partitions added but not assigned to the consumer yet, at the offsets to read from.
    /// Assigned at the next poll, so that a restore can move them first: assigning and then
    /// re-assigning elsewhere lets librdkafka deliver records fetched for the first offset.
    unassigned: TopicPartitionList,
    /// The worker's share of `rate`.
    rate: Option<Rate>,
}

impl<D> KafkaReader<D> {
    /// Assigns this worker's partitions among `known..count` of topic `i`.
    fn add_partitions(
        &mut self,
        i: usize,
        count: i32,
        start: Start,
    ) -> std::result::Result<(), ConnectorError> {
        let topic = self.config.topics[i].clone();
        let mut tpl = TopicPartitionList::new();
        for p in self.known[i]..count {
            if owns(i, p, self.worker, self.workers) {
                tpl.add_partition_offset(&topic, p, Offset::Beginning)
                    .map_err(|e| ConnectorError::kafka(format!("topic `{topic}`"), e))?;
            }
        }
        self.known[i] = count;
        if tpl.count() == 0 {
            return Ok(());
        }
        let tpl = match start {
            Start::Earliest => tpl,
            Start::Latest => {
                let mut t = tpl.clone();
                t.set_all_offsets(Offset::End)
                    .map_err(|e| ConnectorError::kafka(format!("topic `{topic}`"), e))?;
                t
            }
            Start::Committed => {
                let mut t =
                    self.consumer.committed_offsets(tpl, METADATA_TIMEOUT).map_err(|e| {
                        ConnectorError::kafka(
                            format!("topic `{topic}`: reading committed offsets"),
                            e,
                        )
                    })?;
                for e in t.clone().elements() {
                    if !matches!(e.offset(), Offset::Offset(_)) {
                        t.set_partition_offset(e.topic(), e.partition(), Offset::Beginning)
                            .map_err(|e| ConnectorError::kafka(format!("topic `{topic}`"), e))?;
                    }
                }
                t
            }
            Start::Time(ms) => {
                let mut t = tpl.clone();
                t.set_all_offsets(Offset::Offset(ms as i64))
                    .map_err(|e| ConnectorError::kafka(format!("topic `{topic}`"), e))?;
                self.consumer.offsets_for_times(t, METADATA_TIMEOUT).map_err(|e| {
                    ConnectorError::kafka(format!("topic `{topic}`: offsets for the start time"), e)
                })?
            }
        };
        let now = Instant::now();
        for e in tpl.elements() {
            let mut next = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            let end = if self.config.bounded {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(&topic, e.partition(), METADATA_TIMEOUT)
                    .map_err(|err| {
                        ConnectorError::kafka(format!("{topic}/{}", e.partition()), err)
                    })?;
                // A bounded read must know where it starts to know when it is done.
                next = Some(match e.offset() {
                    Offset::Offset(o) => o.clamp(low, high),
                    Offset::End => high,
                    _ => low,
                });
                Some(high)
            } else {
                None
            };
            tracing::info!(source = %self.name, worker = self.worker, topic = %topic,
                partition = e.partition(), offset = ?e.offset(), end = ?end, "partition assigned");
            self.parts.push(Part {
                topic: i,
                partition: e.partition(),
                next,
                end,
                max_event_time: None,
                last_record: now,
                idle: false,
                idle_checked: None,
                after_cut: None,
                replay: Replay::default(),
            });
            self.committed.push(None);
        }
        for e in tpl.elements() {
            self.unassigned
                .add_partition_offset(e.topic(), e.partition(), e.offset())
                .map_err(|e| ConnectorError::kafka(format!("topic `{topic}`"), e))?;
        }
        Ok(())
    }

    /// Hands the partitions added since the last poll to the consumer.
    fn assign_added(&mut self) -> Result<()> {
        if self.unassigned.count() == 0 {
            return Ok(());
        }
        let tpl = std::mem::replace(&mut self.unassigned, TopicPartitionList::new());
        let assigned = self.consumer.incremental_assign(&tpl);
        assigned
            .map_err(|e| ConnectorError::kafka("cannot assign partitions", e).at_source(&self.name))
    }

    fn part(&mut self, topic: &str, partition: i32) -> Option<&mut Part> {
        let i = self.config.topics.iter().position(|t| t == topic)?;
        self.parts.iter_mut().find(|p| p.topic == i && p.partition == partition)
    }

    fn finished(&self, part: &Part) -> bool {
        matches!((part.end, part.next), (Some(end), Some(next)) if next >= end)
    }

    /// Whether quiet part `i` is idle: it has no backlog (a partition whose records the
    /// consumer has not reached yet is busy, however long it has been quiet). The broker is
    /// asked at most once per idle timeout.
    fn is_idle(&mut self, i: usize, now: Instant) -> bool {
        let interval = self.config.partition_idle_timeout.0;
        let part = &self.parts[i];
        if part.idle_checked.is_some_and(|at| now - at < interval) {
            return part.idle;
        }
        let topic = &self.config.topics[part.topic];
        let idle = match self.consumer.fetch_watermarks(topic, part.partition, IDLE_CHECK_TIMEOUT) {
            Ok((low, high)) => high <= part.next.unwrap_or(low),
            Err(e) => {
                tracing::debug!(source = %self.name, error = %e, "backlog check failed");
                false
            }
        };
        let part = &mut self.parts[i];
        part.idle = idle;
        part.idle_checked = Some(now);
        if idle {
            tracing::debug!(source = %self.name, topic = %topic, partition = part.partition,
                "partition idle");
        }
        idle
    }

    /// New partitions of the topics are read from their beginning.
    fn discover(&mut self) -> std::result::Result<(), ConnectorError> {
        for i in 0..self.config.topics.len() {
            let count = partition_count(&self.consumer, &self.config.topics[i])?;
            if count > self.known[i] {
                tracing::info!(source = %self.name, topic = %self.config.topics[i],
                    partitions = count, "new partitions");
                self.add_partitions(i, count, Start::Earliest)?;
            }
        }
        Ok(())
    }

    /// Commits the offsets read since the last commit (asynchronously).
    fn commit(&mut self) {
        let mut tpl = TopicPartitionList::new();
        for (part, committed) in self.parts.iter().zip(self.committed.iter_mut()) {
            if let Some(next) = part.next {
                if *committed != Some(next) {
                    let topic = &self.config.topics[part.topic];
                    if tpl.add_partition_offset(topic, part.partition, Offset::Offset(next)).is_ok()
                    {
                        *committed = Some(next);
                    }
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(source = %self.name, error = %e, "offset commit failed; will retry");
            }
        }
    }
}

impl<D: Data + Timestamped> SourceReader for KafkaReader<D> {
    type Item = D;

    fn backlog(&mut self) -> Option<Vec<(String, u64)>> {
        let high = self.consumer.context().0.lock().unwrap_or_else(|p| p.into_inner());
        let backlog = self
            .parts
            .iter()
            .filter_map(|part| {
                let topic = &self.config.topics[part.topic];
                let (low, high) = *high.get(&(topic.clone(), part.partition))?;
                let lag = high.saturating_sub(part.next.unwrap_or(low)).max(0) as u64;
                Some((format!("{topic}/{}", part.partition), lag))
            })
            .collect();
        Some(backlog)
    }

    fn poll(&mut self, out: &mut Emitter<'_, D>) -> Result<Poll> {
        let now = Instant::now();
        if now - self.last_discovery >= self.config.partition_discovery.0 {
            self.last_discovery = now;
            if let Err(e) = self.discover() {
                tracing::warn!(source = %self.name, error = %e, "partition discovery failed; will retry");
            }
        }
        self.assign_added()?;
        let budget = match self.rate.as_mut().map(Rate::allowance) {
            Some(Err(wait)) => return Ok(Poll::Pending(wait)),
            Some(Ok(n)) => n,
            None => u64::MAX,
        };
        let mut read = 0;
        let mut last = None;
        while !out.is_full() && read < budget {
            let message = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                    return Err(ConnectorError::kafka("consumer", e).at_source(&self.name));
                }
                Some(Err(e)) => {
                    // Broker down, network: librdkafka reconnects and resumes by itself.
                    tracing::warn!(source = %self.name, error = %e, "consumer error; retrying");
                    break;
                }
            };
            read += 1;
            out.add_bytes(message.key_len() + message.payload_len());
            let raw = RawRecord {
                key: message.key(),
                payload: message.payload(),
                timestamp: message.timestamp().to_millis().and_then(|t| u64::try_from(t).ok()),
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
            };
            let (topic, partition, offset) = (raw.topic, raw.partition, raw.offset);
            // The record's partition: mostly the previous record's (a fetch returns a run of
            // records per partition).
            let ours = |p: &Part| p.partition == partition && self.config.topics[p.topic] == topic;
            let found = last.filter(|&k| ours(&self.parts[k]));
            let Some(k) = found.or_else(|| self.parts.iter().position(ours)) else { continue };
            last = Some(k);
            let part = &mut self.parts[k];
            if part.next.is_some_and(|next| offset < next) {
                // Fetched before a seek (a restore) or a pause: read already, or not ours to
                // read. Kafka offsets only grow within a partition.
                tracing::debug!(source = %self.name, topic = %topic, partition, offset,
                    "record before the partition's position skipped");
                continue;
            }
            let decoded = self.decoder.decode(raw);
            // Re-read after a restore: only what the checkpoint did not hold.
            let replay = part.replay.cut_at(offset);
            match decoded {
                Ok(record) => {
                    let t = record.event_time();
                    let seen = part.max_event_time;
                    let watermark = seen.map_or(0, |m| m.saturating_sub(self.lateness));
                    part.max_event_time = Some(seen.map_or(t, |m| m.max(t)));
                    if replay.is_none_or(|cut| cut.includes_in(watermark, t))
                        && out.emit_in(watermark, t, record)
                        && part.after_cut.is_none()
                    {
                        part.after_cut = Some((offset, seen));
                    }
                }
                Err(DecodeError::Unavailable(reason)) => {
                    // The schema registry does not answer: a later run may find it.
                    let reason = format!("{topic}/{partition}@{offset}: {reason}");
                    return Err(
                        ConnectorError::Broker { reason, retryable: true }.at_source(&self.name)
                    );
                }
                // Dead-lettered before the checkpoint already.
                Err(_) if replay.is_some() => {}
                Err(DecodeError::Invalid(reason)) => out.dead_letter(DeadLetter::new(
                    self.name.as_str(),
                    format!("{topic}/{partition}@{offset}"),
                    reason,
                    raw.payload.unwrap_or_default(),
                )),
            }
            part.next = Some(offset + 1);
            part.last_record = now;
            part.idle = false;
        }
        if let Some(rate) = self.rate.as_mut() {
            rate.use_up(read);
        }
        // With checkpoints, offsets are committed as checkpoints complete (and at the end).
        if !self.checkpointed && now - self.last_commit >= self.config.commit_interval.0 {
            self.last_commit = now;
            self.commit();
        }
        // The watermark: the smallest over the partitions that are neither finished nor idle.
        let idle = self.config.partition_idle_timeout.0;
        let mut watermark: Option<EventTime> = None;
        let mut open = 0;
        for i in 0..self.parts.len() {
            if self.finished(&self.parts[i]) {
                continue;
            }
            open += 1;
            if now - self.parts[i].last_record >= idle && self.is_idle(i, now) {
                continue;
            }
            let part = &self.parts[i];
            let w = part.max_event_time.map_or(0, |m| m.saturating_sub(self.lateness));
            watermark = Some(watermark.map_or(w, |x| x.min(w)));
        }
        if let Some(w) = watermark {
            out.advance_watermark(w);
        }
        if self.config.bounded && open == 0 {
            self.commit();
            return Ok(Poll::Done);
        }
        Ok(if read > 0 { Poll::Ready } else { Poll::Pending(Duration::from_millis(10)) })
    }

    fn checkpoint(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        let mut positions = Vec::with_capacity(self.parts.len());
        for part in &mut self.parts {
            let after_cut = part.after_cut.take();
            // A partition not read yet restarts from where the job's start setting says.
            let Some(next) = part.next else { continue };
            let (from, seen) = match after_cut {
                Some((from, seen)) if from < next => (from, seen),
                _ => (next, part.max_event_time),
            };
            let topic = self.config.topics[part.topic].clone();
            let older = part.replay.older(next);
            let partition = part.partition;
            positions.push(Position { topic, partition, from, next, older, seen });
        }
        let bytes = encode(&positions)?;
        self.to_commit.push((checkpoint, positions));
        Ok(bytes)
    }

    /// Commits the positions of the latest complete checkpoint to the consumer group (where
    /// a restart would read from), for lag tools.
    fn committed(&mut self, checkpoint: u64) {
        let Some(last) = self.to_commit.iter().rposition(|(id, _)| *id <= checkpoint) else {
            return;
        };
        let (_, positions) = self.to_commit.drain(..=last).next_back().expect("an entry");
        let mut tpl = TopicPartitionList::new();
        for p in &positions {
            let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.from));
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(source = %self.name, error = %e, "offset commit failed");
            }
        }
    }

    /// Seeks this reader's partitions to their checkpointed positions (from every old
    /// worker's positions, so rescaling works: partitions are matched by topic and number).
    fn restore(&mut self, cut: Cut, positions: Vec<Vec<u8>>) -> Result<()> {
        let name = self.name.clone();
        let mut restored = 0;
        for bytes in positions {
            let positions: Vec<Position> = decode(&bytes)?;
            for p in positions {
                let Some(part) = self.part(&p.topic, p.partition) else { continue };
                part.next = Some(p.from);
                part.max_event_time = p.seen;
                part.replay = Replay::restored(p.from, p.next, cut, &p.older);
                // Not assigned yet (that happens at the first poll): only the offset moves.
                self.unassigned
                    .set_partition_offset(&p.topic, p.partition, Offset::Offset(p.from))
                    .map_err(|e| {
                        let context = format!("{}/{}", p.topic, p.partition);
                        ConnectorError::kafka(context, e).at_source(&name)
                    })?;
                restored += 1;
            }
        }
        tracing::info!(source = %self.name, worker = self.worker, partitions = restored,
            "partitions restored to their checkpointed offsets");
        Ok(())
    }

    /// Pauses or resumes every assigned partition: librdkafka drops what it fetched ahead and,
    /// on resume, fetches again from the next offset this reader has not read.
    fn set_paused(&mut self, paused: bool) -> Result<()> {
        let doing = if paused { "cannot pause partitions" } else { "cannot resume partitions" };
        let fail = |e: KafkaError| ConnectorError::kafka(doing, e).at_source(&self.name);
        let assignment = self.consumer.assignment().map_err(fail)?;
        if assignment.count() > 0 {
            let result = if paused {
                self.consumer.pause(&assignment)
            } else {
                self.consumer.resume(&assignment)
            };
            result.map_err(fail)?;
        }
        tracing::debug!(source = %self.name, worker = self.worker, paused,
            partitions = assignment.count(), "partitions paused or resumed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    #[test]
    fn partitions_are_spread_evenly_and_stay_put() {
        for workers in 1..5 {
            let mine: Vec<usize> =
                (0..workers).map(|w| (0..8).filter(|&p| owns(1, p, w, workers)).count()).collect();
            assert!(mine.iter().max().unwrap() - mine.iter().min().unwrap() <= 1, "{mine:?}");
        }
        // Adding partitions does not move the existing ones.
        assert!(owns(0, 3, 1, 2));
    }

    #[test]
    fn a_rate_that_is_no_positive_number_is_refused_before_the_broker_is_asked() {
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let mut config = KafkaSourceConfig::new("127.0.0.1:9", &["t"]);
            config.rate = Some(rate);
            let e = KafkaSource::<u64>::new("s", &config).err().expect("refused");
            assert!(e.to_string().contains("rate"), "{e}");
        }
    }

    #[test]
    fn serde_decoder_rejects_what_is_not_a_record() {
        #[derive(Debug, Deserialize)]
        struct R {
            #[allow(dead_code)]
            a: u32,
        }
        let raw = |payload: &'static [u8]| RawRecord {
            key: None,
            payload: Some(payload),
            timestamp: None,
            topic: "t",
            partition: 0,
            offset: 0,
        };
        let mut json = SerdeDecoder(ValueDecoder::Text(Format::Json));
        assert!(Decode::<R>::decode(&mut json, raw(br#"{"a":1}"#)).is_ok());
        assert!(Decode::<R>::decode(&mut json, raw(br#"{"a":"x"}"#))
            .unwrap_err()
            .to_string()
            .contains("invalid type"));
        assert_eq!(Decode::<R>::decode(&mut json, raw(b"")).unwrap_err(), "empty value".into());
        let mut csv = SerdeDecoder(ValueDecoder::Text(Format::Csv));
        assert!(Decode::<R>::decode(&mut csv, raw(b"7")).is_ok());
        assert!(Decode::<R>::decode(&mut csv, raw(b"x")).is_err());
    }

    #[test]
    fn changelog_decoder_keeps_tombstones_and_rejects_what_is_not_a_change() {
        let raw = |key: Option<&'static [u8]>, payload: Option<&'static [u8]>, ts| RawRecord {
            key,
            payload,
            timestamp: ts,
            topic: "registry",
            partition: 0,
            offset: 0,
        };
        let mut d = ChangelogDecoder::utf8_keys(ValueDecoder::Text(Format::Json));
        let mut decode = |r| Decode::<ChangelogRecord<u32>>::decode(&mut d, r);
        let upsert = decode(raw(Some(b"dev-1"), Some(b"7"), Some(5))).expect("an upsert");
        assert_eq!(upsert, ChangelogRecord { key: "dev-1".into(), value: Some(7), ts: 5 });
        let tombstone = decode(raw(Some(b"dev-1"), None, Some(6))).expect("a tombstone");
        assert_eq!(tombstone, ChangelogRecord { key: "dev-1".into(), value: None, ts: 6 });
        assert!(decode(raw(None, Some(b"7"), Some(5)))
            .unwrap_err()
            .to_string()
            .contains("needs a key"));
        assert!(decode(raw(Some(b"\xff"), Some(b"7"), Some(5)))
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
        assert!(decode(raw(Some(b"k"), Some(b"7"), None))
            .unwrap_err()
            .to_string()
            .contains("timestamp"));
        assert!(decode(raw(Some(b"k"), Some(b"x"), Some(5)))
            .unwrap_err()
            .to_string()
            .contains("expected"));
    }
}
