//! The Nexmark benchmark harness: runs queries of the `nexmark` job at full speed into a
//! discard sink, each in a fresh process, and prints events per second (in total and per
//! worker), end-to-end latency and peak memory; `--all` also measures the generator alone.
//! With `--kafka` it loads the events into a local Apache Kafka broker as JSON and compares the
//! query reading them from Kafka with a bare rdkafka consumer on the same topic.
//!
//! ```text
//! cargo run --release -p tributary-tests --bin bench -- --query q5 --events 10000000 --workers 2
//! cargo run --release -p tributary-tests --bin bench -- --all --markdown --charts docs
//! cargo run --release -p tributary-tests --bin bench -- --kafka --query q5 --events 1000000
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tributary_connectors::generator::{Generate, NexmarkEvent};
use tributary_connectors::{NexmarkConfig, NexmarkEvents};
use tributary_jobs::nexmark::Query;
use tributary_tests::kafka::Kafka;

/// Runs Nexmark queries and reports their throughput, latency and memory.
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Args {
    /// The query (`source`, `q0`, `q1`, `q2`, `q3`, `q4`, `q5`, `q7`, `q8`, `q11`, `q12`).
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
    /// Write SVG charts into this directory: events/s per query and the distribution of
    /// latencies (`nexmark-throughput-<workers>w.svg`, `nexmark-latency-<workers>w.svg`).
    #[arg(long)]
    charts: Option<PathBuf>,
    /// Read the events from Kafka: load them into a local Apache Kafka broker as JSON, then time a
    /// bare rdkafka consumer and the query on that topic.
    #[arg(long)]
    kafka: bool,
    /// A setting passed to every job run, e.g. `runtime.watermarks.max_drift="5s"`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Partitions of the Kafka topic.
    #[arg(long, default_value_t = 2)]
    partitions: u32,
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
    /// The latency histogram: `(upper bound in ms, results)`.
    buckets: Vec<(f64, u64)>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// Runs `query` once in a fresh `nexmark` process and reads its `job finished` line; `input`
/// is a `job.input` setting (the generator if `None`).
fn run(query: Query, args: &Args, input: Option<&str>) -> anyhow::Result<Measured> {
    let job = std::env::current_exe()?.with_file_name("tributary-test-job");
    let job: PathBuf = if job.is_file() { job } else { bail!("{} is missing", job.display()) };
    let out = Command::new(&job)
        .arg("nexmark")
        .args(["--workers", &args.workers.to_string(), "--quiet", "--log-format", "json"])
        .args(["--set", &format!("job.query=\"{}\"", query.name())])
        .args(["--set", &format!("job.events.pace.events={}", args.events)])
        .args(["--set", "job.output={kind=\"discard\"}"])
        .args(input.map(|i| format!("job.input={i}")).iter().flat_map(|i| ["--set", i.as_str()]))
        .args(args.settings.iter().flat_map(|s| ["--set", s.as_str()]))
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
        buckets: finished["latency_buckets"].as_str().map(parse_buckets).unwrap_or_default(),
    })
}

/// `1=40,1.41=3` (the `latency_buckets` of `job finished`) as `(upper ms, count)` pairs.
fn parse_buckets(text: &str) -> Vec<(f64, u64)> {
    text.split(',')
        .filter_map(|pair| {
            let (ms, n) = pair.split_once('=')?;
            Some((ms.parse().ok()?, n.parse().ok()?))
        })
        .collect()
}

