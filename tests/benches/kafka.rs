//! Kafka benchmark on Apache Kafka (one local broker, started by the harness): what a
//! Tributary job costs next to bare rdkafka loops over the same records, in one run.
//!
//! Loads `--records` IoT readings (JSON, ~90 bytes, keyed by reading number) into a topic of
//! four partitions, then reports, with 1 and 2 threads or workers:
//! - ingest: a bare `BaseConsumer` loop without and with serde decoding; a Tributary job
//!   Kafka → decode → count; and Kafka → decode → tumbling one-minute count per device →
//!   Kafka sink;
//! - the sink: a bare `BaseProducer` loop (serde encode and send) against a Tributary job
//!   (generated readings → Kafka sink), at least once and exactly once (a transaction a
//!   second: the bare loop commits one every second, the job checkpoints every second).
//!
//! ```sh
//! cargo bench -p tributary-tests --bench kafka                         # 5M records, one run
//! cargo bench -p tributary-tests --bench kafka -- --records 10000000 --runs 3   # fastest of 3
//! ```
#![allow(clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use support::kafka::Kafka;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use tributary_connectors::kafka::{
    Delivery, KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig, FETCH_QUEUE_BACKOFF_MS,
};
use tributary_operators::{Count, KeyBy, Tumbling};
use tributary_runtime::checkpoint::{CheckpointConfig, Checkpoints, LocalDir};
use tributary_runtime::{
    Emitter, EventTime, Flow, Granularity, HumanDuration, JobContext, Poll, SinkExt, Source,
    SourceContext, SourceReader, Time, Timestamped,
};

const PARTITIONS: i32 = 4;
const TOPIC: &str = "readings";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    device: u64,
    site: u32,
    sensor: String,
    value: f64,
    ts: u64,
}

impl Timestamped for Reading {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

/// Reading `n`: 1000 devices, 10 readings per millisecond of event time.
fn reading(n: u64) -> Reading {
    Reading {
        device: n % 1000,
        site: (n % 20) as u32,
        sensor: "humidity".to_owned(),
        value: (n % 97) as f64 + 0.25,
        ts: 1_767_225_600_000 + n / 10,
    }
}

/// Records and bytes (keys and values) moved in `elapsed`.
struct Measured {
    records: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

/// Prints a table row; `base` is the row the ratio column compares with.
fn row(what: &str, threads: usize, m: &Measured, base: Option<&Measured>) {
    let ratio = base.map_or(String::new(), |b| format!("{:.0} %", 100.0 * m.rate() / b.rate()));
    println!(
        "| {what} | {threads} | {:.1}M | {:.2} s | {:.2}M | {:.0} | {ratio} |",
        m.records as f64 / 1e6,
        m.elapsed.as_secs_f64(),
        m.rate() / 1e6,
        m.bytes as f64 / m.elapsed.as_secs_f64() / 1e6,
    );
}

/// A bare consumer: librdkafka's defaults, or with `tuned` the settings every Tributary
/// source has (the fetch backoff; no offset stored per record, the job tracks its own), so
/// that the comparison shows what the job adds.
fn consumer(address: &str, tuned: bool) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", address)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    if tuned {
        c.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        c.set("enable.auto.offset.store", "false");
    }
    c.create().expect("consumer")
}

