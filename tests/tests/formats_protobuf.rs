//! End-to-end test of Protobuf through a schema registry: Apache Kafka and Apicurio Registry on
//! loopback; readings written by Confluent's Python `ProtobufSerializer`, read and written
//! again by a Tributary dataflow, decoded by Python's `ProtobufDeserializer`
//! (`tests/py/registry_kafka.py`).

mod support;

use std::path::Path;

use support::kafka::{Isolation, Kafka};
use support::registry::SchemaRegistry;
use support::registry_kafka_py;
use tributary_connectors::format::{ProstDecoder, RegistryConfig, SchemaConfig};
use tributary_connectors::{
    Format, KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig, SensorReading,
};
use tributary_runtime::{EventTime, Timestamped};

/// `tributary.iot.SensorReading` as `prost-build` would generate it (with serde derives added,
/// as its `type_attribute` does).
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
struct GeneratedReading {
    #[prost(uint32, tag = "1")]
    device: u32,
    #[prost(uint32, tag = "2")]
    site: u32,
    #[prost(string, tag = "3")]
    sensor: String,
    #[prost(double, tag = "4")]
    value: f64,
    #[prost(uint64, tag = "5")]
    ts: u64,
}

impl prost::Name for GeneratedReading {
    const NAME: &'static str = "SensorReading";
    const PACKAGE: &'static str = "tributary.iot";
}

