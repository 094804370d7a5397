//! Checkpoints: consistent snapshots of a running job, and recovery from the latest one.
//!
//! A checkpoint is cut at a timely time `T` chosen above every time any source has emitted
//! (see `checkpoint/agent.rs` for how the workers agree on it). Every stateful operator folds
//! in exactly the records with time `< T` before it snapshots, holding back later ones until
//! then; every source records where it stands so that a restore re-reads exactly its records
//! with time `>= T`; every sink prepares the output of records `< T` without making it
//! visible. Once every worker has written its part, a manifest makes the checkpoint complete,
//! and the sinks make the prepared output visible (a two-phase commit). The protocol is
//! described in `docs/architecture.md#checkpoints`.
//!
//! Operators take part through a [`Checkpointer`]: it tells them when a cut is pending, saves
//! their state, and hands them the state they restart from.

pub(crate) mod agent;
mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::scheduling::SyncActivator;

pub use store::{CheckpointStore, LocalDir};

use crate::error::{ConfigError, Error, Result};
use crate::time::{HumanDuration, Time};

/// The `[runtime.checkpoint]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Where checkpoints are written (`<dir>/<job id>/chk-<n>/`). Absent: no checkpoints.
    pub dir: Option<PathBuf>,
    /// Time from the start of one checkpoint to the start of the next.
    pub interval: HumanDuration,
    /// How many complete checkpoints to keep.
    pub keep: usize,
    /// The job's identity for recovery (letters, digits, `.`, `_`, `-`); defaults to the
    /// job's name. A restart with the same id and directory resumes from the latest
    /// complete checkpoint.
    pub job_id: Option<String>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            dir: None,
            interval: HumanDuration(Duration::from_secs(10)),
            keep: 3,
            job_id: None,
        }
    }
}

impl CheckpointConfig {
    /// Checks the settings; keys are reported under `runtime.checkpoint`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("runtime.checkpoint.{k}");
        if self.interval.0 < Duration::from_millis(10) {
            return Err(ConfigError::new(key("interval"), "must be at least 10ms"));
        }
        if self.keep == 0 {
            return Err(ConfigError::new(key("keep"), "must be at least 1"));
        }
        if let Some(id) = &self.job_id {
            let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if id.is_empty() || !id.chars().all(ok) || id.starts_with('.') {
                return Err(ConfigError::new(
                    key("job_id"),
                    format!("`{id}` must be letters, digits, `.`, `_` or `-`"),
                ));
            }
        }
        Ok(())
    }
}

/// Version of the checkpoint files this build writes; it reads this version only.
/// 2: Kafka partition positions carry the spans a restored run had not re-read yet.
/// 3: Kafka partition and file unit positions carry the split's largest event time (its
/// watermark) at the position; a window key's count is the revision of its next result.
/// 4: a stateful operator's state is `(its own version, named struct)` (see
/// [`crate::stateful::KeyedState::VERSION`]).
/// 5: tables and table lookups are on the stateful driver too (a lookup saves the records
/// still waiting for the table).
pub const FORMAT_VERSION: u32 = 5;
/// First bytes of every worker part file.
const MAGIC: &[u8; 8] = b"TRIBCKPT";

/// What makes a checkpoint complete: written last, after every worker's part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the build that wrote it.
    pub format: u32,
    /// The job id.
    pub job: String,
    /// The checkpoint's number, increasing over restarts.
    pub id: u64,
    /// The cut: the state holds exactly the records with time below it.
    pub cut: Time,
    /// Whether the job had read all its input (a bounded job that finished).
    pub last: bool,
    /// Workers of the run that wrote it.
    pub workers: usize,
    /// The participants on each worker, in build order (operator names).
    pub participants: Vec<String>,
    /// Bytes of all workers' parts.
    pub bytes: u64,
    /// Milliseconds from the checkpoint's start to its manifest.
    pub duration_ms: u64,
}

/// One worker's part of a checkpoint: each participant's saved state, in build order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkerPart {
    worker: usize,
    states: States,
}

/// Serialises a state for a checkpoint (the encoding timely uses between processes).
pub fn encode<S: Serialize + ?Sized>(state: &S) -> Result<Vec<u8>> {
    bincode::serialize(state).map_err(|e| Error::Checkpoint(format!("cannot encode state: {e}")))
}