/// `threads` bare consumer loops, each with its share of the partitions, reading to the end;
/// with `decode`, each value is decoded into a `Reading`.
fn bare_consumers(address: &str, threads: usize, decode: bool, tuned: bool) -> Measured {
    let started = Instant::now();
    let counts: Vec<(u64, u64)> = std::thread::scope(|s| {
        let loops: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let consumer = consumer(address, tuned);
                    let mut tpl = TopicPartitionList::new();
                    let mine: Vec<i32> =
                        (0..PARTITIONS).filter(|p| *p as usize % threads == t).collect();
                    for &p in &mine {
                        tpl.add_partition_offset(TOPIC, p, Offset::Beginning).expect("partition");
                    }
                    consumer.assign(&tpl).expect("assign");
                    let (mut records, mut bytes, mut ended, mut sum) = (0, 0, 0, 0u64);
                    while ended < mine.len() {
                        // A poll that waits costs a clock read per record: wait only when
                        // nothing is there (the source driver polls the same way).
                        let next = consumer.poll(Duration::ZERO);
                        match next.or_else(|| consumer.poll(Duration::from_millis(100))) {
                            Some(Ok(m)) => {
                                records += 1;
                                bytes += (m.key_len() + m.payload_len()) as u64;
                                if decode {
                                    let r: Reading =
                                        serde_json::from_slice(m.payload().unwrap_or_default())
                                            .expect("JSON");
                                    sum = sum.wrapping_add(r.device);
                                }
                            }
                            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ended += 1,
                            Some(Err(e)) => panic!("bare consumer: {e}"),
                            None => {}
                        }
                    }
                    std::hint::black_box(sum);
                    (records, bytes)
                })
            })
            .collect();
        loops.into_iter().map(|l| l.join().expect("the loop ran")).collect()
    });
    let elapsed = started.elapsed();
    let (records, bytes) = counts.iter().fold((0, 0), |(r, b), (r2, b2)| (r + r2, b + b2));
    Measured { records, bytes, elapsed }
}

/// Runs `build` on `workers` worker threads, with checkpoints every second into a
/// temporary directory when `checkpointed`; returns the elapsed time.
fn run_job<F>(workers: usize, checkpointed: bool, build: F) -> Duration
where
    F: Fn(&mut Flow<'_>) + Send + Sync + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let mut context = JobContext::new("bench", Granularity::DEFAULT);
    if checkpointed {
        let config = CheckpointConfig {
            dir: Some(dir.path().to_owned()),
            interval: HumanDuration(Duration::from_secs(1)),
            keep: 2,
            job_id: None,
        };
        let store = Arc::new(LocalDir::new(dir.path()));
        let checkpoints =
            Checkpoints::open(&config, "bench", store, 0, workers).expect("checkpoints open");
        context = context.with_checkpoints(Arc::new(checkpoints));
    }
    let state = Arc::clone(&context.state);
    let mut worker = timely::WorkerConfig::default();
    context.install(&mut worker);
    let communication = if workers == 1 {
        timely::CommunicationConfig::Thread
    } else {
        timely::CommunicationConfig::Process(workers)
    };
    let build = Arc::new(build);
    let started = Instant::now();
    timely::execute(timely::Config { communication, worker }, move |worker| {
        let build = Arc::clone(&build);
        worker.dataflow::<Time, _, _>(|scope| {
            let mut flow = Flow::new(scope);
            build(&mut flow);
            flow.finish();
        });
    })
    .expect("timely starts")
    .join()
    .into_iter()
    .for_each(|r| r.expect("no worker panicked"));
    if let Some(e) = state.take_failure() {
        panic!("the job failed: {e}");
    }
    started.elapsed()
}

/// The topic read to its end by a bounded Kafka source.
fn source(address: &str, topic: &str) -> Arc<KafkaSource<Reading>> {
    let mut config = KafkaSourceConfig::new(address, &[topic]);
    config.group_id = "bench-tributary".into();
    config.bounded = true;
    Arc::new(KafkaSource::new("readings", &config).expect("source"))
}

/// Kafka → decode → count.
fn job_count(address: &str, topic: &str, workers: usize, bytes: u64) -> Measured {
    let source = source(address, topic);
    let counted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&counted);
    let elapsed = run_job(workers, false, move |flow| {
        let count = Arc::clone(&count);
        flow.source(&*source).sink(Pipeline, "count", move |(input, _)| {
            input.for_each(|_, records| {
                count.fetch_add(records.len() as u64, Ordering::Relaxed);
                records.clear();
            });
        });
    });
    Measured { records: counted.load(Ordering::Relaxed), bytes, elapsed }
}

/// Kafka → decode → tumbling one-minute count per device → Kafka.
fn job_window(kafka: &Kafka, topic: &str, workers: usize, records: u64, bytes: u64) -> Measured {
    let source = source(&kafka.address, topic);
    let output = kafka.topic("minutes", PARTITIONS as u32);
    let sink = KafkaSink::new("minutes", &KafkaSinkConfig::new(kafka.address.clone(), &output))
        .expect("sink")
        .keyed(|(device, start, _): &(u64, u64, u64)| {
            Some(format!("{device}@{start}").into_bytes())
        });
    let sink = Arc::new(sink);
    let elapsed = run_job(workers, false, move |flow| {
        flow.source(&*source)
            .key_by(|r: &Reading| r.device)
            .window(Tumbling::new(Duration::from_secs(60)))
            .aggregate(Count)
            .map(|w| (w.key, w.window.start, w.value))
            .sink_to(&*sink);
    });
    let windows = kafka.count(&output);
    assert!(windows >= 1000, "{windows} window results");
    Measured { records, bytes, elapsed }
}

