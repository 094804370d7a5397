//! A fixed-rate budget for readers that pace their input (a generator's `pace.rate`, a file
//! source's `rate`).

use std::time::{Duration, Instant};

/// How many items a reader paced at a fixed rate may produce now.
#[derive(Debug)]
pub(crate) struct Rate {
    per_second: f64,
    /// When the first allowance was asked for.
    started: Option<Instant>,
    /// Items produced so far.
    used: u64,
}

impl Rate {
    /// A budget of `per_second` items a second, from the first call to [`Rate::allowance`].
    pub(crate) fn new(per_second: f64) -> Rate {
        Rate { per_second, started: None, used: 0 }
    }

    /// Items allowed now (at least one), or how long to wait for the next.
    pub(crate) fn allowance(&mut self) -> Result<u64, Duration> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = (started.elapsed().as_secs_f64() * self.per_second) as u64;
        match due.saturating_sub(self.used) {
            0 => Err(Duration::from_secs_f64(1.0 / self.per_second).max(Duration::from_millis(1))),
            n => Ok(n),
        }
    }

    /// Counts `items` produced.
    pub(crate) fn use_up(&mut self, items: u64) {
        self.used += items;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_due_as_time_passes_and_used_ones_are_not_due_again() {
        let mut slow = Rate::new(1e-3);
        assert_eq!(slow.allowance(), Err(Duration::from_secs(1000)), "one item every 1000 s");
        let mut rate = Rate::new(1000.0);
        assert!(rate.allowance().is_err(), "the clock starts at the first call");
        std::thread::sleep(Duration::from_millis(20));
        let allowed = rate.allowance().expect("about 20 items due");
        assert!(allowed >= 20, "{allowed}");
        rate.use_up(allowed + 1_000_000);
        assert!(rate.allowance().is_err(), "an hour's worth used up");
    }
}
