//! End-to-end test of JSON Schema records through a schema registry: Apache Kafka and
//! Apicurio Registry on loopback; readings written by Confluent's Python `JSONSerializer`,
//! read and written again by a Tributary dataflow, decoded (and validated against the schema
//! the records' id names) by Python's `JSONDeserializer` (`tests/py/registry_kafka.py`).

mod support;

use std::path::{Path, PathBuf};

use support::kafka::{Isolation, Kafka};
use support::registry::SchemaRegistry;
use support::registry_kafka_py;
use tributary_connectors::format::{RegistryConfig, SchemaConfig};
use tributary_connectors::{
    Format, KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig, SensorReading,
};

fn schema_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/schemas/sensor-reading.schema.json")
}

/// Writes one reading to `topic` with Python's `JSONSerializer`: the reading and the record's
/// value as written (the wire-format header, then the document).
fn one_reading_from_python(
    kafka: &Kafka,
    registry: &SchemaRegistry,
    topic: &str,
) -> (SensorReading, Vec<u8>) {
    let good = support::registry_readings(2)[1].clone();
    let schema_file = schema_file();
    registry_kafka_py(
        &[
            "json-produce",
            &kafka.address,
            &registry.url,
            topic,
            schema_file.to_str().expect("UTF-8"),
        ],
        serde_json::to_string(&good).expect("JSON").as_bytes(),
    );
    let written = kafka.records(topic, Isolation::ReadUncommitted)[0].1.clone().expect("a value");
    (good, written)
}

#[test]
fn readings_written_by_python_pass_through_a_job_and_read_back_equal() {
    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let input = kafka.topic("js-readings", 2);
    let output = kafka.topic("js-out", 1);
    let expected = support::registry_readings(200);
    let json: Vec<String> =
        expected.iter().map(|r| serde_json::to_string(r).expect("JSON")).collect();
    let schema_file = schema_file();
    let schema_path = schema_file.to_str().expect("UTF-8");
    registry_kafka_py(
        &["json-produce", &kafka.address, &registry.url, &input, schema_path],
        json.join("\n").as_bytes(),
    );

    let registry_config = RegistryConfig::new(&registry.url);
    let mut source = KafkaSourceConfig::new(kafka.address.clone(), &[&input]);
    source.bounded = true;
    source.format = Format::Json;
    source.schema = Some(Box::new(SchemaConfig {
        registry: Some(registry_config.clone()),
        ..Default::default()
    }));
    let source: KafkaSource<SensorReading> = KafkaSource::new("js", &source).expect("a source");
    let mut sink = KafkaSinkConfig::new(kafka.address.clone(), output.clone());
    sink.format = Format::Json;
    let mut schema = SchemaConfig {
        registry: Some(registry_config),
        file: Some(schema_file.clone()),
        ..SchemaConfig::default()
    };
    // Not registered under the output's subject: refused unless auto-registration is on.
    sink.schema = Some(Box::new(schema.clone()));
    let Err(error) = KafkaSink::<SensorReading>::new("js-out", &sink) else {
        panic!("a sink whose schema is not registered")
    };
    let error = error.to_string();
    assert!(error.contains(&format!("not registered under subject `{output}-value`")), "{error}");
    schema.auto_register = true;
    // Each document is checked against the schema before it is written, as Python checks it
    // again when it reads.
    schema.validate = true;
    sink.schema = Some(Box::new(schema));
    let sink: KafkaSink<SensorReading> = KafkaSink::new("js-out", &sink).expect("a sink");

    support::pass_through(source, sink);
    let got = support::read_back(kafka, "json-decode", &registry.url, &output);
    assert_eq!(got, expected, "what Python reads back is what it wrote");
}

