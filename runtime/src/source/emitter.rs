//! [`Emitter`]: where a reader puts its records, dead letters and watermark during one poll,
//! grouped by timely time; and [`poll_once`], one poll outside a dataflow for tests.

use rustc_hash::FxHashMap;

use super::{Poll, SourceReader};
use crate::dead_letter::DeadLetter;
use crate::error::Result;
use crate::time::{EventTime, Granularity, Time};

/// Records waiting to be sent, grouped by timely timestamp.
pub(super) struct Buckets<D> {
    buckets: Vec<(Time, Vec<D>)>,
    /// The bucket of each time, for records out of order (a poll of a source with a disorder
    /// bound of seconds spans tens of times): a direct-mapped cache of `(time, bucket + 1)`
    /// by a hash of the time, then, for times that collide in it, a map.
    near: Box<[(Time, u32); NEAR]>,
    index: FxHashMap<Time, usize>,
    last: usize,
    spare: Vec<Vec<D>>,
}

/// Slots of [`Buckets::near`]: a poll rarely spans more distinct times than this.
const NEAR: usize = 256;

/// The slot of `time` in [`Buckets::near`] (Fibonacci hashing: times are multiples of the
/// granularity, so their low bits alone would collide).
#[inline]
fn near_slot(time: Time) -> usize {
    (time.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - NEAR.trailing_zeros())) as usize
}

impl<D> Buckets<D> {
    pub(super) fn new() -> Self {
        Buckets {
            buckets: Vec::new(),
            near: Box::new([(0, 0); NEAR]),
            index: FxHashMap::default(),
            last: 0,
            spare: Vec::new(),
        }
    }

    #[inline]
    pub(super) fn push(&mut self, time: Time, item: D) {
        if let Some((t, v)) = self.buckets.get_mut(self.last) {
            if *t == time {
                v.push(item);
                return;
            }
        }
        self.push_slow(time, item);
    }

    #[inline]
    fn push_slow(&mut self, time: Time, item: D) {
        let slot = &mut self.near[near_slot(time)];
        let i = if slot.1 != 0 && slot.0 == time {
            slot.1 as usize - 1
        } else {
            self.find_or_add(time)
        };
        self.last = i;
        self.buckets[i].1.push(item);
    }

    /// The bucket of `time`, a new one if it has none; cached in `near` if its slot is free.
    #[cold]
    fn find_or_add(&mut self, time: Time) -> usize {
        let next = self.buckets.len();
        let i = *self.index.entry(time).or_insert(next);
        if i == next {
            self.buckets.push((time, self.spare.pop().unwrap_or_default()));
        }
        let slot = &mut self.near[near_slot(time)];
        if slot.1 == 0 {
            *slot = (time, i as u32 + 1);
        }
        i
    }

    /// Hands each bucket to `send` (which leaves the vector empty for reuse) and starts over.
    pub(super) fn drain(&mut self, mut send: impl FnMut(Time, &mut Vec<D>)) {
        for (time, mut batch) in self.buckets.drain(..) {
            self.near[near_slot(time)].1 = 0;
            send(time, &mut batch);
            batch.clear();
            self.spare.push(batch);
        }
        self.index.clear();
        self.last = 0;
    }
}

/// The handle a reader emits records through.
pub struct Emitter<'a, D> {
    pub(super) floor: Time,
    pub(super) granularity: Granularity,
    pub(super) buckets: &'a mut Buckets<D>,
    pub(super) dead_letters: &'a mut Vec<DeadLetter>,
    pub(super) watermark: Option<EventTime>,
    pub(super) room: usize,
    pub(super) emitted: usize,
    /// Bytes the reader took from outside during this poll.
    pub(super) bytes: u64,
    /// The cut of a pending checkpoint.
    pub(super) cut: Time,
}

impl<D> Emitter<'_, D> {
    /// Emits a record with its event time. A record below the current watermark is late: it
    /// is sent at the watermark and keeps its event time inside.
    ///
    /// Returns whether the record falls at or after the cut of a pending checkpoint, which a
    /// reader that takes part in checkpoints must note (see [`SourceReader::checkpoint`]).
    #[inline]
    pub fn emit(&mut self, event_time: EventTime, item: D) -> bool {
        let time = self.granularity.quantize(event_time).max(self.floor);
        self.push(time, item)
    }

    /// Emits a record of a split (a Kafka partition, a file unit) whose own watermark, before
    /// this record, is `split_watermark`. The record travels at its rounded event time or, if
    /// it is behind that watermark (late), at the watermark rounded: its timely time, and with
    /// it whether it is late for a window, then depends only on the split's records before
    /// it, not on the worker count or on how the reader interleaves its splits, so a restored
    /// reader gives every re-read record the time the crashed run gave it. (Only when the
    /// source's watermark is ahead of the split's, which idleness and processing-time advance
    /// can do, is the record sent at the source's watermark instead.)
    ///
    /// Returns what [`Emitter::emit`] returns.
    #[inline]
    pub fn emit_in(&mut self, split_watermark: EventTime, event_time: EventTime, item: D) -> bool {
        let time = self.granularity.quantize(event_time.max(split_watermark)).max(self.floor);
        self.push(time, item)
    }

    #[inline]
    fn push(&mut self, time: Time, item: D) -> bool {
        self.buckets.push(time, item);
        self.emitted += 1;
        time >= self.cut
    }

    /// Counts bytes the reader took from outside (a Kafka record's key and value, a file's
    /// lines), for `tributary_source_bytes_total`. Readers of generated data count none.
    #[inline]
    pub fn add_bytes(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// Sends a record that could not be read to the dead-letter output.
    pub fn dead_letter(&mut self, letter: DeadLetter) {
        self.dead_letters.push(letter);
    }

    /// Promises that no further record will have an event time below `watermark`, except
    /// late ones. Watermarks never go back; a smaller value is ignored.
    pub fn advance_watermark(&mut self, watermark: EventTime) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
    }

    /// How many more records this poll may emit.
    pub fn room(&self) -> usize {
        self.room.saturating_sub(self.emitted)
    }

    /// Whether this poll has emitted as many records as it may.
    pub fn is_full(&self) -> bool {
        self.emitted >= self.room
    }
}

