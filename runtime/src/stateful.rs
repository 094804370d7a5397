//! The driver of keyed, checkpointed operators.
//!
//! A stateful operator (a window aggregate, a join, a keyed aggregate, a table) is split in
//! two, as in differential-dataflow's `reduce`: the *logic* is a [`KeyedState`] (with
//! [`UnaryState`] or [`BinaryState`] for its inputs) that folds records in, fires what the
//! frontier allows, and saves and restores itself; the *driver* ([`unary`], [`binary`]) owns everything else:
//! the timely operator and its name, the keyed inputs, the checkpoint protocol, the state
//! gauge, the records too late for the operator and their outputs, and failures.
//!
//! # The protocol the driver runs
//!
//! 1. **Restore.** On a restart from a checkpoint the driver hands the logic every saved part
//!    of the operator (its own worker's, or every old worker's when the worker count changed)
//!    through [`KeyedState::restore`], with the cut and an initial capability; the logic keeps
//!    the keys this worker owns ([`Restore::owns`]) and holds capabilities for what it will
//!    emit at the cut or later. A checkpoint that cannot be read, or whose state has another
//!    [`KeyedState::VERSION`], stops the job.
//! 2. **Absorb.** Each input batch of a binary operator first loses its too-late records
//!    (when the logic [splits](BinaryState::split_late_left) them) to the late output. While a checkpoint is pending
//!    at cut `c`, batches at times `>= c` are stashed; the others go to `absorb`.
//! 3. **Advance.** The logic advances to each input's frontier, limited to `c` while the
//!    checkpoint is pending: it acts as if the frontier stood at the cut.
//! 4. **Save.** Once every input frontier has reached `c`, the state holds exactly the records
//!    below it: [`KeyedState::prepare_save`] lifts what the logic holds below the cut to it,
//!    the driver saves [`KeyedState::snapshot`], replays the stash into `absorb` and advances
//!    to the real frontiers.
//! 5. **Finish.** At the empty frontier the driver saves the final state once for every later
//!    checkpoint and leaves the protocol.
//!
//! The contract of the logic, checked with `debug_assert!` where it can be:
//! - `absorb` sees only records below a pending cut; `advance` never sees a frontier past it.
//! - After `advance` to `f` the logic holds no capability below `f` for work it could do.
//! - `snapshot` after `prepare_save(c)` and `restore` of it on any worker count give back the
//!   same state for the keys each worker owns, holding nothing below `c`.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};
use timely::dataflow::operators::{Capability, InputCapability};

use crate::checkpoint::{decode, Checkpointer, Restore, Stash};
use crate::context::{job_context, Data, Events, JobState};
use crate::error::{Error, Result};
use crate::logging::activation;
use crate::metrics as m;
use crate::status::{LateCounter, StateGauge};
use crate::time::Time;

/// The logic of a keyed operator whose state takes part in checkpoints; see the
/// [module](self) for the protocol the driver runs around it.
pub trait KeyedState: 'static {
    /// What the operator emits on its main output.
    type Output: Data;
    /// The state as it is saved in a checkpoint: a named serde struct.
    type Saved: Serialize + DeserializeOwned;
    /// The version of `Saved`'s layout. A checkpoint holding another version is refused with
    /// an error naming both; raise it whenever `Saved` changes.
    const VERSION: u32;

    /// Takes back the state from the saved parts of a checkpoint: the keys this worker owns,
    /// with capabilities made from `initial` (at the cut or later) for what is still to be
    /// emitted.
    fn restore(&mut self, restore: Restore<Self::Saved>, initial: &Capability<Time>);

    /// Moves the state forward to `frontiers` (one per input, `Time::MAX` once an input has
    /// ended): fires and emits what they allow, frees what they have passed.
    fn advance(&mut self, frontiers: &[Time], output: &mut Emitter<'_, '_, Self::Output>);

    /// Before a save at `cut`, with every input frontier at or past it: moves what the state
    /// holds below the cut to the cut, so that a restored operator holds the same.
    fn prepare_save(&mut self, _cut: Time) {}

    /// The state for a checkpoint.
    fn snapshot(&self) -> Self::Saved;

    /// How many entries the state holds, for the state gauge (keys × windows, stored
    /// records).
    fn entries(&self) -> usize;
}

