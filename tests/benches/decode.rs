//! JSON decode benchmark: IoT readings (`SensorReading`) decoded from JSON lines in memory by
//! bare loops of serde_json, sonic-rs and simd-json and by the sources' own
//! `tributary_connectors::json::decode` (no reader, no dataflow), one core: the ceiling of
//! what the file and Kafka sources can decode.
//!
//! ```sh
//! cargo bench -p tributary-tests --bench decode                     # 2M lines, best of 3
//! cargo bench -p tributary-tests --bench decode -- --lines 5000000
//! ```
#![allow(clippy::print_stdout)]

use std::time::Instant;

use tributary_connectors::json::decode;
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

/// The best lines/s of three passes of `decode` over `lines`, and the checksum of the
/// decoded timestamps (so the work cannot be optimised away, and the decoders agree).
fn measure(
    lines: &mut [Vec<u8>],
    mut decode: impl FnMut(&mut Vec<u8>) -> SensorReading,
) -> (f64, u64) {
    let mut best = 0f64;
    let mut sum = 0u64;
    for _ in 0..3 {
        sum = 0;
        let started = Instant::now();
        for line in lines.iter_mut() {
            sum = sum.wrapping_add(decode(line).ts);
        }
        best = best.max(lines.len() as f64 / started.elapsed().as_secs_f64());
    }
    (best, sum)
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
        measure(&mut lines, |l| serde_json::from_slice(l).expect("valid")),
    );
    row(
        "tributary_connectors::json::decode (ours)",
        measure(&mut lines, |l| decode(l).expect("valid")),
    );
    row("sonic_rs::from_slice", measure(&mut lines, |l| sonic_rs::from_slice(l).expect("valid")));
    // simd-json parses in place: it needs a copy of each line it may overwrite.
    let mut scratch = Vec::new();
    row(
        "simd_json::serde::from_slice (on a copy)",
        measure(&mut lines, |l| {
            scratch.clear();
            scratch.extend_from_slice(l);
            simd_json::serde::from_slice(&mut scratch).expect("valid")
        }),
    );
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "the decoders disagree: {sums:?}");
}