/// What one [`poll_once`] of a reader produced.
#[derive(Debug)]
pub struct Polled<D> {
    /// The reader's answer.
    pub poll: Poll,
    /// The records emitted, with the timely time each was sent at, grouped by time.
    pub records: Vec<(Time, D)>,
    /// For each record, whether [`Emitter::emit`] reported it at or after the cut.
    pub after_cut: Vec<bool>,
    /// The dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// The watermark the reader promised, if it advanced one.
    pub watermark: Option<EventTime>,
}

/// Polls `reader` once outside a dataflow, as the source driver does, so that a reader's
/// checkpoint and restore logic can be tested alone: at most `room` records, with `cut` as the
/// pending checkpoint's cut (`None`: no checkpoint pending).
///
/// # Examples
/// ```
/// use tributary_runtime::source::{poll_once, Poll, SourceReader};
/// use tributary_runtime::{Emitter, Granularity, Result};
///
/// struct Three;
/// impl SourceReader for Three {
///     type Item = u64;
///     fn poll(&mut self, out: &mut Emitter<'_, u64>) -> Result<Poll> {
///         for t in [100, 250, 300] {
///             out.emit(t, t);
///         }
///         Ok(Poll::Done)
///     }
/// }
///
/// let polled = poll_once(&mut Three, 10, Granularity::DEFAULT, Some(200)).unwrap();
/// assert_eq!(polled.records, vec![(100, 100), (200, 250), (300, 300)]);
/// assert_eq!(polled.after_cut, vec![false, true, true]);
/// ```
pub fn poll_once<R: SourceReader>(
    reader: &mut R,
    room: usize,
    granularity: Granularity,
    cut: Option<Time>,
) -> Result<Polled<R::Item>> {
    let mut buckets = Buckets::new();
    let mut dead_letters = Vec::new();
    let mut out = Emitter {
        floor: 0,
        granularity,
        buckets: &mut buckets,
        dead_letters: &mut dead_letters,
        watermark: None,
        room,
        emitted: 0,
        bytes: 0,
        cut: cut.unwrap_or(Time::MAX),
    };
    let poll = reader.poll(&mut out)?;
    let watermark = out.watermark;
    let cut = out.cut;
    let mut records = Vec::new();
    buckets.drain(|time, batch| records.extend(batch.drain(..).map(|d| (time, d))));
    let after_cut = records.iter().map(|(time, _)| *time >= cut).collect();
    Ok(Polled { poll, records, after_cut, dead_letters, watermark })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_group_out_of_order_records_by_time_in_arrival_order() {
        let mut buckets = Buckets::new();
        for round in 0..2u64 {
            let times = [5, 3, 5, 5, 9, 3, 1, 9, 5];
            for (i, t) in times.iter().enumerate() {
                buckets.push(*t, (round, i));
            }
            let mut got = Vec::new();
            buckets.drain(|t, batch| got.push((t, std::mem::take(batch))));
            let bucket = |t, is: &[usize]| (t, is.iter().map(|&i| (round, i)).collect::<Vec<_>>());
            let expected = vec![
                bucket(5, &[0, 2, 3, 8]),
                bucket(3, &[1, 5]),
                bucket(9, &[4, 7]),
                bucket(1, &[6]),
            ];
            assert_eq!(got, expected, "round {round}");
        }
    }

    /// More distinct times than the cache has slots, out of order, over several rounds:
    /// every record lands in its time's bucket, buckets in order of first appearance.
    #[test]
    fn buckets_group_many_times_like_a_map() {
        let mut buckets = Buckets::new();
        let mut state = 0x9e37_79b9_u64;
        for round in 0..3u64 {
            let mut expected: Vec<(Time, Vec<u64>)> = Vec::new();
            for i in 0..20_000u64 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let time = (state % (NEAR as u64 * 4)) * 100 + round;
                buckets.push(time, i);
                match expected.iter_mut().find(|(t, _)| *t == time) {
                    Some((_, v)) => v.push(i),
                    None => expected.push((time, vec![i])),
                }
            }
            let mut got = Vec::new();
            buckets.drain(|t, batch| got.push((t, std::mem::take(batch))));
            assert!(
                got == expected,
                "round {round}: {} buckets, {} expected",
                got.len(),
                expected.len()
            );
        }
    }
}
