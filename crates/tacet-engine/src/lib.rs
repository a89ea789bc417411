//! # tacet-engine
//!
//! The correlation stage both sources drive, the replay source, the run
//! report and `/metrics`.
//!
//! - [`stage::Stage`]: one unit of correlation state (a replay shard, a
//!   Kafka partition group): shard, watermarks, outcome writer, alert feed,
//!   its links to the dead-letter sink and the alert thread; lifecycle
//!   hooks `new`/`restore`, `on_event`, `on_batch_end`, `on_tick`,
//!   `on_checkpoint`, `on_finish`, `close`. `tacet-kafka` drives it too.
//! - [`pipeline`]: the replay source (below).
//!   [`pipeline::PreparedReplay`]: config + source mapping + input files,
//!   ready to [`run`](pipeline::PreparedReplay::run); [`pipeline::replay`]
//!   runs a finite input to the end and returns a [`summary::RunReport`].
//! - [`summary`]: the run report of both sources, per-journey figures, the
//!   wall table's data and its JSON form.
//! - [`metrics`]: the Prometheus `/metrics` and `/health` endpoint, one set
//!   of metric names for both sources.
//!
//! ```text
//!  ChunkReader ──chunks──▶ decoder threads ──ShardBatch (per shard)──▶ shard stages ──▶ OutcomeWriter (Parquet)
//!   (files, round-robin)   (decode, route by trace)                   (reorder by seq,   (one per shard)
//!        ▲                        │                                    watermark, rules)
//!        └──── credits ◀──────────┼──────────────── chunk fully applied ──┘
//!                                 └──▶ dead letters (shared with the stages' evictions)
//! ```
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
