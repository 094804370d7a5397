//! The Parquet sink: typed, rolling, Hive-partitioned files that appear atomically.
//!
//! Records are buffered per worker and turned into Arrow record batches `batch_rows` at a
//! time (the schema is traced from the record type at start-up, see [`ParquetSinkConfig`] for
//! timestamp columns), split by partition folder, and appended to one open file per
//! partition. A file is finished when it reaches `roll.max_rows`, `roll.max_bytes` or
//! `roll.max_age`, when more than `max_open_files` partitions are open, or when the input
//! ends; only then is it published (see [`crate::store`]), so a reader never sees a partial file.
//!
//! Files are named `part-<run>-<worker>-<sequence>.parquet`: `<run>` is the UTC time the
//! process started the job, so neither workers nor restarts collide.
//!
//! If the job fails or is killed, the files still open are never published: they stay hidden
//! as `.part-….parquet.inprogress` (a failing writer removes its own).

mod config;
mod partition;
mod schema;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::{concat_batches, take_record_batch};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tributary_runtime::checkpoint::{decode, encode};
use tributary_runtime::metrics as m;
use tributary_runtime::{ConfigError, Error, Result, Sink, SinkContext, SinkWriter, Time};

use crate::error::ConnectorError;
pub use crate::store::{FileStore, LocalStore, PendingFile};
pub use config::{Compression, ParquetSinkConfig, Rolling};
use partition::Partitioner;
use schema::RecordSchema;

/// Writes records as Parquet files into a [`FileStore`] (a local directory by default).
pub struct ParquetSink<D, S = LocalStore> {
    name: String,
    config: ParquetSinkConfig,
    schema: RecordSchema,
    partitioner: Option<Partitioner>,
    properties: WriterProperties,
    store: Arc<S>,
    run: String,
    marker: PhantomData<fn(D)>,
}

impl<D: Serialize + DeserializeOwned> ParquetSink<D> {
    /// A sink writing into the local directory `config.path`. Checks the config against the
    /// record type and that the directory can be created; keys are relative to the sink's
    /// table.
    pub fn new(name: &str, config: &ParquetSinkConfig) -> Result<Self, ConfigError> {
        std::fs::create_dir_all(&config.path).map_err(|e| {
            ConfigError::new("path", format!("cannot create `{}`: {e}", config.path.display()))
        })?;
        Self::with_store(name, config, LocalStore::new(&config.path))
    }
}

impl<D: Serialize + DeserializeOwned, S: FileStore> ParquetSink<D, S> {
    /// A sink writing into `store` (`config.path` is then only used in messages).
    pub fn with_store(
        name: &str,
        config: &ParquetSinkConfig,
        store: S,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let schema = RecordSchema::of::<D>(&config.timestamp_columns)?;
        let partitioner = match &config.partition_by {
            Some(template) => Some(Partitioner::parse(template, schema.schema())?),
            None => None,
        };
        let codec = match config.compression {
            Compression::Zstd => Codec::ZSTD(
                ZstdLevel::try_new(config.zstd_level)
                    .map_err(|e| ConfigError::new("zstd_level", e.to_string()))?,
            ),
            Compression::Snappy => Codec::SNAPPY,
            Compression::Lz4 => Codec::LZ4_RAW,
            Compression::None => Codec::UNCOMPRESSED,
        };
        let statistics =
            if config.statistics { EnabledStatistics::Page } else { EnabledStatistics::None };
        let properties = WriterProperties::builder()
            .set_compression(codec)
            .set_max_row_group_row_count(Some(config.row_group_rows))
            .set_max_row_group_bytes(Some(config.row_group_bytes))
            .set_data_page_size_limit(config.page_bytes)
            .set_dictionary_enabled(config.dictionary)
            .set_statistics_enabled(statistics)
            .set_created_by(format!("tributary {}", env!("CARGO_PKG_VERSION")))
            .build();
        let run = chrono::DateTime::from_timestamp_millis(
            tributary_runtime::time::now_event_time() as i64,
        )
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%S%3fZ")
        .to_string();
        Ok(ParquetSink {
            name: name.to_owned(),
            config: config.clone(),
            schema,
            partitioner,
            properties,
            store: Arc::new(store),
            run,
            marker: PhantomData,
        })
    }
}

