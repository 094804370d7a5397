//! The checkpoint agent: one operator per worker, talking to the others over a feedback loop.
//!
//! Worker 0's agent also coordinates. A checkpoint goes through these steps:
//!
//! 1. `Prepare(n)`: every agent pauses its worker's sources between two polls and replies with
//!    the latest time they emitted a record at or hold a capability for.
//! 2. `Arm(n, cut)`: the coordinator picks the cut above every reply, so no record at or after
//!    it exists yet anywhere. Every agent publishes the cut to its worker's participants and
//!    acknowledges.
//! 3. `Go(n)`: only once every worker has armed do the sources resume, so no participant can
//!    see a record at or after the cut before it knows the cut.
//! 4. Participants save as their input frontier passes the cut; an agent writes its worker's
//!    part when all of them have, and reports `Saved`.
//! 5. The coordinator writes the manifest (the checkpoint is now complete) and broadcasts
//!    `Committed(n)`: sinks make the prepared output visible, sources commit offsets.
//!
//! When every source has finished, the coordinator takes a last checkpoint with an infinite
//! cut (no pause needed) and then tells every agent `Over`, which lets the dataflow end. If a
//! stop is requested anywhere (a signal, a failure), no last checkpoint is taken: output since
//! the latest complete checkpoint stays invisible, and a restart replays it.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::Concatenate;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{ConnectLoop, Feedback};
use timely::dataflow::{Scope, StreamVec};

use super::{lock, Checkpoints, Manifest, FORMAT_VERSION};
use crate::context::JobContext;
use crate::metrics as m;
use crate::time::Time;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Control {
    Prepare(u64),
    Paused { id: u64, high: Time },
    Arm { id: u64, cut: Time },
    Armed(u64),
    Go(u64),
    Saved { id: u64, worker: usize, bytes: Option<u64> },
    Committed(u64),
    Stopping,
    Over { stop: bool },
}

/// A control message and the worker it is for.
type Message = (u32, Control);

/// How often an agent looks at the stop flag, at most.
const STOP_POLL: Duration = Duration::from_millis(100);
/// How often an agent looks whether its participants have saved.
const SAVE_POLL: Duration = Duration::from_millis(1);

/// The coordinator's progress through one checkpoint.
#[derive(Debug)]
enum Phase {
    Idle {
        due: Instant,
    },
    Pausing {
        id: u64,
        waiting: usize,
        high: Time,
    },
    /// Armed at `cut`; `Go` is sent once every worker has armed (some may save before).
    Running(Run),
    Over,
}

#[derive(Debug)]
struct Run {
    id: u64,
    cut: Time,
    last: bool,
    arming: usize,
    went: bool,
    saving: usize,
    bytes: u64,
    failed: bool,
}

impl Run {
    fn start(id: u64, cut: Time, last: bool, peers: usize) -> Phase {
        let run = Run {
            id,
            cut,
            last,
            arming: peers,
            went: false,
            saving: peers,
            bytes: 0,
            failed: false,
        };
        Phase::Running(run)
    }
}