/// A [`KeyedState`] with one input.
pub trait UnaryState: KeyedState {
    /// The records of the input.
    type Input: Data;

    /// Folds in a batch read at `cap`'s time (below any pending cut), emitting what it can.
    fn absorb(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<Self::Input>,
        output: &mut Emitter<'_, '_, Self::Output>,
    );
}

/// A [`KeyedState`] with two inputs.
pub trait BinaryState: KeyedState {
    /// The records of the first input.
    type Left: Data;
    /// The records of the second input.
    type Right: Data;
    /// Whether the `split_late_*` methods may move records (and the operator counts them).
    const SPLITS_LATE: bool = false;

    /// Folds in a batch of the first input; see [`UnaryState::absorb`].
    fn absorb_left(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<Self::Left>,
        output: &mut Emitter<'_, '_, Self::Output>,
    );

    /// Folds in a batch of the second input; see [`UnaryState::absorb`].
    fn absorb_right(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<Self::Right>,
        output: &mut Emitter<'_, '_, Self::Output>,
    );

    /// Moves the records of a batch of the first input read at `time` that are too late for
    /// the operator to `late`, before the batch is absorbed or stashed.
    fn split_late_left(
        &mut self,
        _time: Time,
        _data: &mut Vec<Self::Left>,
        _late: &mut Vec<Self::Left>,
    ) {
    }

    /// Splits the too-late records off a batch of the second input.
    fn split_late_right(
        &mut self,
        _time: Time,
        _data: &mut Vec<Self::Right>,
        _late: &mut Vec<Self::Right>,
    ) {
    }
}

/// The main output of a stateful operator during one activation.
pub struct Emitter<'a, 'b, O: Data> {
    session: &'b mut OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<O>>>,
}

impl<O: Data> Emitter<'_, '_, O> {
    /// Sends `records` at `cap`'s time and leaves `records` empty; nothing if it is empty.
    pub fn give(&mut self, cap: &Capability<Time>, records: &mut Vec<O>) {
        if !records.is_empty() {
            self.session.session(cap).give_container(records);
            records.clear();
        }
    }
}

/// What the two drivers share: the logic, the checkpoint protocol, the gauge and failures.
struct Protocol<S> {
    name: String,
    /// `None` once the operator failed: it then drops its input and holds nothing.
    state: Option<S>,
    checkpointer: Option<Checkpointer>,
    gauge: StateGauge,
    /// Counts the records too late for the operator, when it splits them off.
    late: Option<LateCounter>,
    job: Arc<JobState>,
}

impl<S: KeyedState> Protocol<S> {
    fn new(
        scope: &timely::dataflow::Scope<'_, Time>,
        name: &str,
        address: &[usize],
        state: S,
        splits_late: bool,
    ) -> Self {
        let job = job_context(scope);
        Protocol {
            name: name.to_owned(),
            state: Some(state),
            checkpointer: job.checkpointer(scope, name, address),
            gauge: StateGauge::new(Arc::clone(&job.status), name, scope.index()),
            late: late_counter(scope, name, splits_late),
            job: job.state,
        }
    }

    /// Restores the state from the checkpoint the job restarts from, if any.
    fn restore(&mut self, initial: &Capability<Time>) {
        let (Some(c), Some(state)) = (&self.checkpointer, &mut self.state) else { return };
        match c.restore_with(|bytes| read_versioned::<S>(&self.name, bytes)) {
            Ok(Some(restore)) => state.restore(restore, initial),
            Ok(None) => {}
            Err(error) => self.fail(error),
        }
    }

    /// Stops the job with `error` and lets go of the state and its capabilities.
    fn fail(&mut self, error: Error) {
        tracing::error!(operator = %self.name, %error, "stateful operator failed");
        self.job.fail(error);
        self.state = None;
        self.checkpointer = None;
    }

