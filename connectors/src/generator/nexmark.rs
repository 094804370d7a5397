//! Nexmark events (persons, auctions, bids) from the `nexmark` crate's generator.

use serde::{Deserialize, Serialize};
use tributary_runtime::{ConfigError, EventTime, Timestamped};

use super::{Generate, Generator, Pace};

/// A Nexmark event with its event time (`date_time`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NexmarkEvent(pub ::nexmark::event::Event);

impl Timestamped for NexmarkEvent {
    fn event_time(&self) -> EventTime {
        self.0.timestamp()
    }
}

/// Settings of the Nexmark generator. `pace.events_per_second` is the Nexmark event rate in
/// event time; `pace.seed` and `pace.max_disorder` do not apply (the Nexmark generator seeds
/// each event by its id and emits in order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NexmarkConfig {
    /// Count, speed and event-time settings.
    pub pace: Pace,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig { pace: Pace { events_per_second: 10_000.0, ..Pace::default() } }
    }
}

/// The Nexmark model.
#[derive(Debug, Clone)]
pub struct NexmarkModel {
    config: NexmarkConfig,
    generator: ::nexmark::EventGenerator,
}

/// The Nexmark events source.
pub type NexmarkEvents = Generator<NexmarkModel>;

impl NexmarkEvents {
    /// Checks the settings; keys are reported relative to the generator's table.
    pub fn new(config: &NexmarkConfig) -> Result<Self, ConfigError> {
        let clock = config.pace.validate()?;
        if !config.pace.max_disorder.0.is_zero() {
            return Err(ConfigError::new("pace.max_disorder", "is not supported for Nexmark"));
        }
        let rate = config.pace.events_per_second;
        if rate.fract() != 0.0 || rate > 1e9 {
            return Err(ConfigError::new(
                "pace.events_per_second",
                "must be a whole number of at most 1e9 for Nexmark",
            ));
        }
        let nexmark = ::nexmark::config::NexmarkConfig {
            base_time: clock.start,
            first_rate: rate as usize,
            next_rate: rate as usize,
            ..Default::default()
        };
        // `EventGenerator::default()` repeats one event; `new` generates the real sequence.
        let generator = ::nexmark::EventGenerator::new(nexmark);
        Ok(Generator::from_model(NexmarkModel { config: config.clone(), generator }))
    }
}

impl Generate for NexmarkModel {
    type Item = NexmarkEvent;
    type State = ::nexmark::EventGenerator;

    fn name(&self) -> &str {
        "nexmark"
    }

    fn pace(&self) -> &Pace {
        &self.config.pace
    }

    fn start(&self, first: u64, step: u64) -> Self::State {
        self.generator.clone().with_offset(first).with_step(step)
    }

    fn event(&self, state: &mut Self::State, i: u64) -> (EventTime, NexmarkEvent) {
        debug_assert_eq!(state.offset(), i, "indices are generated in order");
        let event = state.next().expect("the Nexmark generator is endless");
        (event.timestamp(), NexmarkEvent(event))
    }

    fn watermark(&self, state: &Self::State, _next: u64) -> EventTime {
        state.timestamp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::nexmark::event::Event;

    #[test]
    fn worker_shares_interleave_into_the_sequence() {
        let g = NexmarkEvents::new(&NexmarkConfig::default()).unwrap();
        let mut one = g.model.start(0, 1);
        let all: Vec<_> = (0..100).map(|i| g.model.event(&mut one, i).1).collect();
        let mut odd = g.model.start(1, 2);
        for i in (1..100).step_by(2) {
            assert_eq!(g.model.event(&mut odd, i).1, all[i as usize]);
        }
        assert!(all.iter().any(|e| matches!(e.0, Event::Bid(_))));
        assert!(all.iter().any(|e| matches!(e.0, Event::Person(_))));
        assert!(all.windows(2).all(|w| w[0].event_time() <= w[1].event_time()));
        assert_eq!(all[0].event_time(), 1_767_225_600_000);
    }
}
