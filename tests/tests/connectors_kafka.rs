//! End-to-end tests of the Kafka source and sink against Apache Kafka on loopback: one broker
//! shared by the tests here (each with topics of its own), and one of its own for the test that
//! kills it.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::kafka::{Isolation, Kafka};
use support::run_job;

/// A reading as JSON: `n` decides the device (of 50) and the event time (10 per ms).
fn reading(n: u64) -> Vec<u8> {
    let device = n % 50;
    let ts = 1_767_225_600_000 + n / 10;
    format!(r#"{{"device":{device},"site":1,"sensor":"humidity","value":{}.5,"ts":{ts}}}"#, n % 7)
        .into_bytes()
}

/// The `count` of a JSON result record.
fn count((_, value): &(Option<Vec<u8>>, Vec<u8>)) -> u64 {
    serde_json::from_slice::<Value>(value).expect("JSON")["count"].as_u64().expect("count")
}

fn kafka_args(kafka: &Kafka, input: &str, output: &str) -> Vec<String> {
    vec![
        "--set".into(),
        format!(
            "job.input={{kind=\"kafka\", brokers=\"{}\", topics=[\"{input}\"], bounded=true, \
             max_out_of_orderness=\"1s\"}}",
            kafka.address
        ),
        "--set".into(),
        format!("job.output={{kind=\"kafka\", brokers=\"{}\", topic=\"{output}\"}}", kafka.address),
        "--set".into(),
        "job.window=\"10s\"".into(),
    ]
}

fn run(args: &[String], extra: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(extra);
    run_job("iot-stats", &all)
}

#[test]
fn every_record_is_counted_exactly_once_from_kafka_to_kafka() {
    const RECORDS: u64 = 1_000_000;
    let kafka = Kafka::shared();
    let readings = kafka.topic("readings", 4);
    let stats = kafka.topic("stats", 2);
    // Keys spread the readings over the four partitions.
    kafka.produce(&readings, (0..RECORDS).map(|n| (Some(n.to_string().into_bytes()), reading(n))));
    assert_eq!(kafka.count(&readings), RECORDS as i64, "the broker holds every input record");

    let out = run(&kafka_args(kafka, &readings, &stats), &["--workers", "2"]);

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    // 50 devices x 10 s windows over 100 s of event time.
    let stats = kafka.consume(&stats);
    let mut windows: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for (key, value) in &stats {
        let v: Value = serde_json::from_slice(value).expect("JSON result");
        let device = v["device"].as_u64().expect("device");
        let start = v["window_start"].as_str().expect("window_start").to_owned();
        let key = String::from_utf8(key.clone().expect("keyed results")).expect("UTF-8 key");
        assert_eq!(key, format!("{device}@{start}"));
        let previous = windows.insert((device, start), v["count"].as_u64().expect("count"));
        assert!(previous.is_none(), "one result per device and window: {v}");
    }
    assert_eq!(windows.len(), 500, "every device and window");
    assert_eq!(windows.values().sum::<u64>(), RECORDS, "every reading counted once: {stderr}");
}

#[test]
fn metrics_count_every_record_and_the_consumer_lag_drains_to_zero() {
    const RECORDS: u64 = 10_000;
    let kafka = Kafka::shared();
    let topic = kafka.topic("lagging", 2);
    kafka.produce(&topic, (0..RECORDS).map(|n| (Some(n.to_string().into_bytes()), reading(n))));
    assert_eq!(kafka.count(&topic), RECORDS as i64, "the broker holds every input record");
    let address = support::free_addresses(1).remove(0);
    // Read at 2000 records a second, so that the lag is seen before it drains. Unbounded:
    // the job keeps running once it has read everything.
    let input = format!(
        "job.input={{kind=\"kafka\", brokers=\"{}\", topics=[\"{topic}\"], rate=2000}}",
        kafka.address
    );
    let _job = support::job_command(
        "iot-stats",
        &["--workers", "2", "--metrics-addr", &address, "--set", &input],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .map(support::KillOnDrop)
    .expect("start the job");
    let scrape = || support::http_get(&address, "/metrics").filter(|(s, _)| *s == 200);
    let lag = |body: &str| support::metric_total(body, "tributary_source_partition_lag_records");
    let read = |body: &str| support::metric_total(body, "tributary_source_records_total");
    let lagging = support::wait_for("a lag reported", Duration::from_secs(60), || {
        scrape().map(|(_, body)| body).filter(|body| lag(body) > 0)
    });
    assert!(read(&lagging) < RECORDS, "{lagging}");
    // Every record produced is counted, and the lag of both partitions falls to zero.
    let caught_up = support::wait_for("every record read", Duration::from_secs(120), || {
        scrape().map(|(_, body)| body).filter(|body| {
            let both = (0..2).all(|p| body.contains(&format!("partition=\"{topic}/{p}\"")));
            read(body) >= RECORDS && both && lag(body) == 0
        })
    });
    assert_eq!(read(&caught_up), RECORDS, "{caught_up}");
    // The status page (a snapshot a second) says the same: every partition, no backlog.
    support::wait_for("the status page caught up", Duration::from_secs(10), || {
        let (_, status) = support::http_get(&address, "/status")?;
        let status: Value = serde_json::from_str(&status).expect("status JSON");
        let backlog: Vec<u64> = status["sources"]
            .as_array()?
            .iter()
            .flat_map(|s| s["backlog"].as_array().into_iter().flatten())
            .filter_map(|b| b["records"].as_u64())
            .collect();
        (status["records_in"] == RECORDS && backlog == [0, 0]).then_some(())
    });
}

#[test]
fn malformed_records_are_dead_lettered_while_good_records_flow() {
    let kafka = Kafka::shared();
    let raw = kafka.topic("raw", 1);
    let stats = kafka.topic("stats", 1);
    let dead = kafka.topic("dead", 1);
    let huge = vec![b'{'; 1_000_000];
    let records: Vec<Vec<u8>> = vec![
        reading(0),
        b"{not json".to_vec(),
        br#"{"device":"seven","site":1,"sensor":"humidity","value":1.0,"ts":5}"#.to_vec(),
        Vec::new(),
        huge,
        reading(50),
    ];
    kafka.produce(&raw, records.into_iter().map(|r| (None, r)));

    let mut args = kafka_args(kafka, &raw, &stats);
    args.push("--set".into());
    args.push(format!(
        "job.dead_letters={{kind=\"kafka\", brokers=\"{}\", topic=\"{dead}\"}}",
        kafka.address
    ));
    let out = run(&args, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for offset in 1..=4 {
        assert!(
            stderr.contains(&format!("{raw}/0@{offset}")),
            "offset {offset} not reported: {stderr}"
        );
    }

    let dead = kafka.consume(&dead);
    let letters: Vec<Value> =
        dead.iter().map(|(_, v)| serde_json::from_slice(v).expect("JSON dead letter")).collect();
    let locations: Vec<&str> =
        letters.iter().map(|l| l["location"].as_str().expect("location")).collect();
    assert_eq!(locations, (1..=4).map(|o| format!("{raw}/0@{o}")).collect::<Vec<_>>());
    assert_eq!(letters[2]["reason"], "empty value");
    assert_eq!(letters[3]["payload"].as_str().expect("payload").len(), 4096, "payload cut");

    let stats = kafka.consume(&stats);
    assert_eq!(stats.len(), 1, "device 0's window");
    let v: Value = serde_json::from_slice(&stats[0].1).expect("JSON");
    assert_eq!(v["count"], 2, "the two good readings: {v}");
}

#[test]
fn a_missing_topic_is_a_configuration_error() {
    let kafka = Kafka::shared();
    let stats = kafka.topic("stats", 1);
    let out = run(&kafka_args(kafka, "no-such-topic", &stats), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("job.input.topics") && stderr.contains("no-such-topic"), "{stderr}");
}

#[test]
fn the_job_rides_out_a_broker_restart() {
    const RECORDS: u64 = 200_000;
    let mut kafka = Kafka::start();
    kafka.create_topic("readings", 2);
    kafka.create_topic("stats", 1);
    kafka.produce("readings", (0..RECORDS).map(|n| (Some(n.to_string().into_bytes()), reading(n))));
    assert_eq!(kafka.count("readings"), RECORDS as i64, "the broker holds every input record");

    let mut args = kafka_args(&kafka, "readings", "stats");
    args[1] = args[1].replace("bounded=true", "bounded=true, commit_interval=\"100ms\"");
    let all: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = support::job_command("iot-stats", &all)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the job starts");

    // Once the job has committed some offsets but not all, kill the broker and restart it.
    let done = support::wait_for("the job to commit offsets", Duration::from_secs(120), || {
        Some(kafka.committed("tributary", "readings", 2).unwrap_or(0)).filter(|&n| n > 0)
    });
    assert!(done < RECORDS as i64, "the job finished before the broker could be killed");
    kafka.restart();

    let out = job.wait_with_output().expect("the job ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stats = kafka.consume("stats");
    let total: u64 = stats.iter().map(count).sum();
    assert_eq!(stats.len(), 100, "50 devices x 2 windows of 10 s");
    assert_eq!(total, RECORDS, "nothing lost across the restart");
}

#[test]
fn flow_control_pauses_partitions_without_losing_or_repeating_records() {
    const RECORDS: u64 = 40_000;
    let kafka = Kafka::shared();
    let readings = kafka.topic("readings", 2);
    let stats = kafka.topic("stats", 1);
    kafka.produce(&readings, (0..RECORDS).map(|n| (Some(n.to_string().into_bytes()), reading(n))));
    assert_eq!(kafka.count(&readings), RECORDS as i64, "the broker holds every input record");

    // A limit far below one source batch: the sources pause and resume (librdkafka drops what
    // it fetched ahead and fetches it again from the next unread offset).
    let mut args = kafka_args(kafka, &readings, &stats);
    args.extend(["--workers", "2", "--set", "runtime.max_in_flight=100"].map(String::from));
    let all: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = support::job_command("iot-stats", &all)
        .env("RUST_LOG", "warn,tributary_runtime::flow_control=info")
        .output()
        .expect("the job runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pauses: u64 = stderr
        .lines()
        .filter(|l| l.contains("flow control paused the sources"))
        .filter_map(|l| {
            let l = support::strip_ansi(l);
            l.split("pauses=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    assert!(pauses > 0, "the sources paused: {stderr}");

    let stats = kafka.consume(&stats);
    let total: u64 = stats.iter().map(count).sum();
    assert_eq!(stats.len(), 50, "50 devices x 1 window of 10 s");
    assert_eq!(total, RECORDS, "every reading counted once across {pauses} pauses");
}

#[test]
fn partitions_added_while_the_job_runs_are_read() {
    const BEFORE: u64 = 2_000;
    const AFTER: u64 = 1_000;
    let kafka = Kafka::shared();
    let readings = kafka.topic("readings", 2);
    let stats = kafka.topic("stats", 1);
    kafka.produce(&readings, (0..BEFORE).map(|n| (Some(n.to_string().into_bytes()), reading(n))));

    let mut args = kafka_args(kafka, &readings, &stats);
    args[1] = args[1].replace(
        "bounded=true",
        "bounded=false, commit_interval=\"100ms\", partition_discovery=\"200ms\"",
    );
    args.extend(["--workers", "2"].map(String::from));
    let all: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = support::job_command("iot-stats", &all)
        .env("RUST_LOG", "warn,tributary_connectors=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the job starts");
    let committed = |partitions| kafka.committed("tributary", &readings, partitions);
    support::wait_for("the job to read the first records", Duration::from_secs(60), || {
        committed(2).filter(|&n| n == BEFORE as i64)
    });

    // CreatePartitions while the job runs; the source finds them at its next discovery.
    kafka.add_partitions(&readings, 4);
    for (i, partition) in [2, 3].into_iter().enumerate() {
        let half = BEFORE + i as u64 * AFTER / 2..BEFORE + (i as u64 + 1) * AFTER / 2;
        kafka.produce_to(&readings, partition, half.map(|n| (None, reading(n))));
    }
    support::wait_for("the job to read the new partitions", Duration::from_secs(60), || {
        committed(4).filter(|&n| n == (BEFORE + AFTER) as i64)
    });
    let status = std::process::Command::new("kill")
        .args(["-TERM", &job.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());

    let out = job.wait_with_output().expect("the job ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("new partitions"), "{stderr}");
    let total: u64 = kafka.consume(&stats).iter().map(count).sum();
    assert_eq!(total, BEFORE + AFTER, "every reading counted once, old partitions and new");
}

/// Runs iot-stats over `readings` from `start` (a TOML value, bounded) into a new topic;
/// returns the sum of the counts it wrote.
fn counted_from(kafka: &Kafka, readings: &str, start: &str) -> u64 {
    let output = kafka.topic("counts", 1);
    let input = format!(
        "job.input={{kind=\"kafka\", brokers=\"{}\", topics=[\"{readings}\"], bounded=true, \
         group_id=\"resume\", start={start}}}",
        kafka.address
    );
    let output_arg =
        format!("job.output={{kind=\"kafka\", brokers=\"{}\", topic=\"{output}\"}}", kafka.address);
    let out = run_job("iot-stats", &["--set", &input, "--set", &output_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    kafka.consume(&output).iter().map(count).sum()
}

#[test]
fn start_position_timestamp_skips_older_records() {
    let kafka = Kafka::shared();
    let readings = kafka.topic("readings", 2);
    kafka.produce(&readings, (0..40).map(|n| (Some(n.to_string().into_bytes()), reading(n))));
    // Kafka timestamps are the producer's clock, in milliseconds: start one past now, and
    // produce the second batch once the clock has passed it.
    let start = tributary_runtime::time::now_event_time() + 1;
    while tributary_runtime::time::now_event_time() <= start {
        std::hint::spin_loop();
    }
    kafka.produce(&readings, (40..65).map(|n| (Some(n.to_string().into_bytes()), reading(n))));
    let start =
        format!("{{ timestamp = \"{}\" }}", tributary_runtime::time::format_event_time(start));
    assert_eq!(counted_from(kafka, &readings, &start), 25, "only the second batch");
}

#[test]
fn changelog_mode_sends_tombstones_for_deletions() {
    use timely::dataflow::operators::ToStream;
    use tributary_connectors::kafka::{KafkaSink, KafkaSinkConfig};
    use tributary_runtime::SinkExt;

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Total {
        key: String,
        total: u64,
        deleted: bool,
    }

    let kafka = Kafka::shared();
    let totals = kafka.compacted_topic("totals", 1);
    let config = KafkaSinkConfig::new(kafka.address.clone(), &totals);
    let sink = KafkaSink::new("totals", &config)
        .expect("valid sink")
        .keyed(|t: &Total| Some(t.key.as_bytes().to_vec()))
        .tombstones(|t: &Total| t.deleted);
    let changes = vec![
        Total { key: "a".into(), total: 1, deleted: false },
        Total { key: "b".into(), total: 2, deleted: false },
        Total { key: "a".into(), total: 0, deleted: true },
    ];
    timely::example(move |scope| {
        changes.to_stream(scope).container::<Vec<Total>>().sink_to(&sink);
    });
    let records = kafka.records(&totals, Isolation::ReadCommitted);
    let key = |k: &str| Some(k.as_bytes().to_vec());
    assert_eq!(
        records,
        vec![
            (key("a"), Some(br#"{"key":"a","total":1,"deleted":false}"#.to_vec())),
            (key("b"), Some(br#"{"key":"b","total":2,"deleted":false}"#.to_vec())),
            (key("a"), None),
        ]
    );
}

#[test]
fn start_positions_latest_and_committed() {
    let kafka = Kafka::shared();
    let readings = kafka.topic("readings", 2);
    kafka.produce(&readings, (0..100).map(|n| (Some(n.to_string().into_bytes()), reading(n))));
    assert_eq!(counted_from(kafka, &readings, "\"latest\""), 0, "nothing after the end");
    assert_eq!(counted_from(kafka, &readings, "\"earliest\""), 100);
    // The first run committed what it read; a run from the committed offsets sees only news.
    kafka.produce(&readings, (100..130).map(|n| (Some(n.to_string().into_bytes()), reading(n))));
    assert_eq!(counted_from(kafka, &readings, "\"committed\""), 30);
}

/// A reading of the table-join test.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct DeviceReading {
    device: String,
    ts: u64,
}

impl tributary_runtime::Timestamped for DeviceReading {
    fn event_time(&self) -> u64 {
        self.ts
    }
}

#[test]
fn a_compacted_topic_is_a_table_that_readings_see_as_of_their_time() {
    use std::sync::{mpsc, Mutex};
    use timely::dataflow::operators::capture::Capture;
    use timely::dataflow::operators::vec::Map;
    use tributary_connectors::kafka::{ChangelogDecoder, ChangelogRecord};
    use tributary_connectors::{KafkaSource, KafkaSourceConfig};
    use tributary_operators::{Change, KeyBy, Keyed};

    let kafka = Kafka::shared();
    let registry = kafka.compacted_topic("registry", 2);
    let device_readings = kafka.topic("device-readings", 2);
    let json = |s: &str| Some(s.as_bytes().to_vec());
    let key = |s: &str| Some(s.as_bytes().to_vec());
    // dev-1 is at site a from 1 s and at b from 5 s; dev-2 is at c from 1 s until a
    // tombstone at 4 s; dev-3 is never registered.
    kafka.produce_records(
        &registry,
        [
            (key("dev-1"), json(r#""a""#), Some(1_000)),
            (key("dev-2"), json(r#""c""#), Some(1_000)),
            (key("dev-2"), None, Some(4_000)),
            (key("dev-1"), json(r#""b""#), Some(5_000)),
        ],
    );
    let reading = |device: &str, ts: u64| {
        (key(device), format!(r#"{{"device":"{device}","ts":{ts}}}"#).into_bytes())
    };
    kafka.produce(
        &device_readings,
        [
            reading("dev-1", 2_000),
            reading("dev-2", 2_000),
            reading("dev-3", 3_000),
            reading("dev-2", 4_500),
            reading("dev-1", 6_000),
        ],
    );

    let mut registry = KafkaSourceConfig::new(kafka.address.clone(), &[&registry]);
    registry.bounded = true;
    let registry: KafkaSource<ChangelogRecord<String>> = KafkaSource::with_decoder(
        "registry",
        &registry,
        ChangelogDecoder::new(&registry).expect("JSON values, UTF-8 keys"),
    )
    .expect("the registry topic exists");
    let mut readings = KafkaSourceConfig::new(kafka.address.clone(), &[&device_readings]);
    readings.bounded = true;
    let readings: KafkaSource<DeviceReading> =
        KafkaSource::new("readings", &readings).expect("the readings topic exists");

    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    support::oracle::execute(100, 2, move |flow| {
        let changes = flow.source(&registry).map(|c| (c.key, Change { value: c.value, ts: c.ts }));
        let table = Keyed::new(changes).into_table("registry");
        flow.source(&readings)
            .key_by(|r: &DeviceReading| r.device.clone())
            .join_table(&table)
            .join()
            .map(|e| (e.key, e.left.ts, e.right))
            .capture_into(tx.lock().expect("not poisoned").clone());
    });
    let mut rows = support::oracle::messages(rx);
    rows.sort();
    let row = |d: &str, ts, site: Option<&str>| (d.to_string(), ts, site.map(str::to_string));
    assert_eq!(
        rows,
        vec![
            row("dev-1", 2_000, Some("a")),
            row("dev-1", 6_000, Some("b")),
            row("dev-2", 2_000, Some("c")),
            row("dev-2", 4_500, None),
            row("dev-3", 3_000, None),
        ]
    );
}