    /// The cut of the checkpoint the operator has yet to save.
    fn cut(&self) -> Option<Time> {
        self.checkpointer.as_ref().and_then(Checkpointer::pending)
    }

    /// Steps 3 to 5 of the protocol, after the inputs were read with `cut` pending:
    /// `frontiers` are the inputs' (`None`: ended), `replay` hands the stash to the logic.
    fn settle<const N: usize>(
        &mut self,
        frontiers: [Option<Time>; N],
        cut: Option<Time>,
        output: &mut Emitter<'_, '_, S::Output>,
        replay: impl FnOnce(&mut S, &mut Emitter<'_, '_, S::Output>),
    ) {
        let Some(state) = self.state.as_mut() else { return };
        let at = frontiers.map(|f| f.unwrap_or(Time::MAX));
        let limit = cut.unwrap_or(Time::MAX);
        state.advance(&at.map(|f| f.min(limit)), output);
        self.gauge.update(|| state.entries());
        let Some(c) = self.checkpointer.as_mut() else { return };
        let mut saved = Ok(());
        if let Some(cut) = cut.filter(|&cut| at.iter().all(|&f| f >= cut)) {
            state.prepare_save(cut);
            saved = c.save(&(S::VERSION, state.snapshot()));
            if saved.is_ok() {
                replay(state, output);
                state.advance(&at, output);
            }
        }
        if saved.is_ok() && frontiers.iter().all(Option::is_none) {
            saved = c.finish(&(S::VERSION, state.snapshot()));
            self.checkpointer = None;
        }
        if let Err(error) = saved {
            self.fail(error);
        }
    }
}

/// Reads one saved part of operator `name`: `(version, state)`, as `settle` saves it,
/// refusing another version of the state.
fn read_versioned<S: KeyedState>(name: &str, bytes: &[u8]) -> Result<S::Saved> {
    let version: u32 = decode(bytes)?;
    if version != S::VERSION {
        return Err(Error::Checkpoint(format!(
            "the state of `{name}` was saved in version {version}, this build reads version {}: \
             restore it with the build that wrote it, or start the job afresh",
            S::VERSION
        )));
    }
    decode::<(u32, S::Saved)>(bytes).map(|(_, state)| state)
}

/// A counter of the records too late for operator `name`, if it splits them off.
fn late_counter(
    scope: &timely::dataflow::Scope<'_, Time>,
    name: &str,
    splits: bool,
) -> Option<LateCounter> {
    splits.then(|| {
        let labels = [(m::OPERATOR, name.to_owned()), (m::WORKER, scope.index().to_string())];
        LateCounter::new(job_context(scope).status, m::LATE_DROPPED, &labels)
    })
}

/// How the logic splits the too-late records off a batch of one input.
type Split<S, D> = fn(&mut S, Time, &mut Vec<D>, &mut Vec<D>);

/// How the logic folds in a batch of one input.
type Absorb<S, D> =
    fn(&mut S, &Capability<Time>, &mut Vec<D>, &mut Emitter<'_, '_, <S as KeyedState>::Output>);

/// The late output of one input.
type LateOutput<'a, D> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<D>>>;

/// One input of a stateful operator: the batches it stashes while a cut is pending and a
/// buffer for its too-late records.
struct Input<D> {
    label: &'static str,
    stash: Stash<D>,
    too_late: Vec<D>,
}

impl<D: Data> Input<D> {
    fn new(label: &'static str) -> Self {
        Input { label, stash: Vec::new(), too_late: Vec::new() }
    }

