//! The dataflow's operators and channels, and how many records each has carried, read from
//! timely's own event log on every worker.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

use super::{EdgeStatus, OperatorStatus, Snapshot, Status, Traffic};
use crate::metrics as m;

/// How often a worker publishes its counts into the process's [`Status`], at most.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// One worker's operators and channels with their counts, as last published.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkerGraph {
    operators: Vec<Operator>,
    /// `(from, to, records)` by operator address.
    edges: Vec<(Vec<usize>, Vec<usize>, u64)>,
}

#[derive(Debug, Clone)]
struct Operator {
    addr: Vec<usize>,
    name: String,
    records_in: u64,
    records_out: u64,
    busy: Duration,
}

#[derive(Debug)]
struct Channel {
    /// The addresses of the sending and receiving operators (`scope ++ [index]`).
    from: Vec<usize>,
    to: Vec<usize>,
    sent: u64,
    received: u64,
}

/// The log reader's state on one worker.
struct Log {
    status: Arc<Status>,
    worker: usize,
    operators: Vec<Operator>,
    by_id: HashMap<usize, usize>,
    running: HashMap<usize, Duration>,
    channels: BTreeMap<usize, Channel>,
    published: Option<Duration>,
    /// Prometheus counters per operator: records in and out.
    counters: Vec<(metrics::Counter, metrics::Counter)>,
}

impl Log {
    fn read(&mut self, time: Duration, event: &TimelyEvent) {
        match event {
            TimelyEvent::Operates(op) => {
                self.by_id.insert(op.id, self.operators.len());
                self.operators.push(Operator {
                    addr: op.addr.clone(),
                    name: op.name.clone(),
                    records_in: 0,
                    records_out: 0,
                    busy: Duration::ZERO,
                });
            }
            TimelyEvent::Channels(channel) => {
                let at = |index: usize| {
                    let mut addr = channel.scope_addr.clone();
                    addr.push(index);
                    addr
                };
                self.channels.insert(
                    channel.id,
                    Channel {
                        from: at(channel.source.0),
                        to: at(channel.target.0),
                        sent: 0,
                        received: 0,
                    },
                );
            }
            TimelyEvent::Messages(message) => {
                if let Some(channel) = self.channels.get_mut(&message.channel) {
                    let records = message.record_count.max(0) as u64;
                    if message.is_send {
                        channel.sent += records;
                    } else {
                        channel.received += records;
                    }
                }
            }
            TimelyEvent::Schedule(schedule) => match schedule.start_stop {
                StartStop::Start => {
                    self.running.insert(schedule.id, time);
                }
                StartStop::Stop => {
                    let started = self.running.remove(&schedule.id);
                    let index = self.by_id.get(&schedule.id);
                    if let (Some(started), Some(&index)) = (started, index) {
                        self.operators[index].busy += time.saturating_sub(started);
                    }
                }
            },
            _ => {}
        }
    }

    fn publish(&mut self, now: Duration) {
        self.published = Some(now);
        let mut operators = self.operators.clone();
        let index: HashMap<&[usize], usize> =
            self.operators.iter().enumerate().map(|(i, o)| (o.addr.as_slice(), i)).collect();
        let mut edges = Vec::with_capacity(self.channels.len());
        for channel in self.channels.values() {
            if let Some(&i) = index.get(channel.from.as_slice()) {
                operators[i].records_out += channel.sent;
            }
            if let Some(&i) = index.get(channel.to.as_slice()) {
                operators[i].records_in += channel.received;
            }
            edges.push((channel.from.clone(), channel.to.clone(), channel.sent));
        }
        for (i, op) in operators.iter().enumerate() {
            if i == self.counters.len() {
                let labels = [
                    (m::OPERATOR, op.name.clone()),
                    (m::ID, op.addr.iter().map(usize::to_string).collect::<Vec<_>>().join(".")),
                    (m::WORKER, self.worker.to_string()),
                ];
                self.counters.push((
                    metrics::counter!(m::OPERATOR_RECORDS_IN, &labels),
                    metrics::counter!(m::OPERATOR_RECORDS_OUT, &labels),
                ));
            }
            self.counters[i].0.absolute(op.records_in);
            self.counters[i].1.absolute(op.records_out);
        }
        self.status.set_graph(self.worker, WorkerGraph { operators, edges });
    }
}

