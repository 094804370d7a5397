//! The file sink: one JSON-lines or CSV file per worker in an output directory.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tributary_runtime::{ConfigError, Error, Result, Sink, SinkContext, SinkWriter, Time};

use super::Format;

/// Settings of a file sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The output directory (created if missing). Worker `w` writes `part-<w>.<ext>`.
    pub path: PathBuf,
    /// The record format.
    #[serde(default)]
    pub format: Format,
}

/// Writes records as JSON lines or CSV, one file per worker.
pub struct FileSink<D> {
    name: String,
    config: FileSinkConfig,
    marker: PhantomData<fn(D)>,
}

impl<D> FileSink<D> {
    /// Checks that the directory can be created; keys are relative to the sink's table.
    pub fn new(name: &str, config: &FileSinkConfig) -> Result<Self, ConfigError> {
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
        let path =
            self.config.path.join(format!("part-{:04}.{}", ctx.worker_index, format.extension()));
        let file = File::create(&path).map_err(|source| Error::Io {
            op: "cannot create",
            path: path.clone(),
            source,
        })?;
        let out = BufWriter::with_capacity(1 << 20, file);
        let encoder = match format {
            Format::Json => Encoder::Json(out),
            Format::Csv => Encoder::Csv(Box::new(csv::Writer::from_writer(out))),
        };
        Ok(FileWriter {
            name: self.name.clone(),
            path,
            encoder: Some(encoder),
            bytes: ctx.bytes_counter(),
            counted: 0,
            marker: PhantomData,
        })
    }
}

enum Encoder {
    Json(BufWriter<File>),
    Csv(Box<csv::Writer<BufWriter<File>>>),
}

/// One worker's output file.
pub struct FileWriter<D> {
    name: String,
    path: PathBuf,
    encoder: Option<Encoder>,
    bytes: metrics::Counter,
    /// Bytes of the file already added to `bytes`.
    counted: u64,
    marker: PhantomData<fn(D)>,
}

impl<D> FileWriter<D> {
    fn error(&self, reason: impl std::fmt::Display) -> Error {
        Error::Sink {
            sink: self.name.clone(),
            reason: format!("`{}`: {reason}", self.path.display()),
        }
    }
}

impl<D: Serialize + 'static> SinkWriter<D> for FileWriter<D> {
    fn write(&mut self, records: &mut Vec<D>) -> Result<()> {
        let result = match self.encoder.as_mut() {
            Some(Encoder::Json(out)) => records.iter().try_for_each(|r| {
                serde_json::to_writer(&mut *out, r).map_err(|e| e.to_string())?;
                out.write_all(b"\n").map_err(|e| e.to_string())
            }),
            Some(Encoder::Csv(out)) => {
                records.iter().try_for_each(|r| out.serialize(r).map_err(|e| e.to_string()))
            }
            None => Ok(()),
        };
        records.clear();
        result.map_err(|e| self.error(e))
    }

    fn progress(&mut self, frontier: Option<Time>) -> Result<()> {
        let flushed = match self.encoder.as_mut() {
            Some(Encoder::Json(out)) => out.flush().map(|()| Some(out.get_ref())),
            Some(Encoder::Csv(out)) => out.flush().map(|()| Some(out.get_ref().get_ref())),
            None => Ok(None),
        };
        // Everything flushed sits in the file: its position is the bytes written so far.
        let result =
            match flushed.and_then(|file| file.map(|mut f| f.stream_position()).transpose()) {
                Ok(Some(written)) => {
                    self.bytes.increment(written.saturating_sub(self.counted));
                    self.counted = written;
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e.to_string()),
            };
        if frontier.is_none() {
            self.encoder = None;
        }
        result.map_err(|e| self.error(e))
    }
}
