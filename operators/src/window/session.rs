//! Session windows: per key, records closer than `gap` in event time form one session.
//!
//! A record at event time `e` opens the window `[e, e + gap)`; windows of the same key that
//! overlap merge into one, so a session ends `gap` after its last record. A session fires when
//! the frontier reaches its end (no on-time record can extend it then).
//!
//! Like the fixed windows, sessions aggregate in two phases: records are merged into partial
//! sessions per input batch before the keyed exchange, and partial sessions are merged into
//! each key's sessions after it.
//!
//! Lateness: a record at timely time `t` is late when `t` is above its own rounded event time
//! (it was read behind the watermark), and too late when it is late and
//! `t >= e + allowed_lateness`. Fixed windows judge by the window end; a session's end is not
//! known until it closes, and judging by the record's own time guarantees that an accepted
//! record never meets a session whose state was already freed. A late record that changes a
//! fired session emits the merged session with a higher `revision`; it replaces every earlier
//! result of that key whose window it overlaps.
//!
//! Partial sessions wait until the frontier passes their time and are applied time by time,
//! after the sessions ending at or before that time have fired, with one correction per fired
//! session a time changed: the output depends only on the records' times, so a run restored
//! from a checkpoint emits what a run without a crash emits.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use tributary_runtime::checkpoint::Restore;
use tributary_runtime::logging::activation;
use tributary_runtime::metrics as m;
use tributary_runtime::status::LateCounter;
use tributary_runtime::time::millis;
use tributary_runtime::{job_context, Data, Events, Granularity, Time, Timestamped};

use super::merge::{merge_phase, wait, Output, Partial, Store, Waiting};
use super::{instrument, Window, WindowResult, Windowed, Windowing, WithLate};
use crate::aggregate::Aggregator;
use crate::key_by::{key_hash, Keyed};

/// Session windows with a gap: the [`Windowing`] of [`Keyed::session_window`].
#[derive(Debug, Clone, Copy)]
pub struct Sessions {
    gap: u64,
}

/// A keyed stream with a session gap, waiting for its aggregation.
pub type SessionWindowed<'scope, K, V> = Windowed<'scope, K, V, Sessions>;

impl<'scope, K: Data + Hash + Eq, V: Data + Timestamped> Keyed<'scope, K, V> {
    /// Groups each key's records into sessions separated by at least `gap` of event time.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use serde::{Deserialize, Serialize};
    /// use timely::dataflow::operators::capture::{Capture, Extract};
    /// use timely::dataflow::operators::vec::Map;
    /// use timely::dataflow::operators::ToStream;
    /// use tributary_operators::{Count, KeyBy};
    /// use tributary_runtime::Timestamped;
    ///
    /// #[derive(Clone, Serialize, Deserialize)]
    /// struct Click { ts: u64, user: u32 }
    /// impl Timestamped for Click {
    ///     fn event_time(&self) -> u64 { self.ts }
    /// }
    ///
    /// let captured = timely::example(|scope| {
    ///     // Clicks at 0, 1 s and 2 s form one session; 10 s starts another.
    ///     [0, 1000, 2000, 10_000].map(|ts| Click { ts, user: 7 })
    ///         .to_stream(scope)
    ///         .container::<Vec<Click>>()
    ///         .key_by(|c| c.user)
    ///         .session_window(Duration::from_secs(5))
    ///         .aggregate(Count)
    ///         .map(|r| (r.window.start, r.window.end, r.value))
    ///         .capture()
    /// });
    /// let sessions: Vec<_> = captured.extract().into_iter().flat_map(|(_, rs)| rs).collect();
    /// assert_eq!(sessions, vec![(0, 7000, 3), (10_000, 15_000, 1)]);
    /// ```
    pub fn session_window(self, gap: Duration) -> SessionWindowed<'scope, K, V> {
        self.windowed(Sessions { gap: millis(gap).max(1) })
    }
}

impl Windowing for Sessions {
    fn aggregate<'scope, K, V, A>(
        self,
        input: Events<'scope, (K, V)>,
        lateness: u64,
        agg: A,
    ) -> WithLate<'scope, WindowResult<K, A::Out>, K, V>
    where
        K: Data + Hash + Eq,
        V: Data + Timestamped,
        A: Aggregator<V>,
    {
        let name =
            format!("session({})", humantime::format_duration(Duration::from_millis(self.gap)));
        let (partials, late) = combine(input, &name, self.gap, lateness, agg.clone());
        let merge = merge_phase::<_, _, SessionStore<K, A::Acc>>;
        (merge(partials, &name, lateness, agg), late)
    }
}

