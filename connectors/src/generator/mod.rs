//! Deterministic, seeded generators: IoT sensor readings, trades and quotes, Nexmark events.
//!
//! Every generator defines its events by global index: event `i` is a pure function of the
//! seed and `i`, and worker `w` of `n` produces the indices `w, w + n, w + 2n, ...`. The set of
//! events is therefore the same for any number of workers and processes. Each generator runs
//! at full speed or at a fixed rate, and its event times advance at a fixed density with a
//! bounded, seeded disorder, so each worker knows its exact watermark.

mod iot;
mod market;
mod nexmark;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tributary_runtime::checkpoint::{decode, encode};
use tributary_runtime::source::Cut;
use tributary_runtime::time::{millis, now_event_time, parse_event_time};
use tributary_runtime::{
    ConfigError, Data, Emitter, EventTime, HumanDuration, Poll, Result, Source, SourceContext,
    SourceReader,
};

use crate::error::ConnectorError;
use crate::rate::Rate;

pub use self::iot::{
    DeviceInfo, DeviceRegistry, IotConfig, IotModel, IotReadings, RegistryModel, SensorKind,
    SensorReading,
};
pub use self::market::{
    Instrument, InstrumentModel, Instruments, MarketConfig, Quote, Quotes, Trade, Trades,
};
pub use self::nexmark::{
    Auction, Bid, NexmarkConfig, NexmarkEvent, NexmarkEvents, NexmarkModel, Person, Str, Text,
};

/// How many events a generator makes, how fast, and how their event times run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pace {
    /// Seed of the pseudo-random event contents.
    pub seed: u64,
    /// Total events over all workers; absent for an endless stream.
    pub events: Option<u64>,
    /// Events per second of wall-clock time over all workers; absent for full speed.
    pub rate: Option<f64>,
    /// Events per second of *event* time: how densely event times are spaced.
    pub events_per_second: f64,
    /// Event time of the first event: RFC 3339, or `"now"` to follow the wall clock.
    pub start: String,
    /// How far an event's time may lag its in-order position (uniform, seeded).
    pub max_disorder: HumanDuration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            seed: 1,
            events: None,
            rate: None,
            events_per_second: 1000.0,
            start: "2026-01-01T00:00:00Z".to_owned(),
            max_disorder: HumanDuration(Duration::ZERO),
        }
    }
}

impl Pace {
    /// Checks the settings; keys are reported relative to `pace`.
    pub fn validate(&self) -> Result<Clock, ConfigError> {
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ConfigError::new("pace.rate", "must be a positive number"));
            }
        }
        if !(self.events_per_second.is_finite() && self.events_per_second > 0.0) {
            return Err(ConfigError::new("pace.events_per_second", "must be a positive number"));
        }
        let start = if self.start == "now" {
            now_event_time()
        } else {
            parse_event_time(&self.start).map_err(|e| {
                ConfigError::new("pace.start", format!("{e} (expected RFC 3339 or \"now\")"))
            })?
        };
        Ok(Clock {
            start,
            ms_per_event: 1000.0 / self.events_per_second,
            max_disorder: millis(self.max_disorder.0),
            seed: self.seed,
        })
    }
}

/// Event times of a generator: index `i` is due at `start + i / events_per_second`, minus a
/// seeded disorder of at most `max_disorder`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    start: EventTime,
    ms_per_event: f64,
    max_disorder: u64,
    seed: u64,
}

impl Clock {
    /// The in-order time of index `i`.
    #[inline]
    fn due(&self, i: u64) -> EventTime {
        self.start + (i as f64 * self.ms_per_event) as u64
    }

    /// The event time of index `i`.
    #[inline]
    pub fn time_of(&self, i: u64) -> EventTime {
        let due = self.due(i);
        if self.max_disorder == 0 {
            due
        } else {
            due.saturating_sub(mix(self.seed ^ 0xd150_4de2, i) % (self.max_disorder + 1))
        }
    }