impl<D: Serialize + 'static, S: FileStore> Sink<D> for ParquetSink<D, S> {
    type Writer = ParquetWriter<D, S>;

    fn name(&self) -> &str {
        &self.name
    }

    fn writer(&self, ctx: &SinkContext) -> Result<ParquetWriter<D, S>> {
        let labels = [(m::SINK, self.name.clone()), (m::WORKER, ctx.worker_index.to_string())];
        Ok(ParquetWriter {
            name: self.name.clone(),
            schema: self.schema.clone(),
            partitioner: self.partitioner.clone(),
            properties: self.properties.clone(),
            store: self.store.clone(),
            rolling: self.config.roll.clone(),
            batch_rows: self.config.batch_rows,
            max_open_files: self.config.max_open_files,
            prefix: format!("part-{}-{:04}", self.run, ctx.worker_index),
            sequence: 0,
            buffer: Vec::new(),
            open: HashMap::new(),
            checkpointed: ctx.checkpointed,
            unprepared: Vec::new(),
            prepared: Vec::new(),
            tick: 0,
            files: metrics::counter!(m::SINK_FILES, &labels),
            bytes: ctx.bytes_counter(),
        })
    }
}

/// One worker's Parquet files: the record buffer and one open file per partition.
pub struct ParquetWriter<D, S: FileStore> {
    name: String,
    schema: RecordSchema,
    partitioner: Option<Partitioner>,
    properties: WriterProperties,
    store: Arc<S>,
    rolling: Rolling,
    batch_rows: usize,
    max_open_files: usize,
    prefix: String,
    sequence: u64,
    buffer: Vec<D>,
    open: HashMap<String, OpenFile<S::Writer>>,
    /// With checkpoints, finished files wait for their checkpoint to complete.
    checkpointed: bool,
    /// Finished files not yet part of a checkpoint.
    unprepared: Vec<(PendingFile, u64)>,
    /// Finished files of checkpoints not yet known complete: `(checkpoint, file, bytes)`.
    prepared: Vec<(u64, PendingFile, u64)>,
    tick: u64,
    files: metrics::Counter,
    bytes: metrics::Counter,
}

struct OpenFile<W: std::io::Write + Send> {
    writer: ArrowWriter<W>,
    pending: PendingFile,
    /// Small slices of this partition not yet handed to the writer (coalesced first, since
    /// each `ArrowWriter::write` has a cost per column).
    unwritten: Vec<RecordBatch>,
    unwritten_rows: usize,
    rows: u64,
    opened: Instant,
    last_write: u64,
}

impl<D: Serialize, S: FileStore> ParquetWriter<D, S> {
    /// The runtime's error for this sink failing with `error`.
    fn error(&self, error: ConnectorError) -> Error {
        error.at_sink(&self.name)
    }

    /// The runtime's error for `op` failing on the store's `path`.
    fn io_error(&self, op: &'static str, path: &str, source: std::io::Error) -> Error {
        let path = self.store.describe(path).into();
        self.error(ConnectorError::Io { op, path, source })
    }

    /// Turns the buffered records into a batch and appends it to the partitions' files.
    fn flush_buffer(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let name = self.name.clone();
        let encode =
            move |context, reason| ConnectorError::Encode { context, reason }.at_sink(&name);
        let batch = self.schema.batch(&self.buffer).map_err(|e| encode("record", e))?;
        self.buffer.clear();
        let splits = match &self.partitioner {
            Some(p) => p.split(&batch).map_err(|e| encode("partition", e))?,
            None => vec![(String::new(), None)],
        };
        for (partition, rows) in splits {
            let part = match rows {
                Some(rows) => take_record_batch(&batch, &rows)
                    .map_err(|e| encode("partition", e.to_string()))?,
                None => batch.clone(),
            };
            self.append(partition, &part)?;
        }
        Ok(())
    }

