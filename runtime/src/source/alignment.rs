//! Watermark alignment: what each source worker last heard of every other source worker's
//! watermark, shared by all the sources of a worker, so that no source runs more than
//! `max_drift` ahead of the slowest active one.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::time::Time;

/// One source worker's report to its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    pub(crate) worker: u32,
    /// The worker's watermark; `Time::MAX` once it has finished.
    pub(crate) watermark: Time,
    pub(crate) idle: bool,
}

/// The latest report of every worker of one source.
#[derive(Default)]
pub(crate) struct Board {
    reports: Vec<Option<(Time, bool)>>,
}

impl Board {
    pub(super) fn update(&mut self, statuses: impl Iterator<Item = Status>) {
        for Status { worker, watermark, idle } in statuses {
            let worker = worker as usize;
            if self.reports.len() <= worker {
                self.reports.resize(worker + 1, None);
            }
            self.reports[worker] = Some((watermark, idle));
        }
    }

    /// The smallest watermark among the workers that are neither idle nor finished, leaving
    /// out `me`. A worker not heard from yet counts as active at time 0.
    pub(super) fn active_minimum(&self, me: Option<usize>, workers: usize) -> Option<Time> {
        (0..workers)
            .filter(|&w| Some(w) != me)
            .filter_map(|w| match self.reports.get(w).copied().flatten() {
                None => Some(0),
                Some((wm, idle)) => (!idle && wm != Time::MAX).then_some(wm),
            })
            .min()
    }

    /// The largest watermark among the idle (not finished) workers, leaving out `me`.
    pub(super) fn idle_maximum(&self, me: usize) -> Option<Time> {
        (self.reports.iter().enumerate())
            .filter(|&(w, _)| w != me)
            .filter_map(|(_, report)| match *report {
                Some((wm, true)) if wm != Time::MAX => Some(wm),
                _ => None,
            })
            .max()
    }
}

/// One board per source of the job, on each worker.
pub(crate) type Boards = Rc<RefCell<Vec<Board>>>;

/// The smallest watermark of any active worker of any source, leaving out worker `me` of
/// source `mine`: alignment treats all the job's sources as one group, so a join's inputs
/// stay within `max_drift` of each other too.
pub(super) fn active_minimum(
    boards: &[Board],
    mine: usize,
    me: usize,
    workers: usize,
) -> Option<Time> {
    boards
        .iter()
        .enumerate()
        .filter_map(|(i, board)| board.active_minimum((i == mine).then_some(me), workers))
        .min()
}
#[cfg(test)]
mod tests {
    use super::*;

    /// When every worker of a source is idle, each follows the highest idle watermark, so a
    /// worker that went quiet before its busy peer's last report does not hold the job back.
    #[test]
    fn idle_workers_follow_the_highest_idle_watermark() {
        let mut board = Board::default();
        let status = |worker, watermark, idle| Status { worker, watermark, idle };
        board.update(
            [status(0, 9_900, true), status(1, 0, true), status(2, Time::MAX, false)].into_iter(),
        );
        assert_eq!(board.active_minimum(Some(1), 3), None, "nobody active");
        assert_eq!(board.idle_maximum(1), Some(9_900));
        assert_eq!(board.idle_maximum(0), Some(0), "finished workers do not count");
        board.update([status(0, 9_900, false)].into_iter());
        assert_eq!(board.active_minimum(Some(1), 3), Some(9_900));
    }
}
