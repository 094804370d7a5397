//! Decode benchmark: IoT readings (`SensorReading`) decoded in memory, one core, no reader and
//! no dataflow: the ceiling of what the file and Kafka sources can decode. JSON lines by bare
//! loops of serde_json, sonic-rs and simd-json and by the sources' own
//! `tributary_connectors::format::json::decode`; the same readings as Avro datums
//! (`jobs/schemas/sensor-reading.avsc`) by bare `apache-avro` loops and by the sources'
//! `AvroDecoder`; and as Protobuf messages by a bare `prost` loop (a derived struct) and by
//! the sources' `ProtobufDecoder` (into `SensorReading`) and `ProstDecoder` (into the derived struct).
//!
//! ```sh
//! cargo bench -p tributary-tests --bench decode                     # 2M lines, best of 3
//! cargo bench -p tributary-tests --bench decode -- --lines 5000000
//! ```
#![allow(clippy::print_stdout)]

use std::time::Instant;

use tributary_connectors::format::json::decode;
use tributary_connectors::SensorReading;

/// `lines` readings of 10 000 devices as JSON lines, as the files bench writes them.
fn input(lines: u64) -> Vec<Vec<u8>> {
    (0..lines)
        .map(|i| {
            let (device, site) = (i % 10_000, i % 10_000 / 100);
            let value = 20.0 + ((i * 7919) % 1000) as f64 / 100.0;
            let ts = 1_767_225_600_000 + i;
            format!(
                r#"{{"device":{device},"site":{site},"sensor":"temperature","value":{value},"ts":{ts}}}"#
            )
            .into_bytes()
        })
        .collect()
}

/// `SensorReading` with signed fields, as `apache-avro`'s direct deserialiser wants them (it
/// maps `u64` to a `fixed`, and wants the struct named like the Avro record).
#[derive(serde::Deserialize)]
#[serde(rename = "SensorReading")]
#[allow(dead_code)]
struct SignedReading {
    device: i32,
    site: i32,
    sensor: tributary_connectors::SensorKind,
    value: f64,
    ts: i64,
}

/// The best records/s of three passes of `decode` over `lines`, and the checksum of the
/// decoded timestamps (so the work cannot be optimised away, and the decoders agree).
fn measure<T>(lines: &mut [Vec<u8>], mut decode: impl FnMut(&mut Vec<u8>) -> T) -> (f64, u64)
where
    T: Timestamp,
{
    let mut best = 0f64;
    let mut sum = 0u64;
    for _ in 0..3 {
        sum = 0;
        let started = Instant::now();
        for line in lines.iter_mut() {
            sum = sum.wrapping_add(decode(line).ts());
        }
        best = best.max(lines.len() as f64 / started.elapsed().as_secs_f64());
    }
    (best, sum)
}

/// The decoded record's event time, for the checksum.
trait Timestamp {
    fn ts(&self) -> u64;
}

impl Timestamp for SensorReading {
    fn ts(&self) -> u64 {
        self.ts
    }
}

/// Avro's direct path decodes into a type of its own name (see [`avro_rows`]).
struct Direct(u64);

