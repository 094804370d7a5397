//! What a restored source re-reads: the spans of a split that earlier runs read before their
//! checkpoints' cuts, shared by the readers whose splits have ordered positions (Kafka
//! offsets, file bytes).

use std::collections::VecDeque;

use tributary_runtime::source::Cut;
use tributary_runtime::Time;

/// The spans of a split that earlier runs read before their checkpoints' cuts: `(until, cut)`
/// in increasing `until`; a record at a position below `until` (and not below an earlier
/// span's) is emitted again only if it falls at or after `cut`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Replay<P>(VecDeque<(P, Cut)>);

impl<P: Copy + Ord> Replay<P> {
    /// The spans of a split restored at `from`: the records up to `next` were read before the
    /// restored checkpoint's `cut`, and `older` spans (`(until, cut time)` past `next`) before
    /// the cuts of checkpoints the run that took it was itself still re-reading.
    pub(crate) fn restored(from: P, next: P, cut: Cut, older: &[(P, Time)]) -> Self {
        let spans = std::iter::once((next, cut)).filter(|(until, _)| from < *until);
        let older = older.iter().map(|&(until, time)| (until, Cut { time, ..cut }));
        Replay(spans.chain(older).collect())
    }

    /// The cut that decides whether the record at `position` is emitted again (`None`: it was
    /// not read before, emit it). Positions only grow, so passed spans are dropped.
    #[inline]
    pub(crate) fn cut_at(&mut self, position: P) -> Option<Cut> {
        while let Some(&(until, cut)) = self.0.front() {
            if position < until {
                return Some(cut);
            }
            self.0.pop_front();
        }
        None
    }

    /// The spans still ahead of `next`, for a checkpoint taken there.
    pub(crate) fn older(&self, next: P) -> Vec<(P, Time)> {
        self.0.iter().filter(|(until, _)| *until > next).map(|(u, c)| (*u, c.time)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_runtime::Granularity;

    /// A run restored from one checkpoint and checkpointed again before it re-read everything
    /// passes the spans it has not reached on, each with the cut that decides it.
    #[test]
    fn replay_spans_keep_the_cut_of_the_run_that_read_them() {
        let cut = |time| Cut { time, granularity: Granularity::DEFAULT };
        let mut replay = Replay::restored(0, 10, cut(2_000), &[(20, 1_000)]);
        assert_eq!(replay.older(5), vec![(10, 2_000), (20, 1_000)]);
        assert_eq!(replay.older(15), vec![(20, 1_000)]);
        assert_eq!(replay.older(20), vec![]);
        assert_eq!(replay.cut_at(3).map(|c| c.time), Some(2_000));
        assert!(!replay.cut_at(9).unwrap().includes(1_999));
        assert!(replay.cut_at(12).unwrap().includes(1_050));
        assert_eq!(replay.cut_at(25), None);
        assert!(replay.0.is_empty(), "passed spans are dropped");
    }

    #[test]
    fn a_split_restored_at_its_position_has_only_the_older_spans() {
        let cut = Cut { time: 7, granularity: Granularity::DEFAULT };
        let replay = Replay::restored(10u64, 10, cut, &[(30, 5)]);
        assert_eq!(replay.older(0), vec![(30, 5)]);
    }
}
