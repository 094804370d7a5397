//! The file source: JSON lines or CSV, one file or a directory, split across workers.
//!
//! Files are listed once, before the workers start. Each file is a unit of work; JSON-lines
//! files larger than `split_size` (default [`SPLIT_BYTES`]) are cut into byte ranges (a line
//! belongs to the range it starts in). Units go round-robin to workers. A line that cannot be
//! decoded becomes a dead letter naming `file:line`; the good lines flow on. With `rate`, the
//! files are replayed at that many lines a second (over all workers).
//!
//! **Event time**: every unit has its own watermark, its largest event time so far less
//! `max_out_of_orderness`, which starts at the unit's first record that decodes (the reader
//! looks at each unit's first lines before it reads any). A record behind its unit's
//! watermark travels at that watermark ([`Emitter::emit_in`]), so its timely time, and with
//! it whether a window takes it as on time, late or too late, follows from the unit's own
//! records before it: the same for any worker count, any order in which a worker takes its
//! units, and after a restore. A worker reads the unit that holds its watermark lowest, and
//! turns to another once the unit would get more than `max_out_of_orderness` (at least
//! [`AHEAD_SLACK_MS`]) ahead of it, so the worker's watermark, the lowest of its units', moves
//! on steadily and windows do not wait for a unit that is read last.
//!
//! **Checkpoints**: a unit's position is the byte (and line, and CSV record number) of the
//! first record at or after the checkpoint's cut with the unit's largest event time before
//! it, and the byte reached; a restore seeks there
//! and re-emits, up to the byte reached, only the records at or after the cut (the protocol
//! of `docs/architecture.md`, "Checkpoints"). Units are matched by file path and first byte,
//! so a restore with another worker count works; files added to a directory since are read
//! from the start. A checkpointed file that is shorter than its position, or gone while not
//! read to its end, fails the restore naming it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tributary_runtime::checkpoint::{decode, encode};
use tributary_runtime::source::Cut;
use tributary_runtime::time::millis;
use tributary_runtime::{
    ConfigError, Data, DeadLetter, Emitter, Error, EventTime, HumanDuration, Poll, Result, Source,
    SourceContext, SourceReader, Time, Timestamped,
};

use super::Format;
use crate::error::ConnectorError;
use crate::rate::Rate;
use crate::replay::Replay;

/// JSON-lines files above this size are read by several workers in parallel.
pub const SPLIT_BYTES: u64 = 64 << 20;
/// Longest line accepted; longer lines become dead letters.
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// How far in event time (at least; `max_out_of_orderness` if that is more) a unit may be
/// read ahead of the reader's next lowest unit before the reader turns to that one.
const AHEAD_SLACK_MS: u64 = 1000;
/// Lines or records a reader looks at, at most, for the first record of a unit (where the
/// unit's watermark starts); a unit with none that decodes there holds no watermark back.
const LOOK_AHEAD: usize = 1000;

/// Settings of a file source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// A file, or a directory whose files (not hidden, not in subdirectories) are read.
    pub path: PathBuf,
    /// The format; by default taken from the extension (`.csv` is CSV, anything else JSON lines).
    #[serde(default)]
    pub format: Option<Format>,
    /// How far event time may go backwards in a file before records count as late.
    #[serde(default)]
    pub max_out_of_orderness: Option<HumanDuration>,
    /// CSV only: whether the first line names the columns (default true).
    #[serde(default = "yes")]
    pub header: bool,
    /// JSON lines only: files larger than this many bytes are read by several workers.
    #[serde(default = "split_bytes")]
    pub split_size: u64,
    /// Replays the files at most this many lines a second over all workers (a recording
    /// at its original pace, say); as fast as possible when absent.
    #[serde(default)]
    pub rate: Option<f64>,
}

fn split_bytes() -> u64 {
    SPLIT_BYTES
}

fn yes() -> bool {
    true
}

impl FileSourceConfig {
    /// A config reading `path` with the defaults.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSourceConfig {
            path: path.into(),
            format: None,
            max_out_of_orderness: None,
            header: true,
            split_size: SPLIT_BYTES,
            rate: None,
        }
    }
}

/// A unit of reading work: a byte range of one file.
#[derive(Debug, Clone)]
struct Unit {
    file: usize,
    start: u64,
    end: u64,
}

/// Reads records of type `D` from files.
pub struct FileSource<D> {
    name: String,
    files: Arc<[(PathBuf, Format)]>,
    units: Arc<[Unit]>,
    lateness: u64,
    header: bool,
    rate: Option<f64>,
    marker: PhantomData<fn() -> D>,
}

impl<D> FileSource<D> {
    /// Lists the input files and checks the settings; keys are relative to the source's table.
    pub fn new(name: &str, config: &FileSourceConfig) -> Result<Self, ConfigError> {
        let path = &config.path;
        if config.split_size == 0 {
            return Err(ConfigError::new("split_size", "must be at least 1"));
        }
        if config.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(ConfigError::new("rate", "must be a positive number of records a second"));
        }
        let meta = std::fs::metadata(path)
            .map_err(|e| ConfigError::new("path", format!("`{}`: {e}", path.display())))?;
        let mut paths = Vec::new();
        if meta.is_dir() {
            let entries = std::fs::read_dir(path)
                .map_err(|e| ConfigError::new("path", format!("`{}`: {e}", path.display())))?;
            for entry in entries {
                let entry = entry.map_err(|e| ConfigError::new("path", e.to_string()))?;
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if !hidden && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    paths.push(entry.path());
                }
            }
            paths.sort();
            if paths.is_empty() {
                return Err(ConfigError::new(
                    "path",
                    format!("directory `{}` has no input files", path.display()),
                ));
            }
        } else {
            paths.push(path.clone());
        }
        let mut files = Vec::new();
        let mut units = Vec::new();
        for (index, p) in paths.into_iter().enumerate() {
            let size = std::fs::metadata(&p)
                .map_err(|e| ConfigError::new("path", format!("`{}`: {e}", p.display())))?
                .len();
            let format = config.format.unwrap_or_else(|| Format::from_path(&p));
            format.check_text("format")?;
            if format == Format::Json && size > config.split_size {
                let mut start = 0;
                while start < size {
                    let end = (start + config.split_size).min(size);
                    units.push(Unit { file: index, start, end });
                    start = end;
                }
            } else {
                units.push(Unit { file: index, start: 0, end: u64::MAX });
            }
            files.push((p, format));
        }
        Ok(FileSource {
            name: name.to_owned(),
            files: files.into(),
            units: units.into(),
            lateness: config.max_out_of_orderness.map_or(0, |d| millis(d.0)),
            header: config.header,
            rate: config.rate,
            marker: PhantomData,
        })
    }
}

