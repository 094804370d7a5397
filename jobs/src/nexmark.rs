//! `nexmark`: the [Nexmark](https://github.com/nexmark/nexmark) benchmark queries on the
//! Nexmark generator, one binary, the query chosen with `--set job.query="q5"`.
//!
//! The queries follow the Nexmark SQL of the nexmark/nexmark repository; where Tributary's
//! answer differs from the SQL's, the query's documentation says how. Results go to any
//! [`Output`] (`{ kind = "discard" }` for benchmarks).

use std::ffi::OsString;
use std::process::ExitCode;

use ::nexmark::event::Event;
use tributary_connectors::DiscardSink;

use crate::prelude::*;

/// Which query to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Query {
    /// The generator alone: every event counted and dropped (measures the source).
    Source,
    /// Pass-through: every bid.
    #[default]
    Q0,
    /// Currency conversion: every bid with its price in euros (`0.908 * price`).
    Q1,
    /// Selection: the auction and price of bids on every 123rd auction.
    Q2,
    /// Local item suggestion: auctions of category 10 by sellers in Oregon, Idaho or
    /// California (any case: the `nexmark` crate writes states in lower case), with the
    /// seller's name, city and state. An incremental join of auctions
    /// with persons, here a stream–table join on the persons as of each auction's time (the
    /// generator creates a seller before their auctions, so the answers are the same).
    Q3,
    /// Hot items: per sliding window (10 s every 2 s), the auctions with the most bids.
    Q5,
    /// Highest bid: per tumbling 10 s window, the bids with the highest price.
    Q7,
    /// New users: persons who registered and opened an auction within the same tumbling 10 s
    /// window.
    Q8,
    /// User sessions: bids per bidder per session (closed after 10 s without a bid).
    Q11,
}

impl Query {
    /// Every query, in order.
    pub const ALL: [Query; 9] = [
        Query::Source,
        Query::Q0,
        Query::Q1,
        Query::Q2,
        Query::Q3,
        Query::Q5,
        Query::Q7,
        Query::Q8,
        Query::Q11,
    ];

    /// Its name in the configuration: `source`, `q0`, ...
    pub fn name(self) -> &'static str {
        match self {
            Query::Source => "source",
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q3 => "q3",
            Query::Q5 => "q5",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
            Query::Q11 => "q11",
        }
    }
}

/// The `[job]` table of `nexmark`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NexmarkJobConfig {
    /// The query.
    pub query: Query,
    /// The generator: `events.pace.events` events (1 000 000 by default), at
    /// `events.pace.events_per_second` per second of event time (10 000).
    pub events: NexmarkConfig,
    /// Where the results go.
    pub output: Output,
}

impl Default for NexmarkJobConfig {
    fn default() -> Self {
        let mut events = NexmarkConfig::default();
        events.pace.events = Some(1_000_000);
        NexmarkJobConfig { query: Query::Q0, events, output: Output::Stdout }
    }
}

/// A bid (Nexmark's, with integer ids and prices in cents).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Bid {
    /// The auction bid on.
    pub auction: u64,
    /// The person bidding.
    pub bidder: u64,
    /// The price in cents.
    pub price: u64,
    /// How the bid was made.
    pub channel: String,
    /// The page it was made from.
    pub url: String,
    /// Event time, epoch milliseconds.
    pub date_time: u64,
    /// Padding.
    pub extra: String,
}

impl Timestamped for Bid {
    fn event_time(&self) -> u64 {
        self.date_time
    }
}

/// An auction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Auction {
    /// Its id.
    pub id: u64,
    /// The seller (a person id).
    pub seller: u64,
    /// Its category.
    pub category: u64,
    /// The reserve price in cents.
    pub reserve: u64,
    /// Event time, epoch milliseconds.
    pub date_time: u64,
    /// When it closes, epoch milliseconds.
    pub expires: u64,
}

impl Timestamped for Auction {
    fn event_time(&self) -> u64 {
        self.date_time
    }
}

/// A person.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Person {
    /// Their id.
    pub id: u64,
    /// Their name.
    pub name: String,
    /// Their city.
    pub city: String,
    /// Their state (two letters).
    pub state: String,
    /// Event time, epoch milliseconds.
    pub date_time: u64,
}

impl Timestamped for Person {
    fn event_time(&self) -> u64 {
        self.date_time
    }
}

fn bid(event: NexmarkEvent) -> Option<Bid> {
    match event.0 {
        Event::Bid(b) => Some(Bid {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as u64,
            channel: b.channel,
            url: b.url,
            date_time: b.date_time,
            extra: b.extra,
        }),
        _ => None,
    }
}

fn auction(event: NexmarkEvent) -> Option<Auction> {
    match event.0 {
        Event::Auction(a) => Some(Auction {
            id: a.id as u64,
            seller: a.seller as u64,
            category: a.category as u64,
            reserve: a.reserve as u64,
            date_time: a.date_time,
            expires: a.expires,
        }),
        _ => None,
    }
}