/// Reads a state written by [`encode`].
pub fn decode<S: DeserializeOwned>(bytes: &[u8]) -> Result<S> {
    bincode::deserialize(bytes).map_err(|e| Error::Checkpoint(format!("cannot decode state: {e}")))
}

/// The directory of checkpoint `id`.
fn checkpoint_dir(job: &str, id: u64) -> String {
    format!("{job}/chk-{id:08}")
}

/// Where a restore starts from: a complete checkpoint and its parts, read when asked for.
#[derive(Debug)]
struct Restored {
    manifest: Manifest,
    parts: Mutex<HashMap<usize, Arc<WorkerPart>>>,
}

/// The checkpoint state of one process: settings, the store, what to restore from, and one
/// slot per local worker through which the agent and the participants meet.
#[derive(Debug)]
pub struct Checkpoints {
    job: String,
    store: Arc<dyn CheckpointStore>,
    interval: Duration,
    keep: usize,
    first_worker: usize,
    restored: Option<Restored>,
    slots: Vec<WorkerSlot>,
}

/// What the agent and the participants of one worker share.
#[derive(Debug, Default)]
pub(crate) struct WorkerSlot {
    /// Sources hold still while set (between `Prepare` and `Go`).
    pub(crate) paused: AtomicBool,
    /// The latest time this worker's sources emitted a record at or hold a capability for.
    pub(crate) high: AtomicU64,
    /// The pending cut and its checkpoint (id 0: none yet).
    cut: AtomicU64,
    armed: AtomicU64,
    /// The latest complete checkpoint.
    committed: AtomicU64,
    /// Set when the agent lets go: no checkpoint will follow.
    pub(crate) over: AtomicBool,
    participants: Mutex<Vec<Participant>>,
}

#[derive(Debug)]
struct Participant {
    name: String,
    /// The latest saved state: `(checkpoint, bytes)`.
    saved: Option<(u64, Vec<u8>)>,
    /// A state valid for every later checkpoint (the participant's input has ended).
    finished: Option<Vec<u8>>,
    activator: SyncActivator,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Checkpoints {
    /// Opens the checkpoints of `job` in `store`, finding the latest complete checkpoint to
    /// restore from, for a process whose workers are `first_worker..first_worker + workers`.
    pub fn open(
        config: &CheckpointConfig,
        job: &str,
        store: Arc<dyn CheckpointStore>,
        first_worker: usize,
        workers: usize,
    ) -> Result<Self> {
        let job = config.job_id.clone().unwrap_or_else(|| job.to_owned());
        let restored = latest(&*store, &job)?.map(|manifest| {
            tracing::info!(job = %job, checkpoint = manifest.id, cut = manifest.cut,
                workers = manifest.workers, last = manifest.last, "restoring from checkpoint");
            Restored { manifest, parts: Mutex::default() }
        });
        let high = restored.as_ref().map_or(0, |r| r.manifest.cut);
        Ok(Checkpoints {
            job,
            store,
            interval: config.interval.0,
            keep: config.keep,
            first_worker,
            restored,
            // A restored job's sources start at the cut: later cuts must lie above it.
            slots: (0..workers)
                .map(|_| WorkerSlot { high: AtomicU64::new(high), ..WorkerSlot::default() })
                .collect(),
        })
    }

    /// The manifest of the checkpoint this run restores from, if any.
    pub fn restored(&self) -> Option<&Manifest> {
        self.restored.as_ref().map(|r| &r.manifest)
    }

    pub(crate) fn slot(&self, worker: usize) -> &WorkerSlot {
        &self.slots[worker - self.first_worker]
    }

    /// The job id the checkpoints are kept under.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The number of this run's first checkpoint (one more than the one restored from).
    pub fn first_id(&self) -> u64 {
        self.restored().map_or(1, |m| m.id + 1)
    }

    /// Reads worker `old`'s part of the restored checkpoint (once per process).
    fn part(&self, old: usize) -> Result<Arc<WorkerPart>> {
        let restored = self
            .restored
            .as_ref()
            .ok_or_else(|| Error::Checkpoint("no checkpoint to restore from".to_owned()))?;
        let mut parts = lock(&restored.parts);
        if let Some(part) = parts.get(&old) {
            return Ok(Arc::clone(part));
        }
        let path =
            format!("{}/worker-{old:04}.bin", checkpoint_dir(&self.job, restored.manifest.id));
        let bytes = self
            .store
            .get(&path)
            .map_err(|e| Error::Checkpoint(format!("cannot read checkpoint part: {e}")))?;
        let part = Arc::new(
            read_part(&bytes)
                .map_err(|e| Error::Checkpoint(format!("{}: {e}", self.store.describe(&path))))?,
        );
        parts.insert(old, Arc::clone(&part));
        Ok(part)
    }

    /// Writes worker `worker`'s part of checkpoint `id`; returns its size.
    fn write_part(&self, id: u64, worker: usize, states: Vec<(String, Vec<u8>)>) -> Result<u64> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend(encode(&WorkerPart { worker, states })?);
        let path = format!("{}/worker-{worker:04}.bin", checkpoint_dir(&self.job, id));
        self.store
            .put(&path, &bytes)
            .map_err(|e| Error::Checkpoint(format!("cannot write checkpoint part: {e}")))?;
        Ok(bytes.len() as u64)
    }