impl Timestamp for Direct {
    fn ts(&self) -> u64 {
        self.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let count: u64 = flag("--lines").and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let mut lines = input(count);
    let bytes: usize = lines.iter().map(Vec::len).sum();
    println!(
        "| decoder ({count} lines, {:.0} bytes a line) | lines/s | MB/s |",
        bytes as f64 / count as f64
    );
    println!("| --- | ---: | ---: |");
    let mut sums = Vec::new();
    let mut row = |name: &str, (rate, sum): (f64, u64)| {
        let mb = rate * bytes as f64 / count as f64 / 1e6;
        println!("| {name} | {:.2}M | {mb:.0} |", rate / 1e6);
        sums.push(sum);
    };
    row(
        "serde_json::from_slice",
        measure(&mut lines, |l| serde_json::from_slice::<SensorReading>(l).expect("valid")),
    );
    row(
        "tributary_connectors::format::json::decode (ours)",
        measure(&mut lines, |l| decode::<SensorReading>(l).expect("valid")),
    );
    row(
        "sonic_rs::from_slice",
        measure(&mut lines, |l| sonic_rs::from_slice::<SensorReading>(l).expect("valid")),
    );
    // simd-json parses in place: it needs a copy of each line it may overwrite.
    let mut scratch = Vec::new();
    row(
        "simd_json::serde::from_slice (on a copy)",
        measure(&mut lines, |l| {
            scratch.clear();
            scratch.extend_from_slice(l);
            simd_json::serde::from_slice::<SensorReading>(&mut scratch).expect("valid")
        }),
    );
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "the decoders disagree: {sums:?}");
    avro_rows(&lines);
    protobuf_rows(&lines);
}

/// The reading as a `prost` message (what `prost-build` would generate).
#[derive(Clone, PartialEq, prost::Message)]
struct ReadingMessage {
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

impl prost::Name for ReadingMessage {
    const NAME: &'static str = "SensorReading";
    const PACKAGE: &'static str = "tributary.iot";
}

impl Timestamp for ReadingMessage {
    fn ts(&self) -> u64 {
        self.ts
    }
}

/// The Protobuf rows: the same readings as `tributary.iot.SensorReading` messages, decoded by
/// a bare `prost` loop into the derived struct, by `ProtobufDecoder` into `SensorReading` and by
/// `ProstDecoder` into the derived struct.
fn protobuf_rows(json: &[Vec<u8>]) {
    use prost::Message as _;
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    };
    use tributary_connectors::format::{ProstDecoder, ProtobufDecoder, SchemaConfig};

    let field = |name: &str, number: i32, kind: Type| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(kind as i32),
        ..FieldDescriptorProto::default()
    };
    let message = DescriptorProto {
        name: Some("SensorReading".into()),
        field: vec![
            field("device", 1, Type::Uint32),
            field("site", 2, Type::Uint32),
            field("sensor", 3, Type::String),
            field("value", 4, Type::Double),
            field("ts", 5, Type::Uint64),
        ],
        ..DescriptorProto::default()
    };
    let file = FileDescriptorProto {
        name: Some("reading.proto".into()),
        package: Some("tributary.iot".into()),
        syntax: Some("proto3".into()),
        message_type: vec![message],
        ..FileDescriptorProto::default()
    };
    let set = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(set.path(), FileDescriptorSet { file: vec![file] }.encode_to_vec())
        .expect("descriptor set written");
    let mut messages: Vec<Vec<u8>> = json
        .iter()
        .map(|line| {
            let r: SensorReading = decode(line).expect("valid");
            let sensor = serde_json::to_value(r.sensor).expect("a name");
            let sensor = sensor.as_str().expect("a name").to_owned();
            let m =
                ReadingMessage { device: r.device, site: r.site, sensor, value: r.value, ts: r.ts };
            m.encode_to_vec()
        })
        .collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let count = messages.len();
    println!();
    println!(
        "| Protobuf decoder ({count} messages, {:.0} bytes each) | records/s | of the bare loop |",
        bytes as f64 / count as f64
    );
    println!("| --- | ---: | ---: |");
    let bare = measure(&mut messages, |m| ReadingMessage::decode(m.as_slice()).expect("valid"));
    println!("| bare prost: ReadingMessage::decode (derived struct) | {:.2}M | |", bare.0 / 1e6);
    let config = SchemaConfig {
        file: Some(set.path().to_owned()),
        message: Some("tributary.iot.SensorReading".into()),
        ..SchemaConfig::default()
    };
    let mut ours = ProtobufDecoder::new(&config).expect("a decoder");
    let run = measure(&mut messages, |m| ours.decode::<SensorReading>(m).expect("valid"));
    println!(
        "| ProtobufDecoder::decode::<SensorReading> (ours: wire bytes straight into serde) | {:.2}M | {:.0} % |",
        run.0 / 1e6,
        100.0 * run.0 / bare.0
    );
    assert_eq!(bare.1, run.1, "the decoders disagree");
    let mut generated = ProstDecoder::<ReadingMessage>::new(Some(&config)).expect("a decoder");
    let run = measure(&mut messages, |m| generated.decode(m).expect("valid"));
    println!(
        "| ProstDecoder::<ReadingMessage>::decode (ours: the job's type generated by prost) | {:.2}M | {:.0} % |",
        run.0 / 1e6,
        100.0 * run.0 / bare.0
    );
    assert_eq!(bare.1, run.1, "the decoders disagree");
}

