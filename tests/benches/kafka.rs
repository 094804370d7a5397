//! Kafka ingest benchmark on a local Tansu broker: a bare rdkafka consumer loop against a
//! Tributary job doing Kafka → JSON decode → count, on the same topic in the same run.
//!
//! ```sh
//! cargo bench -p tributary-tests --bench kafka                        # 1M records
//! cargo bench -p tributary-tests --bench kafka -- --records 2000000
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
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use support::tansu::Tansu;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use tributary_connectors::kafka::{KafkaSource, KafkaSourceConfig};
use tributary_runtime::{EventTime, Flow, Granularity, JobContext, Time, Timestamped};

const PARTITIONS: i32 = 4;

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

fn reading(n: u64) -> Vec<u8> {
    format!(
        r#"{{"device":{},"site":{},"sensor":"humidity","value":{}.25,"ts":{}}}"#,
        n % 1000,
        n % 20,
        n % 97,
        1_767_225_600_000 + n / 10
    )
    .into_bytes()
}

/// Reads every partition from the beginning until `total` records; returns the elapsed time.
fn bare_consumer(address: &str, total: i64, decode: bool) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("readings", p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    let (mut read, mut sum) = (0i64, 0u64);
    while read < total {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            read += 1;
            if decode {
                let r: Reading =
                    serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON");
                sum = sum.wrapping_add(r.device);
            }
        }
    }
    std::hint::black_box(sum);
    started.elapsed()
}

/// A Tributary job: Kafka source (JSON) → count, on `workers` worker threads, stopped once
/// it has counted `total` records.
fn tributary(address: &str, workers: usize, total: u64) -> (Duration, u64) {
    let mut config = KafkaSourceConfig::new(address, &["readings"]);
    config.group_id = "bench-tributary".into();
    let source = Arc::new(KafkaSource::<Reading>::new("readings", &config).expect("source"));
    let counted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&counted);
    let context = JobContext::new("bench", Granularity::DEFAULT);
    let state = Arc::clone(&context.state);
    let mut worker = timely::WorkerConfig::default();
    context.install(&mut worker);
    let communication = if workers == 1 {
        timely::CommunicationConfig::Thread
    } else {
        timely::CommunicationConfig::Process(workers)
    };
    let started = Instant::now();
    timely::execute(timely::Config { communication, worker }, move |worker| {
        let (source, count, state) = (Arc::clone(&source), Arc::clone(&count), Arc::clone(&state));
        worker.dataflow::<Time, _, _>(|scope| {
            Flow::new(scope).source(&*source).sink(Pipeline, "count", move |(input, _)| {
                input.for_each(|_, records| {
                    let n = records.len() as u64;
                    if count.fetch_add(n, Ordering::Relaxed) + n >= total {
                        state.request_stop();
                    }
                    records.clear();
                });
            });
        });
    })
    .expect("timely starts")
    .join()
    .into_iter()
    .for_each(|r| r.expect("no worker panicked"));
    (started.elapsed(), counted.load(Ordering::Relaxed))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = args
        .iter()
        .position(|a| a == "--records")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let tansu = Tansu::memory();
    tansu.create_topic("readings", PARTITIONS as u32);
    let loading = Instant::now();
    tansu.produce("readings", (0..records).map(|n| (Some(n.to_string().into_bytes()), reading(n))));
    // Every record was acknowledged (the harness checks each delivery). Tansu's in-memory
    // engine under-reports high watermarks, so both consumers stop by count instead.
    let total = records as i64;
    println!(
        "loaded {total} JSON records (~{} bytes each) into Tansu in {:.1} s",
        reading(records / 2).len(),
        loading.elapsed().as_secs_f64()
    );
    let rate = |n: i64, d: Duration| n as f64 / d.as_secs_f64() / 1e6;
    println!("| consumer | records | time | records/s |");
    println!("| --- | ---: | ---: | ---: |");
    let bare = bare_consumer(&tansu.address, total, false);
    println!(
        "| bare rdkafka BaseConsumer loop | {total} | {:.2} s | {:.2}M |",
        bare.as_secs_f64(),
        rate(total, bare)
    );
    let decoding = bare_consumer(&tansu.address, total, true);
    println!(
        "| bare rdkafka loop + serde_json decode | {total} | {:.2} s | {:.2}M |",
        decoding.as_secs_f64(),
        rate(total, decoding)
    );
    for workers in [1, 2] {
        let (elapsed, counted) = tributary(&tansu.address, workers, records);
        assert!(counted >= records, "the job read every record");
        println!(
            "| Tributary job (Kafka → JSON decode → count), {workers} worker(s) | {counted} | {:.2} s | {:.2}M |",
            elapsed.as_secs_f64(),
            rate(total, elapsed)
        );
    }
}