    /// Makes checkpoint `manifest.id` complete, then removes the ones beyond `keep`.
    fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(manifest)
            .map_err(|e| Error::Checkpoint(format!("cannot encode manifest: {e}")))?;
        let dir = checkpoint_dir(&self.job, manifest.id);
        self.store
            .put(&format!("{dir}/MANIFEST.json"), &bytes)
            .map_err(|e| Error::Checkpoint(format!("cannot write manifest: {e}")))?;
        let mut ids: Vec<u64> = self
            .store
            .list(&self.job)
            .map_err(|e| Error::Checkpoint(format!("cannot list checkpoints: {e}")))?
            .iter()
            .filter_map(|name| name.strip_prefix("chk-")?.parse().ok())
            .collect();
        ids.sort_unstable();
        // Older complete checkpoints beyond `keep`, and incomplete ones older than this one.
        let complete = ids.iter().filter(|&&id| id <= manifest.id).count();
        for &id in ids.iter().take(complete.saturating_sub(self.keep)) {
            if let Err(e) = self.store.remove(&checkpoint_dir(&self.job, id)) {
                tracing::warn!(error = %e, checkpoint = id, "cannot remove an old checkpoint");
            }
        }
        Ok(())
    }
}

/// What the agent does for a checkpoint, for tests that drive participants without one.
#[cfg(test)]
impl Checkpoints {
    /// Publishes checkpoint `id` at `cut` to `worker`'s participants (the agent's `Arm`).
    pub(crate) fn arm(&self, worker: usize, id: u64, cut: Time) {
        let slot = self.slot(worker);
        slot.cut.store(cut, Ordering::Release);
        slot.armed.store(id, Ordering::Release);
        agent::wake(self, worker);
    }

    /// Writes every local worker's part of checkpoint `id` at `cut` and its manifest; every
    /// participant must have saved for it.
    pub(crate) fn complete(&self, id: u64, cut: Time) -> Result<()> {
        let workers = self.slots.len();
        for worker in self.first_worker..self.first_worker + workers {
            let states = agent::collect(self, worker, id)
                .ok_or_else(|| Error::Checkpoint(format!("worker {worker} has not saved")))?;
            self.write_part(id, worker, states)?;
        }
        self.write_manifest(&Manifest {
            format: FORMAT_VERSION,
            job: self.job.clone(),
            id,
            cut,
            last: false,
            workers,
            participants: agent::names(self, self.first_worker),
            bytes: 0,
            duration_ms: 0,
        })
    }
}

/// The latest complete checkpoint of `job`: the highest-numbered directory with a manifest.
fn latest(store: &dyn CheckpointStore, job: &str) -> Result<Option<Manifest>> {
    let names =
        store.list(job).map_err(|e| Error::Checkpoint(format!("cannot list checkpoints: {e}")))?;
    let mut ids: Vec<u64> =
        names.iter().filter_map(|name| name.strip_prefix("chk-")?.parse().ok()).collect();
    ids.sort_unstable();
    for id in ids.into_iter().rev() {
        let path = format!("{}/MANIFEST.json", checkpoint_dir(job, id));
        let Ok(bytes) = store.get(&path) else { continue };
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Checkpoint(format!("{}: not a checkpoint manifest: {e}", store.describe(&path)))
        })?;
        if manifest.format != FORMAT_VERSION {
            return Err(Error::Checkpoint(format!(
                "{}: written in checkpoint format {}, this build reads format {FORMAT_VERSION} \
                 only: restore it with the build that wrote it, or start the job afresh with \
                 another `runtime.checkpoint.dir` (or `runtime.checkpoint.job_id`)",
                store.describe(&path),
                manifest.format
            )));
        }
        return Ok(Some(manifest));
    }
    Ok(None)
}

