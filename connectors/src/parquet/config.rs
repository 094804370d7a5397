//! Settings of the Parquet sink.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tributary_runtime::{ConfigError, HumanDuration};

/// Settings of a Parquet sink (`kind = "parquet"` in an output table).
///
/// ```toml
/// [job.output]
/// kind = "parquet"
/// path = "out/stats"
/// partition_by = "dt={window_start:%Y-%m-%d}/hour={window_start:%H}"
/// timestamp_columns = ["window_start", "window_end"]
/// compression = "zstd"
/// roll = { max_rows = 1000000, max_bytes = 134217728, max_age = "5m" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// The output directory (created if missing).
    pub path: PathBuf,
    /// Hive-style partition folders made from the record's columns, e.g.
    /// `dt={window_start:%Y-%m-%d}/hour={window_start:%H}` or `device={device}`. A column with a
    /// `:FORMAT` (chrono `strftime`, in UTC) must be a timestamp or an integer of epoch
    /// milliseconds. Unset: every file goes straight into `path`.
    #[serde(default)]
    pub partition_by: Option<String>,
    /// Top-level columns that hold event times, as epoch milliseconds (integers) or RFC 3339
    /// strings; they are written as `TIMESTAMP(MILLIS, UTC)`.
    #[serde(default)]
    pub timestamp_columns: Vec<String>,
    /// The compression codec of every column.
    #[serde(default)]
    pub compression: Compression,
    /// The zstd level (1–22), used when `compression = "zstd"`.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// When a file is finished and a new one begun.
    #[serde(default)]
    pub roll: Rolling,
    /// A row group ends after this many rows …
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// … or this many (uncompressed, estimated) bytes, whichever comes first.
    #[serde(default = "default_row_group_bytes")]
    pub row_group_bytes: usize,
    /// The target size of a data page, in bytes.
    #[serde(default = "default_page_bytes")]
    pub page_bytes: usize,
    /// Dictionary encoding (falls back to plain per column when the dictionary grows large).
    #[serde(default = "yes")]
    pub dictionary: bool,
    /// Min/max/null-count statistics per page and column chunk, for readers to skip data.
    #[serde(default = "yes")]
    pub statistics: bool,
    /// Records turned into one Arrow record batch at a time.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Files a worker keeps open at once (one per partition); opening one more finishes the
    /// least recently written. A worker's memory for open files stays below about
    /// `max_open_files × row_group_bytes`.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
}

/// When a sink finishes its current file and starts the next: whichever limit comes first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rolling {
    /// Rows per file.
    pub max_rows: u64,
    /// Bytes per file (compressed, as written, plus the open row group's estimate).
    pub max_bytes: u64,
    /// How long a file stays open (wall-clock time). Checked when records arrive and when
    /// the watermark advances.
    pub max_age: HumanDuration,
}

impl Default for Rolling {
    fn default() -> Self {
        Rolling {
            max_rows: 10_000_000,
            max_bytes: 128 << 20,
            max_age: HumanDuration(Duration::from_secs(300)),
        }
    }
}

/// A Parquet compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard (the default): small files, fast to read.
    #[default]
    Zstd,
    /// Snappy: the most widely supported codec.
    Snappy,
    /// LZ4 (the `LZ4_RAW` codec of the Parquet format).
    Lz4,
    /// No compression.
    None,
}

fn default_zstd_level() -> i32 {
    3
}
fn default_row_group_rows() -> usize {
    1 << 20
}
fn default_row_group_bytes() -> usize {
    64 << 20
}
fn default_page_bytes() -> usize {
    1 << 20
}
fn default_batch_rows() -> usize {
    8192
}
fn default_max_open_files() -> usize {
    16
}
fn yes() -> bool {
    true
}

impl ParquetSinkConfig {
    /// A config with every default, writing into `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ParquetSinkConfig {
            path: path.into(),
            partition_by: None,
            timestamp_columns: Vec::new(),
            compression: Compression::default(),
            zstd_level: default_zstd_level(),
            roll: Rolling::default(),
            row_group_rows: default_row_group_rows(),
            row_group_bytes: default_row_group_bytes(),
            page_bytes: default_page_bytes(),
            dictionary: true,
            statistics: true,
            batch_rows: default_batch_rows(),
            max_open_files: default_max_open_files(),
        }
    }

    /// Checks the limits; keys are relative to the sink's table.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("roll.max_rows", self.roll.max_rows == 0),
            ("roll.max_bytes", self.roll.max_bytes == 0),
            ("roll.max_age", self.roll.max_age.0.is_zero()),
            ("row_group_rows", self.row_group_rows == 0),
            ("row_group_bytes", self.row_group_bytes == 0),
            ("page_bytes", self.page_bytes == 0),
            ("batch_rows", self.batch_rows == 0),
            ("max_open_files", self.max_open_files == 0),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::new(*key, "must be greater than zero"));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(ConfigError::new(
                "zstd_level",
                format!("{} is outside 1..=22", self.zstd_level),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_a_minimal_table() {
        let config: ParquetSinkConfig = toml::from_str("path = \"out\"").unwrap();
        assert_eq!(config, ParquetSinkConfig::new("out"));
        config.validate().unwrap();
    }

    #[test]
    fn zero_limits_name_their_key() {
        let config: ParquetSinkConfig =
            toml::from_str("path = \"out\"\nroll = { max_rows = 0 }").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "roll.max_rows");
        let config: ParquetSinkConfig = toml::from_str("path = \"o\"\nzstd_level = 40").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "zstd_level");
    }
}
