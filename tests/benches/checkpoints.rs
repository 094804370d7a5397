//! Checkpoint overhead: a tumbling count's throughput with checkpoints every 1 s and every
//! 10 s against none, with 100 and with 1M keys, and each checkpoint's duration and size (from
//! the manifests the runs wrote).
//!
//! ```sh
//! cargo bench -p tributary-tests --bench checkpoints
//! cargo bench -p tributary-tests --bench checkpoints -- --events 100000000 --keys 1000000
//! ```
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::Duration;

use tributary_operators::{Count, KeyBy, Tumbling};
use tributary_runtime::checkpoint::Manifest;
use tributary_runtime::Events;

mod common;
use common::{report, run, run_checkpointed, Ev, Input, MapLen};

fn tumbling(s: Events<'_, Ev>) -> Events<'_, u64> {
    s.key_by(|e| e.key).window(Tumbling::new(Duration::from_secs(60))).aggregate(Count).map_len()
}

/// The manifests of every checkpoint but the last (taken at the end of the input, when the
/// windows are gone).
fn manifests(dir: &Path) -> Vec<Manifest> {
    let mut manifests: Vec<Manifest> = std::fs::read_dir(dir.join("bench"))
        .expect("checkpoints were written")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("MANIFEST.json")).ok())
        .map(|bytes| serde_json::from_slice(&bytes).expect("a manifest"))
        .filter(|m: &Manifest| !m.last)
        .collect();
    manifests.sort_by_key(|m| m.id);
    manifests
}

fn summary(manifests: &[Manifest]) -> String {
    if manifests.is_empty() {
        return "no checkpoint before the end".to_owned();
    }
    let n = manifests.len() as f64;
    let mean_ms = manifests.iter().map(|m| m.duration_ms as f64).sum::<f64>() / n;
    let max_ms = manifests.iter().map(|m| m.duration_ms).max().unwrap_or(0);
    let mean_kb = manifests.iter().map(|m| m.bytes as f64).sum::<f64>() / n / 1e3;
    let max_kb = manifests.iter().map(|m| m.bytes).max().unwrap_or(0) as f64 / 1e3;
    format!(
        "{} checkpoints: duration mean {mean_ms:.0} ms, max {max_ms} ms; size mean {mean_kb:.1} kB, max {max_kb:.1} kB",
        manifests.len()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let number = |name: &str| flag(name).and_then(|v| v.parse::<u64>().ok());
    let events = number("--events");
    let workers = number("--workers").unwrap_or(1) as usize;
    let inputs = match number("--keys") {
        Some(keys) => vec![(keys, events.unwrap_or(100_000_000))],
        // Long enough for several 10-second checkpoints each.
        None => {
            vec![(100, events.unwrap_or(300_000_000)), (1_000_000, events.unwrap_or(100_000_000))]
        }
    };
    println!("| tumbling 1m count (granularity 100 ms, disorder 1 s) | events | workers | time | events/s | per worker | results |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut notes = Vec::new();
    for (keys, events) in inputs {
        let input = Input {
            name: "bench",
            seed: 7,
            events,
            keys,
            per_ms: 100,
            disorder: 1000,
            report_every: None,
        };
        report(
            &format!("{keys} keys, no checkpoints"),
            events,
            workers,
            run(&input, workers, tumbling),
        );
        for interval in [10, 1] {
            let dir = tempfile::tempdir().expect("temp dir");
            let every = Duration::from_secs(interval);
            let outcome = run_checkpointed(&input, workers, dir.path(), every, tumbling);
            report(
                &format!("{keys} keys, checkpoint every {interval} s"),
                events,
                workers,
                outcome,
            );
            notes.push(format!(
                "{keys} keys, every {interval} s: {}",
                summary(&manifests(dir.path()))
            ));
        }
    }
    println!();
    for note in notes {
        println!("- {note}");
    }
}