#[test]
fn unframed_avro_unknown_and_misshapen_records_are_dead_letters() {
    let trade = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/schemas/trade.avsc");
    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let topic = kafka.topic("js-garbage", 1);
    let (good, written) = one_reading_from_python(kafka, registry, &topic);
    // The same id, a document that is not a reading.
    let mut misshapen = written[..5].to_vec();
    misshapen.extend_from_slice(br#"{"device": "seven"}"#);
    // An id the registry never gave out.
    let mut unknown = vec![0, 0x7f, 0xff, 0xff, 0xf0];
    unknown.extend_from_slice(&written[5..]);
    // An Avro record written through the same registry.
    let avro_topic = kafka.topic("js-garbage-avro", 1);
    let trade_json = r#"{"id": 1, "symbol": "S", "venue": 0, "price": 1.5, "size": 2, "ts": 1000}"#;
    registry_kafka_py(
        &["produce", &kafka.address, &registry.url, &avro_topic, trade.to_str().expect("UTF-8")],
        trade_json.as_bytes(),
    );
    let avro =
        kafka.records(&avro_topic, Isolation::ReadUncommitted)[0].1.clone().expect("a value");
    let plain = serde_json::to_vec(&good).expect("JSON");
    kafka.produce(&topic, [(None, plain), (None, misshapen), (None, unknown), (None, avro)]);
    let mut config = KafkaSourceConfig::new(kafka.address.clone(), &[&topic]);
    config.bounded = true;
    config.schema = Some(Box::new(SchemaConfig {
        registry: Some(RegistryConfig::new(&registry.url)),
        ..SchemaConfig::default()
    }));
    let source: KafkaSource<SensorReading> = KafkaSource::new("js", &config).expect("a source");
    let (records, dead) = support::oracle::read_with_dead_letters(source, 1);
    assert_eq!(records, vec![good]);
    assert_eq!(dead.len(), 4, "{dead:?}");
    assert_eq!(dead[0].0, format!("{topic}/0@1"));
    assert!(dead[0].1.contains("magic byte 0x7b"), "{:?}", dead[0]);
    assert_eq!(dead[1].0, format!("{topic}/0@2"));
    assert!(dead[1].1.contains("invalid type: string \"seven\""), "{:?}", dead[1]);
    assert_eq!(dead[2].0, format!("{topic}/0@3"));
    assert!(dead[2].1.contains("unknown writer schema"), "{:?}", dead[2]);
    assert_eq!(dead[3].0, format!("{topic}/0@4"));
    assert!(dead[3].1.contains("is a AVRO schema, not JSON"), "{:?}", dead[3]);
}

#[test]
fn with_validate_a_document_outside_its_writer_schema_is_a_dead_letter() {
    let kafka = Kafka::shared();
    let registry = SchemaRegistry::shared();
    let topic = kafka.topic("js-validate", 1);
    let (good, written) = one_reading_from_python(kafka, registry, &topic);
    // A reading to the job's type (which ignores unknown fields), not to the schema (which
    // allows no other properties).
    let mut extra = serde_json::to_value(&good).expect("JSON");
    extra["unit"] = "%".into();
    let mut outside = written[..5].to_vec();
    outside.extend_from_slice(extra.to_string().as_bytes());
    kafka.produce(&topic, [(None, outside)]);

    let read = |validate: bool| {
        let mut config = KafkaSourceConfig::new(kafka.address.clone(), &[&topic]);
        config.bounded = true;
        config.schema = Some(Box::new(SchemaConfig {
            registry: Some(RegistryConfig::new(&registry.url)),
            validate,
            ..SchemaConfig::default()
        }));
        let source: KafkaSource<SensorReading> = KafkaSource::new("js", &config).expect("a source");
        support::oracle::read_with_dead_letters(source, 1)
    };
    let (records, dead) = read(false);
    assert_eq!((records, dead), (vec![good.clone(), good.clone()], vec![]));
    let (records, dead) = read(true);
    assert_eq!(records, vec![good]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, format!("{topic}/0@1"));
    assert!(dead[0].1.contains("does not match its JSON schema at the document"), "{:?}", dead[0]);
}