    /// A lower bound of the event times of all indices from `next` on.
    #[inline]
    pub fn watermark(&self, next: u64) -> EventTime {
        self.due(next).saturating_sub(self.max_disorder)
    }
}

/// A generator's event model: the event at each global index.
pub trait Generate: Send + Sync + 'static {
    /// The events.
    type Item: Data;
    /// Per-worker state, for models that are cheaper to step than to index.
    type State: 'static;
    /// The generator's name, for logs and metrics.
    fn name(&self) -> &str;
    /// The settings of count and speed.
    fn pace(&self) -> &Pace;
    /// The state of a worker that generates indices `first, first + step, ...`.
    fn start(&self, first: u64, step: u64) -> Self::State;
    /// The event with global index `i` and its event time; called with the indices in order.
    fn event(&self, state: &mut Self::State, i: u64) -> (EventTime, Self::Item);
    /// A lower bound of the event times of all indices from `next` on.
    fn watermark(&self, state: &Self::State, next: u64) -> EventTime;
}

/// A [`Source`] over any [`Generate`] model.
#[derive(Debug, Clone)]
pub struct Generator<G> {
    model: std::sync::Arc<G>,
}

impl<G: Generate> Generator<G> {
    /// Wraps a model.
    pub fn from_model(model: G) -> Self {
        Generator { model: std::sync::Arc::new(model) }
    }

    /// The event model, e.g. to recompute a job's expected output in a test.
    pub fn model(&self) -> &G {
        &self.model
    }
}

impl<G: Generate> Source for Generator<G> {
    type Item = G::Item;
    type Reader = GeneratorReader<G>;

    fn name(&self) -> &str {
        self.model.name()
    }

    fn reader(&self, ctx: &SourceContext) -> Result<Self::Reader> {
        let pace = self.model.pace();
        let workers = ctx.workers as u64;
        Ok(GeneratorReader {
            name: ctx.name.clone(),
            state: self.model.start(ctx.worker_index as u64, workers),
            model: std::sync::Arc::clone(&self.model),
            next: ctx.worker_index as u64,
            step: workers,
            end: pace.events.unwrap_or(u64::MAX),
            rate: pace.rate.map(|r| Rate::new(r / workers as f64)),
            replay: None,
            after_cut: None,
        })
    }
}

/// A generator worker's position in a checkpoint.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Position {
    /// The worker, and the number of workers of the run: the worker generated the indices
    /// `worker, worker + workers, ...`.
    worker: u64,
    workers: u64,
    /// The next index to generate.
    next: u64,
    /// The first index at or after the checkpoint's cut, if one was generated before it.
    from: u64,
}

/// What a restored generator re-generates: an index `i` below its old worker's `next` is
/// emitted again only if it was at or after the cut (indices before the old worker's `from`
/// were all before it). Works for any old and new number of workers.
#[derive(Debug)]
struct Replay {
    /// Each old worker's position, by old worker index.
    positions: Vec<Position>,
    /// From here on every index is new.
    until: u64,
    cut: Cut,
}

impl Replay {
    #[inline]
    fn keeps(&self, i: u64, time: EventTime) -> bool {
        let old = &self.positions[(i % self.positions.len() as u64) as usize];
        i >= old.next || (i >= old.from && self.cut.includes(time))
    }
}

/// One worker's share of a generator.
pub struct GeneratorReader<G: Generate> {
    /// The source's name.
    name: String,
    model: std::sync::Arc<G>,
    state: G::State,
    next: u64,
    step: u64,
    end: u64,
    rate: Option<Rate>,
    /// After a restore, until the indices generated before are passed.
    replay: Option<Replay>,
    /// The first index emitted at or after a pending checkpoint's cut.
    after_cut: Option<u64>,
}

impl<G: Generate> SourceReader for GeneratorReader<G> {
    type Item = G::Item;

