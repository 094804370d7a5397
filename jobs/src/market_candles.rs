//! `market-candles`: OHLCV candles and VWAP per symbol, at one second and one minute.
//!
//! Per symbol and tumbling window of each configured interval (`["1s", "1m"]` by default):
//! the first, highest, lowest and last trade price, the shares traded, the number of trades
//! and the volume-weighted average price. "First" and "last" are by exchange time, ties by
//! trade id, so a candle does not depend on the order the venues' trades arrive in. With
//! `job.allowed_lateness`, a late trade re-emits its candle with `revision` + 1.
//!
//! [`Ohlcv`] is the aggregation, written as a user's own [`Aggregator`]: a template for any
//! per-window figure.

use std::ffi::OsString;
use std::process::ExitCode;

use timely::dataflow::operators::Concatenate;
use tributary_runtime::EventTime;

use crate::market::MarketInputs;
use crate::prelude::*;
use crate::round;

/// The `[job]` table of `market-candles`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketCandlesConfig {
    /// The market data.
    pub market: MarketInputs,
    /// Candle lengths.
    pub intervals: Vec<HumanDuration>,
    /// How long a candle accepts late trades after it was emitted.
    pub allowed_lateness: HumanDuration,
    /// Where the candles go.
    pub output: Output,
}

impl Default for MarketCandlesConfig {
    fn default() -> Self {
        MarketCandlesConfig {
            market: MarketInputs::default(),
            intervals: vec![
                HumanDuration(Duration::from_secs(1)),
                HumanDuration(Duration::from_secs(60)),
            ],
            allowed_lateness: HumanDuration(Duration::ZERO),
            output: Output::Stdout,
        }
    }
}

/// One candle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candle {
    /// Instrument symbol.
    pub symbol: String,
    /// The candle length, e.g. `1s`, `1m`.
    pub interval: String,
    /// Window start, RFC 3339.
    pub window_start: String,
    /// Window end (exclusive), RFC 3339.
    pub window_end: String,
    /// Price of the first trade.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Price of the last trade.
    pub close: f64,
    /// Shares traded.
    pub volume: u64,
    /// Number of trades.
    pub trades: u64,
    /// Volume-weighted average price, rounded to 4 decimals.
    pub vwap: f64,
    /// 0 when the candle was first emitted; higher for corrections by late trades.
    pub revision: u32,
}

/// Open, high, low, close, volume and VWAP of trades.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ohlcv;

/// The accumulator of [`Ohlcv`]. The notional is summed exactly in millionths, so the VWAP
/// does not depend on the order of the trades or the number of workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OhlcvAcc {
    /// `(exchange time, trade id, price)` of the first and the last trade.
    first: Option<(EventTime, u64, f64)>,
    last: Option<(EventTime, u64, f64)>,
    high: f64,
    low: f64,
    volume: u64,
    trades: u64,
    notional_micros: i128,
}

/// The result of [`Ohlcv`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    /// First price.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Last price.
    pub close: f64,
    /// Shares traded.
    pub volume: u64,
    /// Trades.
    pub trades: u64,
    /// Volume-weighted average price.
    pub vwap: f64,
}

impl Aggregator<Trade> for Ohlcv {
    type Acc = OhlcvAcc;
    type Out = Bar;

    fn init(&self) -> OhlcvAcc {
        OhlcvAcc {
            first: None,
            last: None,
            high: f64::NEG_INFINITY,
            low: f64::INFINITY,
            volume: 0,
            trades: 0,
            notional_micros: 0,
        }
    }

    fn add(&self, acc: &mut OhlcvAcc, t: &Trade) {
        let point = Some((t.ts, t.id, t.price));
        let one = OhlcvAcc {
            first: point,
            last: point,
            high: t.price,
            low: t.price,
            volume: u64::from(t.size),
            trades: 1,
            notional_micros: (t.price * 1e6).round() as i128 * i128::from(t.size),
        };
        self.merge(acc, one);
    }