fn person(event: NexmarkEvent) -> Option<Person> {
    match event.0 {
        Event::Person(p) => Some(Person {
            id: p.id as u64,
            name: p.name,
            city: p.city,
            state: p.state,
            date_time: p.date_time,
        }),
        _ => None,
    }
}

/// A q1 result: a bid with its price converted to euros.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EuroBid {
    /// The auction.
    pub auction: u64,
    /// The bidder.
    pub bidder: u64,
    /// `0.908 * price`.
    pub price: f64,
    /// Event time.
    pub date_time: u64,
    /// Padding.
    pub extra: String,
}

/// A q2 result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionPrice {
    /// The auction.
    pub auction: u64,
    /// The bid's price.
    pub price: u64,
}

/// A q3 result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalItem {
    /// The seller's name.
    pub name: String,
    /// The seller's city.
    pub city: String,
    /// The seller's state.
    pub state: String,
    /// The auction.
    pub id: u64,
}

/// A q5 result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotItem {
    /// An auction with the most bids in the window.
    pub auction: u64,
    /// Its bids in the window.
    pub num: u64,
    /// Window start, epoch milliseconds.
    pub starttime: u64,
    /// Window end (exclusive).
    pub endtime: u64,
}

/// A q8 result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    /// The person.
    pub id: u64,
    /// Their name.
    pub name: String,
    /// The window's start, epoch milliseconds.
    pub starttime: u64,
}

/// A q11 result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The bidder.
    pub bidder: u64,
    /// Bids in the session.
    pub bid_count: u64,
    /// The session's first bid time.
    pub starttime: u64,
    /// The session's last bid time plus the gap.
    pub endtime: u64,
}

/// The largest value of a field and every record that has it (ties kept, in no order).
#[derive(Clone)]
pub struct MaxAll<F>(pub F);

