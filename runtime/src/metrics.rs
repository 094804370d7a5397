//! Metric and label names, in one place (`tributary_<component>_<thing>_<unit>`).
//!
//! Metrics go through the `metrics` facade; a process without an installed recorder pays
//! almost nothing for them.

/// Label: the job's name.
pub const JOB: &str = "job";
/// Label: a source's name.
pub const SOURCE: &str = "source";
/// Label: a sink's name.
pub const SINK: &str = "sink";
/// Label: an operator's name.
pub const OPERATOR: &str = "operator";
/// Label: an operator's address in the dataflow, e.g. `0.7` (names repeat, addresses do not).
pub const ID: &str = "id";
/// Label: the global worker index.
pub const WORKER: &str = "worker";

/// Counter: records a source emitted.
pub const SOURCE_RECORDS: &str = "tributary_source_records_total";
/// Counter: bytes a source read from outside (Kafka keys and values, file lines).
pub const SOURCE_BYTES: &str = "tributary_source_bytes_total";
/// Gauge: wall-clock time minus a source worker's watermark, in seconds.
pub const WATERMARK_LAG: &str = "tributary_source_watermark_lag_seconds";
/// Counter: records rejected into the dead-letter output.
pub const DEAD_LETTERS: &str = "tributary_dead_letters_total";
/// Counter: records a sink wrote.
pub const SINK_RECORDS: &str = "tributary_sink_records_total";
/// Counter: files a sink finished and made visible.
pub const SINK_FILES: &str = "tributary_sink_files_total";
/// Counter: bytes a sink wrote out: the files it made visible (Parquet), the lines it wrote
/// (files, stdout), the keys and values it produced (Kafka).
pub const SINK_BYTES: &str = "tributary_sink_bytes_total";
/// Counter: late records an operator accepted as updates.
pub const LATE_UPDATES: &str = "tributary_operator_late_updates_total";
/// Counter: complete checkpoints.
pub const CHECKPOINTS: &str = "tributary_checkpoints_total";
/// Counter: checkpoints that failed (a part or the manifest could not be written).
pub const CHECKPOINT_FAILURES: &str = "tributary_checkpoint_failures_total";
/// Histogram: seconds from a checkpoint's start to its manifest.
pub const CHECKPOINT_SECONDS: &str = "tributary_checkpoint_duration_seconds";
/// Gauge: bytes of the latest complete checkpoint.
pub const CHECKPOINT_BYTES: &str = "tributary_checkpoint_size_bytes";
/// Gauge: records pushed between workers and not yet taken in, as one worker last saw it.
pub const IN_FLIGHT: &str = "tributary_flow_records_in_flight";
/// Counter: times a worker's sources paused because too many records were in flight.
pub const FLOW_PAUSES: &str = "tributary_flow_pauses_total";
/// Counter: records too late for any window, sent to the late output.
pub const LATE_DROPPED: &str = "tributary_operator_late_records_total";
/// Gauge: the process's resident memory, in bytes.
pub const RESIDENT_MEMORY: &str = "tributary_process_resident_memory_bytes";
/// Gauge: records a partition holds beyond a source's position (Kafka consumer lag),
/// labelled by `source` and `partition` (`topic/partition`).
pub const PARTITION_LAG: &str = "tributary_source_partition_lag_records";
/// Label: a source's partition, `topic/partition`.
pub const PARTITION: &str = "partition";
/// Histogram: seconds from a record's ingestion by a source to the sink write of the
/// results it completes.
pub const LATENCY: &str = "tributary_sink_latency_seconds";
/// Counter: records an operator took in on all its inputs (with the status page on).
pub const OPERATOR_RECORDS_IN: &str = "tributary_operator_records_in_total";
/// Counter: records an operator sent on all its outputs (with the status page on).
pub const OPERATOR_RECORDS_OUT: &str = "tributary_operator_records_out_total";
/// Gauge: the entries of state an operator keeps (keys × windows for window aggregates,
/// stored records for joins), by `operator` and `worker`.
pub const STATE_ENTRIES: &str = "tributary_operator_state_entries";
