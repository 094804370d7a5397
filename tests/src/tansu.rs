//! A Tansu broker (Apache-Kafka-compatible) on a free loopback port, for end-to-end tests.
//!
//! The binary comes from `$TANSU`, else `tansu` on the `PATH` or in `~/.cargo/bin`
//! (`scripts/test.sh` installs it). A missing binary fails the test with that advice.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// Counts the test producer's delivery reports.
#[derive(Default)]
struct Deliveries {
    delivered: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        use std::sync::atomic::Ordering::SeqCst;
        match result {
            Ok(_) => self.delivered.fetch_add(1, SeqCst),
            Err((e, _)) => {
                if self.failed.fetch_add(1, SeqCst) == 0 {
                    eprintln!("delivery failed: {e}");
                }
                0
            }
        };
    }
}

/// A consumed record: its key and its value (`None`: a tombstone).
pub type KafkaRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A running broker; stopped when dropped.
pub struct Tansu {
    child: Option<Child>,
    /// `127.0.0.1:port`, for `bootstrap.servers`.
    pub address: String,
    storage: String,
    dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let cargo_bin = home.join(".cargo/bin/tansu");
    if cargo_bin.is_file() {
        return cargo_bin;
    }
    PathBuf::from("tansu")
}

impl Tansu {
    /// A broker keeping its data in memory.
    pub fn memory() -> Tansu {
        Tansu::start("memory://tansu/".to_owned())
    }

    /// A broker keeping its data in SQLite in its own temporary directory, so it survives a
    /// restart.
    pub fn durable() -> Tansu {
        Tansu::start("sqlite://tansu.db".to_owned())
    }

    fn start(storage: String) -> Tansu {
        let dir = tempfile::tempdir().expect("temp dir");
        let address = crate::free_addresses(1).remove(0);
        let mut tansu = Tansu { child: None, address, storage, dir };
        tansu.launch();
        tansu
    }

    fn launch(&mut self) {
        let url = format!("tcp://{}", self.address);
        let child = Command::new(binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &self.storage])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start tansu ({e}); install it with scripts/test.sh or set $TANSU")
            });
        self.child = Some(child);
        let listening = || TcpStream::connect(&self.address).ok();
        crate::wait_for(
            &format!("tansu to listen on {}", self.address),
            Duration::from_secs(30),
            listening,
        );
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Grows `topic` to `partitions` partitions. Tansu 0.6 has no CreatePartitions, so this
    /// stops the broker, adds the partitions to its SQLite store the way its own CreateTopics
    /// writes them (a `topition` and a `watermark` row each, `topic.partitions` updated; the
    /// schema of Tansu 0.6.0), and starts it again. Only for a [`Tansu::durable`] broker.
    pub fn add_partitions(&mut self, topic: &str, partitions: u32) {
        assert!(self.storage.starts_with("sqlite://"), "only a durable broker can grow topics");
        self.kill();
        let script = r#"
import sqlite3, sys
db, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = sqlite3.connect(db)
(tid, old), = c.execute("select id, partitions from topic where name = ?", (topic,))
for p in range(old, count):
    pid = c.execute("insert into topition (topic, partition) values (?, ?)", (tid, p)).lastrowid
    c.execute("insert into watermark (topition) values (?)", (pid,))
c.execute("update topic set partitions = ? where id = ?", (count, tid))
c.commit()
"#;
        let db = self.dir.path().join("tansu.db");
        let status = Command::new("python3")
            .args(["-c", script])
            .arg(&db)
            .args([topic, &partitions.to_string()])
            .status()
            .expect("python3 runs");
        assert!(status.success(), "growing {topic} in {} failed", db.display());
        self.launch();
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(binary())
            .args(["topic", "create", name, "--partitions", &partitions.to_string()])
            .args(["--broker", &format!("tcp://{}", self.address)])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create runs");
        assert!(status.success(), "creating topic {name} failed");
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
            .set(
                "enable.idempotence",
                std::env::var("TEST_IDEMPOTENCE").as_deref().unwrap_or("true"),
            )
            .set("linger.ms", "20")
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
        producer.flush(Duration::from_secs(60)).expect("all records acknowledged");
        let failed = producer.context().failed.load(std::sync::atomic::Ordering::SeqCst);
        let delivered = producer.context().delivered.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(failed, 0, "{failed} records not delivered to {topic} ({delivered} delivered)");
    }

    /// The number of records in `topic` (sum over partitions of high minus low watermark).
    pub fn count(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &self.address).create().expect("consumer");
        let metadata =
            consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .expect("watermarks");
                high - low
            })
            .sum()
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

    /// Reads every record of `topic` from the beginning until `expected` records arrived,
    /// or no record arrived for `quiet`; a null value reads as empty.
    pub fn consume(
        &self,
        topic: &str,
        expected: usize,
        quiet: Duration,
    ) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        let records = self.consume_records(topic, expected, quiet);
        records.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect()
    }

    /// Like [`Tansu::consume`], telling a null value (a tombstone) from an empty one.
    pub fn consume_records(
        &self,
        topic: &str,
        expected: usize,
        quiet: Duration,
    ) -> Vec<KafkaRecord> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.address)
            .set("group.id", "tributary-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata =
            consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut records = Vec::new();
        let mut last = Instant::now();
        while records.len() < expected && last.elapsed() < quiet {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    records.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)));
                    last = Instant::now();
                }
                Some(Err(e)) => panic!("consuming {topic}: {e}"),
                None => {}
            }
        }
        records
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
