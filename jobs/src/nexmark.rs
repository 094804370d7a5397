//! `nexmark`: the [Nexmark](https://github.com/nexmark/nexmark) benchmark queries on the
//! Nexmark generator, one binary, the query chosen with `--set job.query="q5"`.
//!
//! The queries follow the Nexmark SQL of the nexmark/nexmark repository; where Tributary's
//! answer differs from the SQL's, the query's documentation says how. Results go to any
//! [`Output`] (`{ kind = "discard" }` for benchmarks).

use std::collections::HashMap;
use std::ffi::OsString;
use std::process::ExitCode;

use tributary_connectors::generator::{Auction, Bid, Person, Str};
use tributary_connectors::DiscardSink;
use tributary_runtime::{Events as EventStream, Ingested, IngestionTime};

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
    /// California, with the seller's name, city and state. The SQL joins auctions with
    /// persons incrementally; here it is a stream–table join on the persons as of each
    /// auction's time. The answers differ only for an auction whose seller registers after
    /// it (the model lets sellers be up to 10 ids ahead of the newest person), which the SQL
    /// joins once the person arrives and this join does not.
    Q3,
    /// Average price per category: each auction's winning bid (the highest bid between its
    /// opening and its expiry), averaged per category over every auction with a bid so far.
    /// Like the SQL's retracting aggregate, a category's average is updated whenever a
    /// better bid changes an auction's price; the averages are of prices in cents.
    Q4,
    /// Hot items: per sliding window (10 s every 2 s), the auctions with the most bids.
    Q5,
    /// Highest bid: per tumbling 10 s window, the bids with the highest price.
    Q7,
    /// New users: persons who registered and opened an auction within the same tumbling 10 s
    /// window.
    Q8,
    /// User sessions: bids per bidder per session (closed after 10 s without a bid).
    Q11,
    /// Bids per bidder per 10 s tumbling window of processing time. The SQL's `PROCTIME()`
    /// is taken as the source reads each bid (ingestion time, [`IngestionTime`]), so the
    /// windows are of wall-clock time, not event time.
    Q12,
}

impl Query {
    /// Every query, in order.
    pub const ALL: [Query; 11] = [
        Query::Source,
        Query::Q0,
        Query::Q1,
        Query::Q2,
        Query::Q3,
        Query::Q4,
        Query::Q5,
        Query::Q7,
        Query::Q8,
        Query::Q11,
        Query::Q12,
    ];

    /// Its name in the configuration: `source`, `q0`, ...
    pub fn name(self) -> &'static str {
        match self {
            Query::Source => "source",
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q3 => "q3",
            Query::Q4 => "q4",
            Query::Q5 => "q5",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
            Query::Q11 => "q11",
            Query::Q12 => "q12",
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
    /// `events.pace.events_per_second` per second of event time (10 000). With `input` set,
    /// q4 still takes the longest auction from `events.pace.events_per_second`: set it to
    /// the rate the events were generated at.
    pub events: NexmarkConfig,
    /// Where the events come from instead of the generator, e.g. `{ kind = "kafka", brokers =
    /// "127.0.0.1:9092", topics = ["nexmark"], bounded = true }`, as JSON events
    /// (`{"bid": {...}}`, `{"auction": {...}}`, `{"person": {...}}`).
    pub input: Option<Input>,
    /// Where the results go.
    pub output: Output,
}

impl Default for NexmarkJobConfig {
    fn default() -> Self {
        let mut events = NexmarkConfig::default();
        events.pace.events = Some(1_000_000);
        NexmarkJobConfig { query: Query::Q0, events, input: None, output: Output::Stdout }
    }
}

/// Where the events come from, each ready to be read at event time (`.0`) or at ingestion
/// time (q12).
enum Events {
    Generator(IngestionTime<NexmarkEvents>),
    Kafka(IngestionTime<KafkaSource<NexmarkEvent>>),
    File(IngestionTime<FileSource<NexmarkEvent>>),
}

impl Events {
    fn new(generator: NexmarkEvents, input: Option<&Input>) -> Result<Events, ConfigError> {
        let Some(input) = input else { return Ok(Events::Generator(IngestionTime(generator))) };
        Ok(match input.build("nexmark").map_err(|e| e.within("job.input"))? {
            AnySource::Kafka(s) => Events::Kafka(IngestionTime(s)),
            AnySource::File(s) => Events::File(IngestionTime(s)),
        })
    }

    fn read<'scope>(&self, flow: &mut Flow<'scope>) -> EventStream<'scope, NexmarkEvent> {
        match self {
            Events::Generator(s) => flow.source(&s.0),
            Events::Kafka(s) => flow.source(&s.0),
            Events::File(s) => flow.source(&s.0),
        }
    }

    /// The events stamped with the time the source reads them.
    fn read_at_ingestion<'scope>(
        &self,
        flow: &mut Flow<'scope>,
    ) -> EventStream<'scope, Ingested<NexmarkEvent>> {
        match self {
            Events::Generator(s) => flow.source(s),
            Events::Kafka(s) => flow.source(s),
            Events::File(s) => flow.source(s),
        }
    }
}

fn bid(event: NexmarkEvent) -> Option<Bid> {
    match event {
        NexmarkEvent::Bid(b) => Some(b),
        _ => None,
    }
}

fn auction(event: NexmarkEvent) -> Option<Auction> {
    match event {
        NexmarkEvent::Auction(a) => Some(a),
        _ => None,
    }
}

