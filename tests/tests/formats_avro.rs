//! End-to-end tests of Avro through a schema registry: Apache Kafka and Apicurio Registry on
//! loopback, records written and decoded by Confluent's Python client
//! (`tests/py/registry_kafka.py`, its `AvroSerializer` and `AvroDeserializer`); the job's
//! exactly-once output is read with `read_committed` up to the last stable offset.

mod support;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use support::kafka::{Isolation, Kafka};
use support::registry::SchemaRegistry;
use support::{hex_values, registry_kafka_py, run_job};
use tributary_connectors::format::{RegistryConfig, SchemaConfig};
use tributary_connectors::{Format, KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig};
use tributary_runtime::{EventTime, Timestamped};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Records as JSON values, sorted by their text (a multiset).
fn sorted(lines: impl IntoIterator<Item = String>) -> Vec<Value> {
    let mut values: Vec<Value> = lines
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).expect("a JSON line"))
        .collect();
    values.sort_by_key(|v| v.to_string());
    values
}

fn run(job: &str, args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_job(job, &args);
    assert!(out.status.success(), "{job}: {}", String::from_utf8_lossy(&out.stderr));
}

fn lines_of(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output directory") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("output file");
        lines.extend(text.lines().map(str::to_owned));
    }
    lines
}

#[test]
fn candles_from_avro_trades_through_the_registry_equal_the_json_run() {
    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let generator = [
        "job.generator.symbols=8",
        "job.generator.venues=2",
        "job.generator.pace.events=6000",
        "job.generator.pace.events_per_second=100.0",
        "job.generator.pace.start=\"2026-01-01T00:58:00Z\"",
        "job.generator.pace.max_disorder=\"1s\"",
    ];
    let mut args: Vec<String> = Vec::new();
    for flag in generator {
        args.extend(["--set".into(), flag.into()]);
    }
    let trades_dir = dir.path().join("trades");
    args.extend([
        "--set".into(),
        format!("job.trades={{kind=\"file\", path=\"{}\"}}", trades_dir.display()),
    ]);
    run("market-produce", &args);
    let trades: String = lines_of(&trades_dir).join("\n");

    // The reference: the same trades as JSON lines from files.
    let reference = dir.path().join("reference");
    run(
        "market-candles",
        &[
            "--set".into(),
            format!(
                "job.market.trades={{kind=\"file\", path=\"{}\", max_out_of_orderness=\"1s\"}}",
                trades_dir.display()
            ),
            "--set".into(),
            format!("job.output={{kind=\"file\", path=\"{}\"}}", reference.display()),
        ],
    );
    let expected = sorted(lines_of(&reference));
    assert!(expected.len() > 100, "{} candles", expected.len());

    // Python writes the trades as Avro through the registry; the job reads them, writes Avro
    // candles with a schema Python registered, exactly once; Python reads them back.
    let topic = kafka.topic("avro-trades", 2);
    let candles = kafka.topic("avro-candles", 2);
    let trade_schema = repo("jobs/schemas/trade.avsc");
    let candle_schema = repo("jobs/schemas/candle.avsc");
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    registry_kafka_py(
        &["produce", &kafka.address, &registry.url, &topic, &path(&trade_schema)],
        trades.as_bytes(),
    );
    let subject = format!("{candles}-value");
    registry_kafka_py(&["register", &registry.url, &subject, &path(&candle_schema)], b"");
    let set = |k: &str, v: String| ["--set".to_owned(), format!("{k}={v}")];
    let quoted = |v: &str| format!("\"{v}\"");
    let mut args = vec!["--workers".to_owned(), "2".to_owned()];
    args.extend(["--config".to_owned(), path(&repo("jobs/config/market-candles-avro.toml"))]);
    args.extend(set("job.market.trades.brokers", quoted(&kafka.address)));
    args.extend(set("job.market.trades.topics", format!("[{}]", quoted(&topic))));
    args.extend(set("job.market.trades.bounded", "true".into()));
    args.extend(set("job.market.trades.schema.file", quoted(&path(&trade_schema))));
    args.extend(set("job.market.trades.schema.registry.url", quoted(&registry.url)));
    args.extend(set("job.output.brokers", quoted(&kafka.address)));
    args.extend(set("job.output.topic", quoted(&candles)));
    args.extend(set("job.output.delivery", quoted("exactly-once")));
    args.extend(set("job.output.schema.file", quoted(&path(&candle_schema))));
    args.extend(set("job.output.schema.registry.url", quoted(&registry.url)));
    args.extend(set("runtime.checkpoint.dir", quoted(&path(&dir.path().join("checkpoints")))));
    args.extend(set("runtime.checkpoint.interval", quoted("200ms")));
    run("market-candles", &args);

    let values = kafka.records(&candles, Isolation::ReadCommitted);
    let hex = hex_values(&values);
    let got = sorted(
        registry_kafka_py(&["decode", &registry.url, &candles], hex.as_bytes())
            .lines()
            .map(str::to_owned),
    );
    assert_eq!(got.len(), expected.len(), "as many candles as the JSON run");
    assert_eq!(got, expected, "Avro candles read by Python equal the JSON run's");
}

