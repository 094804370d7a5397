//! Apache Kafka on free loopback ports, for end-to-end tests and benchmarks.
//!
//! Each broker is one process (broker and KRaft controller) started by
//! `scripts/kafka-up.sh --attached`, the script the README and CI use, with its log
//! directory in a temporary directory. The script installs Kafka's jars into a cache outside
//! the clone the first time. A broker runs until its handle is dropped or, for
//! [`Kafka::shared`], until the test process ends: the script kills the broker when its
//! standard input closes, however the test ended.
//!
//! Reads ([`Kafka::records`]) go to the end of every partition, as the broker reports it
//! (the high watermark, or with `read_committed` the last stable offset), so a test waits for
//! the broker's answer, never for a quiet period.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// The line the broker logs once it serves requests.
const STARTED: &str = "Kafka Server started";
/// How long a broker may take to start (the first start on a fresh machine fetches its jars).
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long any one request to the broker may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Broker log lines kept to explain a failure.
const LOG_LINES: usize = 200;

/// Counts the test producer's delivery reports.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::SeqCst),
            Err((e, _)) => {
                if self.failed.fetch_add(1, Ordering::SeqCst) == 0 {
                    eprintln!("delivery failed: {e}");
                }
                0
            }
        };
    }
}

/// A consumed record: its key and its value (`None`: a tombstone).
pub type KafkaRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// How a reader treats records of transactions ([`Kafka::records`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions (and non-transactional ones), up to the last
    /// stable offset: what a downstream consumer of exactly-once output reads.
    ReadCommitted,
    /// Every record, those of aborted and open transactions included.
    ReadUncommitted,
}

/// A running Apache Kafka broker; killed when dropped.
pub struct Kafka {
    process: Option<Child>,
    /// `127.0.0.1:port`, for `bootstrap.servers`.
    pub address: String,
    controller: String,
    data: PathBuf,
    /// Removes the data when the handle is dropped (`None` for [`Kafka::shared`], whose
    /// script removes it when the test process ends).
    _dir: Option<tempfile::TempDir>,
    settings: Vec<String>,
    log: Arc<Mutex<VecDeque<String>>>,
}

/// The workspace root (where `scripts/` is).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lies in the workspace")
}

/// Names unique within the test process, for topics on a shared broker.
static TOPICS: AtomicU64 = AtomicU64::new(0);

impl Kafka {
    /// A broker of the caller's own, for a test that kills or restarts it.
    pub fn start() -> Kafka {
        Kafka::with_settings(&[])
    }

    /// A broker of its own with extra broker settings (`key=value`).
    pub fn with_settings(settings: &[&str]) -> Kafka {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().to_owned();
        Kafka::launch_new(data, Some(dir), settings)
    }