impl<D: Data + DeserializeOwned + Timestamped> Source for FileSource<D> {
    type Item = D;
    type Reader = FileReader<D>;

    fn name(&self) -> &str {
        &self.name
    }

    fn reader(&self, ctx: &SourceContext) -> Result<FileReader<D>> {
        let mine = (0..self.units.len()).filter(|i| i % ctx.workers == ctx.worker_index).rev();
        Ok(FileReader {
            name: self.name.clone(),
            files: Arc::clone(&self.files),
            units: Arc::clone(&self.units),
            todo: mine.map(|unit| Todo { unit, resume: None, seen: None }).collect(),
            open: Vec::new(),
            done: Vec::new(),
            lateness: self.lateness,
            header: self.header,
            started: false,
            rate: self.rate.map(|r| Rate::new(r / ctx.workers as f64)),
            marker: PhantomData,
        })
    }
}

/// A place in a file: the first byte of a line or CSV record, its line number, and (CSV) its
/// record number, which is what a CSV reader needs to continue there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Pos {
    byte: u64,
    line: u64,
    record: u64,
}

impl From<&csv::Position> for Pos {
    fn from(p: &csv::Position) -> Pos {
        Pos { byte: p.byte(), line: p.line(), record: p.record() }
    }
}

impl From<Pos> for csv::Position {
    fn from(p: Pos) -> csv::Position {
        let mut position = csv::Position::new();
        position.set_byte(p.byte).set_line(p.line).set_record(p.record);
        position
    }
}

/// One unit's position in a checkpoint (a unit not listed was not started).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    /// The file and the unit's first byte: which unit this is.
    path: PathBuf,
    start: u64,
    /// Where a restart reads from.
    from: Pos,
    /// Records from `from` up to this byte were read before the cut and are filtered on replay.
    next: u64,
    /// Spans past `next` that the run taking this checkpoint was still re-reading after a
    /// restore of its own: `(until, cut)`, see [`Replay`].
    older: Vec<(u64, Time)>,
    /// The unit was read to its end.
    done: bool,
    /// The unit's largest event time before `from`: a restart re-reads from there with the
    /// watermark the crashed run had, so every record gets the same timely time.
    seen: Option<EventTime>,
}

impl Position {
    /// Read to its end with nothing left to re-read.
    fn fully_read(&self) -> bool {
        self.done && self.from.byte >= self.next && self.older.is_empty()
    }
}

/// A unit not opened yet, and where to start it after a restore.
#[derive(Debug)]
struct Todo {
    unit: usize,
    resume: Option<(Position, Replay<u64>)>,
    /// Where the unit's watermark starts (plus `max_out_of_orderness`): its largest event time
    /// at the restored position, or the event time of its first record; `None` while not
    /// known, or when the unit holds no record that decodes.
    seen: Option<EventTime>,
}

impl Track {
    /// A lower bound of the event time its unit's next records are judged by: its largest
    /// event time, or the held record's (see [`Track::held`]). The unit's watermark is this
    /// less `max_out_of_orderness`: every record still to come gets a time at or above it.
    fn ahead(&self) -> Option<EventTime> {
        self.held.max(self.seen)
    }
}

/// The unit being read.
struct Reading {
    unit: usize,
    track: Track,
    open: Open,
}

/// What a unit being read keeps track of: its watermark, and positions for checkpoints.
struct Track {
    path: Arc<str>,
    /// The largest event time of the unit so far (from its first record on, which the reader
    /// looked at before it opened the unit): the unit's watermark is this less
    /// `max_out_of_orderness`, and a record's timely time follows from it.
    seen: Option<EventTime>,
    /// The first record emitted at or after a pending checkpoint's cut, and `seen` before it.
    after_cut: Option<(Pos, Option<EventTime>)>,
    /// The event time of a record read but held back (not emitted yet, and so not in
    /// `seen`) because another unit is behind: it is emitted when this unit is the lowest
    /// again, so the reader never sends times far ahead of its slowest unit.
    held: Option<EventTime>,
    /// After a restore: the spans re-read that runs before read already, by byte.
    replay: Replay<u64>,
}

enum Open {
    Lines(Lines),
    Csv {
        reader: Box<csv::Reader<File>>,
        headers: csv::ByteRecord,
        /// A record read but held back (see [`Track::held`]), and where it starts.
        held: Option<(Pos, csv::ByteRecord)>,
    },
}

/// A JSON-lines range being read: the next line starts at byte `pos` and is line `line`.
struct Lines {
    reader: BufReader<File>,
    pos: u64,
    end: u64,
    line: u64,
    buf: Vec<u8>,
    /// Where the line in `buf` starts, if it holds a record held back (see [`Track::held`]).
    held: Option<Pos>,
}

/// One worker's share of a file source.
pub struct FileReader<D> {
    name: String,
    files: Arc<[(PathBuf, Format)]>,
    units: Arc<[Unit]>,
    /// Units not started, the next last.
    todo: Vec<Todo>,
    /// Units being read (usually one: see [`FileReader::poll`]).
    open: Vec<Reading>,
    /// Positions of the units read to their end.
    done: Vec<Position>,
    lateness: u64,
    header: bool,
    /// Whether the first poll has found where every unit's watermark starts.
    started: bool,
    rate: Option<Rate>,
    marker: PhantomData<fn() -> D>,
}

/// What reading a unit needs besides the unit: the emitter, the lateness bound, and how many
/// lines it may still read in this poll.
struct Context<'a, 'b, D> {
    name: &'a str,
    out: &'a mut Emitter<'b, D>,
    lateness: u64,
    budget: u64,
    /// A record above this event time, which would raise its unit's largest event time
    /// beyond another unit's (plus a slack), is held back (see [`Track::held`]).
    stop_above: Option<EventTime>,
}

