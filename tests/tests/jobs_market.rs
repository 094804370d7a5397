//! End-to-end tests of the trading jobs against DuckDB SQL over the same input events:
//! `market-candles` and `market-tca` from files to Parquet (read back by DuckDB), and
//! `market-movers` from Kafka to Kafka (Apache Kafka on loopback).

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use support::kafka::Kafka;
use support::{duckdb, run_job};

/// The generator of every test: 8 symbols, 2 venues, `events` trades (and as many quotes)
/// at 100 per second from two minutes before an hour, 1 s out of order.
fn generator_flags(events: u64) -> Vec<String> {
    vec![
        "job.generator.symbols=8".into(),
        "job.generator.venues=2".into(),
        format!("job.generator.pace.events={events}"),
        "job.generator.pace.events_per_second=100.0".into(),
        "job.generator.pace.start=\"2026-01-01T00:58:00Z\"".into(),
        "job.generator.pace.max_disorder=\"1s\"".into(),
    ]
}

fn run(job: &str, flags: &[String], extra: &[&str]) {
    let mut args: Vec<&str> = extra.to_vec();
    for flag in flags {
        args.extend(["--set", flag]);
    }
    let out = run_job(job, &args);
    assert!(out.status.success(), "{job}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes generated market data into `dir/trades`, `dir/quotes` and `dir/instruments`.
fn produce_files(dir: &Path, events: u64) {
    let mut flags = generator_flags(events);
    for what in ["trades", "quotes", "instruments"] {
        flags.push(format!("job.{what}={{kind=\"file\", path=\"{}\"}}", dir.join(what).display()));
    }
    run("market-produce", &flags, &[]);
}

fn file_input(dir: &Path, what: &str) -> String {
    format!(
        "job.market.{what}={{kind=\"file\", path=\"{}\", max_out_of_orderness=\"1s\"}}",
        dir.join(what).display()
    )
}

fn jsonl(dir: &Path, what: &str) -> String {
    format!("read_json_auto('{}/*')", dir.join(what).display())
}

fn f(row: &Value, key: &str) -> f64 {
    row[key].as_f64().unwrap_or_else(|| panic!("{key} in {row}"))
}

#[test]
fn candles_in_parquet_match_duckdb_over_the_trades() {
    let dir = tempfile::tempdir().expect("temp dir");
    produce_files(dir.path(), 30_000);
    let out = dir.path().join("candles");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/config/market-candles-parquet.toml");
    let flags =
        [file_input(dir.path(), "trades"), format!("job.output.path=\"{}\"", out.display())];
    run("market-candles", &flags, &["--workers", "2", "--config", config]);

    let trades = jsonl(dir.path(), "trades");
    let expected = duckdb(&format!(
        "WITH t AS (SELECT * FROM {trades}), \
         c AS (SELECT '1s' AS interval, ts // 1000 * 1000 AS start, * FROM t \
               UNION ALL SELECT '1m', ts // 60000 * 60000, * FROM t) \
         SELECT symbol, interval, start, first(price ORDER BY ts, id) AS open, max(price) AS high, \
                min(price) AS low, first(price ORDER BY ts DESC, id DESC) AS close, \
                sum(size) AS volume, count(*) AS trades, \
                round(sum(price * size) / sum(size), 4) AS vwap \
         FROM c GROUP BY ALL ORDER BY ALL"
    ));
    let got = duckdb(&format!(
        "SELECT symbol, interval, CAST(epoch_ms(window_start) AS BIGINT) AS start, open, high, \
                low, close, volume, trades, vwap, revision, \
                strftime(window_start AT TIME ZONE 'UTC', '%Y-%m-%d') = CAST(dt AS VARCHAR) \
                  AND hour(window_start AT TIME ZONE 'UTC') = hour AS in_its_folder \
         FROM read_parquet('{}/**/*.parquet', hive_partitioning = true) ORDER BY 1, 2, 3",
        out.display()
    ));
    assert_eq!(got.len(), expected.len(), "one candle per symbol, interval and window");
    assert!(expected.len() > 8 * 300, "{} candles", expected.len());
    let hours: std::collections::BTreeSet<_> =
        got.iter().map(|r| r["start"].as_u64().expect("start") / 3_600_000).collect();
    assert_eq!(hours.len(), 2, "the run crosses an hour");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g["in_its_folder"], true, "{g}");
        assert_eq!(g["revision"], 0, "in-order input: no corrections");
        for key in ["symbol", "interval", "start", "volume", "trades"] {
            assert_eq!(g[key].to_string(), e[key].to_string(), "{key}: {g} vs {e}");
        }
        for key in ["open", "high", "low", "close"] {
            assert_eq!(f(g, key), f(e, key), "{key}: {g} vs {e}");
        }
        // The job sums the notional exactly, DuckDB in floating point: equal to the rounding.
        assert!((f(g, "vwap") - f(e, "vwap")).abs() <= 1e-4, "{g} vs {e}");
    }
}

