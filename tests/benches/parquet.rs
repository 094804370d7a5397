//! Parquet sink benchmark: one worker's writer (no dataflow around it) writing sensor
//! readings, against a hand-written baseline that builds the Arrow columns directly and writes
//! them with the same `ArrowWriter` settings.
//!
//! ```sh
//! cargo bench -p tributary-tests --bench parquet                    # 5M rows
//! cargo bench -p tributary-tests --bench parquet -- --rows 20000000
//! ```
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, TimestampMillisecondArray, UInt32Array};
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
    value: f64,
    ts: u64,
}

/// Readings of 10 000 devices, 1 000 per second of event time, from 2026-01-01.
fn readings(n: usize) -> Vec<Reading> {
    (0..n)
        .map(|i| Reading {
            device: (i % 10_000) as u32,
            site: (i % 10_000 / 100) as u32,
            value: 20.0 + ((i * 7919) % 1000) as f64 / 100.0,
            ts: 1_767_225_600_000 + i as u64,
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
    config.timestamp_columns = vec!["ts".into()];
    configure(&mut config);
    let sink = ParquetSink::<Reading>::new("bench", &config).expect("valid config");
    let ctx = SinkContext { name: "bench".into(), worker_index: 0, workers: 1 };
    let started = Instant::now();
    let mut writer = sink.writer(&ctx).expect("writer");
    // The dataflow hands sinks batches of about a thousand records.
    for chunk in data.chunks(1024) {
        writer.write(&mut chunk.to_vec()).expect("write");
    }
    writer.progress(None).expect("close");
    let seconds = started.elapsed().as_secs_f64();
    report(label, data.len(), seconds, dir_bytes(dir.path()));
}

fn hand_written(data: &[Reading]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = Arc::new(Schema::new(vec![
        Field::new("device", DataType::UInt32, false),
        Field::new("site", DataType::UInt32, false),
        Field::new("value", DataType::Float64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
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
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|r| r.device))),
            Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|r| r.site))),
            Arc::new(Float64Array::from_iter_values(chunk.iter().map(|r| r.value))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(chunk.iter().map(|r| r.ts as i64))
                    .with_timezone("UTC"),
            ),
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
    println!("{rows} readings (device, site, value, ts), one worker");
    hand_written(&data);
    tributary("tributary parquet sink, zstd", &data, |_| {});
    tributary("tributary parquet sink, snappy", &data, |c| c.compression = Compression::Snappy);
    tributary("tributary parquet sink, zstd, dt/hour partitions", &data, |c| {
        c.partition_by = Some("dt={ts:%Y-%m-%d}/hour={ts:%H}".into());
    });
    tributary("tributary parquet sink, zstd, site=… (100 partitions)", &data, |c| {
        c.partition_by = Some("site={site}".into());
        c.max_open_files = 128;
    });
}