/// The Avro rows: the same readings as plain Avro datums, decoded by bare `apache-avro` loops
/// and by `AvroDecoder`, through values (what `SensorReading`, with its `u64` event time,
/// needs) and straight into a type `apache-avro` deserialises directly.
fn avro_rows(json: &[Vec<u8>]) {
    use apache_avro::reader::datum::GenericDatumReader;
    use tributary_connectors::format::{AvroDecoder, AvroEncoder, SchemaConfig};

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/schemas/sensor-reading.avsc");
    let text = std::fs::read_to_string(path).expect("sensor-reading.avsc");
    let config = SchemaConfig { inline: Some(text.clone()), ..SchemaConfig::default() };
    let encoder = AvroEncoder::new(&config, "readings").expect("a valid schema");
    let mut datums: Vec<Vec<u8>> = json
        .iter()
        .map(|line| {
            let reading: SensorReading = decode(line).expect("valid");
            let mut datum = Vec::new();
            encoder.encode(&reading, &mut datum).expect("encodes");
            datum
        })
        .collect();
    let bytes: usize = datums.iter().map(Vec::len).sum();
    let count = datums.len();
    println!();
    println!(
        "| Avro decoder ({count} datums, {:.0} bytes each) | records/s | of the bare loop |",
        bytes as f64 / count as f64
    );
    println!("| --- | ---: | ---: |");
    let schema = apache_avro::Schema::parse_str(&text).expect("a valid schema");
    let bare = GenericDatumReader::builder(&schema).build().expect("a reader");
    let mut sums = Vec::new();
    let mut rows =
        |bare_name: &str, bare_run: (f64, u64), ours_name: &str, ours_run: (f64, u64)| {
            println!("| {bare_name} | {:.2}M | |", bare_run.0 / 1e6);
            println!(
                "| {ours_name} | {:.2}M | {:.0} % |",
                ours_run.0 / 1e6,
                100.0 * ours_run.0 / bare_run.0
            );
            sums.extend([bare_run.1, ours_run.1]);
        };
    let mut ours = AvroDecoder::new(&config).expect("a decoder");
    rows(
        "bare apache-avro: read_value + from_value::<SensorReading>",
        measure(&mut datums, |d| {
            let value = bare.read_value(&mut d.as_slice()).expect("valid");
            apache_avro::from_value::<SensorReading>(&value).expect("a reading")
        }),
        "AvroDecoder::decode::<SensorReading> (ours)",
        measure(&mut datums, |d| ours.decode::<SensorReading>(d).expect("valid")),
    );
    let mut ours = AvroDecoder::new(&config).expect("a decoder");
    rows(
        "bare apache-avro: read_deser::<SignedReading> (no value)",
        measure(&mut datums, |d| {
            Direct(bare.read_deser::<SignedReading>(&mut d.as_slice()).expect("valid").ts as u64)
        }),
        "AvroDecoder::decode::<SignedReading> (ours, direct)",
        measure(&mut datums, |d| Direct(ours.decode::<SignedReading>(d).expect("valid").ts as u64)),
    );
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "the decoders disagree: {sums:?}");
}
