//! The source interface and the timely operator that drives every source.
//!
//! A [`Source`] is resolved once per process, before the workers start (files listed, config
//! checked); each worker then asks it for a [`SourceReader`] for its share of the input. The
//! driver polls the reader, stamps each record with its quantized event time (never below the
//! source's watermark: late records travel at the watermark and keep their exact event time
//! inside), and holds its capability at the reader's watermark, so the source's frontier is
//! its watermark.

pub(crate) mod alignment;
mod api;
mod driver;
mod emitter;
mod ingestion;

pub use api::{source_error, Cut, Poll, Source, SourceContext, SourceReader};
pub use emitter::{poll_once, Emitter, Polled};
pub use ingestion::{Ingested, IngestionReader, IngestionTime};
