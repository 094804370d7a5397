//! `market-tca`: execution quality of every trade, from the quote in force when it happened.
//!
//! Each trade meets, in an as-of join, the latest quote of its symbol *on its venue* at or
//! before the trade's exchange time (no older than `job.max_quote_age`), then the instrument
//! reference table (sector, currency). From the quote's mid `m = (bid + ask) / 2`:
//!
//! - `side`: the quote rule (Lee–Ready): `buy` above the mid, `sell` below, none at it;
//! - `quoted_spread_bps` = `(ask − bid) / m × 10⁴`;
//! - `effective_spread_bps` = `2 × |price − m| / m × 10⁴`;
//! - `slippage_bps`: how much worse than the touch the trade executed, `(price − ask) / m ×
//!   10⁴` for a buy, `(bid − price) / m × 10⁴` for a sell (negative: inside the spread).
//!
//! Trades without a fresh quote are kept with the quote fields empty. Figures are rounded
//! to 4 decimals.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::market::{instrument_table, MarketInputs};
use crate::prelude::*;
use crate::round;

/// The `[job]` table of `market-tca`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketTcaConfig {
    /// The market data.
    pub market: MarketInputs,
    /// The oldest quote a trade is measured against.
    pub max_quote_age: HumanDuration,
    /// Where the executions go.
    pub output: Output,
}

impl Default for MarketTcaConfig {
    fn default() -> Self {
        MarketTcaConfig {
            market: MarketInputs::default(),
            max_quote_age: HumanDuration(Duration::from_secs(5)),
            output: Output::Stdout,
        }
    }
}

/// Which side initiated a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Above the mid.
    Buy,
    /// Below the mid.
    Sell,
}

/// One trade with its quote and execution-quality figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// Trade id.
    pub trade_id: u64,
    /// Instrument symbol.
    pub symbol: String,
    /// Venue.
    pub venue: u32,
    /// Exchange time of the trade, RFC 3339.
    pub ts: String,
    /// Trade price.
    pub price: f64,
    /// Shares.
    pub size: u32,
    /// The instrument's sector (none if the symbol is not in the reference table).
    pub sector: Option<String>,
    /// The instrument's currency.
    pub currency: Option<String>,
    /// Exchange time of the quote, RFC 3339.
    pub quote_ts: Option<String>,
    /// How old the quote was at the trade, in milliseconds.
    pub quote_age_ms: Option<u64>,
    /// Best bid.
    pub bid: Option<f64>,
    /// Best ask.
    pub ask: Option<f64>,
    /// Who initiated the trade, by the quote rule.
    pub side: Option<Side>,
    /// Quoted spread in basis points of the mid.
    pub quoted_spread_bps: Option<f64>,
    /// Effective spread in basis points of the mid.
    pub effective_spread_bps: Option<f64>,
    /// Execution price beyond the touch, in basis points of the mid.
    pub slippage_bps: Option<f64>,
}

impl Execution {
    /// The figures of `trade` against `quote`, with `instrument`'s reference data.
    pub fn measure(trade: &Trade, quote: Option<&Quote>, instrument: Option<&Instrument>) -> Self {
        let mut e = Execution {
            trade_id: trade.id,
            symbol: trade.symbol.clone(),
            venue: trade.venue,
            ts: format_event_time(trade.ts),
            price: trade.price,
            size: trade.size,
            sector: instrument.map(|i| i.sector.clone()),
            currency: instrument.map(|i| i.currency.clone()),
            quote_ts: None,
            quote_age_ms: None,
            bid: None,
            ask: None,
            side: None,
            quoted_spread_bps: None,
            effective_spread_bps: None,
            slippage_bps: None,
        };
        let Some(q) = quote else { return e };
        let mid = (q.bid + q.ask) / 2.0;
        let bps = |x: f64| Some(round(x / mid * 1e4, 4));
        e.quote_ts = Some(format_event_time(q.ts));
        e.quote_age_ms = Some(trade.ts - q.ts);
        (e.bid, e.ask) = (Some(q.bid), Some(q.ask));
        e.quoted_spread_bps = bps(q.ask - q.bid);
        e.effective_spread_bps = bps(2.0 * (trade.price - mid).abs());
        if trade.price > mid {
            (e.side, e.slippage_bps) = (Some(Side::Buy), bps(trade.price - q.ask));
        } else if trade.price < mid {
            (e.side, e.slippage_bps) = (Some(Side::Sell), bps(q.bid - trade.price));
        }
        e
    }
}

/// Runs the job with the process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the job with the given arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    Job::<MarketTcaConfig>::new("market-tca").run_from(args, |config| {
        let job = &config.job;
        let (trades, quotes) = (job.market.trades()?, job.market.quotes()?);
        let instruments = job.market.instruments()?;
        let output = job
            .output
            .build("executions")
            .map_err(|e| e.within("job.output"))?
            .keyed(|e: &Execution| Some(e.trade_id.to_string().into_bytes()));
        let max_age = job.max_quote_age.0;
        Ok(move |flow: &mut Flow<'_>| {
            let instruments = instrument_table(instruments.read(flow));
            let quotes = quotes.read(flow).key_by(|q: &Quote| (q.symbol.clone(), q.venue));
            trades
                .read(flow)
                .key_by(|t: &Trade| (t.symbol.clone(), t.venue))
                .asof_join(quotes)
                .max_staleness(max_age)
                .join()
                .key_by(|j| j.key.0.clone())
                .join_table(&instruments)
                .join()
                .map(|e| Execution::measure(&e.left.left, e.left.right.as_ref(), e.right.as_ref()))
                .sink_to(&output);
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_rule_spreads_and_slippage() {
        let trade =
            Trade { id: 1, symbol: "S".into(), venue: 0, price: 100.06, size: 100, ts: 1_500 };
        let quote = Quote {
            symbol: "S".into(),
            venue: 0,
            bid: 99.98,
            ask: 100.02,
            bid_size: 100,
            ask_size: 100,
            ts: 1_000,
        };
        let e = Execution::measure(&trade, Some(&quote), None);
        assert_eq!((e.side, e.quote_age_ms), (Some(Side::Buy), Some(500)));
        assert_eq!(e.quoted_spread_bps, Some(4.0));
        assert_eq!(e.effective_spread_bps, Some(12.0));
        assert_eq!(e.slippage_bps, Some(4.0));
        let sell = Trade { price: 99.99, ..trade.clone() };
        let e = Execution::measure(&sell, Some(&quote), None);
        assert_eq!((e.side, e.slippage_bps), (Some(Side::Sell), Some(-1.0)));
        let none = Execution::measure(&trade, None, None);
        assert_eq!((none.side, none.bid, none.sector), (None, None, None));
    }
}
