//! The file source: JSON lines or CSV, one file or a directory, split across workers.
//!
//! Files are listed once, before the workers start. Each file is a unit of work; JSON-lines
//! files larger than `split_size` (default [`SPLIT_BYTES`]) are cut into byte ranges (a line
//! belongs to the range it starts in). Units go round-robin to workers. A line that cannot be decoded becomes a dead
//! letter naming `file:line`; the good lines flow on.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tributary_runtime::time::millis;
use tributary_runtime::{
    ConfigError, Data, DeadLetter, Emitter, Error, EventTime, HumanDuration, Poll, Result, Source,
    SourceContext, SourceReader, Timestamped,
};

use super::Format;

/// JSON-lines files above this size are read by several workers in parallel.
pub const SPLIT_BYTES: u64 = 64 << 20;
/// Longest line accepted; longer lines become dead letters.
pub const MAX_LINE_BYTES: usize = 16 << 20;

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
    units: Vec<Unit>,
    lateness: u64,
    header: bool,
    marker: PhantomData<fn() -> D>,
}

impl<D> FileSource<D> {
    /// Lists the input files and checks the settings; keys are relative to the source's table.
    pub fn new(name: &str, config: &FileSourceConfig) -> Result<Self, ConfigError> {
        let path = &config.path;
        if config.split_size == 0 {
            return Err(ConfigError::new("split_size", "must be at least 1"));
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
            units,
            lateness: config.max_out_of_orderness.map_or(0, |d| millis(d.0)),
            header: config.header,
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
        let mine = self
            .units
            .iter()
            .enumerate()
            .filter(|(i, _)| i % ctx.workers == ctx.worker_index)
            .map(|(_, u)| u.clone())
            .rev()
            .collect();
        Ok(FileReader {
            name: self.name.clone(),
            files: Arc::clone(&self.files),
            todo: mine,
            open: None,
            lateness: self.lateness,
            header: self.header,
            max_seen: None,
            marker: PhantomData,
        })
    }
}

/// The unit being read.
enum Open {
    Lines { path: Arc<str>, reader: BufReader<File>, pos: u64, end: u64, line: u64, buf: Vec<u8> },
    Csv { path: Arc<str>, reader: Box<csv::Reader<File>>, headers: csv::ByteRecord },
}

/// One worker's share of a file source.
pub struct FileReader<D> {
    name: String,
    files: Arc<[(PathBuf, Format)]>,
    todo: Vec<Unit>,
    open: Option<Open>,
    lateness: u64,
    header: bool,
    max_seen: Option<EventTime>,
    marker: PhantomData<fn() -> D>,
}

impl<D: Data + DeserializeOwned + Timestamped> SourceReader for FileReader<D> {
    type Item = D;