impl<V: Data, F: Fn(&V) -> u64 + Clone + 'static> Aggregator<V> for MaxAll<F> {
    type Acc = (u64, Vec<V>);
    type Out = (u64, Vec<V>);
    fn init(&self) -> Self::Acc {
        (0, Vec::new())
    }
    fn add(&self, acc: &mut Self::Acc, value: &V) {
        let v = (self.0)(value);
        if v > acc.0 || acc.1.is_empty() {
            acc.0 = v;
            acc.1.clear();
        }
        if v == acc.0 {
            acc.1.push(value.clone());
        }
    }
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
        if other.1.is_empty() {
            return;
        }
        if other.0 > acc.0 || acc.1.is_empty() {
            *acc = other;
        } else if other.0 == acc.0 {
            acc.1.extend(other.1);
        }
    }
    fn finish(&self, acc: &Self::Acc) -> Self::Out {
        acc.clone()
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// The chosen query's sink, typed by its results.
enum Plan {
    Source(DiscardSink<NexmarkEvent>),
    Bids(Query, AnySink<Bid>),
    Q1(AnySink<EuroBid>),
    Q2(AnySink<AuctionPrice>),
    Q3(AnySink<LocalItem>),
    Q5(AnySink<HotItem>),
    Q8(AnySink<NewUser>),
    Q11(AnySink<Session>),
}

impl Plan {
    fn new(query: Query, output: &Output) -> Result<Plan, ConfigError> {
        fn sink<D: Serialize + serde::de::DeserializeOwned + 'static>(
            output: &Output,
            query: Query,
        ) -> Result<AnySink<D>, ConfigError> {
            output.build(&format!("nexmark-{}", query.name())).map_err(|e| e.within("job.output"))
        }
        Ok(match query {
            Query::Source => Plan::Source(DiscardSink::new()),
            Query::Q0 | Query::Q7 => Plan::Bids(query, sink(output, query)?),
            Query::Q1 => Plan::Q1(sink(output, query)?),
            Query::Q2 => Plan::Q2(sink(output, query)?),
            Query::Q3 => Plan::Q3(sink(output, query)?),
            Query::Q5 => Plan::Q5(sink(output, query)?),
            Query::Q8 => Plan::Q8(sink(output, query)?),
            Query::Q11 => Plan::Q11(sink(output, query)?),
        })
    }

    /// Builds the query over the events in `flow`.
    fn build(&self, flow: &mut Flow<'_>, events: &NexmarkEvents) {
        let all = flow.source(events);
        match self {
            Plan::Source(sink) => all.sink_to(sink),
            Plan::Bids(Query::Q7, sink) => all
                .flat_map(bid)
                .key_by(|_: &Bid| ())
                .window(Tumbling::new(10 * SECOND))
                .aggregate(MaxAll(|b: &Bid| b.price))
                .flat_map(|top| top.value.1)
                .sink_to(sink),
            Plan::Bids(_, sink) => all.flat_map(bid).sink_to(sink),
            Plan::Q1(sink) => all
                .flat_map(bid)
                .map(|b| EuroBid {
                    auction: b.auction,
                    bidder: b.bidder,
                    price: 0.908 * b.price as f64,
                    date_time: b.date_time,
                    extra: b.extra,
                })
                .sink_to(sink),
            Plan::Q2(sink) => all
                .flat_map(bid)
                .filter(|b| b.auction % 123 == 0)
                .map(|b| AuctionPrice { auction: b.auction, price: b.price })
                .sink_to(sink),
            Plan::Q3(sink) => {
                let persons = all
                    .clone()
                    .flat_map(person)
                    .filter(|p| ["or", "id", "ca"].iter().any(|s| p.state.eq_ignore_ascii_case(s)))
                    .key_by(|p: &Person| p.id)
                    .into_latest_table("persons");
                all.flat_map(auction)
                    .filter(|a| a.category == 10)
                    .key_by(|a: &Auction| a.seller)
                    .join_table(&persons)
                    .inner()
                    .join()
                    .flat_map(|e| {
                        let p = e.right?;
                        Some(LocalItem {
                            name: p.name,
                            city: p.city,
                            state: p.state,
                            id: e.left.id,
                        })
                    })
                    .sink_to(sink)
            }
            Plan::Q5(sink) => all
                .flat_map(bid)
                .key_by(|b: &Bid| b.auction)
                .window(Sliding::new(10 * SECOND, 2 * SECOND))
                .aggregate(Count)
                // Each sliding window's counts carry the time `end - 1`, so they fall into
                // one 2 s tumbling window: the auctions with the most bids in it.
                .key_by(|r: &WindowResult<u64, u64>| (r.window.start, r.window.end))
                .window(Tumbling::new(2 * SECOND))
                .aggregate(MaxAll(|r: &WindowResult<u64, u64>| r.value))
                .flat_map(|top| {
                    let (num, results) = top.value;
                    results.into_iter().map(move |r| HotItem {
                        auction: r.key,
                        num,
                        starttime: r.window.start,
                        endtime: r.window.end,
                    })
                })
                .sink_to(sink),
            Plan::Q8(sink) => {
                let persons = all.clone().flat_map(person).key_by(|p: &Person| p.id);
                // One record per seller and window, as the SQL groups auctions first.
                let sellers = all
                    .flat_map(auction)
                    .key_by(|a: &Auction| a.seller)
                    .window(Tumbling::new(10 * SECOND))
                    .aggregate(Count)
                    .key_by(|r: &WindowResult<u64, u64>| r.key);
                persons
                    .window_join(sellers, Tumbling::new(10 * SECOND))
                    .join()
                    .flat_map(|j| {
                        let p = j.left?;
                        Some(NewUser { id: p.id, name: p.name, starttime: j.window.start })
                    })
                    .sink_to(sink)
            }
            Plan::Q11(sink) => all
                .flat_map(bid)
                .key_by(|b: &Bid| b.bidder)
                .session_window(10 * SECOND)
                .aggregate(Count)
                .map(|r| Session {
                    bidder: r.key,
                    bid_count: r.value,
                    starttime: r.window.start,
                    endtime: r.window.end,
                })
                .sink_to(sink),
        }
    }
}

/// Runs the job with the process's arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs the job with the given arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    Job::<NexmarkJobConfig>::new("nexmark").run_from(args, |config| {
        let job = &config.job;
        let events = NexmarkEvents::new(&job.events).map_err(|e| e.within("job.events"))?;
        let plan = Plan::new(job.query, &job.output)?;
        Ok(move |flow: &mut Flow<'_>| plan.build(flow, &events))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_all_keeps_every_tie_across_merges() {
        let max = MaxAll(|v: &(u64, char)| v.0);
        let (mut a, mut b) = (max.init(), max.init());
        for v in [(3, 'a'), (5, 'b'), (5, 'c'), (1, 'd')] {
            max.add(&mut a, &v);
        }
        for v in [(5, 'e'), (0, 'f')] {
            max.add(&mut b, &v);
        }
        max.merge(&mut a, b);
        max.merge(&mut a, max.init());
        let (top, mut all) = max.finish(&a);
        all.sort();
        assert_eq!((top, all), (5, vec![(5, 'b'), (5, 'c'), (5, 'e')]));
        let mut empty = max.init();
        max.merge(&mut empty, a);
        assert_eq!(max.finish(&empty).1.len(), 3, "an empty accumulator takes the other");
        // A zero maximum is a maximum too.
        let mut zero = max.init();
        max.add(&mut zero, &(0, 'z'));
        assert_eq!(max.finish(&zero), (0, vec![(0, 'z')]));
    }
}
