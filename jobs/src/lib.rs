//! Tributary's jobs: each module is one job, and `src/bin/` holds a thin `main` per job.
//!
//! [`prelude`] brings in what a job needs from the runtime, the operators and the connectors.

pub mod iot_alerts;
pub mod iot_deviation;
pub mod iot_produce;
pub mod iot_stats;
pub mod market;
pub mod market_candles;
pub mod market_movers;
pub mod market_produce;
pub mod market_tca;
pub mod nexmark;

/// `x` rounded to `decimals` decimals, as the jobs round their averages and ratios.
pub(crate) fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// Everything a typical job uses, in one import.
pub mod prelude {
    pub use std::time::Duration;

    pub use serde::{Deserialize, Serialize};
    pub use timely::dataflow::operators::vec::{Filter, Map};
    pub use tributary_connectors::*;
    pub use tributary_operators::*;
    pub use tributary_runtime::time::format_event_time;
    pub use tributary_runtime::{
        Config, ConfigError, Data, Events, Flow, HumanDuration, Job, SinkExt, Timestamped,
    };
}

/// The README's example job, compiled as a doctest so that it stays true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