/// `records` readings, each worker making every `workers`-th, as fast as it can.
#[derive(Clone)]
struct Generated {
    records: u64,
}

struct GeneratedReader {
    next: u64,
    step: u64,
    end: u64,
}

impl Source for Generated {
    type Item = Reading;
    type Reader = GeneratedReader;
    fn name(&self) -> &str {
        "generated"
    }
    fn reader(&self, ctx: &SourceContext) -> tributary_runtime::Result<GeneratedReader> {
        Ok(GeneratedReader {
            next: ctx.worker_index as u64,
            step: ctx.workers as u64,
            end: self.records,
        })
    }
}

impl SourceReader for GeneratedReader {
    type Item = Reading;
    fn poll(&mut self, out: &mut Emitter<'_, Reading>) -> tributary_runtime::Result<Poll> {
        for _ in 0..out.room() {
            if self.next >= self.end {
                return Ok(Poll::Done);
            }
            let r = reading(self.next);
            out.emit(r.ts, r);
            self.next += self.step;
        }
        out.advance_watermark(reading(self.next).ts);
        Ok(Poll::Ready)
    }

    fn checkpoint(&mut self, _checkpoint: u64) -> tributary_runtime::Result<Vec<u8>> {
        tributary_runtime::checkpoint::encode(&self.next)
    }
}

/// A Tributary job writing `records` generated readings to a new topic.
fn job_sink(kafka: &Kafka, delivery: Delivery, workers: usize, records: u64) -> Measured {
    let output = kafka.topic("sink", PARTITIONS as u32);
    let mut config = KafkaSinkConfig::new(kafka.address.clone(), &output);
    config.delivery = delivery;
    config.transactional_id_prefix = Some(output.clone());
    let sink = KafkaSink::new("out", &config)
        .expect("sink")
        .keyed(|r: &Reading| Some(r.ts.to_string().into_bytes()));
    let sink = Arc::new(sink);
    let source = Generated { records };
    let elapsed = run_job(workers, delivery == Delivery::ExactlyOnce, move |flow| {
        flow.source(&source).sink_to(&*sink);
    });
    assert_eq!(
        kafka.records(&output, support::kafka::Isolation::ReadCommitted).len() as u64,
        records
    );
    Measured { records, bytes: topic_bytes(records), elapsed }
}

/// Keys and values of the sink benchmark's records.
fn topic_bytes(records: u64) -> u64 {
    (0..records)
        .map(|n| {
            let r = reading(n);
            (r.ts.to_string().len() + serde_json::to_vec(&r).expect("JSON").len()) as u64
        })
        .sum()
}

