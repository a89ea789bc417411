//! # tacet-store
//!
//! Decided outcomes as Arrow record batches in a hive-partitioned Parquet
//! dataset: `<out>/outcomes/journey=<name>/date=<YYYY-MM-DD>/part-*.parquet`,
//! partitioned by the journey and the UTC date of `decided_at`.
//!
//! ## Layout
//! - [`schema::outcome_schema`]: the columns of SPEC §3 plus one column per
//!   journey attribute (the union over journeys, so every file has one schema).
//! - [`writer::OutcomeWriter`]: an [`tacet_core::outcome::OutcomeSink`] that
//!   buffers rows per partition and writes a file when `flush_rows` is reached
//!   or [`writer::OutcomeWriter::flush`] is called (rows go into plain
//!   vectors, `columns`, and become Arrow arrays once per file). Files appear atomically
//!   (written under a dot-name, then renamed), so a reader never sees half a file.
//! - [`reader::read_outcomes`]: reads a dataset back into rows (for `tacet
//!   verify` and tests).

mod columns;
pub mod reader;
pub mod schema;
pub mod writer;

pub use reader::read_outcomes;
pub use writer::{OutcomeWriter, WriterStats};

/// Errors of the outcome store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Parquet {
        path: String,
        source: parquet::errors::ParquetError,
    },
    #[error("building a record batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{path}: column {column} is missing or has an unexpected type")]
    Schema { path: String, column: String },
}

/// Result type of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
