//! File source benchmark: one worker's reader (no dataflow around it, polled as the source
//! driver polls it) over JSON lines and CSV of IoT sensor readings, with and without a
//! checkpoint cut pending (the position tracking a checkpointed reader does per record).
//!
//! ```sh
//! cargo bench -p tributary-tests --bench files                       # 2M lines per format
//! cargo bench -p tributary-tests --bench files -- --lines 5000000
//! ```
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use tributary_connectors::{FileSource, FileSourceConfig, SensorReading};
use tributary_runtime::source::{poll_once, Poll};
use tributary_runtime::{Granularity, Source, SourceContext};

/// Writes `lines` readings of 10 000 devices, 1 000 per second of event time, as JSON lines
/// or CSV.
fn write_input(path: &Path, lines: u64, csv: bool) -> u64 {
    let mut text = String::with_capacity(lines as usize * 90);
    if csv {
        text.push_str("device,site,sensor,value,ts\n");
    }
    for i in 0..lines {
        let (device, site) = (i % 10_000, i % 10_000 / 100);
        let value = 20.0 + ((i * 7919) % 1000) as f64 / 100.0;
        let ts = 1_767_225_600_000 + i;
        if csv {
            writeln!(text, "{device},{site},temperature,{value},{ts}").expect("formatting");
        } else {
            writeln!(
                text,
                r#"{{"device":{device},"site":{site},"sensor":"temperature","value":{value},"ts":{ts}}}"#
            )
            .expect("formatting");
        }
    }
    std::fs::write(path, &text).expect("write the input");
    text.len() as u64
}

/// Reads the whole file once; returns the records read and the seconds it took.
fn read(path: &Path, cut: Option<u64>) -> (u64, f64) {
    let source = FileSource::<SensorReading>::new("bench", &FileSourceConfig::new(path))
        .expect("valid config");
    let ctx =
        SourceContext { name: "bench".into(), worker_index: 0, workers: 1, checkpointed: true };
    let mut reader = source.reader(&ctx).expect("a reader");
    let started = Instant::now();
    let mut records = 0;
    loop {
        let polled = poll_once(&mut reader, 8192, Granularity::DEFAULT, cut).expect("reads");
        records += polled.records.len() as u64;
        if polled.poll == Poll::Done {
            return (records, started.elapsed().as_secs_f64());
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lines = args
        .iter()
        .position(|a| a == "--lines")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(2_000_000u64);
    let dir = tempfile::tempdir().expect("temp dir");
    println!("file source, 1 worker, {lines} lines, median of 3");
    for (format, csv) in [("jsonl", false), ("csv", true)] {
        let path = dir.path().join(format!("readings.{format}"));
        let bytes = write_input(&path, lines, csv);
        // A cut in the middle: every record after it is noted as the first after the cut.
        for (label, cut) in
            [("no checkpoint", None), ("cut pending", Some(1_767_225_600_000 + lines / 2))]
        {
            let mut runs: Vec<(u64, f64)> = (0..3).map(|_| read(&path, cut)).collect();
            runs.sort_by(|a, b| a.1.total_cmp(&b.1));
            let (records, secs) = runs[1];
            assert_eq!(records, lines, "every line read");
            println!(
                "{format:>5} {label:<14} {:>6.2}M lines/s  {:>6.1} MB/s",
                records as f64 / secs / 1e6,
                bytes as f64 / secs / 1e6
            );
        }
    }
}
