//! Generated market data: trades and quotes that follow the same prices.

use serde::{Deserialize, Serialize};
use tributary_runtime::{ConfigError, EventTime, Timestamped};

use super::{mix, unit, Clock, Generate, Generator, Pace};

/// One trade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trade {
    /// Unique trade id (the generator index).
    pub id: u64,
    /// Instrument symbol, e.g. `SYM007`.
    pub symbol: String,
    /// Venue index.
    pub venue: u32,
    /// Price per share.
    pub price: f64,
    /// Shares traded.
    pub size: u32,
    /// Exchange time, milliseconds since the Unix epoch.
    pub ts: EventTime,
}

impl Timestamped for Trade {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

/// One top-of-book quote.
///
/// Quotes are totally ordered (prices by [`f64::total_cmp`]), so they can be kept in a
/// differential-dataflow arrangement, e.g. as the right side of an as-of join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quote {
    /// Instrument symbol.
    pub symbol: String,
    /// Venue index.
    pub venue: u32,
    /// Best bid.
    pub bid: f64,
    /// Best ask.
    pub ask: f64,
    /// Shares at the bid.
    pub bid_size: u32,
    /// Shares at the ask.
    pub ask_size: u32,
    /// Exchange time, milliseconds since the Unix epoch.
    pub ts: EventTime,
}

impl Quote {
    fn cmp_key(&self) -> impl Ord + '_ {
        let total = |x: f64| {
            // The usual bit trick for a total order on floats, as an integer.
            let bits = x.to_bits() as i64;
            bits ^ (((bits >> 63) as u64) >> 1) as i64
        };
        (
            self.ts,
            &self.symbol,
            self.venue,
            total(self.bid),
            total(self.ask),
            self.bid_size,
            self.ask_size,
        )
    }
}

impl PartialEq for Quote {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_key() == other.cmp_key()
    }
}

impl Eq for Quote {}

impl PartialOrd for Quote {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By time, symbol, venue, then prices and sizes.
impl Ord for Quote {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.cmp_key().cmp(&other.cmp_key())
    }
}

impl Timestamped for Quote {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

/// Settings of the market-data generators (`Trades` and `Quotes` share them, so that
/// trades happen near the quoted prices).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketConfig {
    /// Number of instruments, named `SYM000`, `SYM001`, ...
    pub symbols: u32,
    /// Number of venues.
    pub venues: u32,
    /// Count, speed and event-time settings.
    pub pace: Pace,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig { symbols: 50, venues: 3, pace: Pace::default() }
    }
}

impl MarketConfig {
    fn check(&self) -> Result<Clock, ConfigError> {
        if self.symbols == 0 || self.symbols > 1000 {
            return Err(ConfigError::new("symbols", "must be between 1 and 1000"));
        }
        if self.venues == 0 {
            return Err(ConfigError::new("venues", "must be at least 1"));
        }
        self.pace.validate()
    }

    /// The mid price of `symbol` at `t`: a smooth, deterministic curve per symbol.
    fn mid(&self, symbol: u32, t: EventTime) -> f64 {
        let h = mix(self.pace.seed ^ 0x5b0, u64::from(symbol));
        let base = 20.0 + 480.0 * unit(h);
        let period = 600_000.0 + 3_000_000.0 * unit(mix(h, 1));
        let phase = std::f64::consts::TAU * unit(mix(h, 2));
        let x = std::f64::consts::TAU * t as f64 / period + phase;
        base * (1.0 + 0.02 * x.sin() + 0.004 * (7.3 * x).sin())
    }

    fn symbol(&self, h: u64) -> (u32, String) {
        let s = (h % u64::from(self.symbols)) as u32;
        (s, format!("SYM{s:03}"))
    }
}

/// The trades model.
#[derive(Debug, Clone)]
pub struct TradeModel {
    config: MarketConfig,
    clock: Clock,
}

/// The quotes model.
#[derive(Debug, Clone)]
pub struct QuoteModel {
    config: MarketConfig,
    clock: Clock,
}

/// The trades source.
pub type Trades = Generator<TradeModel>;
/// The quotes source.
pub type Quotes = Generator<QuoteModel>;

impl Trades {
    /// Checks the settings; keys are reported relative to the generator's table.
    pub fn new(config: &MarketConfig) -> Result<Self, ConfigError> {
        let clock = config.check()?;
        Ok(Generator::from_model(TradeModel { config: config.clone(), clock }))
    }
}

impl Quotes {
    /// Checks the settings; keys are reported relative to the generator's table.
    pub fn new(config: &MarketConfig) -> Result<Self, ConfigError> {
        let clock = config.check()?;
        Ok(Generator::from_model(QuoteModel { config: config.clone(), clock }))
    }
}

impl Generate for TradeModel {
    type Item = Trade;
    type State = ();

    fn name(&self) -> &str {
        "trades"
    }

    fn pace(&self) -> &Pace {
        &self.config.pace
    }

    fn start(&self, _first: u64, _step: u64) {}

    #[inline]
    fn event(&self, _: &mut (), i: u64) -> (EventTime, Trade) {
        let h = mix(self.config.pace.seed ^ 0x7ade, i);
        let (s, symbol) = self.config.symbol(h);
        let ts = self.clock.time_of(i);
        let mid = self.config.mid(s, ts);
        let price = mid * (1.0 + 0.0004 * (unit(mix(h, 1)) - 0.5));
        let size = 1 + (mix(h, 2) % 50) as u32 * 100;
        let venue = (mix(h, 3) % u64::from(self.config.venues)) as u32;
        (ts, Trade { id: i, symbol, venue, price: round_cents(price), size, ts })
    }