fn person(event: NexmarkEvent) -> Option<Person> {
    match event {
        NexmarkEvent::Person(p) => Some(p),
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
    pub extra: Str,
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
    pub name: Str,
    /// The seller's city.
    pub city: Str,
    /// The seller's state.
    pub state: Str,
    /// The auction.
    pub id: u64,
}

/// A q4 result: a category's average winning price after an update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryPrice {
    /// The category.
    pub category: u64,
    /// The average winning price of its auctions with a bid, in cents.
    pub avg_price: f64,
    /// How many auctions the average is over.
    pub auctions: u64,
    /// The update's timely time, epoch milliseconds: the average accounts for every event
    /// before `date_time` plus the job's time granularity (`runtime.granularity`, 100 ms).
    pub date_time: u64,
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
    pub name: Str,
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

/// A q12 result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidderCount {
    /// The bidder.
    pub bidder: u64,
    /// Bids in the window.
    pub bid_count: u64,
    /// Window start, wall-clock epoch milliseconds.
    pub starttime: u64,
    /// Window end (exclusive).
    pub endtime: u64,
}

/// q4's first step: an auction's category and its highest valid bid so far.
#[derive(Clone)]
struct WinningBid;

impl Aggregator<Joined<u64, Auction, Bid>> for WinningBid {
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn init(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (u64, u64), j: &Joined<u64, Auction, Bid>) {
        if let Some(bid) = &j.right {
            *acc = (j.left.category, acc.1.max(bid.price));
        }
    }
    fn merge(&self, acc: &mut (u64, u64), other: (u64, u64)) {
        *acc = (acc.0.max(other.0), acc.1.max(other.1));
    }
    fn finish(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
}

/// q4's second step: per category, every auction's latest winning price and their sum.
#[derive(Clone)]
struct AveragePrice;

/// Winning price by auction, and the sum of the prices.
type Prices = (HashMap<u64, u64>, u128);

impl AveragePrice {
    fn update(acc: &mut Prices, auction: u64, price: u64) {
        let old = acc.0.entry(auction).or_insert(0);
        if price > *old {
            acc.1 += u128::from(price - *old);
            *old = price;
        }
    }
}

impl Aggregator<KeyedUpdate<u64, (u64, u64)>> for AveragePrice {
    type Acc = Prices;
    type Out = (f64, u64);
    fn init(&self) -> Prices {
        (HashMap::new(), 0)
    }
    fn add(&self, acc: &mut Prices, update: &KeyedUpdate<u64, (u64, u64)>) {
        Self::update(acc, update.key, update.value.1);
    }
    fn merge(&self, acc: &mut Prices, other: Prices) {
        for (auction, price) in other.0 {
            Self::update(acc, auction, price);
        }
    }
    fn finish(&self, acc: &Prices) -> (f64, u64) {
        let n = acc.0.len() as u64;
        (acc.1 as f64 / n.max(1) as f64, n)
    }
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
    Q4(AnySink<CategoryPrice>, u64),
    Q5(AnySink<HotItem>),
    Q8(AnySink<NewUser>),
    Q11(AnySink<Session>),
    Q12(AnySink<BidderCount>),
}

impl Plan {
    fn new(query: Query, output: &Output, events: &NexmarkEvents) -> Result<Plan, ConfigError> {
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
            Query::Q4 => Plan::Q4(sink(output, query)?, events.model().longest_auction_ms()),
            Query::Q5 => Plan::Q5(sink(output, query)?),
            Query::Q8 => Plan::Q8(sink(output, query)?),
            Query::Q11 => Plan::Q11(sink(output, query)?),
            Query::Q12 => Plan::Q12(sink(output, query)?),
        })
    }

    /// Builds the query over the events in `flow`.
    fn build(&self, flow: &mut Flow<'_>, events: &Events) {
        if let Plan::Q12(sink) = self {
            return events
                .read_at_ingestion(flow)
                .flat_map(|e: Ingested<NexmarkEvent>| {
                    let at = e.at;
                    bid(e.value).map(|b| Ingested { at, value: b })
                })
                .key_by(|b: &Ingested<Bid>| b.value.bidder)
                .window(Tumbling::new(10 * SECOND))
                .aggregate(Count)
                .map(|r| BidderCount {
                    bidder: r.key,
                    bid_count: r.value,
                    starttime: r.window.start,
                    endtime: r.window.end,
                })
                .sink_to(sink);
        }
        let all = events.read(flow);
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
                    .filter(|p| ["OR", "ID", "CA"].contains(&&*p.state))
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
            Plan::Q4(sink, longest_auction_ms) => {
                let bids = all.clone().flat_map(bid).key_by(|b: &Bid| b.auction);
                // Bids from an auction's opening to its expiry, at most the longest auction.
                all.flat_map(auction)
                    .key_by(|a: &Auction| a.id)
                    .interval_join(
                        bids,
                        (Duration::ZERO, false),
                        (Duration::from_millis(*longest_auction_ms), false),
                    )
                    .join()
                    .filter(|j| j.right.as_ref().is_some_and(|b| b.date_time <= j.left.expires))
                    .key_by(|j: &Joined<u64, Auction, Bid>| j.key)
                    .aggregate(WinningBid)
                    .key_by(|u: &KeyedUpdate<u64, (u64, u64)>| u.value.0)
                    .aggregate(AveragePrice)
                    .map(|u| CategoryPrice {
                        category: u.key,
                        avg_price: u.value.0,
                        auctions: u.value.1,
                        date_time: u.time,
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
            // Read at ingestion time, above.
            Plan::Q12(_) => {}
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
        let generator = NexmarkEvents::new(&job.events).map_err(|e| e.within("job.events"))?;
        let plan = Plan::new(job.query, &job.output, &generator)?;
        let events = Events::new(generator, job.input.as_ref())?;
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