    /// One broker for the whole test process, started on first use; tests on it create
    /// topics of their own with [`Kafka::topic`].
    pub fn shared() -> &'static Kafka {
        static SHARED: OnceLock<Kafka> = OnceLock::new();
        SHARED.get_or_init(|| {
            let data = tempfile::tempdir().expect("temp dir").keep();
            Kafka::launch_new(data, None, &["--remove-data"])
        })
    }

    fn launch_new(data: PathBuf, dir: Option<tempfile::TempDir>, settings: &[&str]) -> Kafka {
        let mut ports = crate::free_addresses(2);
        let mut kafka = Kafka {
            process: None,
            address: ports.remove(0),
            controller: ports.remove(0),
            data,
            _dir: dir,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            log: Arc::default(),
        };
        kafka.launch();
        kafka
    }

    fn launch(&mut self) {
        let port = |a: &str| a.rsplit(':').next().expect("host:port").to_owned();
        let mut command = Command::new(root().join("scripts/kafka-up.sh"));
        command.arg("--attached");
        for setting in &self.settings {
            match setting.as_str() {
                "--remove-data" => command.arg(setting),
                _ => command.args(["--set", setting]),
            };
        }
        let mut child = command
            .env("PORT", port(&self.address))
            .env("CONTROLLER_PORT", port(&self.controller))
            .env("DATA", &self.data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("scripts/kafka-up.sh runs");
        let (started, waiting) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for (stream, signal) in
            [(Box::new(out) as Box<dyn std::io::Read + Send>, true), (Box::new(err), false)]
        {
            let log = Arc::clone(&self.log);
            let started = started.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if signal && line.contains(STARTED) {
                        let _ = started.send(true);
                    }
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
                if signal {
                    let _ = started.send(false);
                }
            });
        }
        self.process = Some(child);
        match waiting.recv_timeout(START_TIMEOUT) {
            Ok(true) => {}
            Ok(false) => panic!("Kafka exited at start-up:\n{}", self.log_tail()),
            Err(_) => panic!("Kafka did not start in {START_TIMEOUT:?}:\n{}", self.log_tail()),
        }
        // Started: it answers metadata requests.
        let consumer = self.consumer(&[]);
        consumer.fetch_metadata(None, TIMEOUT).expect("metadata from the started broker");
    }

    /// The last lines the broker and its start script logged.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Kills the broker (SIGKILL: no clean shutdown) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    /// Kills the broker and starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new().set("bootstrap.servers", &self.address).create().expect("admin client")
    }

    fn consumer(&self, settings: &[(&str, &str)]) -> BaseConsumer {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.address).set("enable.auto.commit", "false");
        for (k, v) in settings {
            config.set(*k, *v);
        }
        config.create().expect("consumer")
    }

    /// Creates a topic named `name-<n>`, unique in this test process, and returns its name.
    pub fn topic(&self, name: &str, partitions: u32) -> String {
        let name = format!("{name}-{}", TOPICS.fetch_add(1, Ordering::Relaxed));
        self.create_topic(&name, partitions);
        name
    }

    /// Like [`Kafka::topic`], a compacted topic (`cleanup.policy = compact`).
    pub fn compacted_topic(&self, name: &str, partitions: u32) -> String {
        let name = format!("{name}-{}", TOPICS.fetch_add(1, Ordering::Relaxed));
        self.create_compacted_topic(&name, partitions);
        name
    }

    /// Creates topic `name`.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.create(name, partitions, &[]);
    }

    /// Creates topic `name`, compacted (`cleanup.policy = compact`).
    pub fn create_compacted_topic(&self, name: &str, partitions: u32) {
        self.create(name, partitions, &[("cleanup.policy", "compact")]);
    }

    fn create(&self, name: &str, partitions: u32, config: &[(&str, &str)]) {
        let mut topic = NewTopic::new(name, partitions as i32, TopicReplication::Fixed(1));
        for (k, v) in config {
            topic = topic.set(k, v);
        }
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results = futures_executor::block_on(self.admin().create_topics([&topic], &options))
            .expect("CreateTopics");
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
        self.await_partitions(name, partitions);
    }

    /// Grows `topic` to `partitions` partitions (CreatePartitions through the admin API).
    pub fn add_partitions(&self, topic: &str, partitions: u32) {
        let grow = NewPartitions::new(topic, partitions as usize);
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results = futures_executor::block_on(self.admin().create_partitions([&grow], &options))
            .expect("CreatePartitions");
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("growing topic {t}: {e}"));
        }
        self.await_partitions(topic, partitions);
    }

    /// Waits until the broker's metadata shows `topic` with `partitions` led partitions.
    fn await_partitions(&self, topic: &str, partitions: u32) {
        let consumer = self.consumer(&[]);
        crate::wait_for(&format!("{topic} with {partitions} partitions"), TIMEOUT, || {
            let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).ok()?;
            let t = metadata.topics().first()?;
            let led = t.partitions().iter().filter(|p| p.leader() >= 0).count();
            (t.error().is_none() && led == partitions as usize).then_some(())
        });
    }

    /// Produces `(key, value)` records to `topic` (round-robin over partitions when the key
    /// is `None`) and waits until all are acknowledged.
    pub fn produce<I>(&self, topic: &str, records: I)
    where
        I: IntoIterator<Item = (Option<Vec<u8>>, Vec<u8>)>,
    {
        self.produce_records(topic, records.into_iter().map(|(k, v)| (k, Some(v), None)));
    }

    /// Produces `(key, value, timestamp)` records: a `None` value is a tombstone, a `None`
    /// timestamp is the producer's clock.
    pub fn produce_records<I>(&self, topic: &str, records: I)
    where
        I: IntoIterator<Item = (Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>)>,
    {
        self.send(topic, None, records);
    }

    /// Produces `(key, value)` records to one partition of `topic`.
    pub fn produce_to<I>(&self, topic: &str, partition: i32, records: I)
    where
        I: IntoIterator<Item = (Option<Vec<u8>>, Vec<u8>)>,
    {
        self.send(topic, Some(partition), records.into_iter().map(|(k, v)| (k, Some(v), None)));
    }

    fn send<I>(&self, topic: &str, partition: Option<i32>, records: I)
    where
        I: IntoIterator<Item = (Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>)>,
    {
        let producer: BaseProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", &self.address)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("message.max.bytes", "2000000")
            .create_with_context(Deliveries::default())
            .expect("producer");
        for (key, value, timestamp) in records {
            let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic);
            if let Some(v) = &value {
                record = record.payload(v);
            }
            if let Some(k) = &key {
                record = record.key(k);
            }
            if let Some(ts) = timestamp {
                record = record.timestamp(ts);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            let mut record = Some(record);
            while let Some(r) = record.take() {
                if let Err((_, r)) = producer.send(r) {
                    producer.poll(Duration::from_millis(10));
                    record = Some(r);
                }
            }
        }
        producer.flush(Duration::from_secs(120)).expect("all records acknowledged");
        let failed = producer.context().failed.load(Ordering::SeqCst);
        let delivered = producer.context().delivered.load(Ordering::SeqCst);
        assert_eq!(failed, 0, "{failed} records not delivered to {topic} ({delivered} delivered)");
    }

    /// The partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Vec<i32> {
        let consumer = self.consumer(&[]);
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).expect("metadata");
        metadata.topics()[0].partitions().iter().map(|p| p.id()).collect()
    }

    /// The offsets in `topic`: the sum over its partitions of high minus low watermark. For
    /// a topic written without transactions, its number of records.
    pub fn count(&self, topic: &str) -> i64 {
        let consumer = self.consumer(&[]);
        let watermarks = |p| consumer.fetch_watermarks(topic, p, TIMEOUT).expect("watermarks");
        self.partitions(topic).into_iter().map(watermarks).map(|(low, high)| high - low).sum()
    }

    /// Whether no transaction is open in `topic`: in every partition the last stable offset
    /// (the end for `read_committed` readers) is the high watermark.
    pub fn stable(&self, topic: &str) -> bool {
        let committed = self.consumer(&[("isolation.level", "read_committed")]);
        let uncommitted = self.consumer(&[("isolation.level", "read_uncommitted")]);
        self.partitions(topic).into_iter().all(|p| {
            let end =
                |c: &BaseConsumer| c.fetch_watermarks(topic, p, TIMEOUT).map(|(_, high)| high);
            matches!((end(&committed), end(&uncommitted)), (Ok(a), Ok(b)) if a == b)
        })
    }

    /// The offsets `group` has committed for `topic`, summed over its partitions (0 where
    /// none), or `None` if the broker cannot be asked right now.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Option<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.address)
            .set("group.id", group)
            .create()
            .ok()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
        Some(
            committed
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum(),
        )
    }

    /// Every record of `topic`, partition after partition, from the beginning to the end the
    /// broker reports for the reader's `isolation`.
    pub fn records(&self, topic: &str, isolation: Isolation) -> Vec<KafkaRecord> {
        let level = match isolation {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        };
        let consumer = self.consumer(&[
            ("group.id", "tributary-test-reader"),
            ("enable.partition.eof", "true"),
            ("isolation.level", level),
        ]);
        let partitions = self.partitions(topic);
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut read: Vec<Vec<KafkaRecord>> = vec![Vec::new(); partitions.len()];
        let mut ended = vec![false; partitions.len()];
        let deadline = Instant::now() + Duration::from_secs(120);
        while ended.contains(&false) {
            assert!(Instant::now() < deadline, "reading {topic} to its end took over 120 s");
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => read[m.partition() as usize]
                    .push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec))),
                Some(Err(KafkaError::PartitionEOF(p))) => ended[p as usize] = true,
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        read.concat()
    }

    /// The committed records of `topic` ([`Isolation::ReadCommitted`]); a null value reads as
    /// empty.
    pub fn consume(&self, topic: &str) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        let records = self.records(topic, Isolation::ReadCommitted);
        records.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect()
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("broker log (last lines):\n{}", self.log_tail());
        }
        self.kill();
    }
}
