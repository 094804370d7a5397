//! Window assigners: which windows an event time belongs to.

use std::time::Duration;

use tributary_runtime::time::millis;
use tributary_runtime::EventTime;

use super::Window;

/// Maps an event time to the windows that contain it.
pub trait WindowAssigner: Clone + 'static {
    /// Calls `out` for every window containing `t`, in order of start.
    fn assign(&self, t: EventTime, out: impl FnMut(Window));
    /// The pane of `t`: an interval holding `t` whose every time is in exactly the windows
    /// that hold `t`, so records of one pane can be folded once for all their windows. `None`
    /// (the default) folds each record into each of its windows. An assigner returns `Some`
    /// for every time or for none.
    #[inline]
    fn pane(&self, _t: EventTime) -> Option<Window> {
        None
    }
    /// A short description for operator names, e.g. `tumbling(1m)`.
    fn describe(&self) -> String;
}

/// Fixed-size, non-overlapping windows aligned to the Unix epoch (plus an offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tumbling {
    size: u64,
    offset: u64,
}

impl Tumbling {
    /// Windows of `size` (at least 1 ms; smaller sizes are rounded up to 1 ms).
    pub fn new(size: Duration) -> Self {
        Tumbling { size: millis(size).max(1), offset: 0 }
    }

    /// Shifts window boundaries by `offset` (e.g. a time-zone offset for daily windows).
    pub fn with_offset(mut self, offset: Duration) -> Self {
        self.offset = millis(offset) % self.size;
        self
    }

    /// The window containing `t`.
    #[inline]
    pub fn window_of(&self, t: EventTime) -> Window {
        let start = t - (t + self.size - self.offset) % self.size;
        Window { start, end: start.saturating_add(self.size) }
    }
}

impl WindowAssigner for Tumbling {
    #[inline]
    fn assign(&self, t: EventTime, mut out: impl FnMut(Window)) {
        if t >= self.offset {
            out(self.window_of(t));
        } else {
            out(Window { start: 0, end: self.offset });
        }
    }

    #[inline]
    fn pane(&self, t: EventTime) -> Option<Window> {
        let mut pane = None;
        self.assign(t, |w| pane = Some(w));
        pane
    }

    fn describe(&self) -> String {
        format!("tumbling({})", humantime::format_duration(Duration::from_millis(self.size)))
    }
}

/// Fixed-size windows that start every `slide` (hopping windows); each event time is in
/// `size / slide` windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sliding {
    size: u64,
    slide: u64,
}

impl Sliding {
    /// Windows of `size` starting every `slide`. Both are at least 1 ms and the size is at
    /// least the slide.
    pub fn new(size: Duration, slide: Duration) -> Self {
        let slide = millis(slide).max(1);
        Sliding { size: millis(size).max(slide), slide }
    }
}

impl WindowAssigner for Sliding {
    #[inline]
    fn assign(&self, t: EventTime, mut out: impl FnMut(Window)) {
        let last_start = t - t % self.slide;
        // The first start, a multiple of the slide, whose window still reaches past `t`.
        let mut start = (t + 1).saturating_sub(self.size).div_ceil(self.slide) * self.slide;
        while start <= last_start {
            out(Window { start, end: start.saturating_add(self.size) });
            start += self.slide;
        }
    }

    /// Slide-wide panes when the size is a multiple of the slide (window starts and ends are
    /// then all multiples of the slide); otherwise none, as panes would be as narrow as the
    /// greatest common divisor of the two.
    #[inline]
    fn pane(&self, t: EventTime) -> Option<Window> {
        self.size.is_multiple_of(self.slide).then(|| {
            let start = t - t % self.slide;
            Window { start, end: start.saturating_add(self.slide) }
        })
    }

    fn describe(&self) -> String {
        format!(
            "sliding({}/{})",
            humantime::format_duration(Duration::from_millis(self.size)),
            humantime::format_duration(Duration::from_millis(self.slide))
        )
    }
}

/// One window spanning all of time, for aggregates that are never closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Global;

impl Global {
    /// The only window.
    pub const WINDOW: Window = Window { start: 0, end: EventTime::MAX };
}