    /// Appends rows to the partition's file, finishing files at `roll.max_rows` exactly.
    fn append(&mut self, partition: String, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let room = self.file_for(&partition)?;
            let rows = room.min(batch.num_rows() - offset);
            self.write_rows(&partition, &batch.slice(offset, rows))?;
            offset += rows;
        }
        Ok(())
    }

    /// Opens the partition's file if needed; returns how many rows it may still take.
    fn file_for(&mut self, partition: &str) -> Result<usize> {
        self.tick += 1;
        if !self.open.contains_key(partition) {
            if self.open.len() >= self.max_open_files {
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, f)| f.last_write)
                    .map(|(k, _)| k.clone())
                    .unwrap_or_default();
                self.close(&oldest)?;
            }
            let file = self.open_file(partition)?;
            self.open.insert(partition.to_owned(), file);
        }
        let rows = self.open.get(partition).map_or(0, |f| f.rows);
        Ok(usize::try_from(self.rolling.max_rows.saturating_sub(rows)).unwrap_or(usize::MAX))
    }

    fn write_rows(&mut self, partition: &str, batch: &RecordBatch) -> Result<()> {
        let (tick, batch_rows) = (self.tick, self.batch_rows);
        let (open, name) = (&mut self.open, &self.name);
        let Some(file) = open.get_mut(partition) else { return Ok(()) };
        file.last_write = tick;
        file.rows += batch.num_rows() as u64;
        file.unwritten_rows += batch.num_rows();
        file.unwritten.push(batch.clone());
        let full = file.rows >= self.rolling.max_rows;
        if file.unwritten_rows >= batch_rows || full {
            Self::write_unwritten(file).map_err(|e| e.at_sink(name))?;
            let size = (file.writer.bytes_written() + file.writer.in_progress_size()) as u64;
            if full || size >= self.rolling.max_bytes {
                self.close(partition)?;
            }
        }
        Ok(())
    }

    fn write_unwritten(file: &mut OpenFile<S::Writer>) -> Result<(), ConnectorError> {
        let failed = |source| ConnectorError::Parquet {
            context: format!("cannot write `{}`", file.pending.path),
            source,
        };
        let batch = match file.unwritten.len() {
            0 => return Ok(()),
            1 => file.unwritten.pop(),
            _ => {
                let schema = file.unwritten[0].schema();
                let batch = concat_batches(&schema, &file.unwritten)
                    .map_err(|e| failed(ParquetError::ArrowError(e.to_string())))?;
                file.unwritten.clear();
                Some(batch)
            }
        };
        file.unwritten_rows = 0;
        match batch {
            Some(batch) => file.writer.write(&batch).map_err(failed),
            None => Ok(()),
        }
    }

    fn open_file(&mut self, partition: &str) -> Result<OpenFile<S::Writer>> {
        let name = format!("{}-{:05}.parquet", self.prefix, self.sequence);
        self.sequence += 1;
        let path = if partition.is_empty() { name } else { format!("{partition}/{name}") };
        let (out, pending) =
            self.store.create(&path).map_err(|e| self.io_error("cannot create", &path, e))?;
        let writer =
            ArrowWriter::try_new(out, self.schema.schema().clone(), Some(self.properties.clone()));
        match writer {
            Ok(writer) => Ok(OpenFile {
                writer,
                pending,
                unwritten: Vec::new(),
                unwritten_rows: 0,
                rows: 0,
                opened: Instant::now(),
                last_write: self.tick,
            }),
            Err(e) => {
                self.store.discard(&pending);
                let context = format!("cannot start `{}`", self.store.describe(&path));
                Err(self.error(ConnectorError::Parquet { context, source: e }))
            }
        }
    }

    /// Finishes a partition's file and publishes it.
    fn close(&mut self, partition: &str) -> Result<()> {
        let Some(mut file) = self.open.remove(partition) else { return Ok(()) };
        let path = self.store.describe(&file.pending.path);
        let unwritten = Self::write_unwritten(&mut file);
        let (rows, pending, mut writer) = (file.rows, file.pending, file.writer);
        let context = || format!("cannot finish `{path}`");
        let finished = unwritten
            .and_then(|()| {
                let finished = writer.finish();
                finished.map_err(|source| ConnectorError::Parquet { context: context(), source })
            })
            .and_then(|_| {
                let finished = self.store.finish(writer.inner_mut());
                let path = PathBuf::from(&path);
                finished.map_err(|source| ConnectorError::Io { op: "cannot finish", path, source })
            });
        let bytes = writer.bytes_written() as u64;
        drop(writer);
        if let Err(e) = finished {
            self.store.discard(&pending);
            return Err(self.error(e));
        }
        if self.checkpointed {
            tracing::debug!(sink = %self.name, path = %path, rows, bytes, "parquet file finished");
            self.unprepared.push((pending, bytes));
            return Ok(());
        }
        if let Err(e) = self.store.publish(&pending) {
            self.store.discard(&pending);
            return Err(self.io_error("cannot publish", &pending.path, e));
        }
        self.published(&pending, bytes);
        Ok(())
    }

    fn published(&self, file: &PendingFile, bytes: u64) {
        self.files.increment(1);
        self.bytes.increment(bytes);
        let path = self.store.describe(&file.path);
        tracing::info!(sink = %self.name, path = %path, bytes, "parquet file published");
    }

    fn close_aged(&mut self) -> Result<()> {
        let max_age = self.rolling.max_age.0;
        let aged: Vec<String> = self
            .open
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= max_age)
            .map(|(k, _)| k.clone())
            .collect();
        if aged.is_empty() {
            return Ok(());
        }
        self.flush_buffer()?;
        aged.iter().try_for_each(|partition| self.close(partition))
    }

    fn close_all(&mut self) -> Result<()> {
        self.flush_buffer()?;
        let partitions: Vec<String> = self.open.keys().cloned().collect();
        partitions.iter().try_for_each(|p| self.close(p))
    }

    fn guarded(&mut self, step: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let result = step(self);
        if result.is_err() {
            self.buffer.clear();
            self.abort();
        }
        result
    }
}