/// Builds the agent on the worker running `scope`. `sources` are streams whose frontier is
/// the sources' (the job's data frontier at its roots).
pub(crate) fn build_agent<'scope, D: crate::Data>(
    scope: Scope<'scope, Time>,
    context: &JobContext,
    sources: Vec<StreamVec<'scope, Time, D>>,
) {
    let Some(shared) = context.checkpoints.clone() else { return };
    let state = Arc::clone(&context.state);
    let status = Arc::clone(&context.status);
    let granularity = context.granularity;
    let job = context.name.clone();
    let (worker, peers) = (scope.index(), scope.peers());
    let sources = scope.concatenate(sources);

    let (handle, control) = scope.feedback::<Vec<Message>>(1);
    let mut builder = OperatorBuilder::new("checkpoint-agent".to_owned(), scope);
    let info = builder.operator_info();
    let mut control_in =
        builder.new_input_connection(control, Exchange::new(|m: &Message| u64::from(m.0)), []);
    let mut sources_in = builder.new_input_connection(sources, Pipeline, []);
    let (out, out_stream) = builder.new_output();
    out_stream.connect_loop(handle);
    let activator = scope.activator_for(Rc::clone(&info.address));
    let mut out = OutputBuilder::from(out);
    let mut next_id = shared.first_id();
    let interval = shared.interval;

    builder.build(move |mut capabilities| {
        let mut cap = capabilities.pop();
        let mut phase = Phase::Idle { due: Instant::now() + interval };
        let mut saving: Option<u64> = None;
        let mut stopping_sent = false;
        let mut stopping = false;
        let mut started = Instant::now();
        // Worker 0's span of the running checkpoint, from its start to its manifest.
        let mut span = tracing::Span::none();
        let mut sent: Vec<Message> = Vec::new();
        let labels = [(m::JOB, job.to_string())];
        move |frontiers| {
            let slot = shared.slot(worker);
            let broadcast = |sent: &mut Vec<Message>, c: Control| {
                sent.extend((0..peers).map(|w| (w as u32, c.clone())));
            };
            sources_in.for_each(|_, data| data.clear());
            let mut replies: Vec<Control> = Vec::new();
            control_in.for_each(|_, data| {
                for (_, message) in data.drain(..) {
                    match message {
                        Control::Prepare(id) => {
                            slot.paused.store(true, Ordering::Release);
                            let high = slot.high.load(Ordering::Acquire);
                            sent.push((0, Control::Paused { id, high }));
                        }
                        Control::Arm { id, cut } => {
                            slot.cut.store(cut, Ordering::Release);
                            slot.armed.store(id, Ordering::Release);
                            wake(&shared, worker);
                            saving = Some(id);
                            sent.push((0, Control::Armed(id)));
                        }
                        Control::Go(_) => slot.paused.store(false, Ordering::Release),
                        Control::Committed(id) => {
                            slot.committed.store(id, Ordering::Release);
                            wake(&shared, worker);
                        }
                        Control::Over { stop } => {
                            if stop && !state.stop_requested() {
                                tracing::info!("stopping: another process of the job stopped");
                                state.request_stop();
                            }
                            slot.over.store(true, Ordering::Release);
                            slot.paused.store(false, Ordering::Release);
                            wake(&shared, worker);
                            cap = None;
                        }
                        reply => replies.push(reply),
                    }
                }
            });
            if cap.is_none() {
                return;
            }

            // This worker's part, once all its participants have saved.
            if let Some(id) = saving {
                match collect(&shared, worker, id) {
                    Some(states) => {
                        let part = tracing::info_span!("checkpoint_part", checkpoint = id);
                        let bytes = match part.in_scope(|| shared.write_part(id, worker, states)) {
                            Ok(bytes) => Some(bytes),
                            Err(error) => {
                                tracing::error!(%error, checkpoint = id, "checkpoint part failed");
                                None
                            }
                        };
                        sent.push((0, Control::Saved { id, worker, bytes }));
                        saving = None;
                    }
                    None => activator.activate_after(SAVE_POLL),
                }
            }
            if state.stop_requested() && !stopping_sent {
                stopping_sent = true;
                sent.push((0, Control::Stopping));
            }

            if worker == 0 {
                let sources_done = frontiers[1].frontier().is_empty();
                for reply in replies.drain(..) {
                    match (reply, &mut phase) {
                        (Control::Stopping, _) => stopping = true,
                        (
                            Control::Paused { id, high: h },
                            Phase::Pausing { id: p, waiting, high },
                        ) if id == *p => {
                            *high = (*high).max(h);
                            *waiting -= 1;
                        }
                        (Control::Armed(id), Phase::Running(run)) if id == run.id => {
                            run.arming -= 1;
                        }
                        (Control::Saved { id, bytes, .. }, Phase::Running(run)) if id == run.id => {
                            run.saving -= 1;
                            match bytes {
                                Some(bytes) => run.bytes += bytes,
                                None => run.failed = true,
                            }
                        }
                        (reply, phase) => {
                            tracing::debug!(?reply, ?phase, "stale checkpoint message");
                        }
                    }
                }
                if stopping && !matches!(phase, Phase::Over) {
                    tracing::info!(
                        "stopping: no last checkpoint; a restart resumes from the latest"
                    );
                    broadcast(&mut sent, Control::Over { stop: true });
                    phase = Phase::Over;
                }
                let now = Instant::now();
                phase = match std::mem::replace(&mut phase, Phase::Over) {
                    Phase::Idle { .. } if sources_done => {
                        started = now;
                        let id = next_id;
                        next_id += 1;
                        span = checkpoint_span(id);
                        broadcast(&mut sent, Control::Arm { id, cut: Time::MAX });
                        Run::start(id, Time::MAX, true, peers)
                    }
                    Phase::Idle { due } if now >= due => {
                        started = now;
                        let id = next_id;
                        next_id += 1;
                        span = checkpoint_span(id);
                        broadcast(&mut sent, Control::Prepare(id));
                        Phase::Pausing { id, waiting: peers, high: 0 }
                    }
                    Phase::Idle { due } => {
                        activator.activate_after((due - now).min(STOP_POLL));
                        Phase::Idle { due }
                    }
                    Phase::Pausing { id, waiting: 0, high } => {
                        // Above every time emitted or held, on the granularity grid.
                        let cut = granularity.ceil(high.saturating_add(1)).max(1);
                        broadcast(&mut sent, Control::Arm { id, cut });
                        Run::start(id, cut, false, peers)
                    }
                    Phase::Running(mut run) if run.arming == 0 && !run.went => {
                        broadcast(&mut sent, Control::Go(run.id));
                        run.went = true;
                        activator.activate();
                        Phase::Running(run)
                    }
                    Phase::Running(Run {
                        id,
                        cut,
                        last,
                        went: true,
                        saving: 0,
                        bytes,
                        failed,
                        ..
                    }) => {
                        let duration = started.elapsed();
                        let _entered =
                            std::mem::replace(&mut span, tracing::Span::none()).entered();
                        let manifest = Manifest {
                            format: FORMAT_VERSION,
                            job: shared.job.clone(),
                            id,
                            cut,
                            last,
                            workers: peers,
                            participants: names(&shared, worker),
                            bytes,
                            duration_ms: duration.as_millis() as u64,
                        };
                        let written = if failed {
                            Err(crate::Error::Checkpoint("a worker's part failed".to_owned()))
                        } else {
                            shared.write_manifest(&manifest)
                        };
                        match written {
                            Ok(()) => {
                                metrics::counter!(m::CHECKPOINTS, &labels).increment(1);
                                metrics::histogram!(m::CHECKPOINT_SECONDS, &labels)
                                    .record(duration.as_secs_f64());
                                metrics::gauge!(m::CHECKPOINT_BYTES, &labels).set(bytes as f64);
                                status.checkpoint_completed(id, cut, bytes, duration);
                                tracing::info!(
                                    checkpoint = id,
                                    cut,
                                    bytes,
                                    last,
                                    duration_ms = duration.as_millis() as u64,
                                    "checkpoint complete"
                                );
                                broadcast(&mut sent, Control::Committed(id));
                            }
                            Err(error) => {
                                metrics::counter!(m::CHECKPOINT_FAILURES, &labels).increment(1);
                                status.checkpoint_failed();
                                tracing::error!(%error, checkpoint = id, "checkpoint failed");
                            }
                        }
                        if last {
                            broadcast(&mut sent, Control::Over { stop: false });
                            Phase::Over
                        } else {
                            let due = started + interval;
                            activator.activate_after(due.saturating_duration_since(now));
                            Phase::Idle { due }
                        }
                    }
                    other => other,
                };
            }
            if saving.is_none() && worker != 0 {
                activator.activate_after(STOP_POLL);
            }
            if let (Some(cap), false) = (&cap, sent.is_empty()) {
                out.activate().session(cap).give_iterator(sent.drain(..));
            }
        }
    });
}

/// The span of checkpoint `id` on the worker that coordinates it.
fn checkpoint_span(id: u64) -> tracing::Span {
    tracing::info_span!("checkpoint", checkpoint = id)
}

/// Every participant's state for checkpoint `id` on `worker`, once all have one.
pub(super) fn collect(
    shared: &Checkpoints,
    worker: usize,
    id: u64,
) -> Option<Vec<(String, Vec<u8>)>> {
    let participants = lock(&shared.slot(worker).participants);
    participants
        .iter()
        .map(|p| match (&p.saved, &p.finished) {
            (Some((saved, bytes)), _) if *saved == id => Some((p.name.clone(), bytes.clone())),
            (_, Some(bytes)) => Some((p.name.clone(), bytes.clone())),
            _ => None,
        })
        .collect()
}

/// The participants' names on `worker`, in build order.
pub(super) fn names(shared: &Checkpoints, worker: usize) -> Vec<String> {
    lock(&shared.slot(worker).participants).iter().map(|p| p.name.clone()).collect()
}

/// Schedules every participant on `worker`.
pub(super) fn wake(shared: &Checkpoints, worker: usize) {
    for p in lock(&shared.slot(worker).participants).iter() {
        let _ = p.activator.activate();
    }
}
