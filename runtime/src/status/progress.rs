//! The progress line on a terminal while a job runs, and the summary when it ends.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::Snapshot;

/// Whether the progress line is on the screen now (the log writer clears it first).
static SHOWN: AtomicBool = AtomicBool::new(false);

/// Erases the progress line if it is shown; call with stderr locked, before writing to it.
pub(crate) fn clear_line(stderr: &mut impl std::io::Write) {
    if SHOWN.swap(false, Ordering::AcqRel) {
        let _ = stderr.write_all(b"\r\x1b[2K");
    }
}

/// Draws one status line on stderr, in place: rates, watermark, lag and the last checkpoint.
#[derive(Debug, Default)]
pub struct Progress {
    _private: (),
}

impl Progress {
    /// A progress line (the caller decides that stderr is a terminal).
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Replaces the line with the state in `snapshot`.
    pub fn draw(&mut self, snapshot: &Snapshot) {
        let line = line(snapshot);
        let mut stderr = std::io::stderr().lock();
        clear_line(&mut stderr);
        if stderr.write_all(format!("\r\x1b[2K{line}").as_bytes()).is_ok() {
            SHOWN.store(true, Ordering::Release);
        }
        let _ = stderr.flush();
    }

    /// Erases the line.
    pub fn clear(&mut self) {
        let mut stderr = std::io::stderr().lock();
        clear_line(&mut stderr);
        let _ = stderr.flush();
    }
}

/// The progress line's text.
fn line(s: &Snapshot) -> String {
    let mut line = format!(
        "{} | in {} ({}/s) | out {} ({}/s)",
        s.job,
        si(s.records_in as f64),
        si(s.records_in_per_s),
        si(s.records_out as f64),
        si(s.records_out_per_s)
    );
    if let Some(watermark) = &s.watermark {
        let _ = write!(line, " | watermark {watermark}");
        if let Some(lag) = s.watermark_lag_s {
            let _ = write!(line, " (lag {})", seconds(lag));
        }
    }
    if let Some(latency) = &s.latency {
        let _ = write!(line, " | latency p99 {}", seconds(latency.p99_ms / 1e3));
    }
    if s.late_records > 0 || s.dead_letters > 0 {
        let _ = write!(
            line,
            " | late {} | dead {}",
            si(s.late_records as f64),
            si(s.dead_letters as f64)
        );
    }
    if let Some(last) = &s.checkpoints.last {
        let age =
            last.at.map_or(0.0, |at| Instant::now().saturating_duration_since(at).as_secs_f64());
        let _ = write!(line, " | checkpoint #{} {} ago", last.id, seconds(age));
    }
    line
}

/// What a job did, printed when it ends.
#[derive(Debug)]
pub struct Summary<'a> {
    /// The last snapshot.
    pub snapshot: &'a Snapshot,
    /// How the job ended, e.g. `"finished"`.
    pub outcome: &'a str,
}

impl std::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot;
        let rate = s.records_in as f64 / s.uptime_s.max(1e-3);
        writeln!(f, "{} {} in {}", s.job, self.outcome, seconds(s.uptime_s))?;
        let rows = [
            ("records in", format!("{:>14}", grouped(s.records_in)), format!("{}/s", si(rate))),
            ("records out", format!("{:>14}", grouped(s.records_out)), String::new()),
            ("late", format!("{:>14}", grouped(s.late_records)), String::new()),
            ("late updates", format!("{:>14}", grouped(s.late_updates)), String::new()),
            ("dead-lettered", format!("{:>14}", grouped(s.dead_letters)), String::new()),
            (
                "checkpoints",
                format!("{:>14}", grouped(s.checkpoints.completed)),
                match &s.checkpoints.last {
                    Some(last) => format!("last #{}, {}B", last.id, si(last.bytes as f64)),
                    None => String::new(),
                },
            ),
            ("peak memory", format!("{:>13}B", si(s.memory.peak_rss_bytes as f64)), String::new()),
            (
                "latency p50",
                match &s.latency {
                    Some(l) => format!("{:>14}", seconds(l.p50_ms / 1e3)),
                    None => format!("{:>14}", "-"),
                },
                match &s.latency {
                    Some(l) => format!("p99 {}", seconds(l.p99_ms / 1e3)),
                    None => String::new(),
                },
            ),
        ];
        for (name, value, note) in rows {
            writeln!(f, "{}", format!("  {name:<14}{value}  {note}").trim_end())?;
        }
        for (kind, list) in [("source", &s.sources), ("sink", &s.sinks)] {
            let mut names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
            names.dedup();
            for name in names {
                let records: u64 = list.iter().filter(|e| e.name == name).map(|e| e.records).sum();
                writeln!(f, "  {kind:<7}{name:<22}{:>14} records", grouped(records))?;
            }
        }
        Ok(())
    }
}

/// `1234567` as `1.23M`.
fn si(value: f64) -> String {
    let (value, unit) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => return format!("{value:.0}"),
    };
    let digits = if value.abs() >= 100.0 {
        0
    } else if value.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$}{unit}")
}

/// `1234567` as `1,234,567`.
fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds as `850ms`, `4.2s`, `3m12s` or `5h03m`.
fn seconds(value: f64) -> String {
    match value {
        v if v < 1.0 => format!("{:.0}ms", v * 1e3),
        v if v < 60.0 => format!("{v:.1}s"),
        v if v < 3600.0 => format!("{}m{:02}s", (v / 60.0) as u64, (v % 60.0) as u64),
        v => format!("{}h{:02}m", (v / 3600.0) as u64, ((v % 3600.0) / 60.0) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1234.0), "1.23k");
        assert_eq!(si(45_600_000.0), "45.6M");
        assert_eq!(si(123_000_000_000.0), "123G");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(123_456), "123,456");
        assert_eq!(seconds(0.25), "250ms");
        assert_eq!(seconds(4.25), "4.2s");
        assert_eq!(seconds(192.0), "3m12s");
        assert_eq!(seconds(18_180.0), "5h03m");
    }
}