impl<D: Timestamped> Context<'_, '_, D> {
    fn more(&self) -> bool {
        self.budget > 0 && !self.out.is_full()
    }

    /// Emits a record read at `at`, unless a checkpoint holds it already; notes the first
    /// record at or after a pending cut.
    ///
    /// Returns `false` if the record is held back instead (see [`Track::held`]): the caller
    /// keeps it and offers it again later.
    #[inline]
    fn record(&mut self, track: &mut Track, at: Pos, record: D) -> bool {
        let t = record.event_time();
        let seen = track.seen;
        if self.stop_above.is_some_and(|stop| t > stop && seen.is_none_or(|s| t > s)) {
            track.held = Some(t);
            return false;
        }
        track.held = None;
        let watermark = seen.map_or(0, |m| m.saturating_sub(self.lateness));
        track.seen = Some(seen.map_or(t, |m| m.max(t)));
        let keep = track.replay.cut_at(at.byte).is_none_or(|cut| cut.includes_in(watermark, t));
        if keep && self.out.emit_in(watermark, t, record) && track.after_cut.is_none() {
            track.after_cut = Some((at, seen));
        }
        true
    }

    /// Sends a line that could not be read to the dead letters, unless it was read (and sent
    /// there) before the checkpoint a restore started from.
    fn dead_letter(&mut self, track: &mut Track, at: Pos, reason: String, raw: &[u8]) {
        if track.replay.cut_at(at.byte).is_none() {
            let location = format!("{}:{}", track.path, at.line);
            self.out.dead_letter(DeadLetter::new(self.name, location, reason, raw));
        }
    }
}

impl<D: Data + DeserializeOwned + Timestamped> SourceReader for FileReader<D> {
    type Item = D;

    fn poll(&mut self, out: &mut Emitter<'_, D>) -> Result<Poll> {
        let budget = match self.rate.as_mut().map(Rate::allowance) {
            Some(Err(wait)) => return Ok(Poll::Pending(wait)),
            Some(Ok(n)) => n,
            None => u64::MAX,
        };
        if !self.started {
            self.started = true;
            self.find_starts()?;
        }
        let mut cx =
            Context { name: &self.name, out, lateness: self.lateness, budget, stop_above: None };
        while cx.more() {
            // Read the unit that holds the reader's watermark lowest: the open one with the
            // smallest largest event time, unless a unit not opened yet starts below it (it
            // is opened then). A unit whose watermark starts low (a late first record, a
            // range a restored run had read less far) is so read at once instead of holding
            // every window back until its turn; units in time order are read one by one.
            let open = self.open.iter().enumerate().min_by_key(|(_, r)| (r.track.ahead(), r.unit));
            let todo = (self.todo.iter().enumerate())
                .min_by_key(|(_, t)| (t.seen.unwrap_or(EventTime::MAX), t.unit));
            let opens = match (open, todo) {
                (_, None) => None,
                (None, Some((j, _))) => Some(j),
                (Some((_, r)), Some((j, t))) => t
                    .seen
                    .is_some_and(|start| r.track.ahead().is_some_and(|seen| start < seen))
                    .then_some(j),
            };
            if let Some(j) = opens {
                let todo = self.todo.swap_remove(j);
                match open_unit(&self.name, &self.files, &self.units, self.header, todo)? {
                    Ok(reading) => self.open.push(reading),
                    Err(position) => self.done.push(position),
                }
                continue;
            }
            let Some((i, _)) = open else { break };
            // Read it while it stays within a slack of the next lowest, or a unit far ahead
            // would raise the times the reader sends (and with them the next checkpoint's
            // cut) long before the others get there; the slack keeps units that cover the
            // same times from taking turns record by record.
            let others = self.open.iter().enumerate().filter(|(k, _)| *k != i);
            let others = others.map(|(_, r)| r.track.ahead());
            let lowest = others.chain(self.todo.iter().map(|t| t.seen)).flatten().min();
            let slack = self.lateness.max(AHEAD_SLACK_MS);
            cx.stop_above = lowest.map(|t| t.saturating_add(slack));
            if self.open[i].read(&mut cx)? {
                let reading = self.open.swap_remove(i);
                self.done.push(reading.position(&self.files, &self.units, true));
            }
        }
        if let Some(rate) = self.rate.as_mut() {
            rate.use_up(budget - cx.budget);
        }
        if self.open.is_empty() && self.todo.is_empty() {
            return Ok(Poll::Done);
        }
        // The reader's watermark: the smallest of its units still to read. A unit not
        // opened yet holds it at its first record, so its records are judged by the unit's
        // own watermark whichever worker reads it, and whenever.
        let open = self.open.iter().map(|r| r.track.ahead());
        let seen = open.chain(self.todo.iter().map(|t| t.seen)).flatten().min();
        if let Some(seen) = seen {
            out.advance_watermark(seen.saturating_sub(self.lateness));
        }
        Ok(Poll::Ready)
    }

    /// Every unit's position: those read to the end, those being read, and those a restore
    /// placed but not opened yet.
    fn checkpoint(&mut self, _: u64) -> Result<Vec<u8>> {
        let mut positions = Vec::with_capacity(self.done.len() + 1);
        for done in &mut self.done {
            positions.push(done.clone());
            // Re-read once: later checkpoints hold what was after this cut.
            done.from = Pos { byte: done.next, ..done.from };
            done.older.clear();
        }
        for reading in &mut self.open {
            positions.push(reading.position(&self.files, &self.units, false));
            reading.track.after_cut = None;
        }
        positions.extend(self.todo.iter().filter_map(|t| t.resume.as_ref()).map(|(p, replay)| {
            // Not reached yet: the restored position, with its spans all older ones.
            Position { next: p.from.byte, older: replay.older(p.from.byte), ..p.clone() }
        }));
        encode(&positions)
    }