/// Inserts `(window, acc)` into a start-ordered list of disjoint sessions, merging every
/// session it overlaps. Returns the index of the resulting session.
fn insert<A: Aggregator<V>, V, X>(
    sessions: &mut Vec<(Window, A::Acc, X)>,
    agg: &A,
    mut window: Window,
    mut acc: A::Acc,
    mut extra: X,
    combine_extra: impl Fn(X, X) -> X,
) -> usize {
    let first = sessions.partition_point(|(w, _, _)| w.end <= window.start);
    let mut last = first;
    while last < sessions.len() && sessions[last].0.start < window.end {
        last += 1;
    }
    for (w, other, x) in sessions.drain(first..last) {
        window.start = window.start.min(w.start);
        window.end = window.end.max(w.end);
        agg.merge(&mut acc, other);
        extra = combine_extra(extra, x);
    }
    sessions.insert(first, (window, acc, extra));
    first
}

/// Phase 1: merge each batch's records into partial sessions per key.
fn combine<'scope, K, V, A>(
    input: Events<'scope, (K, V)>,
    name: &str,
    gap: u64,
    lateness: u64,
    agg: A,
) -> WithLate<'scope, Partial<K, A::Acc>, K, V>
where
    K: Data + Hash + Eq,
    V: Data + Timestamped,
    A: Aggregator<V>,
{
    let scope = input.scope();
    let granularity = job_context(&scope).granularity;
    let (operator, late_counter) = instrument(&scope, "window-combine", name, m::LATE_DROPPED);

    let mut builder = OperatorBuilder::new(operator.clone(), scope);
    let mut input = builder.new_input(input, Pipeline);
    let (partial_out, partials) = builder.new_output();
    let (late_out, late) = builder.new_output();
    let mut partial_out = OutputBuilder::from(partial_out);
    let mut late_out = OutputBuilder::from(late_out);

    let worker = scope.index();
    builder.build(move |_capabilities| {
        let mut batch: FxHashMap<K, Vec<(Window, A::Acc, ())>> = FxHashMap::default();
        // The emptied lists of earlier batches, so that a key's list is not allocated anew.
        let mut spare: Vec<Vec<(Window, A::Acc, ())>> = Vec::new();
        let mut too_late: Vec<(K, V)> = Vec::new();
        move |_frontiers| {
            let _activation = activation(&operator, worker);
            let mut partial_out = partial_out.activate();
            let mut late_out = late_out.activate();
            input.for_each(|cap, data| {
                let Some(&time) = cap.least() else { return data.clear() };
                for (key, value) in data.drain(..) {
                    let e = value.event_time();
                    let late = time > granularity.quantize(e);
                    if late && time >= e.saturating_add(lateness) {
                        too_late.push((key, value));
                        continue;
                    }
                    let mut acc = agg.init();
                    agg.add(&mut acc, &value);
                    let window = Window { start: e, end: e.saturating_add(gap) };
                    let list = batch.entry(key).or_insert_with(|| spare.pop().unwrap_or_default());
                    insert(list, &agg, window, acc, (), |_, _| ());
                }
                let mut session = partial_out.session(&cap);
                for (key, mut sessions) in batch.drain() {
                    for (w, acc, ()) in sessions.drain(..) {
                        session.give((key.clone(), w, acc));
                    }
                    spare.push(sessions);
                }
                drop(session);
                if !too_late.is_empty() {
                    late_counter.increment(too_late.len() as u64);
                    late_out.session(&cap).give_container(&mut too_late);
                    too_late.clear();
                }
            });
        }
    });
    (partials, late)
}

/// A session's bookkeeping after the exchange: how often it was emitted, and whether it fired.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Emitted {
    revision: u32,
    fired: bool,
}

/// The sessions whose results carry one timely time, as (end, key), with a capability for
/// that time. Entries can be stale (the session grew); they are checked when they come due.
struct Timer<K> {
    cap: Capability<Time>,
    due: Vec<(Time, K)>,
}

/// The sessions of one worker in a checkpoint.
#[derive(Serialize, Deserialize)]
struct SavedSessions<K, Acc> {
    keys: Vec<SavedKeySessions<K, Acc>>,
}

