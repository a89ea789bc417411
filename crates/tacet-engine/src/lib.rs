//! # tacet-engine
//!
//! Wires the stages into a running pipeline and reports on the run.
//!
//! ```text
//!  ChunkReader ──chunks──▶ decoder threads ──ShardBatch (per shard)──▶ shard threads ──▶ OutcomeWriter (Parquet)
//!   (files, round-robin)   (decode, route by trace)                   (reorder by seq,   (one per shard)
//!        ▲                        │                                    watermark, rules)
//!        └──── credits ◀──────────┼──────────────── chunk fully applied ──┘
//!                                 └──▶ dead-letter writer (bad records, evicted journeys)
//! ```
//!
//! - [`pipeline::PreparedReplay`]: config + source mapping + input files,
//!   ready to [`run`](pipeline::PreparedReplay::run); [`pipeline::replay`] runs
//!   a finite input to the end and returns a [`summary::RunReport`].
//! - [`summary`]: per-journey figures, the wall table and its JSON form.
//! - [`metrics`]: the Prometheus `/metrics` and `/health` endpoint.
//!
//! Work moves in chunks of about a megabyte. Credits bound the chunks in flight,
//! so memory stays flat however far a decoder runs ahead. Each shard applies
//! chunks strictly in input order and computes, per event, the exact watermark a
//! single thread would have had, so results depend neither on the number of
//! decoders or shards nor on thread timing.

pub mod metrics;
pub mod pipeline;
pub mod stage;
pub mod summary;

pub use metrics::{Metrics, MetricsServer};
pub use pipeline::{EngineError, PreparedReplay, ReplayOptions, replay};
pub use stage::{Stage, StageError, StageLimits, StageLinks};
pub use summary::{JourneySummary, RunReport, RunSummary, SourceFigures};