    /// Places this reader's units at their checkpointed positions, matched by file and first
    /// byte among every old worker's positions, so rescaling works.
    fn restore(&mut self, cut: Cut, positions: Vec<Vec<u8>>) -> Result<()> {
        let mut restored = 0;
        for bytes in positions {
            let positions: Vec<Position> = decode(&bytes)?;
            for p in positions {
                let unit = self
                    .units
                    .iter()
                    .position(|u| self.files[u.file].0 == p.path && u.start == p.start);
                let Some(unit) = unit else {
                    self.unknown_unit(&p)?;
                    continue;
                };
                let Some(todo) = self.todo.iter_mut().find(|t| t.unit == unit) else { continue };
                let replay = Replay::restored(p.from.byte, p.next, cut, &p.older);
                todo.seen = if p.fully_read() { None } else { p.seen };
                todo.resume = Some((p, replay));
                restored += 1;
            }
        }
        tracing::info!(source = %self.name, units = restored,
            "file ranges restored to their checkpointed positions");
        Ok(())
    }
}

impl<D: DeserializeOwned + Timestamped> FileReader<D> {
    /// Finds where the watermark of every unit still to read starts: its restored one, or
    /// the event time of its first record that decodes (a look into each unit).
    fn find_starts(&mut self) -> Result<()> {
        for i in 0..self.todo.len() {
            let todo = &self.todo[i];
            // Known already, or nothing left to read (it holds no watermark back).
            if todo.seen.is_some() || todo.resume.as_ref().is_some_and(|(p, _)| p.fully_read()) {
                continue;
            }
            let look = Todo { unit: todo.unit, resume: todo.resume.clone(), seen: None };
            if let Ok(reading) = open_unit(&self.name, &self.files, &self.units, self.header, look)?
            {
                self.todo[i].seen = reading.first_event_time::<D>();
            }
        }
        Ok(())
    }
}

impl<D> FileReader<D> {
    /// A unit of the checkpoint that the files listed now do not have: fine if it was read to
    /// its end (the file may have been removed since), an error otherwise.
    fn unknown_unit(&self, p: &Position) -> Result<()> {
        if p.fully_read() {
            tracing::warn!(source = %self.name, path = %p.path.display(), start = p.start,
                "a file of the checkpoint, read to its end, is no longer listed");
            return Ok(());
        }
        let file = self.files.iter().any(|(path, _)| *path == p.path);
        Err(ConnectorError::Restore(format!(
            "the checkpoint holds `{}` read up to byte {}{}",
            p.path.display(),
            p.from.byte,
            if file {
                format!(" in a range from byte {}, which `split_size` no longer gives", p.start)
            } else {
                ", which is no longer listed (restore the file or start afresh)".to_owned()
            }
        ))
        .at_source(&self.name))
    }
}

/// Opens a unit (at its restored position, if any); `Ok(Err(position))` for a restored unit
/// that holds nothing left to read. `name` is the source's.
fn open_unit(
    name: &str,
    files: &[(PathBuf, Format)],
    units: &[Unit],
    header: bool,
    todo: Todo,
) -> Result<std::result::Result<Reading, Position>> {
    let unit = &units[todo.unit];
    let (path, format) = &files[unit.file];
    let (resume, replay) = match todo.resume {
        Some((p, _)) if p.fully_read() => {
            return Ok(Err(p));
        }
        Some((p, replay)) => (Some(p.from), replay),
        None => (None, Replay::default()),
    };
    let io = |op, source| Error::Io { op, path: path.clone(), source };
    let file = File::open(path).map_err(|e| io("cannot open", e))?;
    if let Some(from) = resume {
        let size = file.metadata().map_err(|e| io("cannot read", e))?.len();
        if from.byte > size {
            return Err(ConnectorError::Restore(format!(
                "`{}` has {size} bytes but was read up to byte {} before the checkpoint: the \
                 input changed",
                path.display(),
                from.byte
            ))
            .at_source(name));
        }
    }
    let shown: Arc<str> = path.display().to_string().into();
    let open = if *format == Format::Csv {
        let mut reader = Box::new(
            csv::ReaderBuilder::new().has_headers(header).flexible(false).from_reader(file),
        );
        let headers = if header {
            reader
                .byte_headers()
                .map_err(|e| io("cannot read the CSV header of", e.into()))?
                .clone()
        } else {
            csv::ByteRecord::new()
        };
        if let Some(from) = resume {
            reader.seek(from.into()).map_err(|e| io("cannot seek in", e.into()))?;
        }
        Open::Csv { reader, headers, held: None }
    } else {
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let (pos, line) = match resume {
            Some(from) => {
                reader.seek(SeekFrom::Start(from.byte)).map_err(|e| io("cannot seek in", e))?;
                (from.byte, from.line)
            }
            None if unit.start > 0 => {
                // Count the lines before the range, then skip the line that straddles its start.
                let before = count_newlines(&mut reader, unit.start - 1)
                    .map_err(|e| io("cannot read", e))?;
                reader
                    .seek(SeekFrom::Start(unit.start - 1))
                    .map_err(|e| io("cannot seek in", e))?;
                let mut skipped = Vec::new();
                let n = reader.read_until(b'\n', &mut skipped).map_err(|e| io("cannot read", e))?;
                (unit.start - 1 + n as u64, before + 2)
            }
            None => (0, 1),
        };
        Open::Lines(Lines { reader, pos, end: unit.end, line, buf: Vec::new(), held: None })
    };
    let track = Track { path: shown, seen: todo.seen, after_cut: None, held: None, replay };
    Ok(Ok(Reading { unit: todo.unit, track, open }))
}

impl Reading {
    /// Where the reader stands, for a checkpoint.
    fn position(&self, files: &[(PathBuf, Format)], units: &[Unit], done: bool) -> Position {
        let unit = &units[self.unit];
        // A record held back was not emitted: a restart reads it again.
        let next = match &self.open {
            Open::Lines(lines) => {
                lines.held.unwrap_or(Pos { byte: lines.pos, line: lines.line, record: 0 })
            }
            Open::Csv { reader, held, .. } => {
                held.as_ref().map_or_else(|| reader.position().into(), |(at, _)| *at)
            }
        };
        let (from, seen) = self.track.after_cut.unwrap_or((next, self.track.seen));
        Position {
            path: files[unit.file].0.clone(),
            start: unit.start,
            from,
            next: next.byte,
            older: self.track.replay.older(next.byte),
            done,
            seen,
        }
    }