impl<D: Serialize + 'static, S: FileStore> SinkWriter<D> for ParquetWriter<D, S> {
    fn write(&mut self, records: &mut Vec<D>) -> Result<()> {
        self.buffer.append(records);
        self.guarded(|w| {
            if w.buffer.len() >= w.batch_rows {
                w.flush_buffer()?;
            }
            w.close_aged()
        })
    }

    fn progress(&mut self, frontier: Option<Time>) -> Result<()> {
        self.guarded(|w| match frontier {
            Some(_) => w.close_aged(),
            None => w.close_all(),
        })
    }

    /// Finishes every open file; they become visible when the checkpoint completes.
    fn prepare(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        self.guarded(|w| w.close_all())?;
        let files = std::mem::take(&mut self.unprepared);
        self.prepared.extend(files.into_iter().map(|(file, bytes)| (checkpoint, file, bytes)));
        let pending: Vec<&PendingFile> = self.prepared.iter().map(|(_, file, _)| file).collect();
        encode(&pending)
    }

    fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let (due, later) = std::mem::take(&mut self.prepared)
            .into_iter()
            .partition(|(id, _, _)| *id <= checkpoint);
        self.prepared = later;
        for (_, file, bytes) in due {
            let published = self.store.publish(&file);
            published.map_err(|e| self.io_error("cannot publish", &file.path, e))?;
            self.published(&file, bytes);
        }
        Ok(())
    }

    /// Publishes the files of the checkpoint the job restarts from (again: publishing is
    /// idempotent, and several workers may publish the same files after rescaling).
    fn restore(&mut self, prepared: Vec<Vec<u8>>) -> Result<()> {
        for state in prepared {
            let files: Vec<PendingFile> = decode(&state)?;
            for file in files {
                let published = self.store.publish(&file);
                published.map_err(|e| self.io_error("cannot publish", &file.path, e))?;
                tracing::info!(sink = %self.name, path = %self.store.describe(&file.path),
                    "parquet file of the restored checkpoint published");
            }
        }
        Ok(())
    }

    fn discard(&mut self) {
        self.abort();
        for (file, _) in self.unprepared.drain(..) {
            self.store.discard(&file);
        }
        for (_, file, _) in self.prepared.drain(..) {
            self.store.discard(&file);
        }
    }
}

impl<D, S: FileStore> ParquetWriter<D, S> {
    /// Discards every open file (after an error, or when the writer is dropped unfinished).
    fn abort(&mut self) {
        for (_, file) in self.open.drain() {
            drop(file.writer);
            self.store.discard(&file.pending);
        }
    }
}

