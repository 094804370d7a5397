//! Files: a source of JSON lines or CSV, and a sink writing them.

mod sink;
mod source;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use sink::{FileSink, FileSinkConfig, FileWriter};
pub use source::{FileReader, FileSource, FileSourceConfig, MAX_LINE_BYTES, SPLIT_BYTES};

/// A text record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// Comma-separated values with a header line.
    Csv,
}

impl Format {
    /// The format a file name suggests: `.csv` is CSV, anything else JSON lines.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::Json,
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "jsonl",
            Format::Csv => "csv",
        }
    }
}
