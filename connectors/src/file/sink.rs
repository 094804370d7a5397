//! The file sink: JSON-lines or CSV files in an output directory.
//!
//! Without checkpoints, worker `w` writes `part-<w>.<ext>` in place (an earlier file of that
//! name is replaced). With checkpoints, every worker writes one file per checkpoint,
//! `part-<w>-<n>.<ext>` (`n` six digits: the number of the checkpoint its records belong to,
//! or a later one), hidden as `.part-<w>-<n>.<ext>.inprogress` until that checkpoint is
//! complete everywhere, then published by rename (a two-phase commit, as for Parquet; see
//! [`crate::store`]). A checkpoint without records leaves no file. A restart publishes the
//! restored checkpoint's files (again) and first removes the hidden files a crashed run left
//! behind: those numbered above the restored checkpoint can hold no committed output.

use std::io::{self, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tributary_runtime::checkpoint::{decode, encode};
use tributary_runtime::{ConfigError, Error, Result, Sink, SinkContext, SinkWriter, Time};

use super::Format;
use crate::error::ConnectorError;
use crate::store::{FileStore, LocalFile, LocalStore, PendingFile};

/// Settings of a file sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The output directory (created if missing). Worker `w` writes `part-<w>.<ext>`, or with
    /// checkpoints one `part-<w>-<checkpoint>.<ext>` per checkpoint.
    pub path: PathBuf,
    /// The record format.
    #[serde(default)]
    pub format: Format,
}

/// Writes records as JSON lines or CSV, one file per worker (and checkpoint).
pub struct FileSink<D> {
    name: String,
    config: FileSinkConfig,
    marker: PhantomData<fn(D)>,
}

impl<D> FileSink<D> {
    /// Checks that the directory can be created; keys are relative to the sink's table.
    pub fn new(name: &str, config: &FileSinkConfig) -> Result<Self, ConfigError> {
        config.format.check_text("format")?;
        std::fs::create_dir_all(&config.path).map_err(|e| {
            ConfigError::new("path", format!("cannot create `{}`: {e}", config.path.display()))
        })?;
        Ok(FileSink { name: name.to_owned(), config: config.clone(), marker: PhantomData })
    }
}

impl<D: Serialize + 'static> Sink<D> for FileSink<D> {
    type Writer = FileWriter<D>;

    fn name(&self) -> &str {
        &self.name
    }

    fn writer(&self, ctx: &SinkContext) -> Result<FileWriter<D>> {
        let format = self.config.format;
        let dir = &self.config.path;
        let mut writer = FileWriter {
            name: self.name.clone(),
            format,
            worker: ctx.worker_index,
            path: dir.join(format!("part-{:04}.{}", ctx.worker_index, format.extension())),
            encoder: None,
            staged: None,
            store: ctx.checkpointed.then(|| LocalStore::new(dir)),
            next: ctx.first_checkpoint,
            prepared: Vec::new(),
            bytes: ctx.bytes_counter(),
            counted: 0,
            marker: PhantomData,
        };
        if ctx.checkpointed {
            writer.clear_orphans(dir, ctx)?;
        } else {
            let file =
                LocalFile::create(&writer.path).map_err(|e| writer.error("cannot create", e))?;
            writer.encoder = Some(Encoder::new(format, file));
        }
        Ok(writer)
    }
}

/// A file's name in checkpointed mode, without the hidden file's decoration.
fn part_name(worker: usize, checkpoint: u64, format: Format) -> String {
    format!("part-{worker:04}-{checkpoint:06}.{}", format.extension())
}

/// The worker and checkpoint of a checkpointed file name, published or hidden.
fn parse_part_name(name: &str, format: Format) -> Option<(usize, u64)> {
    let name = name.strip_prefix('.').and_then(|n| n.strip_suffix(".inprogress")).unwrap_or(name);
    let stem = name.strip_prefix("part-")?.strip_suffix(format.extension())?.strip_suffix('.')?;
    let (worker, checkpoint) = stem.split_once('-')?;
    Some((worker.parse().ok()?, checkpoint.parse().ok()?))
}

enum Encoder {
    Json(LocalFile),
    Csv(Box<csv::Writer<LocalFile>>),
}