    /// The event time of the unit's first record that decodes, among its first
    /// [`LOOK_AHEAD`] lines or records; `None` if there is none.
    fn first_event_time<D: DeserializeOwned + Timestamped>(mut self) -> Option<EventTime> {
        match &mut self.open {
            Open::Lines(lines) => {
                for _ in 0..LOOK_AHEAD {
                    if lines.pos >= lines.end {
                        return None;
                    }
                    lines.buf.clear();
                    let limit = MAX_LINE_BYTES as u64 + 1;
                    let n = (&mut lines.reader).take(limit).read_until(b'\n', &mut lines.buf);
                    match n {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => lines.pos += n as u64,
                    }
                    if let Ok(record) = crate::format::json::decode::<D>(trim_line(&lines.buf)) {
                        return Some(record.event_time());
                    }
                }
                None
            }
            Open::Csv { reader, headers, .. } => {
                let headers = (!headers.is_empty()).then_some(&*headers);
                let mut record = csv::ByteRecord::new();
                for _ in 0..LOOK_AHEAD {
                    match reader.read_byte_record(&mut record) {
                        Ok(true) => {
                            if let Ok(value) = record.deserialize::<D>(headers) {
                                return Some(value.event_time());
                            }
                        }
                        Ok(false) => return None,
                        Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => return None,
                        Err(_) => {}
                    }
                }
                None
            }
        }
    }

    /// Reads until the poll's budget is spent or the unit ends; true when it ended.
    fn read<D: DeserializeOwned + Timestamped>(
        &mut self,
        cx: &mut Context<'_, '_, D>,
    ) -> Result<bool> {
        match &mut self.open {
            Open::Lines(lines) => lines.read(&mut self.track, cx),
            Open::Csv { reader, headers, held } => {
                read_csv(reader, headers, held, &mut self.track, cx)
            }
        }
    }
}

impl Lines {
    fn read<D: DeserializeOwned + Timestamped>(
        &mut self,
        track: &mut Track,
        cx: &mut Context<'_, '_, D>,
    ) -> Result<bool> {
        if let Some(at) = self.held.take() {
            // Offered again; still held if the unit is still ahead.
            if !offer(&self.buf, at, track, cx) {
                self.held = Some(at);
                return Ok(false);
            }
        }
        let path = Arc::clone(&track.path);
        let io = |source| Error::Io { op: "cannot read", path: PathBuf::from(&*path), source };
        while cx.more() {
            if self.pos >= self.end {
                return Ok(true);
            }
            let at = Pos { byte: self.pos, line: self.line, record: 0 };
            // A whole line in the reader's buffer is decoded where it is; one that runs past
            // the buffer's end (about one a megabyte), or is too long, is copied out first.
            let buffered = self.reader.fill_buf().map_err(&io)?;
            if buffered.is_empty() {
                return Ok(true);
            }
            if let Some(i) = memchr::memchr(b'\n', buffered).filter(|&i| i < MAX_LINE_BYTES) {
                let n = i + 1;
                self.pos += n as u64;
                self.line += 1;
                cx.budget -= 1;
                cx.out.add_bytes(n);
                let emitted = offer(&buffered[..n], at, track, cx);
                if !emitted {
                    self.buf.clear();
                    self.buf.extend_from_slice(&buffered[..n]);
                    self.held = Some(at);
                }
                self.reader.consume(n);
                if !emitted {
                    return Ok(false);
                }
                continue;
            }
            self.buf.clear();
            let limit = MAX_LINE_BYTES as u64 + 1;
            let n = (&mut self.reader).take(limit).read_until(b'\n', &mut self.buf).map_err(&io)?;
            self.pos += n as u64;
            self.line += 1;
            cx.budget -= 1;
            cx.out.add_bytes(n);
            if self.buf.len() > MAX_LINE_BYTES && self.buf.last() != Some(&b'\n') {
                let mut rest = Vec::new();
                let skipped = self.reader.read_until(b'\n', &mut rest).unwrap_or(0);
                self.pos += skipped as u64;
                cx.out.add_bytes(skipped);
                let reason = format!("line longer than {MAX_LINE_BYTES} bytes");
                cx.dead_letter(track, at, reason, &self.buf);
                continue;
            }
            if !offer(&self.buf, at, track, cx) {
                self.held = Some(at);
                return Ok(false);
            }
        }
        Ok(false)
    }
}

/// Decodes `line`, read at `at`, and emits it or sends it to the dead letters; returns
/// `false` if it is held back instead (see [`Track::held`]).
#[inline]
fn offer<D: DeserializeOwned + Timestamped>(
    line: &[u8],
    at: Pos,
    track: &mut Track,
    cx: &mut Context<'_, '_, D>,
) -> bool {
    let text = trim_line(line);
    if text.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    match crate::format::json::decode::<D>(text) {
        Ok(record) => cx.record(track, at, record),
        Err(e) => {
            cx.dead_letter(track, at, e, text);
            true
        }
    }
}

/// Counts `\n` bytes in the first `len` bytes, leaving the reader anywhere.
fn count_newlines(reader: &mut BufReader<File>, len: u64) -> std::io::Result<u64> {
    reader.seek(SeekFrom::Start(0))?;
    let mut left = len;
    let mut count = 0;
    let mut chunk = vec![0; 1 << 20];
    while left > 0 {
        let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = reader.read(&mut chunk[..want])?;
        if n == 0 {
            break;
        }
        count += memchr::memchr_iter(b'\n', &chunk[..n]).count() as u64;
        left -= n as u64;
    }
    Ok(count)
}

fn trim_line(buf: &[u8]) -> &[u8] {
    let mut s = buf;
    while let Some((b'\n' | b'\r', rest)) = s.split_last() {
        s = rest;
    }
    s
}