    fn watermark(&self, _: &(), next: u64) -> EventTime {
        self.clock.watermark(next)
    }
}

impl Generate for QuoteModel {
    type Item = Quote;
    type State = ();

    fn name(&self) -> &str {
        "quotes"
    }

    fn pace(&self) -> &Pace {
        &self.config.pace
    }

    fn start(&self, _first: u64, _step: u64) {}

    #[inline]
    fn event(&self, _: &mut (), i: u64) -> (EventTime, Quote) {
        let h = mix(self.config.pace.seed ^ 0x0b0e, i);
        let (s, symbol) = self.config.symbol(h);
        let ts = self.clock.time_of(i);
        let mid = self.config.mid(s, ts);
        let half_spread = mid * (0.0001 + 0.0003 * unit(mix(h, 1)));
        let venue = (mix(h, 2) % u64::from(self.config.venues)) as u32;
        let quote = Quote {
            symbol,
            venue,
            bid: round_cents(mid - half_spread),
            ask: round_cents(mid + half_spread).max(round_cents(mid - half_spread) + 0.01),
            bid_size: 100 * (1 + (mix(h, 3) % 20) as u32),
            ask_size: 100 * (1 + (mix(h, 4) % 20) as u32),
            ts,
        };
        (ts, quote)
    }

    fn watermark(&self, _: &(), next: u64) -> EventTime {
        self.clock.watermark(next)
    }
}

/// One instrument of the reference data: what a symbol is. An entry takes effect at
/// `since`; a newer entry of the same symbol replaces it from then on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Instrument {
    /// Instrument symbol.
    pub symbol: String,
    /// Company name.
    pub name: String,
    /// Industry sector.
    pub sector: String,
    /// Trading currency.
    pub currency: String,
    /// Shares per round lot.
    pub lot_size: u32,
    /// When the entry takes effect, milliseconds since the Unix epoch (0: always).
    pub since: EventTime,
}

impl Timestamped for Instrument {
    fn event_time(&self) -> EventTime {
        self.since
    }
}

/// The reference-data model: one [`Instrument`] per symbol of a [`MarketConfig`], at time 0.
#[derive(Debug, Clone)]
pub struct InstrumentModel {
    config: MarketConfig,
    pace: Pace,
}

/// The instrument reference-data source.
pub type Instruments = Generator<InstrumentModel>;

impl Instruments {
    /// The instruments of the market `config` describes.
    pub fn new(config: &MarketConfig) -> Result<Self, ConfigError> {
        config.check()?;
        let pace = Pace { events: Some(u64::from(config.symbols)), ..Pace::default() };
        Ok(Generator::from_model(InstrumentModel { config: config.clone(), pace }))
    }
}

const SECTORS: [&str; 6] =
    ["Technology", "Financials", "Energy", "Health Care", "Industrials", "Utilities"];
const SYLLABLES: [&str; 8] = ["Nor", "Vel", "Astra", "Quin", "Tor", "Lum", "Cor", "Zen"];

impl Generate for InstrumentModel {
    type Item = Instrument;
    type State = ();

    fn name(&self) -> &str {
        "instruments"
    }

    fn pace(&self) -> &Pace {
        &self.pace
    }

    fn start(&self, _first: u64, _step: u64) {}

    fn event(&self, _: &mut (), i: u64) -> (EventTime, Instrument) {
        let h = mix(self.config.pace.seed ^ 0x1257, i);
        let pick = |k: u64, n: usize| (mix(h, k) % n as u64) as usize;
        let name = format!(
            "{}{} {}",
            SYLLABLES[pick(1, SYLLABLES.len())],
            SYLLABLES[pick(2, SYLLABLES.len())].to_lowercase(),
            ["Corp", "Holdings", "Group", "Inc"][pick(3, 4)]
        );
        let instrument = Instrument {
            symbol: format!("SYM{i:03}"),
            name,
            sector: SECTORS[pick(4, SECTORS.len())].to_owned(),
            currency: if i.is_multiple_of(5) { "EUR" } else { "USD" }.to_owned(),
            lot_size: 100,
            since: 0,
        };
        (0, instrument)
    }

    fn watermark(&self, _: &(), _next: u64) -> EventTime {
        0
    }
}

fn round_cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trades_happen_near_quotes() {
        let config = MarketConfig::default();
        let trades = Trades::new(&config).unwrap();
        let quotes = Quotes::new(&config).unwrap();
        for i in 0..1000 {
            let (_, t) = trades.model.event(&mut (), i);
            let mid = config.mid(t.symbol[3..].parse().unwrap(), t.ts);
            assert!((t.price / mid - 1.0).abs() < 0.001, "{t:?} vs {mid}");
            let (_, q) = quotes.model.event(&mut (), i);
            assert!(q.bid < q.ask, "{q:?}");
        }
    }

    #[test]
    fn one_instrument_per_symbol() {
        let config = MarketConfig { symbols: 12, ..MarketConfig::default() };
        let instruments = Instruments::new(&config).unwrap();
        assert_eq!(instruments.model.pace().events, Some(12));
        let (t, sym5) = instruments.model.event(&mut (), 5);
        assert_eq!((t, sym5.symbol.as_str(), sym5.since), (0, "SYM005", 0));
        assert_eq!(sym5, instruments.model.event(&mut (), 5).1);
        assert!(SECTORS.contains(&sym5.sector.as_str()));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let bad = MarketConfig { symbols: 0, ..MarketConfig::default() };
        assert_eq!(Trades::new(&bad).unwrap_err().key, "symbols");
    }
}