#[test]
fn executions_in_parquet_match_a_duckdb_asof_join() {
    let dir = tempfile::tempdir().expect("temp dir");
    produce_files(dir.path(), 20_000);
    let out = dir.path().join("executions");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/config/market-tca-parquet.toml");
    let flags = [
        file_input(dir.path(), "trades"),
        file_input(dir.path(), "quotes"),
        file_input(dir.path(), "instruments"),
        format!("job.output.path=\"{}\"", out.display()),
        "job.max_quote_age=\"500ms\"".into(),
    ];
    run("market-tca", &flags, &["--workers", "2", "--config", config]);

    // Of quotes at the same millisecond of a symbol and venue, the job keeps the greatest.
    let (trades, quotes) = (jsonl(dir.path(), "trades"), jsonl(dir.path(), "quotes"));
    let instruments = jsonl(dir.path(), "instruments");
    let expected = duckdb(&format!(
        "WITH q AS (SELECT * FROM {quotes} QUALIFY row_number() OVER (PARTITION BY symbol, \
                      venue, ts ORDER BY bid DESC, ask DESC, bid_size DESC, ask_size DESC) = 1), \
              j AS (SELECT t.id AS trade_id, t.price, i.sector, \
                           CASE WHEN t.ts - q.ts <= 500 THEN q.ts END AS quote_ts, \
                           CASE WHEN t.ts - q.ts <= 500 THEN q.bid END AS bid, \
                           CASE WHEN t.ts - q.ts <= 500 THEN q.ask END AS ask \
                    FROM {trades} t ASOF LEFT JOIN q \
                      ON t.symbol = q.symbol AND t.venue = q.venue AND t.ts >= q.ts \
                    LEFT JOIN {instruments} i ON i.symbol = t.symbol) \
         SELECT trade_id, sector, quote_ts, bid, ask, \
                CASE WHEN price > (bid + ask) / 2 THEN 'buy' \
                     WHEN price < (bid + ask) / 2 THEN 'sell' END AS side, \
                (ask - bid) / ((bid + ask) / 2) * 1e4 AS quoted_spread_bps, \
                2 * abs(price - (bid + ask) / 2) / ((bid + ask) / 2) * 1e4 AS effective_spread_bps, \
                CASE WHEN price > (bid + ask) / 2 THEN (price - ask) / ((bid + ask) / 2) * 1e4 \
                     WHEN price < (bid + ask) / 2 THEN (bid - price) / ((bid + ask) / 2) * 1e4 \
                END AS slippage_bps \
         FROM j ORDER BY trade_id"
    ));
    let got = duckdb(&format!(
        "SELECT trade_id, sector, CAST(epoch_ms(quote_ts) AS BIGINT) AS quote_ts, bid, ask, \
                side, quoted_spread_bps, effective_spread_bps, slippage_bps \
         FROM read_parquet('{}/**/*.parquet') ORDER BY trade_id",
        out.display()
    ));
    assert_eq!(got.len(), 20_000, "every trade once");
    assert_eq!(got.len(), expected.len());
    let stale = expected.iter().filter(|r| r["quote_ts"].is_null()).count();
    assert!(stale > 100 && stale < 10_000, "some trades have no fresh quote: {stale}");
    for (g, e) in got.iter().zip(&expected) {
        for key in ["trade_id", "sector", "quote_ts", "bid", "ask", "side"] {
            assert_eq!(g[key], e[key], "{key}: {g} vs {e}");
        }
        for key in ["quoted_spread_bps", "effective_spread_bps", "slippage_bps"] {
            match (g[key].as_f64(), e[key].as_f64()) {
                (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-4, "{key}: {g} vs {e}"),
                (a, b) => assert_eq!(a, b, "{key}: {g} vs {e}"),
            }
        }
    }
}