impl Encoder {
    fn new(format: Format, file: LocalFile) -> Encoder {
        match format {
            // Avro and Protobuf are refused by `FileSink::new`.
            Format::Json | Format::Avro | Format::Protobuf => Encoder::Json(file),
            Format::Csv => Encoder::Csv(Box::new(csv::Writer::from_writer(file))),
        }
    }

    /// Writes `records`; a record the format cannot hold is an `InvalidData` error.
    fn write<D: Serialize>(&mut self, records: &[D]) -> io::Result<()> {
        match self {
            Encoder::Json(out) => records.iter().try_for_each(|r| {
                serde_json::to_writer(&mut *out, r)?;
                out.write_all(b"\n")
            }),
            Encoder::Csv(out) => records.iter().try_for_each(|r| {
                out.serialize(r).map_err(|e| {
                    let io = e.is_io_error();
                    let kind = if io { io::ErrorKind::Other } else { io::ErrorKind::InvalidData };
                    io::Error::new(kind, e)
                })
            }),
        }
    }

    /// Flushes into the file; returns the bytes written to it so far.
    fn flush(&mut self) -> std::io::Result<u64> {
        match self {
            Encoder::Json(out) => out.flush().map(|()| out.written()),
            Encoder::Csv(out) => out.flush().map(|()| out.get_ref().written()),
        }
    }

    /// The file, with everything encoded in it.
    fn into_file(self) -> std::io::Result<LocalFile> {
        match self {
            Encoder::Json(out) => Ok(out),
            Encoder::Csv(out) => out.into_inner().map_err(|e| e.into_error()),
        }
    }
}

/// One worker's output files.
pub struct FileWriter<D> {
    name: String,
    format: Format,
    worker: usize,
    /// The file being written (for messages).
    path: PathBuf,
    encoder: Option<Encoder>,
    /// With checkpoints: the hidden file being written.
    staged: Option<PendingFile>,
    /// With checkpoints: where files wait for their checkpoint.
    store: Option<LocalStore>,
    /// With checkpoints: the number of the next file (one more than the last prepared
    /// checkpoint, or the run's first checkpoint).
    next: u64,
    /// Files prepared for a checkpoint (its number) and not yet published.
    prepared: Vec<(u64, PendingFile)>,
    bytes: metrics::Counter,
    /// Bytes of the current file already added to `bytes`.
    counted: u64,
    marker: PhantomData<fn(D)>,
}

impl<D> FileWriter<D> {
    /// The runtime's error for `op` failing on the current file.
    fn error(&self, op: &'static str, source: io::Error) -> Error {
        self.error_at(op, &self.path, source)
    }

    /// The runtime's error for `op` failing on `path`.
    fn error_at(&self, op: &'static str, path: &Path, source: io::Error) -> Error {
        ConnectorError::Io { op, path: path.to_owned(), source }.at_sink(&self.name)
    }

    /// Removes the hidden files that runs before this one left for checkpoints that never
    /// completed (numbered from this run's first checkpoint on), of the worker indexes this
    /// writer stands for (its own, and those beyond the job's workers that map to it), and
    /// refuses to start when published files from there on exist: they are another run's.
    fn clear_orphans(&mut self, dir: &Path, ctx: &SinkContext) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| self.error_at("cannot list", dir, e))?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((worker, checkpoint)) = parse_part_name(&name, self.format) else { continue };
            if worker % ctx.workers != ctx.worker_index || checkpoint < ctx.first_checkpoint {
                continue;
            }
            if !name.starts_with('.') {
                return Err(ConnectorError::Restore(format!(
                    "`{}` holds output of another run: a run restored from checkpoint {} \
                     writes files numbered from {} on (move the files or write elsewhere)",
                    entry.path().display(),
                    ctx.first_checkpoint.saturating_sub(1),
                    ctx.first_checkpoint,
                ))
                .at_sink(&self.name));
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => return Err(self.error_at("cannot remove", &entry.path(), e)),
            }
        }
        if removed > 0 {
            tracing::info!(sink = %self.name, worker = self.worker, files = removed,
                "hidden files of checkpoints that never completed removed");
        }
        Ok(())
    }

    /// Counts the bytes flushed into the current file since the last call.
    fn count(&mut self, written: u64) {
        self.bytes.increment(written.saturating_sub(self.counted));
        self.counted = written;
    }

    /// Finishes the hidden file being written, if any, into the prepared list.
    fn finish(&mut self, checkpoint: u64) -> Result<()> {
        let (Some(encoder), Some(staged), Some(store)) =
            (self.encoder.take(), self.staged.take(), self.store.as_ref())
        else {
            return Ok(());
        };
        let finished = encoder.into_file().and_then(|mut file| {
            store.finish(&mut file)?;
            Ok(file.written())
        });
        match finished {
            Ok(written) => {
                self.count(written);
                self.counted = 0;
                self.prepared.push((checkpoint, staged));
                Ok(())
            }
            Err(e) => {
                store.discard(&staged);
                Err(self.error("cannot finish", e))
            }
        }
    }

    fn publish(&self, file: &PendingFile) -> Result<()> {
        let store = self.store.as_ref().expect("only checkpointed writers publish");
        let path = PathBuf::from(store.describe(&file.path));
        store.publish(file).map_err(|e| self.error_at("cannot publish", &path, e))
    }
}

