//! `market-produce`: writes generated trades, quotes and instruments to outputs (Kafka topics,
//! typically), to feed the trading jobs in the Kafka walkthrough. Trades and quotes are keyed
//! by symbol, instruments by symbol too (for a compacted topic).

use std::ffi::OsString;
use std::process::ExitCode;

use crate::prelude::*;

/// The `[job]` table of `market-produce`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketProduceConfig {
    /// The generators (`pace.events` trades and as many quotes).
    pub generator: MarketConfig,
    /// Where the trades go (none: not generated).
    pub trades: Option<Output>,
    /// Where the quotes go.
    pub quotes: Option<Output>,
    /// Where the instruments go.
    pub instruments: Option<Output>,
}

/// The sink of `output` (if set), keyed by `symbol`; errors name `job.<name>`.
fn keyed_by_symbol<D: Serialize + serde::de::DeserializeOwned + 'static>(
    output: &Option<Output>,
    name: &str,
    symbol: fn(&D) -> &String,
) -> Result<Option<AnySink<D>>, ConfigError> {
    let Some(output) = output else { return Ok(None) };
    let sink = output.build(name).map_err(|e| e.within(&format!("job.{name}")))?;
    Ok(Some(sink.keyed(move |d: &D| Some(symbol(d).as_bytes().to_vec()))))
}

/// Runs the job with the process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the job with the given arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    Job::<MarketProduceConfig>::new("market-produce").run_from(args, |config| {
        let job = &config.job;
        let within = |key: &'static str| move |e: ConfigError| e.within(key);
        let g = &job.generator;
        let trades = Trades::new(g).map_err(within("job.generator"))?;
        let quotes = Quotes::new(g).map_err(within("job.generator"))?;
        let instruments = Instruments::new(g).map_err(within("job.generator"))?;
        let trades_out = keyed_by_symbol(&job.trades, "trades", |t: &Trade| &t.symbol)?;
        let quotes_out = keyed_by_symbol(&job.quotes, "quotes", |q: &Quote| &q.symbol)?;
        let instruments_out =
            keyed_by_symbol(&job.instruments, "instruments", |i: &Instrument| &i.symbol)?;
        if trades_out.is_none() && quotes_out.is_none() && instruments_out.is_none() {
            return Err(ConfigError::new(
                "job",
                "set at least one of job.trades, job.quotes and job.instruments",
            ));
        }
        Ok(move |flow: &mut Flow<'_>| {
            if let Some(out) = &trades_out {
                flow.source(&trades).sink_to(out);
            }
            if let Some(out) = &quotes_out {
                flow.source(&quotes).sink_to(out);
            }
            if let Some(out) = &instruments_out {
                flow.source(&instruments).sink_to(out);
            }
        })
    })
}
