//! Parquet sink benchmark: one worker's writer (no dataflow around it) writing a 10-column
//! record (integers, floats, strings, timestamps), against a hand-written baseline that builds
//! the Arrow columns directly and writes them with the same `ArrowWriter` settings. For scale,
//! `tests/py/bench_parquet.py` writes the same rows with pyarrow.
//!
//! ```sh
//! cargo bench -p tributary-tests --bench parquet                    # 5M rows
//! cargo bench -p tributary-tests --bench parquet -- --rows 20000000
//! python3 tests/py/bench_parquet.py 5000000
//! ```
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};
use tributary_connectors::parquet::{Compression, ParquetSink, ParquetSinkConfig};
use tributary_runtime::{Sink, SinkContext, SinkWriter};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    device: u32,
    site: u32,
    sensor: String,
    firmware: String,
    value: f64,
    min: f64,
    max: f64,
    count: u64,
    ts: u64,
    ingested: u64,
}

const SENSORS: [&str; 4] = ["temperature", "humidity", "pressure", "co2"];

/// Readings of 10 000 devices, 1 000 per second of event time, from 2026-01-01 (the same
/// formulas as `tests/py/bench_parquet.py`).
fn readings(n: usize) -> Vec<Reading> {
    (0..n)
        .map(|i| {
            let value = 20.0 + ((i * 7919) % 1000) as f64 / 100.0;
            Reading {
                device: (i % 10_000) as u32,
                site: (i % 10_000 / 100) as u32,
                sensor: SENSORS[i % 4].to_owned(),
                firmware: format!("v1.{}", i % 10_000 % 7),
                value,
                min: value - 1.5,
                max: value + 1.5,
                count: (i % 60) as u64,
                ts: 1_767_225_600_000 + i as u64,
                ingested: 1_767_225_600_000 + i as u64 + 250,
            }
        })
        .collect()
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).expect("read dir").flatten() {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

fn report(label: &str, rows: usize, seconds: f64, bytes: u64) {
    println!(
        "{label:<44} {:>7.2} M rows/s  {:>7.1} MB/s out  {:>6.1} MB",
        rows as f64 / seconds / 1e6,
        bytes as f64 / seconds / 1e6,
        bytes as f64 / 1e6
    );
}

fn tributary(label: &str, data: &[Reading], configure: impl FnOnce(&mut ParquetSinkConfig)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ParquetSinkConfig::new(dir.path());
    config.timestamp_columns = vec!["ts".into(), "ingested".into()];
    configure(&mut config);
    let sink = ParquetSink::<Reading>::new("bench", &config).expect("valid config");
    let ctx = SinkContext {
        name: "bench".into(),
        worker_index: 0,
        workers: 1,
        checkpointed: false,
        job: "test".into(),
        first_checkpoint: 0,
    };
    // The dataflow hands sinks owned batches of about a thousand records; copy them first.
    let mut batches: Vec<Vec<Reading>> = data.chunks(1024).map(<[Reading]>::to_vec).collect();
    let started = Instant::now();
    let mut writer = sink.writer(&ctx).expect("writer");
    for batch in &mut batches {
        writer.write(batch).expect("write");
    }
    writer.progress(None).expect("close");
    let seconds = started.elapsed().as_secs_f64();
    report(label, data.len(), seconds, dir_bytes(dir.path()));
}

fn hand_written(data: &[Reading]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let utc = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("device", DataType::UInt32, false),
        Field::new("site", DataType::UInt32, false),
        Field::new("sensor", DataType::Utf8, false),
        Field::new("firmware", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("min", DataType::Float64, false),
        Field::new("max", DataType::Float64, false),
        Field::new("count", DataType::UInt64, false),
        Field::new("ts", utc(), false),
        Field::new("ingested", utc(), false),
    ]));
    let properties = WriterProperties::builder()
        .set_compression(Codec::ZSTD(ZstdLevel::try_new(3).expect("level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let started = Instant::now();
    let file = std::fs::File::create(dir.path().join("out.parquet")).expect("create");
    let out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut writer = ArrowWriter::try_new(out, schema.clone(), Some(properties)).expect("writer");
    for chunk in data.chunks(8192) {
        let millis = |f: fn(&Reading) -> u64| {
            TimestampMillisecondArray::from_iter_values(chunk.iter().map(|r| f(r) as i64))
                .with_timezone("UTC")
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|r| r.device))),
            Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|r| r.site))),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| &r.sensor))),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| &r.firmware))),
            Arc::new(Float64Array::from_iter_values(chunk.iter().map(|r| r.value))),
            Arc::new(Float64Array::from_iter_values(chunk.iter().map(|r| r.min))),
            Arc::new(Float64Array::from_iter_values(chunk.iter().map(|r| r.max))),
            Arc::new(UInt64Array::from_iter_values(chunk.iter().map(|r| r.count))),
            Arc::new(millis(|r| r.ts)),
            Arc::new(millis(|r| r.ingested)),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
        writer.write(&batch).expect("write");
    }
    writer.close().expect("close");
    let seconds = started.elapsed().as_secs_f64();
    report("hand-written arrow builders, zstd", data.len(), seconds, dir_bytes(dir.path()));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut rows = 5_000_000;
    while let Some(arg) = args.next() {
        if arg == "--rows" {
            rows = args.next().and_then(|v| v.parse().ok()).expect("--rows N");
        }
    }
    let data = readings(rows);
    println!(
        "{rows} readings (10 columns: 2 u32, 2 strings, 3 f64, 1 u64, 2 timestamps), one worker"
    );
    hand_written(&data);
    tributary("tributary parquet sink, zstd", &data, |_| {});
    tributary("tributary parquet sink, snappy", &data, |c| c.compression = Compression::Snappy);
    tributary("tributary parquet sink, zstd, dt/hour folders", &data, |c| {
        c.partition_by = Some("dt={ts:%Y-%m-%d}/hour={ts:%H}".into());
    });
    tributary("tributary parquet sink, zstd, 100 site partitions", &data, |c| {
        c.partition_by = Some("site={site}".into());
        c.max_open_files = 128;
    });
}