impl<D: Serialize + 'static> SinkWriter<D> for FileWriter<D> {
    fn write(&mut self, records: &mut Vec<D>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let (None, Some(store)) = (&self.encoder, &self.store) {
            let name = part_name(self.worker, self.next, self.format);
            self.path = PathBuf::from(store.describe(&name));
            let (file, staged) = store.create(&name).map_err(|e| self.error("cannot create", e))?;
            self.encoder = Some(Encoder::new(self.format, file));
            self.staged = Some(staged);
        }
        let result = self.encoder.as_mut().map_or(Ok(()), |e| e.write(records));
        records.clear();
        result.map_err(|e| self.error("cannot write", e))
    }

    fn progress(&mut self, frontier: Option<Time>) -> Result<()> {
        let flushed = self.encoder.as_mut().map(Encoder::flush).transpose();
        match flushed {
            Ok(Some(written)) => self.count(written),
            Ok(None) => {}
            Err(e) => return Err(self.error("cannot write", e)),
        }
        if frontier.is_none() && self.store.is_none() {
            self.encoder = None;
        }
        Ok(())
    }

    /// Finishes the current file, hidden, and lists every file not yet published.
    fn prepare(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        if self.store.is_none() {
            return encode(&Vec::<PendingFile>::new());
        }
        self.finish(checkpoint)?;
        self.next = self.next.max(checkpoint + 1);
        let pending: Vec<&PendingFile> = self.prepared.iter().map(|(_, file)| file).collect();
        encode(&pending)
    }

    fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.prepared).into_iter().partition(|(id, _)| *id <= checkpoint);
        self.prepared = later;
        due.iter().try_for_each(|(_, file)| self.publish(file))
    }

    /// Publishes the files of the checkpoint the job restarts from (again: publishing is
    /// idempotent, and several workers may publish the same files after rescaling).
    fn restore(&mut self, prepared: Vec<Vec<u8>>) -> Result<()> {
        for state in prepared {
            let files: Vec<PendingFile> = decode(&state)?;
            for file in &files {
                self.publish(file)?;
            }
        }
        Ok(())
    }

    fn discard(&mut self) {
        let Some(store) = self.store.as_ref() else { return };
        self.encoder = None;
        let open = self.staged.take();
        for file in open.iter().chain(self.prepared.iter().map(|(_, file)| file)) {
            store.discard(file);
        }
        self.prepared.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize)]
    struct Row {
        n: u64,
    }

    fn context(workers: usize, worker: usize, first_checkpoint: u64) -> SinkContext {
        SinkContext {
            name: "out".into(),
            worker_index: worker,
            workers,
            checkpointed: true,
            job: "job".into(),
            first_checkpoint,
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn rows(range: std::ops::Range<u64>) -> Vec<Row> {
        range.map(|n| Row { n }).collect()
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(part_name(3, 12, Format::Csv), "part-0003-000012.csv");
        assert_eq!(parse_part_name("part-0003-000012.csv", Format::Csv), Some((3, 12)));
        assert_eq!(parse_part_name(".part-0003-000012.csv.inprogress", Format::Csv), Some((3, 12)));
        assert_eq!(parse_part_name("part-0003.csv", Format::Csv), None);
        assert_eq!(parse_part_name("part-0003-000012.jsonl", Format::Csv), None);
    }

    #[test]
    fn files_appear_when_their_checkpoint_completes() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig { path: dir.path().into(), format: Format::Json };
        let sink = FileSink::<Row>::new("out", &config).unwrap();
        let mut writer = sink.writer(&context(1, 0, 1)).unwrap();
        writer.write(&mut rows(0..3)).unwrap();
        writer.progress(Some(10)).unwrap();
        assert!(listing(dir.path()).iter().all(|n| n.starts_with('.')), "hidden while written");
        writer.prepare(1).unwrap();
        writer.prepare(2).unwrap(); // nothing written: no file
        writer.write(&mut rows(3..5)).unwrap();
        let state = writer.prepare(3).unwrap();
        let listed: Vec<PendingFile> = decode(&state).unwrap();
        assert_eq!(listed.len(), 2, "both files await their commit");
        writer.commit(1).unwrap();
        assert_eq!(
            listing(dir.path()),
            [".part-0000-000003.jsonl.inprogress", "part-0000-000001.jsonl"]
        );
        writer.commit(3).unwrap();
        assert_eq!(listing(dir.path()), ["part-0000-000001.jsonl", "part-0000-000003.jsonl"]);
        let text = std::fs::read_to_string(dir.path().join("part-0000-000003.jsonl")).unwrap();
        assert_eq!(text, "{\"n\":3}\n{\"n\":4}\n");
    }

    /// A crashed run's hidden files are removed by the restart (the ones after the restored
    /// checkpoint, of the worker indexes it takes over); the restored checkpoint's are
    /// published.
    #[test]
    fn a_restart_publishes_the_restored_files_and_removes_the_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig { path: dir.path().into(), format: Format::Csv };
        let sink = FileSink::<Row>::new("out", &config).unwrap();
        // A run with 2 workers: checkpoint 1 completes but is not yet published, 2 is prepared
        // and the run dies while writing for 3.
        let mut states = Vec::new();
        for worker in 0..2 {
            let mut writer = sink.writer(&context(2, worker, 1)).unwrap();
            writer.write(&mut rows(0..2)).unwrap();
            states.push(writer.prepare(1).unwrap());
            writer.write(&mut rows(2..4)).unwrap();
            writer.prepare(2).unwrap();
            writer.write(&mut rows(4..6)).unwrap();
            writer.progress(Some(5)).unwrap();
            std::mem::forget(writer); // killed
        }
        assert_eq!(listing(dir.path()).len(), 6);
        // Restored from checkpoint 1 with one worker.
        let mut writer = sink.writer(&context(1, 0, 2)).unwrap();
        writer.restore(states).unwrap();
        assert_eq!(listing(dir.path()), ["part-0000-000001.csv", "part-0001-000001.csv"]);
        writer.write(&mut rows(2..6)).unwrap();
        writer.prepare(2).unwrap();
        writer.commit(2).unwrap();
        let text = std::fs::read_to_string(dir.path().join("part-0000-000002.csv")).unwrap();
        assert_eq!(text, "n\n2\n3\n4\n5\n");
        // A fresh start over that output is refused, naming a file.
        let error = sink.writer(&context(1, 0, 1)).err().expect("refused");
        assert!(!error.is_retryable(), "another run will find the same files");
        let error = error.to_string();
        assert!(error.contains("part-0000-00000") && error.contains("another run"), "{error}");
    }

    #[test]
    fn without_checkpoints_one_file_per_worker_is_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig { path: dir.path().into(), format: Format::Json };
        let sink = FileSink::<Row>::new("out", &config).unwrap();
        let ctx = SinkContext { checkpointed: false, ..context(1, 0, 0) };
        let mut writer = sink.writer(&ctx).unwrap();
        writer.write(&mut rows(0..2)).unwrap();
        writer.progress(None).unwrap();
        let text = std::fs::read_to_string(dir.path().join("part-0000.jsonl")).unwrap();
        assert_eq!(text, "{\"n\":0}\n{\"n\":1}\n");
    }
}
