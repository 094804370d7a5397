//! The Nexmark benchmark harness: runs queries of the `nexmark` job at full speed into a
//! discard sink, each in a fresh process, and prints events per second (in total and per
//! worker), end-to-end latency and peak memory.
//!
//! ```text
//! cargo run --release -p tributary-tests --bin bench -- --query q5 --events 10000000 --workers 2
//! cargo run --release -p tributary-tests --bin bench -- --all --markdown
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::Value;
use tributary_jobs::nexmark::Query;

/// Runs Nexmark queries and reports their throughput, latency and memory.
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Args {
    /// The query (`source`, `q0`, `q1`, `q2`, `q3`, `q5`, `q7`, `q8`, `q11`).
    #[arg(long, value_parser = parse_query, required_unless_present = "all")]
    query: Option<Query>,
    /// Every query, one after the other.
    #[arg(long)]
    all: bool,
    /// Events to generate per run.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: u16,
    /// Runs per query; the best is reported (the machine's noise only slows a run down).
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Print a Markdown table (for docs/benchmarks.md) instead of one line per run.
    #[arg(long)]
    markdown: bool,
}

fn parse_query(name: &str) -> Result<Query, String> {
    Query::ALL
        .into_iter()
        .find(|q| q.name() == name)
        .ok_or_else(|| format!("`{name}` is not one of {:?}", Query::ALL.map(Query::name)))
}

/// What one run reported.
struct Measured {
    events: u64,
    results: u64,
    seconds: f64,
    peak_rss: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// Runs `query` once in a fresh `nexmark` process and reads its `job finished` line.
fn run(query: Query, args: &Args) -> anyhow::Result<Measured> {
    let job = std::env::current_exe()?.with_file_name("tributary-test-job");
    let job: PathBuf = if job.is_file() { job } else { bail!("{} is missing", job.display()) };
    let out = Command::new(&job)
        .arg("nexmark")
        .args(["--workers", &args.workers.to_string(), "--quiet", "--log-format", "json"])
        .args(["--set", &format!("job.query=\"{}\"", query.name())])
        .args(["--set", &format!("job.events.pace.events={}", args.events)])
        .args(["--set", "job.output={kind=\"discard\"}"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("running {}", job.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{} failed: {stderr}", query.name());
    }
    let finished = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "job finished")
        .context("no `job finished` line")?;
    let number = |key: &str| finished[key].as_f64();
    Ok(Measured {
        events: finished["records_in"].as_u64().context("records_in")?,
        results: finished["records_out"].as_u64().context("records_out")?,
        seconds: number("elapsed_ms").context("elapsed_ms")? / 1e3,
        peak_rss: finished["peak_rss_bytes"].as_u64().unwrap_or(0),
        p50_ms: number("latency_p50_ms"),
        p99_ms: number("latency_p99_ms"),
    })
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.0} ms"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let queries: Vec<Query> = match (args.all, args.query) {
        (true, _) => Query::ALL.to_vec(),
        (false, Some(query)) => vec![query],
        (false, None) => bail!("--query or --all"),
    };
    let workers = f64::from(args.workers);
    let mut out = std::io::stdout().lock();
    if args.markdown {
        writeln!(
            out,
            "| query | events/s | per worker | results | latency p50 | p99 | peak memory |"
        )?;
        writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    }
    for query in queries {
        let mut best: Option<Measured> = None;
        for _ in 0..args.runs.max(1) {
            let measured = run(query, &args)?;
            if best.as_ref().is_none_or(|b| measured.rate() > b.rate()) {
                best = Some(measured);
            }
        }
        let Some(m) = best else { continue };
        let (rate, per_worker) = (m.rate() / 1e6, m.rate() / workers / 1e6);
        let rss = m.peak_rss as f64 / (1 << 20) as f64;
        if args.markdown {
            writeln!(
                out,
                "| {} | {rate:.2}M | {per_worker:.2}M | {} | {} | {} | {rss:.0} MiB |",
                query.name(),
                m.results,
                ms(m.p50_ms),
                ms(m.p99_ms),
            )?;
        } else {
            writeln!(
                out,
                "{:<7} {} events in {:.2} s: {rate:.2}M events/s, {per_worker:.2}M per worker; \
                 {} results; latency p50 {} p99 {}; peak memory {rss:.0} MiB",
                query.name(),
                m.events,
                m.seconds,
                m.results,
                ms(m.p50_ms),
                ms(m.p99_ms),
            )?;
        }
        out.flush()?;
    }
    Ok(())
}