/// Reads CSV records until the poll's budget is spent or the file ends; true when it ended.
fn read_csv<D: DeserializeOwned + Timestamped>(
    reader: &mut csv::Reader<File>,
    headers: &csv::ByteRecord,
    held: &mut Option<(Pos, csv::ByteRecord)>,
    track: &mut Track,
    cx: &mut Context<'_, '_, D>,
) -> Result<bool> {
    let headers = (!headers.is_empty()).then_some(headers);
    if let Some((at, record)) = held.take() {
        // Offered again; still held if the unit is still ahead. (It decoded before.)
        match record.deserialize::<D>(headers) {
            Ok(value) => {
                if !cx.record(track, at, value) {
                    *held = Some((at, record));
                    return Ok(false);
                }
            }
            Err(e) => cx.dead_letter(track, at, e.to_string(), &join_record(&record)),
        }
    }
    let mut record = csv::ByteRecord::new();
    while cx.more() {
        let start = Pos::from(reader.position());
        let read = reader.read_byte_record(&mut record);
        cx.out.add_bytes(
            usize::try_from(reader.position().byte() - start.byte).unwrap_or(usize::MAX),
        );
        cx.budget -= 1;
        match read {
            Ok(false) => return Ok(true),
            Ok(true) => {
                let at = record.position().map_or(start, Pos::from);
                match record.deserialize::<D>(headers) {
                    Ok(value) => {
                        if !cx.record(track, at, value) {
                            *held = Some((at, record));
                            return Ok(false);
                        }
                    }
                    Err(e) => cx.dead_letter(track, at, e.to_string(), &join_record(&record)),
                }
            }
            Err(e) if e.is_io_error() => {
                let source = std::io::Error::other(e);
                let path = PathBuf::from(&*track.path);
                return Err(
                    ConnectorError::Io { op: "cannot read", path, source }.at_source(cx.name)
                );
            }
            Err(e) => {
                // A malformed row (wrong field count, bad UTF-8): skip it and go on.
                let at = e.position().map_or(start, Pos::from);
                cx.dead_letter(track, at, e.to_string(), b"");
            }
        }
    }
    Ok(false)
}