impl Timestamped for GeneratedReading {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

/// The same message under another name: its records are not this job's.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
struct Renamed {
    #[prost(uint32, tag = "1")]
    device: u32,
}

impl prost::Name for Renamed {
    const NAME: &'static str = "Reading";
    const PACKAGE: &'static str = "other";
}

impl Timestamped for Renamed {
    fn event_time(&self) -> EventTime {
        0
    }
}

#[test]
fn readings_written_by_python_pass_through_a_job_and_read_back_equal() {
    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let input = kafka.topic("pb-readings", 2);
    let output = kafka.topic("pb-out", 1);
    let expected = support::registry_readings(300);
    let json: Vec<String> =
        expected.iter().map(|r| serde_json::to_string(r).expect("JSON")).collect();
    registry_kafka_py(
        &["proto-produce", &kafka.address, &registry.url, &input],
        json.join("\n").as_bytes(),
    );
    registry_kafka_py(&["proto-register", &registry.url, &format!("{output}-value")], b"");

    let schema = SchemaConfig {
        registry: Some(RegistryConfig::new(&registry.url)),
        ..SchemaConfig::default()
    };
    let mut source = KafkaSourceConfig::new(kafka.address.clone(), &[&input]);
    source.bounded = true;
    source.format = Format::Protobuf;
    source.schema = Some(Box::new(schema.clone()));
    let source: KafkaSource<SensorReading> = KafkaSource::new("pb", &source).expect("a source");
    let mut sink = KafkaSinkConfig::new(kafka.address.clone(), output.clone());
    sink.format = Format::Protobuf;
    sink.schema = Some(Box::new(schema));
    let sink: KafkaSink<SensorReading> = KafkaSink::new("pb-out", &sink).expect("a sink");
    support::pass_through(source, sink);
    let got = support::read_back(kafka, "proto-decode", &registry.url, &output);
    assert_eq!(got, expected, "what Python reads back is what it wrote");
}

#[test]
fn records_of_an_avro_schema_or_a_missing_message_are_dead_letters() {
    let trade = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/schemas/trade.avsc");
    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let topic = kafka.topic("pb-garbage", 1);
    let good = support::registry_readings(2)[1].clone();
    registry_kafka_py(
        &["proto-produce", &kafka.address, &registry.url, &topic],
        serde_json::to_string(&good).expect("JSON").as_bytes(),
    );
    let written = kafka.records(&topic, Isolation::ReadUncommitted);
    let written = written[0].1.clone().expect("a value");
    let mut no_message = written[..5].to_vec();
    no_message.extend_from_slice(&[2, 8]); // indexes [4]: the file has one message
    no_message.extend_from_slice(&written[6..]);
    // An Avro record written through the same registry.
    let avro_topic = kafka.topic("pb-garbage-avro", 1);
    let trade_json = r#"{"id": 1, "symbol": "S", "venue": 0, "price": 1.5, "size": 2, "ts": 1000}"#;
    let trade = trade.to_str().expect("UTF-8");
    registry_kafka_py(
        &["produce", &kafka.address, &registry.url, &avro_topic, trade],
        trade_json.as_bytes(),
    );
    let avro =
        kafka.records(&avro_topic, Isolation::ReadUncommitted)[0].1.clone().expect("a value");
    kafka.produce(&topic, [(None, b"\x00\x00\x00".to_vec()), (None, no_message), (None, avro)]);
    let mut config = KafkaSourceConfig::new(kafka.address.clone(), &[&topic]);
    config.bounded = true;
    config.format = Format::Protobuf;
    config.schema = Some(Box::new(SchemaConfig {
        registry: Some(RegistryConfig::new(&registry.url)),
        ..SchemaConfig::default()
    }));
    let source: KafkaSource<SensorReading> = KafkaSource::new("pb", &config).expect("a source");
    let (records, dead) = support::oracle::read_with_dead_letters(source, 1);
    assert_eq!(records, vec![good]);
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert_eq!(dead[0].0, format!("{topic}/0@1"));
    assert!(dead[0].1.contains("3 bytes: too short"), "{:?}", dead[0]);
    assert_eq!(dead[1].0, format!("{topic}/0@2"));
    assert!(dead[1].1.contains("no message at indexes [4]"), "{:?}", dead[1]);
    assert_eq!(dead[2].0, format!("{topic}/0@3"));
    assert!(dead[2].1.contains("is a AVRO schema, not PROTOBUF"), "{:?}", dead[2]);
}

#[test]
fn iot_stats_on_protobuf_readings_through_the_registry_equal_the_json_run() {
    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let readings = support::registry_readings(3000);
    let json: Vec<String> =
        readings.iter().map(|r| serde_json::to_string(r).expect("JSON")).collect();
    let file = dir.path().join("readings.jsonl");
    std::fs::write(&file, json.join("\n")).expect("readings written");
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = support::run_job("iot-stats", &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut lines: Vec<String> =
            String::from_utf8(out.stdout).expect("UTF-8").lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let set = |k: &str, v: String| ["--set".to_owned(), format!("{k}={v}")];
    let quoted = |v: &str| format!("\"{v}\"");
    let input = format!(
        "{{kind=\"file\", path={}, max_out_of_orderness=\"1s\"}}",
        quoted(file.to_str().expect("UTF-8"))
    );
    let expected = run(&set("job.input", input));
    assert!(expected.len() >= 7, "{expected:?}");

    let topic = kafka.topic("pb-iot-readings", 2);
    registry_kafka_py(
        &["proto-produce", &kafka.address, &registry.url, &topic],
        json.join("\n").as_bytes(),
    );
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/config/iot-stats-protobuf.toml");
    let mut args = vec!["--config".to_owned(), config.to_str().expect("UTF-8").to_owned()];
    args.extend(set("job.input.brokers", quoted(&kafka.address)));
    args.extend(set("job.input.topics", format!("[{}]", quoted(&topic))));
    args.extend(set("job.input.bounded", "true".into()));
    args.extend(set("job.input.schema.registry.url", quoted(&registry.url)));
    assert_eq!(run(&args), expected, "the same statistics from Protobuf as from JSON lines");
}

#[test]
fn a_generated_type_decodes_the_registrys_readings_and_refuses_other_messages() {
    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let topic = kafka.topic("pb-generated", 2);
    let readings = support::registry_readings(200);
    let json: Vec<String> =
        readings.iter().map(|r| serde_json::to_string(r).expect("JSON")).collect();
    registry_kafka_py(
        &["proto-produce", &kafka.address, &registry.url, &topic],
        json.join("\n").as_bytes(),
    );
    kafka.produce(&topic, [(None, b"\x00\x00\x00".to_vec())]);
    let schema = SchemaConfig {
        registry: Some(RegistryConfig::new(&registry.url)),
        ..SchemaConfig::default()
    };
    let mut config = KafkaSourceConfig::new(kafka.address.clone(), &[&topic]);
    config.bounded = true;
    config.format = Format::Protobuf;
    let decoder = ProstDecoder::<GeneratedReading>::new(Some(&schema)).expect("a decoder");
    let source = KafkaSource::with_decoder("pb", &config, decoder).expect("a source");
    let (mut records, dead) = support::oracle::read_with_dead_letters(source, 2);
    records.sort_by_key(|r| r.ts);
    let records: Vec<SensorReading> = records
        .iter()
        .map(|r| serde_json::from_value(serde_json::to_value(r).expect("JSON")).expect("a reading"))
        .collect();
    assert_eq!(records, readings, "Python's readings, decoded by the generated type");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].1.contains("3 bytes: too short"), "{:?}", dead[0]);

    let decoder = ProstDecoder::<Renamed>::new(Some(&schema)).expect("a decoder");
    let source = KafkaSource::with_decoder("pb", &config, decoder).expect("a source");
    let (records, dead) = support::oracle::read_with_dead_letters(source, 1);
    assert!(records.is_empty());
    assert_eq!(dead.len(), 201, "every record is a dead letter");
    let reason = &dead.iter().find(|d| d.0 == format!("{topic}/0@0")).expect("offset 0").1;
    assert!(
        reason.contains("is message `tributary.iot.SensorReading`, not the job's `other.Reading`"),
        "{reason}"
    );
}