#[test]
fn movers_from_kafka_to_kafka_match_duckdb_over_the_trades() {
    let events = 24_000;
    let dir = tempfile::tempdir().expect("temp dir");
    produce_files(dir.path(), events);

    let broker = Kafka::shared();
    broker.create_topic("trades", 2);
    broker.create_compacted_topic("instruments", 1);
    broker.create_topic("movers", 1);
    let brokers = &broker.address;
    let kafka =
        |topic: &str| format!("{{kind=\"kafka\", brokers=\"{brokers}\", topic=\"{topic}\"}}");
    let mut flags = generator_flags(events);
    flags.push(format!("job.trades={}", kafka("trades")));
    flags.push(format!("job.instruments={}", kafka("instruments")));
    run("market-produce", &flags, &[]);

    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/config/market-movers-kafka.toml");
    let flags = [
        format!("job.market.trades.brokers=\"{brokers}\""),
        "job.market.trades.bounded=true".into(),
        format!("job.market.instruments.brokers=\"{brokers}\""),
        "job.market.instruments.bounded=true".into(),
        format!("job.output.brokers=\"{brokers}\""),
    ];
    run("market-movers", &flags, &["--workers", "2", "--config", config]);

    let (trades, instruments) = (jsonl(dir.path(), "trades"), jsonl(dir.path(), "instruments"));
    let expected = duckdb(&format!(
        "WITH m AS (SELECT symbol, ts // 60000 * 60000 AS start, \
                           first(price ORDER BY ts, id) AS open, \
                           first(price ORDER BY ts DESC, id DESC) AS close, sum(size) AS volume \
                    FROM {trades} GROUP BY ALL), \
              r AS (SELECT *, round((close / open - 1) * 1e4, 4) AS return_bps FROM m), \
              k AS (SELECT *, row_number() OVER (PARTITION BY start \
                           ORDER BY round(abs(return_bps) * 1e4) DESC, symbol) AS rank FROM r) \
         SELECT start, rank, symbol, name, sector, open, close, return_bps, volume \
         FROM k JOIN {instruments} USING (symbol) WHERE rank <= 5 ORDER BY start, rank"
    ));
    assert_eq!(expected.len(), 5 * 5, "five movers in each of the five minutes");
    let mut got: BTreeMap<(u64, u64), Value> = BTreeMap::new();
    for (key, value) in broker.consume("movers") {
        let m: Value = serde_json::from_slice(&value).expect("JSON mover");
        assert_eq!(key.as_deref(), m["window_start"].as_str().map(str::as_bytes), "by minute");
        let start = tributary_runtime::time::parse_event_time(
            m["window_start"].as_str().expect("window_start"),
        )
        .expect("RFC 3339");
        assert!(got.insert((start, m["rank"].as_u64().expect("rank")), m).is_none());
    }
    assert_eq!(got.len(), expected.len());
    for ((start, rank), g) in &got {
        let e = expected
            .iter()
            .find(|e| e["start"] == *start && e["rank"] == *rank)
            .unwrap_or_else(|| panic!("no mover {rank} at {start} in DuckDB: {g}"));
        for key in ["symbol", "name", "sector", "volume"] {
            assert_eq!(g[key], e[key], "{key}: {g} vs {e}");
        }
        for key in ["open", "close", "return_bps"] {
            assert_eq!(f(g, key), f(e, key), "{key}: {g} vs {e}");
        }
    }
}