    fn merge(&self, acc: &mut OhlcvAcc, other: OhlcvAcc) {
        let key = |p: &(EventTime, u64, f64)| (p.0, p.1);
        if let Some(f) = other.first {
            if acc.first.is_none_or(|a| key(&f) < key(&a)) {
                acc.first = Some(f);
            }
        }
        if let Some(l) = other.last {
            if acc.last.is_none_or(|a| key(&l) > key(&a)) {
                acc.last = Some(l);
            }
        }
        acc.high = acc.high.max(other.high);
        acc.low = acc.low.min(other.low);
        acc.volume += other.volume;
        acc.trades += other.trades;
        acc.notional_micros += other.notional_micros;
    }

    fn finish(&self, acc: &OhlcvAcc) -> Bar {
        let price = |p: Option<(EventTime, u64, f64)>| p.map_or(f64::NAN, |p| p.2);
        Bar {
            open: price(acc.first),
            high: acc.high,
            low: acc.low,
            close: price(acc.last),
            volume: acc.volume,
            trades: acc.trades,
            vwap: acc.notional_micros as f64 / 1e6 / acc.volume as f64,
        }
    }
}

/// Runs the job with the process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the job with the given arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    Job::<MarketCandlesConfig>::new("market-candles").run_from(args, |config| {
        let job = &config.job;
        let trades = job.market.trades()?;
        if job.intervals.is_empty() || job.intervals.iter().any(|i| i.0.is_zero()) {
            return Err(ConfigError::new("job.intervals", "name at least one positive length"));
        }
        // Keyed by symbol, interval and window: a compacted topic keeps the latest revision.
        let output =
            job.output.build("candles").map_err(|e| e.within("job.output"))?.keyed(|c: &Candle| {
                Some(format!("{}/{}@{}", c.symbol, c.interval, c.window_start).into_bytes())
            });
        let intervals: Vec<(Duration, String)> = job
            .intervals
            .iter()
            .map(|i| (i.0, humantime::format_duration(i.0).to_string()))
            .collect();
        let lateness = job.allowed_lateness.0;
        Ok(move |flow: &mut Flow<'_>| {
            let trades = trades.read(flow);
            let candles = intervals.iter().map(|(length, name)| {
                let name = name.clone();
                trades
                    .clone()
                    .key_by(|t: &Trade| t.symbol.clone())
                    .window(Tumbling::new(*length))
                    .allowed_lateness(lateness)
                    .aggregate(Ohlcv)
                    .map(move |r| Candle {
                        symbol: r.key,
                        interval: name.clone(),
                        window_start: format_event_time(r.window.start),
                        window_end: format_event_time(r.window.end),
                        open: r.value.open,
                        high: r.value.high,
                        low: r.value.low,
                        close: r.value.close,
                        volume: r.value.volume,
                        trades: r.value.trades,
                        vwap: round(r.value.vwap, 4),
                        revision: r.revision,
                    })
            });
            flow.scope().concatenate(candles).sink_to(&output);
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(id: u64, ts: EventTime, price: f64, size: u32) -> Trade {
        Trade { id, symbol: "SYM001".into(), venue: 0, price, size, ts }
    }

    #[test]
    fn first_and_last_by_time_then_id_whatever_the_order() {
        let trades = [
            trade(7, 2_000, 10.5, 100),
            trade(3, 1_000, 10.0, 200),
            trade(9, 1_000, 11.0, 100),
            trade(8, 2_000, 9.5, 100),
        ];
        let fold = |ts: &[Trade]| {
            let mut acc = Ohlcv.init();
            ts.iter().for_each(|t| Ohlcv.add(&mut acc, t));
            acc
        };
        let bar = Ohlcv.finish(&fold(&trades));
        // Last: the greater id (8) of the two trades at 2000 ms.
        assert_eq!((bar.open, bar.high, bar.low, bar.close), (10.0, 11.0, 9.5, 9.5));
        assert_eq!((bar.volume, bar.trades), (500, 4));
        assert_eq!(bar.vwap, (10.5 * 100.0 + 10.0 * 200.0 + 11.0 * 100.0 + 9.5 * 100.0) / 500.0);
        let mut split = fold(&trades[2..]);
        Ohlcv.merge(&mut split, fold(&trades[..2]));
        assert_eq!(Ohlcv.finish(&split), bar);
    }
}