/// The Nexmark generator's settings in the `nexmark` job by default.
fn generator() -> anyhow::Result<NexmarkEvents> {
    NexmarkEvents::new(&NexmarkConfig::default()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Events per second of the generator alone, on this thread, without a dataflow.
fn generator_alone(events: u64) -> anyhow::Result<f64> {
    let generator = generator()?;
    let model = generator.model();
    let mut text = model.start(0, 1);
    let started = Instant::now();
    for i in 0..events {
        std::hint::black_box(model.event(&mut text, i));
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
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
    let mut out = std::io::stdout().lock();
    if args.kafka {
        return kafka(&queries, &args, &mut out);
    }
    if args.all {
        let mut rate: f64 = 0.0;
        for _ in 0..args.runs.max(1) {
            rate = rate.max(generator_alone(args.events)? / 1e6);
        }
        writeln!(out, "generator alone (one thread, no dataflow): {rate:.2}M events/s\n")?;
    }
    let workers = f64::from(args.workers);
    if args.markdown {
        writeln!(
            out,
            "| query | events/s | per worker | results | latency p50 | p99 | peak memory |"
        )?;
        writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    }
    let mut measured_all = Vec::new();
    for query in queries {
        let mut best: Option<Measured> = None;
        for _ in 0..args.runs.max(1) {
            let measured = run(query, &args, None)?;
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
        measured_all.push((query, m));
    }
    if let Some(dir) = &args.charts {
        let suffix = format!("{}w", args.workers);
        throughput_chart(
            &dir.join(format!("nexmark-throughput-{suffix}.svg")),
            &measured_all,
            &args,
        )?;
        latency_chart(&dir.join(format!("nexmark-latency-{suffix}.svg")), &measured_all, &args)?;
    }
    Ok(())
}

/// Loads `args.events` events into a fresh Apache Kafka broker as JSON, then reads them with
/// a bare rdkafka consumer (with and without decoding) and with each query.
fn kafka(queries: &[Query], args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    let broker = Kafka::start();
    broker.create_topic("nexmark", args.partitions);
    let generator = generator()?;
    let model = generator.model();
    let mut text = model.start(0, 1);
    let loading = Instant::now();
    let mut bytes = 0;
    broker.produce(
        "nexmark",
        (0..args.events).map(|i| {
            let json = serde_json::to_vec(&model.event(&mut text, i).1).unwrap_or_default();
            bytes += json.len();
            (None, json)
        }),
    );
    writeln!(
        out,
        "loaded {} JSON events ({} bytes each on average) into Apache Kafka ({} partitions) in {:.1} s\n",
        args.events,
        bytes as u64 / args.events.max(1),
        args.partitions,
        loading.elapsed().as_secs_f64()
    )?;
    writeln!(out, "| reader | events | time | events/s |")?;
    writeln!(out, "| --- | ---: | ---: | ---: |")?;
    for decode in [false, true] {
        let elapsed = bare_consumer(&broker.address, args, decode)?;
        let what = if decode { " + JSON decode" } else { "" };
        writeln!(
            out,
            "| bare rdkafka BaseConsumer loop{what} | {} | {:.2} s | {:.2}M |",
            args.events,
            elapsed.as_secs_f64(),
            args.events as f64 / elapsed.as_secs_f64() / 1e6
        )?;
    }
    let input = format!(
        "{{kind=\"kafka\", brokers=\"{}\", topics=[\"nexmark\"], bounded=true}}",
        broker.address
    );
    for &query in queries {
        let m = run(query, args, Some(&input))?;
        if m.events != args.events {
            bail!("{} read {} of {} events", query.name(), m.events, args.events);
        }
        writeln!(
            out,
            "| Tributary `nexmark` {} from Kafka, {} worker(s) | {} | {:.2} s | {:.2}M |",
            query.name(),
            args.workers,
            m.events,
            m.seconds,
            m.rate() / 1e6
        )?;
        out.flush()?;
    }
    Ok(())
}

/// Reads every partition of `nexmark` from the beginning until all events are read.
fn bare_consumer(address: &str, args: &Args, decode: bool) -> anyhow::Result<Duration> {
    // The settings every Tributary source has, so that the comparison shows what the job
    // adds (librdkafka's default fetch backoff makes a decoding loop idle most of the time).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", tributary_connectors::kafka::FETCH_QUEUE_BACKOFF_MS)
        .set("enable.auto.offset.store", "false")
        .create()?;
    let mut partitions = TopicPartitionList::new();
    for p in 0..args.partitions as i32 {
        partitions.add_partition_offset("nexmark", p, Offset::Beginning)?;
    }
    consumer.assign(&partitions)?;
    let started = Instant::now();
    let (mut read, mut bids) = (0, 0u64);
    while read < args.events {
        let next = consumer.poll(Duration::ZERO);
        match next.or_else(|| consumer.poll(Duration::from_millis(100))) {
            Some(Ok(m)) => {
                read += 1;
                if decode {
                    let event: NexmarkEvent =
                        serde_json::from_slice(m.payload().unwrap_or_default())?;
                    bids += u64::from(matches!(event, NexmarkEvent::Bid(_)));
                }
            }
            Some(Err(e)) => bail!("reading nexmark: {e}"),
            None => {}
        }
    }
    std::hint::black_box(bids);
    Ok(started.elapsed())
}

/// A bar chart of events/s per worker for each query.
fn throughput_chart(path: &Path, rows: &[(Query, Measured)], args: &Args) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let workers = f64::from(args.workers);
    let rates: Vec<f64> = rows.iter().map(|(_, m)| m.rate() / workers / 1e6).collect();
    let top = rates.iter().copied().fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (860, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "Nexmark: million events/s per worker ({} worker(s), {} events)",
        args.workers, args.events
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((0..rows.len().saturating_sub(1)).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => {
                rows.get(*i).map_or(String::new(), |(q, _)| q.name().into())
            }
            _ => String::new(),
        })
        .y_desc("million events/s per worker")
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(RGBColor(70, 110, 180).filled())
            .margin(8)
            .data(rates.iter().enumerate().map(|(i, r)| (i, *r))),
    )?;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let label =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(rates.iter().enumerate().map(|(i, r)| {
        Text::new(format!("{r:.2}"), (SegmentValue::CenterOf(i), *r + top * 0.01), label.clone())
    }))?;
    root.present()?;
    Ok(())
}

/// The cumulative distribution of end-to-end latency for each query, on a log scale.
fn latency_chart(path: &Path, rows: &[(Query, Measured)], args: &Args) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let longest = rows.iter().flat_map(|(_, m)| m.buckets.last()).map(|b| b.0).fold(2.0, f64::max);
    let root = SVGBackend::new(path, (860, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!("Nexmark: end-to-end latency ({} worker(s))", args.workers);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0.5..longest * 1.5).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (upper bounds of √2-wide buckets)")
        .y_desc("fraction of results")
        .draw()?;
    for (k, (query, m)) in rows.iter().enumerate().filter(|(_, (_, m))| !m.buckets.is_empty()) {
        let total: u64 = m.buckets.iter().map(|b| b.1).sum();
        let mut seen = 0;
        let points: Vec<(f64, f64)> = m
            .buckets
            .iter()
            .map(|&(ms, n)| {
                seen += n;
                (ms, seen as f64 / total as f64)
            })
            .collect();
        let color = Palette99::pick(k).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(query.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()?;
    Ok(())
}