impl WindowAssigner for Global {
    #[inline]
    fn assign(&self, _t: EventTime, mut out: impl FnMut(Window)) {
        out(Self::WINDOW);
    }

    #[inline]
    fn pane(&self, _t: EventTime) -> Option<Window> {
        Some(Self::WINDOW)
    }

    fn describe(&self) -> String {
        "global".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn windows<W: WindowAssigner>(w: &W, t: u64) -> Vec<Window> {
        let mut v = Vec::new();
        w.assign(t, |x| v.push(x));
        v
    }

    #[test]
    fn tumbling_windows() {
        let w = Tumbling::new(Duration::from_secs(60));
        assert_eq!(windows(&w, 0), vec![Window { start: 0, end: 60_000 }]);
        assert_eq!(windows(&w, 59_999), vec![Window { start: 0, end: 60_000 }]);
        assert_eq!(windows(&w, 60_000), vec![Window { start: 60_000, end: 120_000 }]);
        let w = w.with_offset(Duration::from_secs(10));
        assert_eq!(windows(&w, 70_000), vec![Window { start: 70_000, end: 130_000 }]);
        assert_eq!(windows(&w, 69_999), vec![Window { start: 10_000, end: 70_000 }]);
        assert_eq!(w.describe(), "tumbling(1m)");
    }

    #[test]
    fn sliding_windows() {
        let w = Sliding::new(Duration::from_secs(60), Duration::from_secs(10));
        let ws = windows(&w, 65_000);
        assert_eq!(ws.len(), 6);
        assert_eq!(ws[0], Window { start: 10_000, end: 70_000 });
        assert_eq!(ws[5], Window { start: 60_000, end: 120_000 });
        // Near the epoch only the windows that start at or after 0 exist.
        assert_eq!(windows(&w, 5_000).len(), 1);
    }

    proptest! {
        #[test]
        fn sliding_assigns_exactly_the_windows_containing_t(
            size in 1u64..500, slide in 1u64..100, t in 0u64..5_000,
        ) {
            let w = Sliding::new(Duration::from_millis(size), Duration::from_millis(slide));
            let got = windows(&w, t);
            let size = size.max(slide);
            let expected: Vec<Window> = (0..=t).step_by(slide as usize)
                .map(|start| Window { start, end: start + size })
                .filter(|w| w.contains(t)).collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn every_time_of_a_pane_is_in_the_same_windows(
            size in 1u64..500, slide in 1u64..100, offset in 0u64..500, t in 0u64..5_000,
        ) {
            let sliding = Sliding::new(Duration::from_millis(size), Duration::from_millis(slide));
            let tumbling = Tumbling::new(Duration::from_millis(size))
                .with_offset(Duration::from_millis(offset));
            fn check<W: WindowAssigner>(w: &W, t: u64) -> Result<(), TestCaseError> {
                let Some(pane) = w.pane(t) else { return Ok(()) };
                prop_assert!(pane.contains(t));
                let expected = windows(w, t);
                for u in [pane.start, pane.end - 1, (pane.start + pane.end) / 2] {
                    prop_assert_eq!(w.pane(u), Some(pane));
                    prop_assert_eq!(windows(w, u), expected.clone());
                }
                Ok(())
            }
            check(&sliding, t)?;
            check(&tumbling, t)?;
            check(&Global, t)?;
            // Sliding windows whose size is a multiple of the slide have slide-wide panes.
            let multiple = Sliding::new(Duration::from_millis(slide * (size % 7 + 1)),
                Duration::from_millis(slide));
            prop_assert_eq!(multiple.pane(t).map(|p| p.end - p.start), Some(slide));
            check(&multiple, t)?;
        }

        #[test]
        fn tumbling_window_contains_t(size in 1u64..10_000, offset in 0u64..10_000, t in 0u64..1_000_000) {
            let w = Tumbling::new(Duration::from_millis(size)).with_offset(Duration::from_millis(offset));
            let got = windows(&w, t);
            prop_assert_eq!(got.len(), 1);
            prop_assert!(got[0].contains(t));
        }
    }
}
