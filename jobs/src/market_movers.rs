//! `market-movers`: the symbols that moved most in each minute.
//!
//! Per symbol and minute, the return from the first to the last trade (by exchange time, ties
//! by trade id) in basis points; per minute, the `top` symbols by absolute return (ties: the
//! smaller symbol first), ranked from 1, with the instrument's name and sector from the
//! reference table. One record per mover and minute, keyed by the minute, so a Kafka
//! consumer reads a minute's movers from one partition in rank order.

use std::cmp::Reverse;
use std::ffi::OsString;
use std::process::ExitCode;

use tributary_runtime::EventTime;

use crate::market::{instrument_table, MarketInputs};
use crate::market_candles::Ohlcv;
use crate::prelude::*;
use crate::round;

/// The `[job]` table of `market-movers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketMoversConfig {
    /// The market data.
    pub market: MarketInputs,
    /// The window of a return.
    pub window: HumanDuration,
    /// How many movers per window.
    pub top: usize,
    /// Where the movers go.
    pub output: Output,
}

impl Default for MarketMoversConfig {
    fn default() -> Self {
        MarketMoversConfig {
            market: MarketInputs::default(),
            window: HumanDuration(Duration::from_secs(60)),
            top: 5,
            output: Output::Stdout,
        }
    }
}

/// A symbol's move over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Move {
    symbol: String,
    window_start: EventTime,
    window_end: EventTime,
    open: f64,
    close: f64,
    return_bps: f64,
    volume: u64,
}

/// As a window result: the window's last millisecond.
impl Timestamped for Move {
    fn event_time(&self) -> EventTime {
        self.window_end - 1
    }
}

/// A move and its rank in its window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ranked {
    rank: u32,
    mv: Move,
}

impl Timestamped for Ranked {
    fn event_time(&self) -> EventTime {
        self.mv.event_time()
    }
}

/// One of the top movers of a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mover {
    /// Window start, RFC 3339.
    pub window_start: String,
    /// 1 for the largest absolute return.
    pub rank: u32,
    /// Instrument symbol.
    pub symbol: String,
    /// The instrument's name (none if not in the reference table).
    pub name: Option<String>,
    /// The instrument's sector.
    pub sector: Option<String>,
    /// First trade price of the window.
    pub open: f64,
    /// Last trade price of the window.
    pub close: f64,
    /// `(close / open − 1) × 10⁴`, rounded to 4 decimals.
    pub return_bps: f64,
    /// Shares traded in the window.
    pub volume: u64,
}

/// A total order on moves for the top k: absolute return (to the rounding), then the
/// smaller symbol.
fn rank_key(m: &Move) -> (i64, Reverse<String>) {
    ((m.return_bps.abs() * 1e4).round() as i64, Reverse(m.symbol.clone()))
}

/// Runs the job with the process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the job with the given arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    Job::<MarketMoversConfig>::new("market-movers").run_from(args, |config| {
        let job = &config.job;
        let trades = job.market.trades()?;
        let instruments = job.market.instruments()?;
        if job.top == 0 {
            return Err(ConfigError::new("job.top", "must be at least 1"));
        }
        if job.window.0.is_zero() {
            return Err(ConfigError::new("job.window", "must be positive"));
        }
        let output = job
            .output
            .build("movers")
            .map_err(|e| e.within("job.output"))?
            .keyed(|m: &Mover| Some(m.window_start.clone().into_bytes()));
        let (window, top) = (Tumbling::new(job.window.0), job.top);
        Ok(move |flow: &mut Flow<'_>| {
            let instruments = instrument_table(instruments.read(flow));
            trades
                .read(flow)
                .key_by(|t: &Trade| t.symbol.clone())
                .window(window)
                .aggregate(Ohlcv)
                .map(|r| Move {
                    symbol: r.key,
                    window_start: r.window.start,
                    window_end: r.window.end,
                    open: r.value.open,
                    close: r.value.close,
                    return_bps: round((r.value.close / r.value.open - 1.0) * 1e4, 4),
                    volume: r.value.volume,
                })
                .key_by(|m: &Move| m.window_start)
                .window(window)
                .aggregate(TopK::new(top, rank_key))
                .flat_map(|r| r.value.into_iter().zip(1..).map(|(mv, rank)| Ranked { rank, mv }))
                .key_by(|r: &Ranked| r.mv.symbol.clone())
                .join_table(&instruments)
                .join()
                .map(|e| {
                    let (Ranked { rank, mv: m }, info) = (e.left, e.right);
                    Mover {
                        window_start: format_event_time(m.window_start),
                        rank,
                        symbol: m.symbol,
                        name: info.as_ref().map(|i| i.name.clone()),
                        sector: info.map(|i| i.sector),
                        open: m.open,
                        close: m.close,
                        return_bps: m.return_bps,
                        volume: m.volume,
                    }
                })
                .sink_to(&output);
        })
    })
}