/// Every participant's saved state on one worker, `(name, bytes)` in build order.
pub type States = Vec<(String, Vec<u8>)>;

/// The worker and the participants' states of a worker part file (`chk-<n>/worker-<w>.bin`),
/// for tools and tests that inspect a checkpoint.
pub fn part_states(bytes: &[u8]) -> Result<(usize, States)> {
    read_part(bytes).map(|part| (part.worker, part.states))
}

fn read_part(bytes: &[u8]) -> Result<WorkerPart> {
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(Error::Checkpoint("not a Tributary checkpoint part".to_owned()));
    };
    let version = rest.get(..4).map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
    if version != Some(FORMAT_VERSION) {
        return Err(Error::Checkpoint(format!(
            "checkpoint part in format {version:?}, this build reads format {FORMAT_VERSION}"
        )));
    }
    decode(&rest[4..])
}

/// The worker a hash routes to among `peers`, exactly as timely's `Exchange` routes it.
pub fn route(hash: u64, peers: usize) -> usize {
    let peers = peers as u64;
    (if peers.is_power_of_two() { hash & (peers - 1) } else { hash % peers }) as usize
}

/// Batches an operator holds back while a cut is pending (those at or after it), with the
/// capabilities of their times.
pub type Stash<D> = Vec<(timely::dataflow::operators::Capability<Time>, Vec<D>)>;

/// What one participant restarts from.
#[derive(Debug)]
pub struct Restore<S> {
    /// The restored checkpoint's cut: the state holds the records with time below it.
    pub cut: Time,
    /// The participant's saved states: its own when the job has as many workers as the run
    /// that wrote the checkpoint, every old worker's otherwise (rescaling: keep the entries
    /// this worker owns, see [`Restore::owns`]).
    pub states: Vec<S>,
    worker: usize,
    peers: usize,
}

impl<S> Restore<S> {
    /// Whether this worker owns the keyed entry with `hash` (as routed by `Exchange`).
    pub fn owns(&self, hash: u64) -> bool {
        route(hash, self.peers) == self.worker
    }
}

/// One stateful operator's (or source's, or sink's) handle on the job's checkpoints.
#[derive(Debug)]
pub struct Checkpointer {
    shared: Arc<Checkpoints>,
    worker: usize,
    peers: usize,
    index: usize,
    name: String,
    saved: u64,
}

impl Checkpointer {
    /// Registers a participant named `name` (operator name; it must be the same on every
    /// run of the job) in the process's checkpoints `shared`, on the worker running `scope`,
    /// woken through the operator at `address`. Operators call it through
    /// [`JobContext::checkpointer`](crate::JobContext::checkpointer).
    pub fn register(
        shared: Arc<Checkpoints>,
        scope: &timely::dataflow::Scope<'_, Time>,
        name: &str,
        address: &[usize],
    ) -> Checkpointer {
        let worker = scope.index();
        let activator = scope.worker().sync_activator_for(address.to_vec());
        let mut participants = lock(&shared.slot(worker).participants);
        let index = participants.len();
        participants.push(Participant {
            name: name.to_owned(),
            saved: None,
            finished: None,
            activator,
        });
        drop(participants);
        Checkpointer {
            worker,
            peers: scope.peers(),
            index,
            name: name.to_owned(),
            saved: 0,
            shared,
        }
    }

    fn slot(&self) -> &WorkerSlot {
        self.shared.slot(self.worker)
    }

    /// The cut of a checkpoint this participant has yet to save, if one is pending: fold in
    /// the records below it, hold back the others, and [`save`](Self::save) once the input
    /// frontier reaches it (and no capability below it is held).
    #[inline]
    pub fn pending(&self) -> Option<Time> {
        let slot = self.slot();
        (slot.armed.load(Ordering::Acquire) > self.saved).then(|| slot.cut.load(Ordering::Acquire))
    }