/// One key's sessions in a checkpoint.
#[derive(Serialize, Deserialize)]
struct SavedKeySessions<K, Acc> {
    key: K,
    sessions: Vec<(Window, Acc, Emitted)>,
}

/// The sessions of one worker, with their timers.
struct SessionStore<K, Acc> {
    sessions: FxHashMap<K, Vec<(Window, Acc, Emitted)>>,
    /// Sessions to fire, by the timely time their results carry (one entry per time, not
    /// per session end: fewer, larger timers).
    timers: BTreeMap<Time, Timer<K>>,
    /// When fired sessions of a key may be freed, by a timely time at or after the end plus
    /// the allowed lateness.
    cleanup: BTreeMap<Time, Vec<K>>,
    /// Partial sessions by time, applied in time order once the frontier has passed their
    /// time (see [`super::merge`]).
    pending: Waiting<K, Acc>,
    lateness: u64,
    granularity: Granularity,
}

impl<K: Data + Hash + Eq, Acc: Data> SessionStore<K, Acc> {
    /// A session of `key` ending at `end` fires once the frontier reaches `end`, at `at`.
    fn schedule(&mut self, key: K, end: Time, at: Time, cap: &Capability<Time>) {
        let timer = self
            .timers
            .entry(at)
            .or_insert_with(|| Timer { cap: cap.delayed(&at), due: Vec::new() });
        timer.due.push((end, key));
    }

    /// Merges a partial session read at `cap` into its key's sessions, scheduling the result
    /// if it has not fired; returns the merged session and whether it had fired.
    fn merge_in<V, A>(
        &mut self,
        cap: &Capability<Time>,
        key: K,
        window: Window,
        partial: Acc,
        agg: &A,
    ) -> (Window, bool)
    where
        A: Aggregator<V, Acc = Acc>,
    {
        let list = self.sessions.entry(key.clone()).or_default();
        let fresh = Emitted { revision: 0, fired: false };
        let at = insert(list, agg, window, partial, fresh, |a, b| Emitted {
            revision: a.revision.max(b.revision),
            fired: a.fired || b.fired,
        });
        let (merged, _, emitted) = list[at];
        if !emitted.fired {
            let at = (*cap.time()).max(self.granularity.quantize(merged.end - 1));
            self.schedule(key, merged.end, at, cap);
        }
        (merged, emitted.fired)
    }
}

impl<K: Data + Hash + Eq, Acc: Data> Store for SessionStore<K, Acc> {
    type Key = K;
    type Acc = Acc;
    type Saved = SavedSessions<K, Acc>;
    const VERSION: u32 = 1;

    fn new(lateness: u64, granularity: Granularity) -> Self {
        SessionStore {
            sessions: FxHashMap::default(),
            timers: BTreeMap::new(),
            cleanup: BTreeMap::new(),
            pending: BTreeMap::new(),
            lateness,
            granularity,
        }
    }

    /// All partial sessions wait for the frontier to pass their time. (Merging at once would
    /// make the results depend on arrival order: a late record can join a session to one
    /// that fired, and whether a later batch finds the session fired would then depend on
    /// which came first.)
    fn absorb<V, A: Aggregator<V, Acc = Acc>>(
        &mut self,
        cap: &Capability<Time>,
        data: &mut Vec<Partial<K, Acc>>,
        _agg: &A,
    ) {
        wait(&mut self.pending, cap, data);
    }

    fn waiting(&self) -> &Waiting<K, Acc> {
        &self.pending
    }

    fn waiting_mut(&mut self) -> &mut Waiting<K, Acc> {
        &mut self.pending
    }

    /// Merges the partial sessions of one time and emits one correction per fired session
    /// they changed (with the next revision).
    fn correct<V, A, O>(
        &mut self,
        cap: &Capability<Time>,
        partials: Vec<Partial<K, Acc>>,
        agg: &A,
        late_updates: &LateCounter,
        output: &mut O,
    ) where
        A: Aggregator<V, Acc = Acc>,
        O: Output<K, A::Out>,
    {
        let mut changed = Vec::new();
        for (key, window, partial) in partials {
            let (merged, fired) = self.merge_in(cap, key.clone(), window, partial, agg);
            if fired {
                changed.push((key, merged));
            }
        }
        // Each changed session once, as it stands now (a later partial of the batch may have
        // merged one into another).
        let mut seen = rustc_hash::FxHashSet::default();
        let sessions = &self.sessions;
        changed.retain(|(key, w)| {
            let exists = sessions.get(key).is_some_and(|l| l.iter().any(|(x, _, _)| x == w));
            exists && seen.insert((key.clone(), *w))
        });
        late_updates.increment(changed.len() as u64);
        let mut results = Vec::with_capacity(changed.len());
        for (key, window) in changed {
            let list = self.sessions.get_mut(&key).expect("changed keys exist");
            let (w, acc, emitted) =
                list.iter_mut().find(|(w, _, _)| *w == window).expect("changed sessions exist");
            emitted.revision += 1;
            let (value, revision) = (agg.finish(acc), emitted.revision);
            results.push(WindowResult { key: key.clone(), window: *w, value, revision });
            let free = free_at(self.granularity, self.lateness, w.end);
            self.cleanup.entry(free).or_default().push(key);
        }
        output(cap, &mut results);
    }