fn join_record(record: &csv::ByteRecord) -> Vec<u8> {
    let mut raw = Vec::new();
    for (i, field) in record.iter().enumerate() {
        if i > 0 {
            raw.push(b',');
        }
        raw.extend_from_slice(field);
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::mpsc;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use serde::Deserialize;
    use timely::dataflow::operators::capture::{Capture, Event};
    use tributary_runtime::Flow;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        n: u64,
        ts: u64,
    }

    impl Timestamped for Row {
        fn event_time(&self) -> EventTime {
            self.ts
        }
    }

    /// Reads `config` with `workers` worker threads; returns the rows and the dead letters.
    fn read_all(config: &FileSourceConfig, workers: usize) -> (Vec<Row>, Vec<DeadLetter>) {
        let source = Arc::new(FileSource::<Row>::new("rows", config).expect("valid config"));
        let (rows_tx, rows_rx) = mpsc::channel();
        let (dead_tx, dead_rx) = mpsc::channel();
        let senders = Arc::new(Mutex::new((rows_tx, dead_tx)));
        timely::execute(timely::Config::process(workers), move |worker| {
            let (rows_tx, dead_tx) = senders.lock().expect("not poisoned").clone();
            let source = Arc::clone(&source);
            worker.dataflow::<u64, _, _>(move |scope| {
                let mut flow = Flow::new(scope);
                let (ok, err) = flow.source_with_errors(&*source);
                ok.capture_into(rows_tx);
                err.capture_into(dead_tx);
            });
        })
        .expect("timely runs")
        .join();
        (messages(rows_rx), messages(dead_rx))
    }

    fn messages<D>(rx: mpsc::Receiver<Event<u64, Vec<D>>>) -> Vec<D> {
        rx.try_iter()
            .flat_map(|e| match e {
                Event::Messages(_, data) => data,
                Event::Progress(_) => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_split_file_is_read_once_with_correct_line_numbers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rows.jsonl");
        let mut text = String::new();
        for n in 1..=500u64 {
            if n % 97 == 0 {
                text.push_str(&format!("broken line {n}\n"));
            } else {
                text.push_str(&format!("{{\"n\":{n},\"ts\":{}}}\n", n * 10));
            }
        }
        std::fs::write(&path, text).expect("write");
        let config = FileSourceConfig { split_size: 700, ..FileSourceConfig::new(&path) };
        for workers in [1, 3] {
            let (mut rows, dead) = read_all(&config, workers);
            rows.sort_by_key(|r| r.n);
            let expected: Vec<u64> = (1..=500).filter(|n| n % 97 != 0).collect();
            assert_eq!(rows.iter().map(|r| r.n).collect::<Vec<_>>(), expected, "{workers} workers");
            let mut lines: Vec<String> = dead.iter().map(|d| d.location.clone()).collect();
            lines.sort();
            let mut want: Vec<String> = [97, 194, 291, 388, 485]
                .iter()
                .map(|n| format!("{}:{n}", path.display()))
                .collect();
            want.sort();
            assert_eq!(lines, want, "{workers} workers");
            assert_eq!(
                dead[0].payload,
                format!("broken line {}", dead[0].location.rsplit(':').next().unwrap())
            );
        }
    }

    /// Lines that run past the reader's 1 MiB buffer are read whole, and a line that is not
    /// UTF-8 is a dead letter naming its line.
    #[test]
    fn lines_across_buffer_ends_and_bad_utf8_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rows.jsonl");
        let mut bytes = Vec::new();
        let rows = 50_000u64;
        for n in 1..=rows {
            if n == 777 {
                bytes.extend_from_slice(b"{\"n\":777,\"ts\":\"\xff\"}\n");
            } else {
                // Lines of 20 to 120 bytes, so that buffer ends fall inside lines.
                let pad = " ".repeat((n * 37 % 101) as usize);
                bytes.extend_from_slice(format!("{{\"n\":{n},{pad}\"ts\":{n}}}\n").as_bytes());
            }
        }
        assert!(bytes.len() > 3 << 20, "{} bytes", bytes.len());
        std::fs::write(&path, bytes).expect("write");
        let (mut got, dead) = read_all(&FileSourceConfig::new(&path), 1);
        got.sort_by_key(|r| r.n);
        let expected: Vec<Row> =
            (1..=rows).filter(|&n| n != 777).map(|n| Row { n, ts: n }).collect();
        assert!(got == expected, "{} rows read, {} expected", got.len(), expected.len());
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].location, format!("{}:777", path.display()));
        assert!(dead[0].reason.starts_with("not UTF-8: "), "{}", dead[0].reason);
    }

    #[test]
    fn a_directory_is_read_file_by_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.jsonl"), "{\"n\":1,\"ts\":5}\n").expect("write");
        std::fs::write(dir.path().join("b.csv"), "n,ts\n2,6\n3,x\n").expect("write");
        std::fs::write(dir.path().join(".hidden"), "ignored").expect("write");
        let (mut rows, dead) = read_all(&FileSourceConfig::new(dir.path()), 2);
        rows.sort_by_key(|r| r.n);
        assert_eq!(rows, vec![Row { n: 1, ts: 5 }, Row { n: 2, ts: 6 }]);
        assert_eq!(dead.len(), 1);
        assert!(dead[0].location.ends_with("b.csv:3"), "{dead:?}");
    }

    #[test]
    fn bad_paths_are_config_errors() {
        let e = FileSource::<Row>::new("rows", &FileSourceConfig::new("/nonexistent")).err();
        assert_eq!(e.expect("an error").key, "path");
        let empty = tempfile::tempdir().expect("temp dir");
        let e = FileSource::<Row>::new("rows", &FileSourceConfig::new(empty.path())).err();
        assert!(e.expect("an error").reason.contains("no input files"));
    }

    /// Everything about one oracle case: the input files, the workers of each run, and the
    /// seed of the poll sizes and kill moments.
    #[derive(Debug, Clone)]
    struct Case {
        /// `(event time jitter, bad line?)` of the JSON-lines file's lines, then the jitter of
        /// the CSV file's records: the `i`th's event time is `10 i` (CSV: `30 i`) plus it.
        json: Vec<(u64, bool)>,
        csv: Vec<u64>,
        split_size: u64,
        workers: Vec<usize>,
        seed: u64,
    }

    fn case() -> impl proptest::strategy::Strategy<Value = Case> {
        use proptest::prelude::*;
        // Event times grow along a file, out of order by up to 300 ms.
        let jitter = |n| proptest::collection::vec(0..300u64, 0..n);
        (
            proptest::collection::vec((0..300u64, proptest::bool::weighted(0.05)), 0..300),
            jitter(120),
            40..3_000u64,
            proptest::collection::vec(1..4usize, 1..5),
            any::<u64>(),
        )
            .prop_map(|(json, csv, split_size, workers, seed)| Case {
                json,
                csv,
                split_size,
                workers,
                seed,
            })
    }

    /// Writes the case's files; returns the config and every record's `n`.
    fn write_case(dir: &Path, case: &Case) -> (FileSourceConfig, Vec<u64>, Vec<String>) {
        let mut all = Vec::new();
        let mut bad = Vec::new();
        let mut json = String::new();
        for (i, &(jitter, broken)) in case.json.iter().enumerate() {
            let ts = i as u64 * 10 + jitter;
            if broken {
                json.push_str("{\"n\": oops\n");
                bad.push(format!("{}:{}", dir.join("a.jsonl").display(), i + 1));
            } else {
                json.push_str(&format!("{{\"n\":{i},\"ts\":{ts}}}\n"));
                all.push(i as u64);
            }
        }
        std::fs::write(dir.join("a.jsonl"), json).unwrap();
        let mut csv = String::from("n,ts\n");
        for (i, jitter) in case.csv.iter().enumerate() {
            let ts = i as u64 * 30 + jitter;
            csv.push_str(&format!("{},{ts}\n", 100_000 + i));
            all.push(100_000 + i as u64);
        }
        std::fs::write(dir.join("b.csv"), csv).unwrap();
        all.sort_unstable();
        bad.sort();
        let config = FileSourceConfig { split_size: case.split_size, ..FileSourceConfig::new(dir) };
        (config, all, bad)
    }

    /// Runs the case: every run but the last polls in random steps, takes a checkpoint at a
    /// cut above everything emitted so far (as the runtime does), polls on and is killed; the
    /// next run restores. Returns the records the state and the last run hold, and the dead
    /// letters' locations.
    fn run_case(config: &FileSourceConfig, case: &Case) -> (Vec<u64>, Vec<String>) {
        use tributary_runtime::source::poll_once;
        use tributary_runtime::Granularity;
        let granularity = Granularity::DEFAULT;
        let source = FileSource::<Row>::new("rows", config).unwrap();
        let mut rng = case.seed | 1;
        let mut random = move |below: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % below
        };
        let mut state: Vec<u64> = Vec::new();
        let mut letters = Vec::new();
        let mut restore: Option<(Cut, Vec<Vec<u8>>)> = None;
        for (run, &workers) in case.workers.iter().enumerate() {
            let last = run + 1 == case.workers.len();
            let mut readers: Vec<FileReader<Row>> = (0..workers)
                .map(|worker_index| {
                    let ctx = SourceContext {
                        name: "rows".into(),
                        worker_index,
                        workers,
                        checkpointed: true,
                    };
                    let mut reader = source.reader(&ctx).unwrap();
                    if let Some((cut, positions)) = &restore {
                        reader.restore(*cut, positions.clone()).unwrap();
                    }
                    reader
                })
                .collect();
            let mut done = vec![false; workers];
            let mut poll = |reader: &mut FileReader<Row>, cut: Option<Time>, room: u64| {
                let polled = poll_once(reader, room as usize + 1, granularity, cut).unwrap();
                letters.extend(polled.dead_letters.into_iter().map(|d| d.location));
                (polled.poll == Poll::Done, polled.records)
            };
            if last {
                for (w, reader) in readers.iter_mut().enumerate() {
                    while !done[w] {
                        let (finished, records) = poll(reader, None, random(60));
                        done[w] = finished;
                        state.extend(records.iter().map(|(_, r)| r.n));
                    }
                }
                break;
            }
            // Rounds of checkpoints, each cut above everything emitted so far (as the runtime
            // makes them). What a reader emits before its last checkpoint is in that
            // checkpoint if below its cut; what it emits after is lost in the kill.
            let mut latest = restore.as_ref().map_or(0, |(cut, _)| cut.time);
            let mut emitted = Vec::new();
            let mut positions = Vec::new();
            let mut cut = Cut { time: latest, granularity };
            for round in 0..=random(3) {
                for _ in 0..random(8) {
                    let w = random(workers as u64) as usize;
                    let (_, records) = poll(&mut readers[w], None, random(60));
                    latest = records.iter().map(|(t, _)| *t).fold(latest, u64::max);
                    emitted.extend(records);
                }
                cut = Cut { time: latest + 1, granularity };
                positions.clear();
                for reader in &mut readers {
                    for _ in 0..random(4) {
                        let (_, records) = poll(reader, Some(cut.time), random(60));
                        latest = records.iter().map(|(t, _)| *t).fold(latest, u64::max);
                        emitted.extend(records);
                    }
                    positions.push(reader.checkpoint(round + 1).unwrap());
                }
            }
            state.extend(emitted.iter().filter(|(t, _)| *t < cut.time).map(|(_, r)| r.n));
            for reader in &mut readers {
                for _ in 0..random(3) {
                    poll(reader, None, random(60)); // lost in the kill
                }
            }
            restore = Some((cut, positions));
        }
        state.sort_unstable();
        letters.sort();
        letters.dedup();
        (state, letters)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        /// Oracle: killed after random checkpoints and restored with random worker counts, the
        /// readers deliver every record exactly once (the checkpoint's or re-read) and every
        /// bad line to the dead letters.
        #[test]
        fn checkpoints_and_restores_deliver_every_record_once(case in case()) {
            let dir = tempfile::tempdir().unwrap();
            let (config, all, bad) = write_case(dir.path(), &case);
            let (got, letters) = run_case(&config, &case);
            proptest::prop_assert_eq!(got, all);
            proptest::prop_assert_eq!(letters, bad);
        }
    }

    /// A run restored from one checkpoint takes another before it reaches a range it must
    /// re-read: that range keeps the cut of the run that read it (a record between the two
    /// cuts is in neither checkpoint and must come again).
    #[test]
    fn a_range_restored_but_not_reached_keeps_the_cut_that_read_it() {
        use tributary_runtime::source::poll_once;
        use tributary_runtime::Granularity;
        let g = Granularity::DEFAULT;
        let dir = tempfile::tempdir().unwrap();
        for (name, first) in [("x.jsonl", 0), ("y.jsonl", 1000)] {
            let text: String =
                (0..100).map(|i| format!("{{\"n\":{},\"ts\":{}}}\n", first + i, i * 10)).collect();
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let source = FileSource::<Row>::new("rows", &FileSourceConfig::new(dir.path())).unwrap();
        let ctx = |worker_index, workers| SourceContext {
            name: "rows".into(),
            worker_index,
            workers,
            checkpointed: true,
        };
        let mut state = Vec::new();
        let mut keep = |records: Vec<(Time, Row)>, cut: Time| {
            state.extend(records.into_iter().filter(|(t, _)| *t < cut).map(|(_, r)| r.n));
        };
        // Run 1, two workers: half of each file, a checkpoint cut at 300 ms pending.
        let mut positions = Vec::new();
        for w in 0..2 {
            let mut reader = source.reader(&ctx(w, 2)).unwrap();
            keep(poll_once(&mut reader, 50, g, Some(300)).unwrap().records, 300);
            positions.push(reader.checkpoint(1).unwrap());
        }
        // Run 2, one worker: re-reads the rest of x, checkpoints at 1000 ms before reaching y.
        let cut = Cut { time: 300, granularity: g };
        let mut reader = source.reader(&ctx(0, 1)).unwrap();
        reader.restore(cut, positions).unwrap();
        let polled = poll_once(&mut reader, 70, g, Some(1000)).unwrap();
        assert!(polled.records.iter().all(|(_, r)| r.n < 1000), "still in x");
        keep(polled.records, 1000);
        let positions = vec![reader.checkpoint(2).unwrap()];
        // Run 3 reads everything that is not in checkpoint 2.
        let mut reader = source.reader(&ctx(0, 1)).unwrap();
        reader.restore(Cut { time: 1000, granularity: g }, positions).unwrap();
        loop {
            let polled = poll_once(&mut reader, 64, g, None).unwrap();
            keep(polled.records, Time::MAX);
            if polled.poll == Poll::Done {
                break;
            }
        }
        state.sort_unstable();
        let all: Vec<u64> = (0..100).chain(1000..1100).collect();
        assert_eq!(state, all);
    }

    #[test]
    fn a_changed_input_fails_the_restore_naming_the_file() {
        use tributary_runtime::source::poll_once;
        use tributary_runtime::Granularity;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        let text: String = (0..100).map(|n| format!("{{\"n\":{n},\"ts\":{n}}}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let config = FileSourceConfig::new(&path);
        let ctx =
            SourceContext { name: "rows".into(), worker_index: 0, workers: 1, checkpointed: true };
        let source = FileSource::<Row>::new("rows", &config).unwrap();
        let mut reader = source.reader(&ctx).unwrap();
        poll_once(&mut reader, 50, Granularity::DEFAULT, None).unwrap();
        let positions = vec![reader.checkpoint(1).unwrap()];
        let cut = Cut { time: 1_000, granularity: Granularity::DEFAULT };

        std::fs::write(&path, &text[..100]).unwrap();
        let mut reader = source.reader(&ctx).unwrap();
        reader.restore(cut, positions.clone()).unwrap();
        let error = poll_once(&mut reader, 50, Granularity::DEFAULT, None).unwrap_err();
        assert!(
            error.to_string().contains("rows.jsonl") && error.to_string().contains("changed"),
            "{error}"
        );

        let other = dir.path().join("other.jsonl");
        std::fs::write(&other, &text).unwrap();
        let source = FileSource::<Row>::new("rows", &FileSourceConfig::new(&other)).unwrap();
        let mut reader = source.reader(&ctx).unwrap();
        let error = reader.restore(cut, positions).unwrap_err().to_string();
        assert!(error.contains("rows.jsonl") && error.contains("no longer listed"), "{error}");
    }

    #[test]
    fn a_rate_spreads_the_lines_over_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        let text: String = (0..40).map(|n| format!("{{\"n\":{n},\"ts\":{n}}}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let config = FileSourceConfig { rate: Some(200.0), ..FileSourceConfig::new(&path) };
        let started = Instant::now();
        let (rows, _) = read_all(&config, 2);
        assert_eq!(rows.len(), 40);
        assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
        let bad = FileSourceConfig { rate: Some(0.0), ..FileSourceConfig::new(&path) };
        let error = FileSource::<Row>::new("rows", &bad).err().expect("refused");
        assert_eq!(error.key, "rate");
    }
}