impl<D, S: FileStore> Drop for ParquetWriter<D, S> {
    fn drop(&mut self) {
        if !self.open.is_empty() {
            tracing::warn!(
                sink = %self.name,
                files = self.open.len(),
                "the job ended before its Parquet files were finished; they are discarded"
            );
        }
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::{self, Write};
    use std::path::{Path, PathBuf};

    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Row {
        hour: u64,
        device: u32,
        value: f64,
    }

    fn rows(n: u64) -> Vec<Row> {
        (0..n)
            .map(|i| Row { hour: (i % 3) * 3_600_000, device: i as u32, value: i as f64 })
            .collect()
    }

    fn context() -> SinkContext {
        SinkContext {
            name: "test".into(),
            worker_index: 1,
            workers: 2,
            checkpointed: false,
            job: "test".into(),
            first_checkpoint: 0,
        }
    }

    /// Every visible `.parquet` file under `dir` with its row count, and the hidden files.
    fn listing(dir: &Path) -> (Vec<(PathBuf, usize)>, Vec<PathBuf>) {
        let (mut visible, mut hidden) = (Vec::new(), Vec::new());
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(d).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    stack.push(path);
                } else if name.starts_with('.') {
                    hidden.push(path);
                } else {
                    let reader =
                        ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
                            .unwrap();
                    let count = reader.metadata().file_metadata().num_rows() as usize;
                    visible.push((path, count));
                }
            }
        }
        visible.sort();
        (visible, hidden)
    }

    #[test]
    fn rolls_by_rows_and_publishes_on_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ParquetSinkConfig::new(dir.path());
        config.roll.max_rows = 10;
        config.batch_rows = 4;
        let sink = ParquetSink::<Row>::new("test", &config).unwrap();
        let mut writer = sink.writer(&context()).unwrap();
        for chunk in rows(25).chunks(13) {
            writer.write(&mut chunk.to_vec()).unwrap();
            writer.progress(Some(0)).unwrap();
        }
        let (visible, _) = listing(dir.path());
        assert_eq!(visible.iter().map(|(_, n)| n).sum::<usize>(), 20, "{visible:?}");
        writer.progress(None).unwrap();
        let (visible, hidden) = listing(dir.path());
        assert_eq!(visible.iter().map(|(_, n)| *n).collect::<Vec<_>>(), vec![10, 10, 5]);
        assert!(hidden.is_empty(), "{hidden:?}");
        let name = visible[0].0.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("part-") && name.ends_with("-0001-00000.parquet"), "{name}");
    }

    #[test]
    fn partitions_into_hive_folders_within_the_open_file_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ParquetSinkConfig::new(dir.path());
        config.partition_by = Some("dt={hour:%Y-%m-%d}/hour={hour:%H}".into());
        config.timestamp_columns = vec!["hour".into()];
        config.max_open_files = 2;
        config.batch_rows = 1;
        let sink = ParquetSink::<Row>::new("test", &config).unwrap();
        let mut writer = sink.writer(&context()).unwrap();
        for row in rows(9) {
            writer.write(&mut vec![row]).unwrap();
        }
        writer.progress(None).unwrap();
        let (visible, hidden) = listing(dir.path());
        assert!(hidden.is_empty());
        let folders: Vec<String> = visible
            .iter()
            .map(|(p, _)| {
                p.parent().unwrap().strip_prefix(dir.path()).unwrap().display().to_string()
            })
            .collect();
        // Three partitions but two open files: each record after the second opens a new file.
        assert_eq!(visible.len(), 9, "{folders:?}");
        for hour in ["00", "01", "02"] {
            let folder = format!("dt=1970-01-01/hour={hour}");
            assert_eq!(folders.iter().filter(|f| **f == folder).count(), 3, "{folders:?}");
        }
        let file = File::open(&visible[0].0).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(reader.schema().field(0).data_type(), &schema::timestamp_type());
    }

    /// A store whose files fail like a full disk after `capacity` bytes.
    struct FullDisk {
        inner: LocalStore,
        capacity: usize,
    }

    struct Limited {
        inner: crate::store::LocalFile,
        left: usize,
    }

    impl Write for Limited {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.left {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "No space left on device"));
            }
            self.left -= buf.len();
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    impl FileStore for FullDisk {
        type Writer = Limited;
        fn create(&self, path: &str) -> io::Result<(Limited, PendingFile)> {
            let (inner, pending) = self.inner.create(path)?;
            Ok((Limited { inner, left: self.capacity }, pending))
        }
        fn finish(&self, writer: &mut Limited) -> io::Result<()> {
            self.inner.finish(&mut writer.inner)
        }
        fn publish(&self, file: &PendingFile) -> io::Result<()> {
            self.inner.publish(file)
        }
        fn discard(&self, file: &PendingFile) {
            self.inner.discard(file)
        }
        fn describe(&self, path: &str) -> String {
            self.inner.describe(path)
        }
    }

    #[test]
    fn a_full_disk_fails_loudly_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ParquetSinkConfig::new(dir.path());
        config.row_group_rows = 100;
        let store = FullDisk { inner: LocalStore::new(dir.path()), capacity: 2000 };
        let sink = ParquetSink::<Row, FullDisk>::with_store("test", &config, store).unwrap();
        let mut writer = sink.writer(&context()).unwrap();
        let mut failure = None;
        for chunk in rows(10_000).chunks(1000) {
            let result = writer.write(&mut chunk.to_vec()).and_then(|()| writer.progress(None));
            if let Err(e) = result {
                failure = Some(e.to_string());
                break;
            }
        }
        let failure = failure.expect("the disk fills up");
        assert!(failure.contains("No space left") && failure.contains(".parquet"), "{failure}");
        drop(writer);
        let (visible, hidden) = listing(dir.path());
        assert!(visible.is_empty() && hidden.is_empty(), "{visible:?} {hidden:?}");
    }

    #[test]
    fn an_unfinished_writer_discards_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let sink = ParquetSink::<Row>::new("test", &ParquetSinkConfig::new(dir.path())).unwrap();
        let mut writer = sink.writer(&context()).unwrap();
        writer.write(&mut rows(10_000)).unwrap();
        assert_eq!(listing(dir.path()).1.len(), 1);
        drop(writer);
        assert_eq!(listing(dir.path()), (vec![], vec![]));
    }
}