/// A trade as the job reads it with reader schema v1 (`jobs/schemas/trade.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TradeV1 {
    id: u64,
    symbol: String,
    venue: u32,
    price: f64,
    size: u32,
    ts: EventTime,
}

/// A trade with schema v2: v1 and an `exchange` with a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TradeV2 {
    id: u64,
    symbol: String,
    venue: u32,
    price: f64,
    size: u32,
    exchange: String,
    ts: EventTime,
}

impl Timestamped for TradeV1 {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

impl Timestamped for TradeV2 {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

fn v2_schema() -> String {
    let v1 = std::fs::read_to_string(repo("jobs/schemas/trade.avsc")).expect("trade.avsc");
    let exchange = r#"{"name": "exchange", "type": "string", "default": "XNAS"},
    {"name": "ts""#;
    v1.replacen(r#"{"name": "ts""#, exchange, 1)
}

/// Reads `topic` to its end with a source of `D` decoding with `schema`; returns the records
/// and the dead letters' `(place, reason)`.
fn read_all<D>(kafka: &Kafka, topic: &str, schema: SchemaConfig) -> (Vec<D>, Vec<(String, String)>)
where
    D: tributary_runtime::Data + serde::de::DeserializeOwned + Timestamped,
{
    let mut config = KafkaSourceConfig::new(kafka.address.clone(), &[topic]);
    config.bounded = true;
    config.format = Format::Avro;
    config.schema = Some(Box::new(schema));
    let source: KafkaSource<D> = KafkaSource::new("avro", &config).expect("the topic exists");
    support::oracle::read_with_dead_letters(source, 2)
}

fn with_registry(registry: &SchemaRegistry, reader: Option<String>) -> SchemaConfig {
    SchemaConfig {
        inline: reader,
        registry: Some(RegistryConfig::new(&registry.url)),
        ..SchemaConfig::default()
    }
}

#[test]
fn writer_schema_v2_and_v1_records_read_with_reader_types_v1_and_v2() {
    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let topic = kafka.topic("evolving", 2);
    registry.set_compatibility(&format!("{topic}-value"), "BACKWARD");
    let v1 = (0..100u64).map(|n| TradeV1 {
        id: n,
        symbol: format!("SYM{:03}", n % 5),
        venue: (n % 3) as u32,
        price: 100.0 + n as f64 / 8.0,
        size: 10 + n as u32,
        ts: 1_767_225_600_000 + n * 10,
    });
    let v1: Vec<TradeV1> = v1.collect();
    let v2: Vec<TradeV2> = v1
        .iter()
        .map(|t| TradeV2 {
            id: t.id + 1000,
            exchange: "XLON".into(),
            ts: t.ts + 1000,
            ..TradeV2::from(t.clone())
        })
        .collect();
    let json = |records: Vec<String>| records.join("\n").into_bytes();
    let schema_file = |text: &str| {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("schema written");
        file
    };
    let (v1_file, v2_file) = (repo("jobs/schemas/trade.avsc"), schema_file(&v2_schema()));
    let produce = |file: &Path, records: Vec<u8>| {
        let file = file.to_str().expect("UTF-8");
        registry_kafka_py(&["produce", &kafka.address, &registry.url, &topic, file], &records);
    };
    produce(&v1_file, json(v1.iter().map(|t| serde_json::to_string(t).expect("JSON")).collect()));
    produce(
        v2_file.path(),
        json(v2.iter().map(|t| serde_json::to_string(t).expect("JSON")).collect()),
    );

    let v1_text = std::fs::read_to_string(&v1_file).expect("trade.avsc");
    let sort_v1 = |mut r: Vec<TradeV1>| {
        r.sort_by_key(|t| t.id);
        r
    };
    let sort_v2 = |mut r: Vec<TradeV2>| {
        r.sort_by_key(|t| t.id);
        r
    };
    // Reader v1: the v2 records lose `exchange`.
    let (got, dead) = read_all::<TradeV1>(kafka, &topic, with_registry(registry, Some(v1_text)));
    assert_eq!(dead, vec![]);
    let expected: Vec<TradeV1> = v1.iter().cloned().chain(v2.iter().map(TradeV1::from)).collect();
    assert_eq!(sort_v1(got), sort_v1(expected.clone()));
    // Reader v2: the v1 records get the default.
    let (got, dead) =
        read_all::<TradeV2>(kafka, &topic, with_registry(registry, Some(v2_schema())));
    assert_eq!(dead, vec![]);
    let defaulted =
        v1.iter().map(|t| TradeV2 { exchange: "XNAS".into(), ..TradeV2::from(t.clone()) });
    assert_eq!(sort_v2(got), sort_v2(defaulted.chain(v2.iter().cloned()).collect()));
    // No reader schema: each record decodes by field name into the job's type.
    let (got, dead) = read_all::<TradeV1>(kafka, &topic, with_registry(registry, None));
    assert_eq!(dead, vec![]);
    assert_eq!(sort_v1(got), sort_v1(expected));
}

impl From<TradeV1> for TradeV2 {
    fn from(t: TradeV1) -> Self {
        TradeV2 {
            id: t.id,
            symbol: t.symbol,
            venue: t.venue,
            price: t.price,
            size: t.size,
            exchange: String::new(),
            ts: t.ts,
        }
    }
}

impl From<&TradeV2> for TradeV1 {
    fn from(t: &TradeV2) -> Self {
        TradeV1 {
            id: t.id,
            symbol: t.symbol.clone(),
            venue: t.venue,
            price: t.price,
            size: t.size,
            ts: t.ts,
        }
    }
}

#[test]
fn malformed_and_unknown_schema_records_are_dead_letters_naming_the_offset() {
    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let topic = kafka.topic("avro-garbage", 1);
    let trade = TradeV1 { id: 1, symbol: "S".into(), venue: 0, price: 1.5, size: 2, ts: 1_000 };
    let schema = repo("jobs/schemas/trade.avsc");
    registry_kafka_py(
        &["produce", &kafka.address, &registry.url, &topic, schema.to_str().expect("UTF-8")],
        serde_json::to_string(&trade).expect("JSON").as_bytes(),
    );
    let good = kafka.records(&topic, Isolation::ReadUncommitted);
    let good = good[0].1.clone().expect("a value");
    let id = u32::from_be_bytes(good[1..5].try_into().expect("an id"));
    let mut unknown = vec![0, 0x7f, 0, 0, 1];
    unknown.extend_from_slice(&good[5..]);
    kafka.produce(
        &topic,
        [
            (None, br#"{"id": 1}"#.to_vec()),
            (None, unknown),
            (None, good[..good.len() - 3].to_vec()),
            (None, vec![0, 0, 0]),
            (None, good.clone()),
        ],
    );
    let reader = std::fs::read_to_string(&schema).expect("trade.avsc");
    let (got, dead) = read_all::<TradeV1>(kafka, &topic, with_registry(registry, Some(reader)));
    assert_eq!(got, vec![trade.clone(), trade]);
    let truncated = format!("schema id {id}: ");
    let reasons: Vec<(String, &str)> = vec![
        (format!("{topic}/0@1"), "magic byte 0x7b"),
        (format!("{topic}/0@2"), "unknown writer schema: schema id 2130706433"),
        (format!("{topic}/0@3"), &truncated),
        (format!("{topic}/0@4"), "3 bytes: too short"),
    ];
    assert_eq!(dead.len(), reasons.len(), "{dead:?}");
    for ((place, reason), (want_place, want)) in dead.iter().zip(&reasons) {
        assert_eq!(place, want_place);
        assert!(reason.contains(want), "{place}: {reason} should say {want}");
    }
}

#[test]
fn a_sink_schema_missing_from_the_registry_is_refused_unless_auto_registered() {
    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let topic = kafka.topic("avro-out", 1);
    let mut config = KafkaSinkConfig::new(kafka.address.clone(), topic.clone());
    config.format = Format::Avro;
    let mut schema = with_registry(registry, None);
    schema.file = Some(repo("jobs/schemas/candle.avsc"));
    config.schema = Some(Box::new(schema.clone()));
    let error = KafkaSink::<Value>::new("out", &config).err().expect("refused").to_string();
    assert!(error.contains(&format!("not registered under subject `{topic}-value`")), "{error}");
    schema.auto_register = true;
    config.schema = Some(Box::new(schema));
    KafkaSink::<Value>::new("out", &config).expect("registered by the sink");
    // Now it is there: found without registering.
    config.schema.as_mut().expect("schema").auto_register = false;
    KafkaSink::<Value>::new("out", &config).expect("found in the registry");
}

#[test]
fn avro_keys_of_a_changelog_topic_decode_through_the_registry() {
    use tributary_connectors::kafka::{ChangelogDecoder, ChangelogRecord};

    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let topic = kafka.topic("avro-keys", 1);
    let key_schema = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(
        key_schema.path(),
        r#"{"type": "record", "name": "DeviceKey", "namespace": "t",
            "fields": [{"name": "device", "type": "string"}, {"name": "site", "type": "int"}]}"#,
    )
    .expect("key schema written");
    let changes = [
        r#"{"key": {"device": "dev-1", "site": 3}, "value": "boiler room"}"#,
        r#"{"key": {"device": "dev-2", "site": 3}, "value": "roof"}"#,
        r#"{"key": {"device": "dev-1", "site": 3}, "value": null}"#,
    ];
    let key_path = key_schema.path().to_str().expect("UTF-8");
    registry_kafka_py(
        &["produce-keyed", &kafka.address, &registry.url, &topic, key_path],
        changes.join("\n").as_bytes(),
    );
    // A key that is not in the wire format.
    kafka.produce(&topic, [(Some(b"dev-9".to_vec()), br#""cellar""#.to_vec())]);

    let mut config = KafkaSourceConfig::new(kafka.address.clone(), &[&topic]);
    config.bounded = true;
    config.key_format = Some(Format::Avro);
    let mut bad = config.clone();
    bad.key_format = None;
    bad.key_schema = Some(Box::default());
    let error = ChangelogDecoder::new(&bad).err().expect("a key schema without a key format");
    assert_eq!(error.key, "key_schema");
    let error = ChangelogDecoder::new(&config).err().expect("Avro keys need a schema");
    assert_eq!(error.key, "key_schema", "{error}");
    // A source of values does not read keys: a key format there would be ignored, so it is an
    // error.
    let Err(error) = KafkaSource::<String>::new("values", &config) else {
        panic!("a key format on a source of values")
    };
    assert_eq!(error.key, "key_format", "{error}");
    config.key_schema = Some(Box::new(SchemaConfig {
        registry: Some(RegistryConfig::new(&registry.url)),
        ..SchemaConfig::default()
    }));
    let decoder = ChangelogDecoder::new(&config).expect("a decoder");
    let source: KafkaSource<ChangelogRecord<String>> =
        KafkaSource::with_decoder("keys", &config, decoder).expect("the topic exists");
    let (records, dead) = support::oracle::read_with_dead_letters(source, 1);
    let got: Vec<(String, Option<String>)> =
        records.into_iter().map(|r| (r.key, r.value)).collect();
    let one = r#"{"device":"dev-1","site":3}"#.to_owned();
    let two = r#"{"device":"dev-2","site":3}"#.to_owned();
    assert_eq!(
        got,
        vec![
            (one.clone(), Some("boiler room".to_owned())),
            (two, Some("roof".to_owned())),
            (one, None),
        ]
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, format!("{topic}/0@3"));
    assert!(dead[0].1.starts_with("key: magic byte 0x64"), "{:?}", dead[0]);
}

#[test]
fn a_registry_that_stops_answering_mid_run_stops_the_job_instead_of_dead_lettering() {
    use std::time::{Duration, Instant};
    use tributary_runtime::HumanDuration;

    let kafka = Kafka::shared();
    // A registry of this test's own, stopped once the source has started.
    let registry = SchemaRegistry::start();
    let topic = kafka.topic("avro-outage", 1);
    let trade = r#"{"id": 1, "symbol": "S", "venue": 0, "price": 1.5, "size": 2, "ts": 1000}"#;
    let schema = repo("jobs/schemas/trade.avsc");
    registry_kafka_py(
        &["produce", &kafka.address, &registry.url, &topic, schema.to_str().expect("UTF-8")],
        trade.as_bytes(),
    );
    let mut registry_config = RegistryConfig::new(&registry.url);
    registry_config.retry_for = HumanDuration(Duration::from_secs(2));
    registry_config.timeout = HumanDuration(Duration::from_secs(1));
    let mut config = KafkaSourceConfig::new(kafka.address.clone(), &[&topic]);
    config.bounded = true;
    config.format = Format::Avro;
    config.schema =
        Some(Box::new(SchemaConfig { registry: Some(registry_config), ..SchemaConfig::default() }));
    let source: KafkaSource<TradeV1> =
        KafkaSource::new("outage", &config).expect("the registry answers at start-up");
    registry.stop();

    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let (dead_tx, dead_rx) = std::sync::mpsc::channel();
    let (tx, dead_tx) = (std::sync::Mutex::new(tx), std::sync::Mutex::new(dead_tx));
    let failure = support::oracle::try_execute(100, 1, move |flow| {
        use timely::dataflow::operators::capture::Capture;
        use timely::dataflow::operators::vec::Map;
        let (records, dead) = flow.source_with_errors(&source);
        records.capture_into(tx.lock().expect("not poisoned").clone());
        dead.map(|d| d.reason).capture_into(dead_tx.lock().expect("not poisoned").clone());
    });
    // Not one dead letter: the record is good, the registry is away.
    assert_eq!(support::oracle::messages(dead_rx), Vec::<String>::new());
    let failure = failure.expect("the job fails").to_string();
    assert!(
        failure.contains(&format!("{topic}/0@0")) && failure.contains("is unavailable"),
        "{failure}"
    );
    // Retried first (100, 200, 400, 800 ms apart: it gives up before a wait would overshoot
    // `retry_for`), rather than failing on the first refused connection.
    assert!(started.elapsed() >= Duration::from_millis(1500), "retried for most of `retry_for`");
    assert_eq!(support::oracle::messages(rx), Vec::<TradeV1>::new());
}

#[test]
fn a_sink_writes_avro_keys_that_python_and_a_changelog_source_read_back() {
    use tributary_connectors::kafka::{ChangelogDecoder, ChangelogRecord};

    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let input = kafka.topic("avro-keys-in", 1);
    let output = kafka.topic("avro-keys-out", 1);
    let trades: Vec<TradeV1> = (0..12u64)
        .map(|n| TradeV1 {
            id: n,
            symbol: format!("SYM{}", n % 3),
            venue: 0,
            price: 10.0 + n as f64,
            size: 1,
            ts: 1_767_225_600_000 + n,
        })
        .collect();
    let json: Vec<String> =
        trades.iter().map(|t| serde_json::to_string(t).expect("JSON")).collect();
    let schema = repo("jobs/schemas/trade.avsc");
    registry_kafka_py(
        &["produce", &kafka.address, &registry.url, &input, schema.to_str().expect("UTF-8")],
        json.join("\n").as_bytes(),
    );

    let mut source = KafkaSourceConfig::new(kafka.address.clone(), &[&input]);
    source.bounded = true;
    source.format = Format::Avro;
    source.schema = Some(Box::new(with_registry(registry, None)));
    let source: KafkaSource<TradeV1> = KafkaSource::new("trades", &source).expect("a source");
    let mut sink = KafkaSinkConfig::new(kafka.address.clone(), output.clone());
    sink.format = Format::Avro;
    let value_schema = std::fs::read_to_string(&schema).expect("trade.avsc");
    sink.schema = Some(Box::new(SchemaConfig {
        auto_register: true,
        ..with_registry(registry, Some(value_schema))
    }));
    sink.key_format = Some(Format::Avro);
    sink.key_schema = Some(Box::new(SchemaConfig {
        auto_register: true,
        ..with_registry(registry, Some(r#""string""#.into()))
    }));
    let sink: KafkaSink<TradeV1> = KafkaSink::new("keyed", &sink)
        .expect("a sink")
        .keyed(|t: &TradeV1| Some(t.symbol.clone().into_bytes()));
    support::oracle::execute(100, 1, move |flow| {
        use tributary_runtime::SinkExt;
        flow.source(&source).sink_to(&sink);
    });

    // Confluent's deserialiser reads the keys (by their ids, registered under `<topic>-key`).
    let records = kafka.records(&output, Isolation::ReadCommitted);
    let hex = |v: &[u8]| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let keys: String =
        records.iter().map(|(k, _)| hex(k.as_deref().expect("a key")) + "\n").collect();
    let decoded = registry_kafka_py(&["decode", &registry.url, &output], keys.as_bytes());
    let mut got: Vec<String> =
        decoded.lines().map(|l| serde_json::from_str(l).expect("a string key")).collect();
    let mut want: Vec<String> = trades.iter().map(|t| t.symbol.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // And a changelog source with Avro keys: each symbol's latest trade.
    let mut table = KafkaSourceConfig::new(kafka.address.clone(), &[&output]);
    table.bounded = true;
    table.format = Format::Avro;
    table.schema = Some(Box::new(with_registry(registry, None)));
    table.key_format = Some(Format::Avro);
    table.key_schema = Some(Box::new(with_registry(registry, None)));
    let decoder = ChangelogDecoder::new(&table).expect("a decoder");
    let table: KafkaSource<ChangelogRecord<TradeV1>> =
        KafkaSource::with_decoder("table", &table, decoder).expect("a source");
    let (changes, dead) = support::oracle::read_with_dead_letters(table, 1);
    assert_eq!(dead, vec![]);
    let keyed: Vec<(String, u64)> =
        changes.into_iter().map(|c| (c.key, c.value.expect("a trade").id)).collect();
    let want: Vec<(String, u64)> = trades.iter().map(|t| (t.symbol.clone(), t.id)).collect();
    assert_eq!(keyed, want, "keys and values in the order written");
}