    /// Step 2 of the protocol for one batch: splits off its too-late records (with `split`),
    /// then stashes it if it lies at or after `cut`, or else hands it to `absorb`.
    #[allow(clippy::too_many_arguments)]
    fn read<S: KeyedState>(
        &mut self,
        protocol: &mut Protocol<S>,
        cut: Option<Time>,
        cap: InputCapability<Time>,
        data: &mut Vec<D>,
        split: Option<(Split<S, D>, &mut LateOutput<'_, D>)>,
        absorb: Absorb<S, D>,
        output: &mut Emitter<'_, '_, S::Output>,
    ) {
        let (Some(state), Some(held)) = (protocol.state.as_mut(), cap.retain_least(0)) else {
            return data.clear();
        };
        let time = *held.time();
        if let Some((split, late_output)) = split {
            split(state, time, data, &mut self.too_late);
            if !self.too_late.is_empty() {
                if let Some(counter) = &protocol.late {
                    counter.increment(self.too_late.len() as u64);
                }
                tracing::debug!(operator = %protocol.name, time, input = self.label,
                    records = self.too_late.len(), "records too late for the operator");
                late_output.session(&cap).give_container(&mut self.too_late);
                self.too_late.clear();
            }
        }
        if cut.is_some_and(|cut| time >= cut) {
            self.stash.push((held, std::mem::take(data)));
        } else {
            absorb(state, &held, data, output);
        }
    }

    /// Hands the stash to `absorb` (step 4).
    fn replay<S: KeyedState>(
        &mut self,
        state: &mut S,
        absorb: Absorb<S, D>,
        output: &mut Emitter<'_, '_, S::Output>,
    ) {
        for (held, mut data) in self.stash.drain(..) {
            absorb(state, &held, &mut data, output);
        }
    }
}

/// Runs `state` as the operator `name` on `input`, routed by `pact` (an exchange by key).
/// `name` is the operator's name in timely, its checkpoint participant, tracing span, state
/// gauge: it must be the same on every run of the job.
pub fn unary<'scope, S, P>(
    input: Events<'scope, S::Input>,
    pact: P,
    name: &str,
    state: S,
) -> Events<'scope, S::Output>
where
    S: UnaryState,
    P: ParallelizationContract<Time, Vec<S::Input>>,
{
    let scope = input.scope();
    let mut builder = OperatorBuilder::new(name.to_owned(), scope);
    let mut input_handle = builder.new_input(input, pact);
    let (out, results) = builder.new_output();
    let mut out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(out);
    let address = builder.operator_info().address;
    let mut protocol = Protocol::new(&scope, name, &address, state, false);
    let worker = scope.index();
    builder.build(move |mut capabilities| {
        protocol.restore(&capabilities[0]);
        capabilities.clear();
        let mut input = Input::new("input");
        move |frontiers| {
            let _activation = activation(&protocol.name, worker);
            let mut out = out.activate();
            let mut out = Emitter { session: &mut out };
            let cut = protocol.cut();
            input_handle.for_each(|cap, data| {
                input.read(&mut protocol, cut, cap, data, None, S::absorb, &mut out)
            });
            let frontier = frontiers[0].frontier().first().copied();
            protocol.settle([frontier], cut, &mut out, |state, out| {
                input.replay(state, S::absorb, out)
            });
            if protocol.state.is_none() {
                input.stash.clear();
            }
        }
    });
    results
}

/// A binary operator's output and the too-late records of each input.
pub type Joined<'scope, S> = (
    Events<'scope, <S as KeyedState>::Output>,
    Events<'scope, <S as BinaryState>::Left>,
    Events<'scope, <S as BinaryState>::Right>,
);