/// Reads timely's log on this worker: the records exchanged with other workers for flow
/// control (returned when the job has several workers and `flow_control` is on), and, with
/// `status`, every operator's records and busy time for the status page. Call it before
/// `worker.dataflow(...)`: timely's operators and channels take their logger when they are
/// built. Takes timely's `"timely"` logger slot.
pub fn watch(
    worker: &mut Worker,
    flow_control: bool,
    status: Option<Arc<Status>>,
) -> Option<Traffic> {
    let traffic = (flow_control && worker.peers() > 1).then(Traffic::new);
    if traffic.is_none() && status.is_none() {
        return None;
    }
    let mut log = status.map(|status| Log {
        status,
        worker: worker.index(),
        operators: Vec::new(),
        by_id: HashMap::new(),
        running: HashMap::new(),
        channels: BTreeMap::new(),
        published: None,
        counters: Vec::new(),
    });
    let counts = traffic.clone();
    worker.log_register()?.insert::<TimelyEventBuilder, _>("timely", move |time, events| {
        match events {
            Some(events) => {
                for (at, event) in events.iter() {
                    if let (Some(counts), TimelyEvent::Messages(message)) = (&counts, event) {
                        counts.observe(message);
                    }
                    if let Some(log) = log.as_mut() {
                        log.read(*at, event);
                    }
                }
                if let Some(log) = log.as_mut() {
                    if log.published.is_none_or(|p| *time >= p + PUBLISH_EVERY) {
                        log.publish(*time);
                    }
                }
            }
            // The worker is shutting down: publish the final counts.
            None => {
                if let Some(log) = log.as_mut() {
                    log.publish(*time);
                }
            }
        }
    });
    traffic
}

/// Sums the workers' graphs by operator address, with rates since `previous`.
pub(super) fn merge(
    graphs: &BTreeMap<usize, WorkerGraph>,
    previous: Option<&Snapshot>,
    elapsed: Option<f64>,
) -> (Vec<OperatorStatus>, Vec<EdgeStatus>) {
    let id = |addr: &[usize]| addr.iter().map(usize::to_string).collect::<Vec<_>>().join(".");
    let rate = |now: u64, before: Option<u64>| match (elapsed, before) {
        (Some(seconds), Some(before)) => now.saturating_sub(before) as f64 / seconds,
        _ => 0.0,
    };
    let mut operators: BTreeMap<Vec<usize>, (String, u64, u64, Duration)> = BTreeMap::new();
    let mut edges: BTreeMap<(Vec<usize>, Vec<usize>), u64> = BTreeMap::new();
    for graph in graphs.values() {
        for op in &graph.operators {
            let entry = operators
                .entry(op.addr.clone())
                .or_insert_with(|| (op.name.clone(), 0, 0, Duration::ZERO));
            entry.1 += op.records_in;
            entry.2 += op.records_out;
            entry.3 += op.busy;
        }
        for (from, to, records) in &graph.edges {
            // Channels into and out of a scope's boundary (index 0) are not drawn.
            if operators.contains_key(from) && operators.contains_key(to) {
                *edges.entry((from.clone(), to.clone())).or_default() += records;
            }
        }
    }
    let operators = operators
        .into_iter()
        // The dataflow itself (address of length one) is the frame, not a box.
        .filter(|(addr, _)| addr.len() > 1)
        .map(|(addr, (name, records_in, records_out, busy))| {
            let id = id(&addr);
            let before = previous.and_then(|p| p.operators.iter().find(|o| o.id == id));
            let busy_s = busy.as_secs_f64();
            OperatorStatus {
                records_in_per_s: rate(records_in, before.map(|b| b.records_in)),
                records_out_per_s: rate(records_out, before.map(|b| b.records_out)),
                busy: match (elapsed, before) {
                    (Some(seconds), Some(b)) => ((busy_s - b.busy_s) / seconds).max(0.0),
                    _ => 0.0,
                },
                busy_s,
                state_entries: None,
                records_in,
                records_out,
                name,
                id,
            }
        })
        .collect();
    let edges = edges
        .into_iter()
        .map(|((from, to), records)| {
            let (from, to) = (id(&from), id(&to));
            let before = previous
                .and_then(|p| p.edges.iter().find(|e| e.from == from && e.to == to))
                .map(|e| e.records);
            EdgeStatus { records_per_s: rate(records, before), records, from, to }
        })
        .collect();
    (operators, edges)
}