    fn poll(&mut self, out: &mut Emitter<'_, D>) -> Result<Poll> {
        while !out.is_full() {
            if self.open.is_none() {
                let Some(unit) = self.todo.pop() else { return Ok(Poll::Done) };
                self.open = Some(self.open_unit(&unit)?);
            }
            let finished = match self.open.as_mut().expect("opened above") {
                Open::Lines { path, reader, pos, end, line, buf } => read_lines(
                    &self.name,
                    path,
                    reader,
                    pos,
                    *end,
                    line,
                    buf,
                    out,
                    &mut self.max_seen,
                )?,
                Open::Csv { path, reader, headers } => {
                    read_csv(&self.name, path, reader, headers, out, &mut self.max_seen)?
                }
            };
            if finished {
                self.open = None;
            }
        }
        if let Some(max) = self.max_seen {
            out.advance_watermark(max.saturating_sub(self.lateness));
        }
        Ok(Poll::Ready)
    }
}

impl<D> FileReader<D> {
    fn open_unit(&self, unit: &Unit) -> Result<Open> {
        let (path, format) = &self.files[unit.file];
        let io = |op, source| Error::Io { op, path: path.clone(), source };
        let file = File::open(path).map_err(|e| io("cannot open", e))?;
        let shown: Arc<str> = path.display().to_string().into();
        if *format == Format::Csv {
            let reader = csv::ReaderBuilder::new()
                .has_headers(self.header)
                .flexible(false)
                .from_reader(file);
            let mut reader = Box::new(reader);
            let headers = if self.header {
                reader
                    .byte_headers()
                    .map_err(|e| io("cannot read the CSV header of", e.into()))?
                    .clone()
            } else {
                csv::ByteRecord::new()
            };
            return Ok(Open::Csv { path: shown, reader, headers });
        }
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = 1;
        let mut pos = 0;
        if unit.start > 0 {
            // Count the lines before the range, then skip the line that straddles its start.
            line +=
                count_newlines(&mut reader, unit.start - 1).map_err(|e| io("cannot read", e))?;
            reader.seek(SeekFrom::Start(unit.start - 1)).map_err(|e| io("cannot seek in", e))?;
            let mut skipped = Vec::new();
            let n = reader.read_until(b'\n', &mut skipped).map_err(|e| io("cannot read", e))?;
            pos = unit.start - 1 + n as u64;
            line += 1;
        }
        Ok(Open::Lines { path: shown, reader, pos, end: unit.end, line, buf: Vec::new() })
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

/// Emits an event, tracking the largest event time seen for the watermark.
#[inline]
fn emit<D: Timestamped>(out: &mut Emitter<'_, D>, max_seen: &mut Option<EventTime>, record: D) {
    let t = record.event_time();
    *max_seen = Some(max_seen.map_or(t, |m| m.max(t)));
    out.emit(t, record);
}

/// Reads JSON lines until the emitter is full or the range ends; true when it ended.
#[allow(clippy::too_many_arguments)]
fn read_lines<D: DeserializeOwned + Timestamped>(
    name: &str,
    path: &Arc<str>,
    reader: &mut BufReader<File>,
    pos: &mut u64,
    end: u64,
    line: &mut u64,
    buf: &mut Vec<u8>,
    out: &mut Emitter<'_, D>,
    max_seen: &mut Option<EventTime>,
) -> Result<bool> {
    while !out.is_full() {
        if *pos >= end {
            return Ok(true);
        }
        buf.clear();
        let limit = MAX_LINE_BYTES as u64 + 1;
        let n = (&mut *reader).take(limit).read_until(b'\n', buf).map_err(|source| Error::Io {
            op: "cannot read",
            path: PathBuf::from(&**path),
            source,
        })?;
        if n == 0 {
            return Ok(true);
        }
        *pos += n as u64;
        out.add_bytes(n);
        let number = *line;
        *line += 1;
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            let mut rest = Vec::new();
            let skipped = reader.read_until(b'\n', &mut rest).unwrap_or(0);
            *pos += skipped as u64;
            out.add_bytes(skipped);
            out.dead_letter(DeadLetter::new(
                name,
                format!("{path}:{number}"),
                format!("line longer than {MAX_LINE_BYTES} bytes"),
                buf,
            ));
            continue;
        }
        let text = trim_line(buf);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<D>(text) {
            Ok(record) => emit(out, max_seen, record),
            Err(e) => out.dead_letter(DeadLetter::new(
                name,
                format!("{path}:{number}"),
                e.to_string(),
                text,
            )),
        }
    }
    Ok(false)
}

fn trim_line(buf: &[u8]) -> &[u8] {
    let mut s = buf;
    while let Some((b'\n' | b'\r', rest)) = s.split_last() {
        s = rest;
    }
    s
}

/// Reads CSV records until the emitter is full or the file ends; true when it ended.
fn read_csv<D: DeserializeOwned + Timestamped>(
    name: &str,
    path: &Arc<str>,
    reader: &mut csv::Reader<File>,
    headers: &csv::ByteRecord,
    out: &mut Emitter<'_, D>,
    max_seen: &mut Option<EventTime>,
) -> Result<bool> {
    let headers = (!headers.is_empty()).then_some(headers);
    let mut record = csv::ByteRecord::new();
    while !out.is_full() {
        let start = reader.position().byte();
        let read = reader.read_byte_record(&mut record);
        out.add_bytes(usize::try_from(reader.position().byte() - start).unwrap_or(usize::MAX));
        match read {
            Ok(false) => return Ok(true),
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                match record.deserialize::<D>(headers) {
                    Ok(value) => emit(out, max_seen, value),
                    Err(e) => out.dead_letter(DeadLetter::new(
                        name,
                        format!("{path}:{line}"),
                        e.to_string(),
                        &join_record(&record),
                    )),
                }
            }
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                return Err(Error::Source { source_name: name.to_owned(), reason: e.to_string() });
            }
            Err(e) => {
                // A malformed row (wrong field count, bad UTF-8): skip it and go on.
                let line = e.position().map_or(0, |p| p.line());
                out.dead_letter(DeadLetter::new(
                    name,
                    format!("{path}:{line}"),
                    e.to_string(),
                    b"",
                ));
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
    use std::sync::mpsc;
    use std::sync::Mutex;

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
}