    /// Fires the sessions ending at or before `time` that have not fired.
    ///
    /// Their timers are all below `time`: a session is scheduled at or below its end minus
    /// one, or at the time of a partial applied before `time` (see [`super::merge`]).
    fn fire<V, A, O>(&mut self, time: Time, agg: &A, output: &mut O)
    where
        A: Aggregator<V, Acc = Acc>,
        O: Output<K, A::Out>,
    {
        let SessionStore { timers, sessions, cleanup, lateness, granularity, .. } = self;
        let mut results = Vec::new();
        let mut done = 0;
        for timer in timers.values_mut() {
            if timer.cap.time() >= &time {
                break;
            }
            timer.due.retain(|(end, key)| {
                if *end > time {
                    return true;
                }
                let Some(list) = sessions.get_mut(key) else { return false };
                for (w, acc, emitted) in list.iter_mut() {
                    if w.end == *end && !emitted.fired {
                        emitted.fired = true;
                        let (value, revision) = (agg.finish(acc), emitted.revision);
                        results.push(WindowResult {
                            key: key.clone(),
                            window: *w,
                            value,
                            revision,
                        });
                        let free = free_at(*granularity, *lateness, *end);
                        cleanup.entry(free).or_default().push(key.clone());
                    }
                }
                false
            });
            if !results.is_empty() {
                output(&timer.cap, &mut results);
                results.clear();
            }
            done += usize::from(timer.due.is_empty());
        }
        // Drop the emptied timers (and their capabilities); one that still holds a later
        // session end stays.
        if done > 0 {
            timers.retain(|at, timer| *at >= time || !timer.due.is_empty());
        }
    }

    fn free(&mut self, watermark: Time) {
        let lateness = self.lateness;
        while let Some(entry) = self.cleanup.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            for key in entry.remove() {
                if let Some(list) = self.sessions.get_mut(&key) {
                    list.retain(|(w, _, e)| {
                        !(e.fired && w.end.saturating_add(lateness) <= watermark)
                    });
                    if list.is_empty() {
                        self.sessions.remove(&key);
                    }
                }
            }
        }
    }

    fn snapshot(&self) -> SavedSessions<K, Acc> {
        let key = |(key, list): (&K, &Vec<_>)| SavedKeySessions {
            key: key.clone(),
            sessions: list.clone(),
        };
        SavedSessions { keys: self.sessions.iter().map(key).collect() }
    }

    /// Takes back the keys this worker owns from every saved part, with a timer at the cut
    /// (or later) for each session still to fire and a cleanup for each fired one.
    fn restore(&mut self, restore: Restore<SavedSessions<K, Acc>>, initial: &Capability<Time>) {
        let saved = restore.states.iter().flat_map(|s| &s.keys);
        for SavedKeySessions { key, sessions: list } in
            saved.filter(|s| restore.owns(key_hash(&s.key)))
        {
            for (w, _, emitted) in list {
                if emitted.fired {
                    let free = free_at(self.granularity, self.lateness, w.end);
                    self.cleanup.entry(free).or_default().push(key.clone());
                } else {
                    let at = restore.cut.max(self.granularity.quantize(w.end - 1));
                    self.schedule(key.clone(), w.end, at, initial);
                }
            }
            self.sessions.insert(key.clone(), list.clone());
        }
    }

    fn entries(&self) -> usize {
        self.sessions.values().map(Vec::len).sum()
    }
}
/// The timely time at which a fired session ending at `end` may be freed: at or after its
/// end plus the allowed lateness.
fn free_at(granularity: Granularity, lateness: u64, end: Time) -> Time {
    granularity.ceil(end.saturating_add(lateness))
}