    fn poll(&mut self, out: &mut Emitter<'_, G::Item>) -> Result<Poll> {
        let mut budget = out.room() as u64;
        match self.rate.as_mut().map(Rate::allowance) {
            Some(Err(wait)) => return Ok(Poll::Pending(wait)),
            Some(Ok(allowed)) => budget = budget.min(allowed),
            None => {}
        }
        let granted = budget;
        let model = &*self.model;
        while budget > 0 && self.next < self.end {
            let (time, item) = model.event(&mut self.state, self.next);
            let keep = match &self.replay {
                Some(replay) if self.next < replay.until => replay.keeps(self.next, time),
                _ => true,
            };
            if keep && out.emit(time, item) && self.after_cut.is_none() {
                self.after_cut = Some(self.next);
            }
            self.next = self.next.saturating_add(self.step);
            budget -= 1;
        }
        if let Some(rate) = self.rate.as_mut() {
            rate.use_up(granted - budget);
        }
        if self.next >= self.end {
            return Ok(Poll::Done);
        }
        out.advance_watermark(model.watermark(&self.state, self.next));
        Ok(Poll::Ready)
    }

    fn checkpoint(&mut self, _: u64) -> Result<Vec<u8>> {
        let from = self.after_cut.take().unwrap_or(self.next);
        let worker = self.next % self.step;
        encode(&Position { worker, workers: self.step, next: self.next, from })
    }

    fn restore(&mut self, cut: Cut, positions: Vec<Vec<u8>>) -> Result<()> {
        let positions: Vec<Position> =
            positions.iter().map(|p| decode(p)).collect::<Result<_>>()?;
        let Some(first) = positions.first() else { return Ok(()) };
        // One entry per old worker, by index (only our own if the layout is unchanged).
        let mut by_worker = vec![*first; first.workers as usize];
        for p in &positions {
            match by_worker.get_mut(p.worker as usize) {
                Some(slot) if p.workers == first.workers => *slot = *p,
                _ => {
                    let reason = "inconsistent generator positions".to_owned();
                    return Err(ConnectorError::Restore(reason).at_source(&self.name));
                }
            }
        }
        let from = positions.iter().map(|p| p.from).min().unwrap_or(0);
        let until = positions.iter().map(|p| p.next).max().unwrap_or(0);
        // The first index of ours at or after `from`.
        let mine = self.next % self.step;
        let start = from + (mine + self.step - from % self.step) % self.step;
        self.state = self.model.start(start, self.step);
        self.next = start;
        self.replay = Some(Replay { positions: by_worker, until, cut });
        Ok(())
    }
}

/// A well-mixed 64-bit hash of `(seed, i)` (the SplitMix64 finaliser): the per-event source
/// of pseudo-randomness that keeps events a pure function of their index.
#[inline]
pub fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` from a hash.
#[inline]
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_watermark_bounds_every_later_event() {
        let pace = Pace {
            events_per_second: 300.0,
            max_disorder: HumanDuration(Duration::from_millis(250)),
            ..Pace::default()
        };
        let clock = pace.validate().unwrap();
        for next in 0..2_000 {
            let w = clock.watermark(next);
            assert!((next..next + 500).all(|i| clock.time_of(i) >= w), "at {next}");
        }
        let disordered = (1..2_000).filter(|&i| clock.time_of(i) < clock.time_of(i - 1)).count();
        assert!(disordered > 100, "only {disordered} out-of-order events");
    }

    #[test]
    fn pace_is_validated() {
        let bad = Pace { rate: Some(0.0), ..Pace::default() };
        assert_eq!(bad.validate().unwrap_err().key, "pace.rate");
        let bad = Pace { events_per_second: f64::NAN, ..Pace::default() };
        assert_eq!(bad.validate().unwrap_err().key, "pace.events_per_second");
        let bad = Pace { start: "soon".into(), ..Pace::default() };
        assert_eq!(bad.validate().unwrap_err().key, "pace.start");
    }

    #[test]
    fn unit_is_in_range() {
        for i in 0..10_000 {
            let u = unit(mix(7, i));
            assert!((0.0..1.0).contains(&u));
        }
    }
}