/// `threads` bare producer loops (serde encode, send), the same records and settings as the
/// sink's; exactly once, each thread commits a transaction every second.
fn bare_producers(kafka: &Kafka, delivery: Delivery, threads: usize, records: u64) -> Measured {
    let output = kafka.topic("bare", PARTITIONS as u32);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let output = output.clone();
            s.spawn(move || {
                let mut config = ClientConfig::new();
                config
                    .set("bootstrap.servers", &kafka.address)
                    .set("enable.idempotence", "true")
                    .set("compression.type", "lz4")
                    .set("linger.ms", "5");
                let exactly_once = delivery == Delivery::ExactlyOnce;
                if exactly_once {
                    config.set("transactional.id", format!("{output}-{t}"));
                }
                let producer: BaseProducer = config.create().expect("producer");
                let txn_timeout = Duration::from_secs(60);
                if exactly_once {
                    producer.init_transactions(txn_timeout).expect("init");
                    producer.begin_transaction().expect("begin");
                }
                let mut last_commit = Instant::now();
                let mut buf = Vec::new();
                let mut n = t as u64;
                while n < records {
                    let r = reading(n);
                    buf.clear();
                    serde_json::to_writer(&mut buf, &r).expect("JSON");
                    let key = r.ts.to_string();
                    let mut record = BaseRecord::to(&output).key(&key).payload(&buf);
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((_, r)) => {
                                record = r;
                                producer.poll(Duration::from_millis(1));
                            }
                        }
                    }
                    producer.poll(Duration::ZERO);
                    if exactly_once && last_commit.elapsed() >= Duration::from_secs(1) {
                        producer.commit_transaction(txn_timeout).expect("commit");
                        producer.begin_transaction().expect("begin");
                        last_commit = Instant::now();
                    }
                    n += threads as u64;
                }
                if exactly_once {
                    producer.commit_transaction(txn_timeout).expect("commit");
                }
                producer.flush(txn_timeout).expect("flush");
            });
        }
    });
    let elapsed = started.elapsed();
    assert_eq!(
        kafka.records(&output, support::kafka::Isolation::ReadCommitted).len() as u64,
        records
    );
    Measured { records, bytes: topic_bytes(records), elapsed }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let records: u64 = number("--records").unwrap_or(5_000_000);
    let sink_records: u64 = number("--sink-records").unwrap_or(records / 2);
    // Each figure is the fastest of `--runs` runs: the broker shares the machine's cores.
    let runs = number("--runs").unwrap_or(1).max(1);
    let best = |measure: &dyn Fn() -> Measured| {
        (0..runs).map(|_| measure()).min_by_key(|m| m.elapsed).expect("at least one run")
    };

    let kafka = Kafka::start();
    kafka.create_topic(TOPIC, PARTITIONS as u32);
    let loading = Instant::now();
    let mut bytes = 0;
    kafka.produce(
        TOPIC,
        (0..records).map(|n| {
            let (key, value) =
                (n.to_string().into_bytes(), serde_json::to_vec(&reading(n)).expect("JSON"));
            bytes += (key.len() + value.len()) as u64;
            (Some(key), value)
        }),
    );
    assert_eq!(kafka.count(TOPIC), records as i64, "the broker holds every record");
    println!(
        "loaded {records} JSON readings ({:.0} bytes each with the key) into Apache Kafka ({PARTITIONS} partitions) in {:.1} s\n",
        bytes as f64 / records as f64,
        loading.elapsed().as_secs_f64()
    );

    println!(
        "| ingest | threads / workers | records | time | records/s | MB/s | of bare + decode |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for threads in [1, 2] {
        let defaults = best(&|| bare_consumers(&kafka.address, threads, true, false));
        row("bare loop + serde_json decode, librdkafka defaults", threads, &defaults, None);
        let bare = best(&|| bare_consumers(&kafka.address, threads, false, true));
        row("bare rdkafka `BaseConsumer` loop", threads, &bare, None);
        let decoding = best(&|| bare_consumers(&kafka.address, threads, true, true));
        row("bare loop + serde_json decode", threads, &decoding, Some(&decoding));
        let count = best(&|| job_count(&kafka.address, TOPIC, threads, bytes));
        assert_eq!(count.records, records, "the job read every record");
        row("Tributary: Kafka → decode → count", threads, &count, Some(&decoding));
        let window = best(&|| job_window(&kafka, TOPIC, threads, records, bytes));
        let what = "Tributary: Kafka → decode → tumbling 1 min count → Kafka";
        row(what, threads, &window, Some(&decoding));
    }

    println!();
    println!("| sink ({sink_records} readings) | threads / workers | records | time | records/s | MB/s | of bare loop |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for delivery in [Delivery::AtLeastOnce, Delivery::ExactlyOnce] {
        let name = match delivery {
            Delivery::AtLeastOnce => "at least once",
            Delivery::ExactlyOnce => "exactly once",
        };
        for threads in [1, 2] {
            let bare = best(&|| bare_producers(&kafka, delivery, threads, sink_records));
            row(&format!("bare `BaseProducer` loop (encode + send), {name}"), threads, &bare, None);
            let job = best(&|| job_sink(&kafka, delivery, threads, sink_records));
            row(&format!("Tributary: generated → Kafka sink, {name}"), threads, &job, Some(&bare));
        }
    }
}