    /// The checkpoint the next [`save`](Self::save) or [`finish`](Self::finish) is for: the
    /// pending one, or else the one after the latest armed.
    pub fn next_id(&self) -> u64 {
        let armed = self.slot().armed.load(Ordering::Acquire);
        if armed > self.saved {
            armed
        } else {
            armed.max(self.shared.first_id() - 1) + 1
        }
    }

    /// Saves the state for the pending checkpoint.
    pub fn save<S: Serialize + ?Sized>(&mut self, state: &S) -> Result<()> {
        let id = self.slot().armed.load(Ordering::Acquire);
        let bytes = encode(state)?;
        lock(&self.slot().participants)[self.index].saved = Some((id, bytes));
        self.saved = id;
        Ok(())
    }

    /// Saves a state that holds for every later checkpoint too: the participant's input has
    /// ended and it has emitted everything.
    pub fn finish<S: Serialize + ?Sized>(&mut self, state: &S) -> Result<()> {
        let bytes = encode(state)?;
        lock(&self.slot().participants)[self.index].finished = Some(bytes);
        self.saved = u64::MAX;
        Ok(())
    }

    /// The latest complete checkpoint (0: none yet in this run or before).
    pub fn committed(&self) -> u64 {
        self.slot().committed.load(Ordering::Acquire)
    }

    /// Whether no checkpoint will follow (the job is ending).
    pub fn is_over(&self) -> bool {
        self.slot().over.load(Ordering::Acquire)
    }

    /// Whether a checkpoint holds this worker's sources still.
    pub(crate) fn is_paused(&self) -> bool {
        self.slot().paused.load(Ordering::Acquire)
    }

    /// Notes that a source of this worker emitted a record at, or holds a capability for,
    /// `time`.
    pub(crate) fn raise_high(&self, time: Time) {
        self.slot().high.fetch_max(time, Ordering::AcqRel);
    }

    /// Whether this worker owns the keyed entry with `hash` (as routed by `Exchange`).
    pub fn owns(&self, hash: u64) -> bool {
        route(hash, self.peers) == self.worker
    }

    /// This participant's state in the checkpoint the job restarts from; `None` on a fresh
    /// start. Fails if the checkpoint was written by a different graph.
    pub fn restore<S: DeserializeOwned>(&self) -> Result<Option<Restore<S>>> {
        self.restore_with(decode)
    }

    /// [`Checkpointer::restore`] with each saved part read by `read`.
    pub fn restore_with<S>(&self, read: impl Fn(&[u8]) -> Result<S>) -> Result<Option<Restore<S>>> {
        let Some(restored) = &self.shared.restored else { return Ok(None) };
        let manifest = &restored.manifest;
        match manifest.participants.get(self.index) {
            Some(name) if *name == self.name => {}
            other => {
                return Err(Error::Checkpoint(format!(
                    "checkpoint {} was written by a different job graph: its participant {} is \
                     {other:?}, this job's is `{}`",
                    manifest.id, self.index, self.name
                )))
            }
        }
        let olds: Vec<usize> = if manifest.workers == self.peers {
            vec![self.worker]
        } else {
            (0..manifest.workers).collect()
        };
        let mut states = Vec::with_capacity(olds.len());
        for old in olds {
            let part = self.shared.part(old)?;
            let (_, bytes) = part.states.get(self.index).ok_or_else(|| {
                Error::Checkpoint(format!("worker {old}'s part lacks `{}`", self.name))
            })?;
            states.push(read(bytes)?);
        }
        Ok(Some(Restore { cut: manifest.cut, states, worker: self.worker, peers: self.peers }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_of_another_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalDir::new(dir.path());
        let manifest = Manifest {
            format: FORMAT_VERSION - 1,
            job: "job".into(),
            id: 4,
            cut: 1000,
            last: false,
            workers: 1,
            participants: Vec::new(),
            bytes: 0,
            duration_ms: 0,
        };
        let json = serde_json::to_vec(&manifest).expect("JSON");
        store.put(&format!("{}/MANIFEST.json", checkpoint_dir("job", 4)), &json).expect("put");
        let error = latest(&store, "job").expect_err("refused").to_string();
        let old = format!("checkpoint format {}", FORMAT_VERSION - 1);
        assert!(error.contains(&old), "{error}");
        assert!(error.contains("runtime.checkpoint.dir"), "{error}");
        assert!(error.contains("chk-00000004"), "{error}");
    }
}
