//! Files: a source of JSON lines or CSV, and a sink writing them.

mod sink;
mod source;

pub use sink::{FileSink, FileSinkConfig, FileWriter};
pub use source::{FileReader, FileSource, FileSourceConfig, MAX_LINE_BYTES, SPLIT_BYTES};

pub use crate::format::Format;
