//! What the trading jobs share: their market-data inputs (generated or read) and the
//! instrument reference table.

use serde::de::DeserializeOwned;
use tributary_connectors::generator::{Generate, Generator};
use tributary_runtime::Events as EventStream;

use crate::prelude::*;

/// The market-data settings of a trading job: the generator, and optionally where trades,
/// quotes and instruments are read from instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketInputs {
    /// The trade, quote and instrument generators (used for each input that is not set).
    pub generator: MarketConfig,
    /// Trades (JSON or CSV with the fields of [`Trade`]) from files or Kafka.
    pub trades: Option<Input>,
    /// Quotes (JSON or CSV with the fields of [`Quote`]) from files or Kafka.
    pub quotes: Option<Input>,
    /// Instrument reference data (JSON with the fields of [`Instrument`]), each record in
    /// force for its symbol from its `since` on.
    pub instruments: Option<Input>,
}

impl Default for MarketInputs {
    fn default() -> Self {
        let pace = Pace {
            // Ten minutes of 1000 trades per second over 50 symbols, up to 1 s out of order
            // across venues.
            events: Some(600_000),
            max_disorder: HumanDuration(Duration::from_secs(1)),
            ..Pace::default()
        };
        MarketInputs {
            generator: MarketConfig { pace, ..MarketConfig::default() },
            trades: None,
            quotes: None,
            instruments: None,
        }
    }
}

/// One input: a generator, or a configured source.
pub(crate) enum Feed<G: Generate> {
    Generator(Generator<G>),
    Input(Box<AnySource<G::Item>>),
}

impl<G> Feed<G>
where
    G: Generate,
    G::Item: DeserializeOwned + Timestamped,
{
    /// `input` if set (errors name `key`), else the generator `make` builds.
    pub(crate) fn build(
        input: Option<&Input>,
        key: &str,
        make: impl FnOnce() -> Result<Generator<G>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        Ok(match input {
            Some(input) => Feed::Input(Box::new(
                input.build(key.rsplit('.').next().unwrap_or(key)).map_err(|e| e.within(key))?,
            )),
            None => Feed::Generator(make().map_err(|e| e.within("job.market.generator"))?),
        })
    }

    /// The input's stream in `flow`.
    pub(crate) fn read<'scope>(&self, flow: &mut Flow<'scope>) -> EventStream<'scope, G::Item> {
        match self {
            Feed::Generator(g) => flow.source(g),
            Feed::Input(s) => s.read(flow),
        }
    }
}

impl MarketInputs {
    /// The trades.
    pub(crate) fn trades(&self) -> Result<Feed<impl Generate<Item = Trade>>, ConfigError> {
        Feed::build(self.trades.as_ref(), "job.market.trades", || Trades::new(&self.generator))
    }

    /// The quotes.
    pub(crate) fn quotes(&self) -> Result<Feed<impl Generate<Item = Quote>>, ConfigError> {
        Feed::build(self.quotes.as_ref(), "job.market.quotes", || Quotes::new(&self.generator))
    }

    /// The instrument reference data.
    pub(crate) fn instruments(
        &self,
    ) -> Result<Feed<impl Generate<Item = Instrument>>, ConfigError> {
        Feed::build(self.instruments.as_ref(), "job.market.instruments", || {
            Instruments::new(&self.generator)
        })
    }
}

/// The instrument reference table: each symbol's latest [`Instrument`] at event time.
pub(crate) fn instrument_table<'scope>(
    instruments: EventStream<'scope, Instrument>,
) -> Table<'scope, String, Instrument> {
    instruments.key_by(|i: &Instrument| i.symbol.clone()).into_latest_table("instruments")
}