/// Runs `state` as the operator `name` on two inputs, each routed by its pact; see
/// [`unary`]. Returns the output and the too-late records of each input.
pub fn binary<'scope, S, P1, P2>(
    left: Events<'scope, S::Left>,
    right: Events<'scope, S::Right>,
    (left_pact, right_pact): (P1, P2),
    name: &str,
    state: S,
) -> Joined<'scope, S>
where
    S: BinaryState,
    P1: ParallelizationContract<Time, Vec<S::Left>>,
    P2: ParallelizationContract<Time, Vec<S::Right>>,
{
    let scope = left.scope();
    let mut builder = OperatorBuilder::new(name.to_owned(), scope);
    let mut left_handle = builder.new_input(left, left_pact);
    let mut right_handle = builder.new_input(right, right_pact);
    let (out, results) = builder.new_output();
    let (late_left_out, late_left) = builder.new_output();
    let (late_right_out, late_right) = builder.new_output();
    let mut out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(out);
    let mut late_left_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(late_left_out);
    let mut late_right_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(late_right_out);
    let address = builder.operator_info().address;
    let mut protocol = Protocol::new(&scope, name, &address, state, S::SPLITS_LATE);
    let split_left = S::SPLITS_LATE.then_some(S::split_late_left as Split<S, _>);
    let split_right = S::SPLITS_LATE.then_some(S::split_late_right as Split<S, _>);
    let worker = scope.index();
    builder.build(move |mut capabilities| {
        protocol.restore(&capabilities[0]);
        capabilities.clear();
        let (mut left, mut right) = (Input::new("left"), Input::new("right"));
        move |frontiers| {
            let _activation = activation(&protocol.name, worker);
            let mut out = out.activate();
            let mut out = Emitter { session: &mut out };
            let mut late_left_out = late_left_out.activate();
            let mut late_right_out = late_right_out.activate();
            let cut = protocol.cut();
            left_handle.for_each(|cap, data| {
                let split = split_left.map(|split| (split, &mut late_left_out));
                left.read(&mut protocol, cut, cap, data, split, S::absorb_left, &mut out)
            });
            right_handle.for_each(|cap, data| {
                let split = split_right.map(|split| (split, &mut late_right_out));
                right.read(&mut protocol, cut, cap, data, split, S::absorb_right, &mut out)
            });
            let frontier = |i: usize| frontiers[i].frontier().first().copied();
            protocol.settle([frontier(0), frontier(1)], cut, &mut out, |state, out| {
                left.replay(state, S::absorb_left, out);
                right.replay(state, S::absorb_right, out);
            });
            if protocol.state.is_none() {
                left.stash.clear();
                right.stash.clear();
            }
        }
    });
    (results, late_left, late_right)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::{Barrier, Mutex};

    use proptest::prelude::*;
    use serde::Deserialize;
    use timely::dataflow::channels::pact::Exchange;
    use timely::dataflow::operators::{Concat, Inspect, Probe};
    use timely::dataflow::InputHandle;

    use super::*;
    use crate::checkpoint::{CheckpointConfig, Checkpoints, LocalDir};
    use crate::context::JobContext;
    use crate::time::Granularity;

    /// The trivial state the protocol is tested with: each key's weight so far, emitted for
    /// every key a time changed once the frontiers pass that time. Keys route to `key % peers`.
    struct Counts<const V: u32> {
        counts: BTreeMap<u64, u64>,
        /// Weights waiting for the frontier to pass their time.
        pending: BTreeMap<Time, Batch>,
    }

    /// Weights read at one time, with its capability.
    type Batch = (Capability<Time>, Vec<(u64, u64)>);

    /// Saved with what is pending, so that a driver that let a record at or after the cut
    /// into the state would make the restored run count it twice.
    #[derive(Serialize, Deserialize)]
    struct SavedCounts {
        counts: Vec<(u64, u64)>,
        pending: Vec<(Time, Vec<(u64, u64)>)>,
    }

    impl<const V: u32> Counts<V> {
        fn new() -> Self {
            Counts { counts: BTreeMap::new(), pending: BTreeMap::new() }
        }

        fn add(&mut self, cap: &Capability<Time>, weights: impl Iterator<Item = (u64, u64)>) {
            let (_, batch) =
                self.pending.entry(*cap.time()).or_insert_with(|| (cap.clone(), Vec::new()));
            batch.extend(weights);
        }
    }

    impl<const V: u32> KeyedState for Counts<V> {
        type Output = (u64, u64);
        type Saved = SavedCounts;
        const VERSION: u32 = V;

        fn restore(&mut self, restore: Restore<SavedCounts>, initial: &Capability<Time>) {
            for saved in &restore.states {
                for &(key, count) in saved.counts.iter().filter(|(key, _)| restore.owns(*key)) {
                    *self.counts.entry(key).or_default() += count;
                }
                for (time, batch) in &saved.pending {
                    let owned = batch.iter().copied().filter(|(key, _)| restore.owns(*key));
                    self.add(&initial.delayed(&(*time).max(restore.cut)), owned);
                }
            }
        }

        fn advance(&mut self, frontiers: &[Time], output: &mut Emitter<'_, '_, (u64, u64)>) {
            let frontier = frontiers.iter().copied().min().unwrap_or(Time::MAX);
            while let Some(entry) = self.pending.first_entry() {
                if *entry.key() >= frontier {
                    break;
                }
                let (cap, batch) = entry.remove();
                let mut changed = BTreeMap::new();
                for (key, weight) in batch {
                    let count = self.counts.entry(key).or_default();
                    *count += weight;
                    changed.insert(key, *count);
                }
                output.give(&cap, &mut changed.into_iter().collect());
            }
        }

        fn snapshot(&self) -> SavedCounts {
            SavedCounts {
                counts: self.counts.iter().map(|(k, c)| (*k, *c)).collect(),
                pending: self.pending.iter().map(|(t, (_, batch))| (*t, batch.clone())).collect(),
            }
        }

        fn entries(&self) -> usize {
            self.counts.len()
        }
    }

    impl<const V: u32> UnaryState for Counts<V> {
        type Input = u64;

        fn absorb(
            &mut self,
            cap: &Capability<Time>,
            keys: &mut Vec<u64>,
            _: &mut Emitter<'_, '_, (u64, u64)>,
        ) {
            self.add(cap, keys.drain(..).map(|key| (key, 1)));
        }
    }

    /// The right input weighs 1000: the output tells which side a record came from.
    impl<const V: u32> BinaryState for Counts<V> {
        type Left = u64;
        type Right = u64;

        fn absorb_left(
            &mut self,
            cap: &Capability<Time>,
            keys: &mut Vec<u64>,
            _: &mut Emitter<'_, '_, (u64, u64)>,
        ) {
            self.add(cap, keys.drain(..).map(|key| (key, 1)));
        }

        fn absorb_right(
            &mut self,
            cap: &Capability<Time>,
            keys: &mut Vec<u64>,
            _: &mut Emitter<'_, '_, (u64, u64)>,
        ) {
            self.add(cap, keys.drain(..).map(|key| (key, 1000)));
        }
    }

    /// Records `(time, key, right side)`; worker `i` of `n` sends the `i`-th of every `n`.
    type Records = Vec<(Time, u64, bool)>;
    /// Outputs `(time, key, count)`, sorted.
    type Outputs = Vec<(Time, u64, u64)>;

    /// One run of the job: `workers` threads, checkpoints in `dir`, the records at or after
    /// `from`; `arm`: checkpoint 1 is armed at this cut before any record at or after it is
    /// sent, and written once the run is over. Returns the outputs and the job's failure.
    fn run<const V: u32>(
        workers: usize,
        dir: &Path,
        records: &Records,
        two_inputs: bool,
        from: Time,
        arm: Option<Time>,
    ) -> (Outputs, Option<String>) {
        let config = CheckpointConfig { dir: Some(dir.to_owned()), ..CheckpointConfig::default() };
        let store = Arc::new(LocalDir::new(dir));
        let checkpoints =
            Arc::new(Checkpoints::open(&config, "test", store, 0, workers).expect("open"));
        let context = JobContext::new("test", Granularity::DEFAULT)
            .with_checkpoints(Arc::clone(&checkpoints));
        let mut worker_config = timely::WorkerConfig::default();
        context.install(&mut worker_config);
        let outputs = Arc::new(Mutex::new(Vec::new()));
        let barrier = Arc::new(Barrier::new(workers));
        let config = timely::Config {
            communication: timely::CommunicationConfig::Process(workers),
            worker: worker_config,
        };
        let (records, shared, sink) =
            (records.clone(), Arc::clone(&checkpoints), Arc::clone(&outputs));
        timely::execute(config, move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let (mut left, mut right) = (InputHandle::new(), InputHandle::new());
            let sink = Arc::clone(&sink);
            let probe = worker.dataflow::<Time, _, _>(|scope| {
                let exchange = || Exchange::new(|key: &u64| *key);
                let (left, right) = (left.to_stream(scope), right.to_stream(scope));
                let output = if two_inputs {
                    binary(left, right, (exchange(), exchange()), "counts", Counts::<V>::new()).0
                } else {
                    unary(left.concat(right), exchange(), "counts", Counts::<V>::new())
                };
                output
                    .inspect_core(move |event| {
                        let Ok((stamp, data)) = event else { return };
                        let time = stamp.elements()[0];
                        let mut sink = sink.lock().expect("outputs");
                        sink.extend(data.iter().map(|&(key, count)| (time, key, count)));
                    })
                    .probe()
                    .0
            });
            let mine = records.iter().enumerate().filter(|(i, _)| i % peers == index);
            let mut armed = arm.is_none();
            for (_, &(time, key, is_right)) in mine.filter(|(_, r)| r.0 >= from) {
                if !armed && arm.is_some_and(|cut| time >= cut) {
                    shared.arm(index, 1, arm.expect("a cut"));
                    barrier.wait();
                    armed = true;
                }
                left.advance_to(time);
                right.advance_to(time);
                (if is_right { &mut right } else { &mut left }).send(key);
                worker.step();
            }
            if !armed {
                shared.arm(index, 1, arm.expect("a cut"));
                barrier.wait();
            }
            drop((left, right));
            // A capability the driver never lets go of (a stash never replayed) must fail the
            // case, not hang it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !probe.done() {
                assert!(std::time::Instant::now() < deadline, "the operator never finished");
                worker.step();
            }
        })
        .expect("timely")
        .join()
        .into_iter()
        .for_each(|outcome| outcome.expect("worker"));
        if let Some(cut) = arm {
            checkpoints.complete(1, cut).expect("checkpoint written");
        }
        let mut outputs = std::mem::take(&mut *outputs.lock().expect("outputs"));
        outputs.sort_unstable();
        (outputs, context.state.take_failure().map(|e| e.to_string()))
    }

    fn records() -> impl Strategy<Value = Records> {
        prop::collection::vec((0..2_000u64, 0..40u64, any::<bool>()), 0..300).prop_map(|mut r| {
            r.sort_by_key(|(time, _, _)| *time);
            r
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A run that takes a checkpoint at a random cut emits what a run without one emits;
        /// a run restored from it with another worker count emits exactly the rest.
        #[test]
        fn a_restored_run_emits_what_a_run_without_a_crash_emits(
            records in records(),
            cut in 1..2_100u64,
            before in 1..4usize,
            after in 1..4usize,
            binary in any::<bool>(),
        ) {
            let (once, checkpointed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (whole, failure) = run::<1>(before, once.path(), &records, binary, 0, None);
            prop_assert_eq!(failure, None);
            let (first, failure) = run::<1>(before, checkpointed.path(), &records, binary, 0, Some(cut));
            prop_assert_eq!(failure, None);
            prop_assert_eq!(&first, &whole);
            let (rest, failure) = run::<1>(after, checkpointed.path(), &records, binary, cut, None);
            prop_assert_eq!(failure, None);
            let split = whole.partition_point(|(time, _, _)| *time < cut);
            prop_assert_eq!(&rest[..], &whole[split..]);
        }
    }

    #[test]
    fn a_state_of_another_version_stops_the_job() {
        let dir = tempfile::tempdir().expect("temp dir");
        let records = vec![(10, 1, false), (20, 2, false), (3_000, 1, false)];
        run::<1>(2, dir.path(), &records, false, 0, Some(1_000));
        let (outputs, failure) = run::<2>(1, dir.path(), &records, false, 1_000, None);
        let failure = failure.expect("the job fails");
        assert!(failure.contains("`counts` was saved in version 1"), "{failure}");
        assert!(failure.contains("reads version 2"), "{failure}");
        assert_eq!(outputs, Vec::new(), "a failed operator emits nothing");
    }
}
