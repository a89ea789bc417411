//! # tacet-kafka
//!
//! `tacet run`: consume transaction events from Kafka, correlate them per
//! input partition, and checkpoint so that a crash or a rebalance neither
//! loses nor repeats a decision (SPEC §7).
//!
//! ## Layout
//! - [`run`]: the consumer loop (rdkafka `BaseConsumer`, one poll thread),
//!   the rebalance callback, lag from librdkafka statistics, stop and idle exit.
//! - [`engine`]: what the poll thread drives: places partition groups on
//!   correlator threads, hands them records in batches, turns checkpoints,
//!   revokes and ticks into commands that follow those records.
//! - [`group`]: per-partition groups (partition `p` of every topic: one
//!   [`tacet_engine::Stage`], the correlation stage replay uses too, with one
//!   watermark input per topic), records in, checkpoints out; single-threaded.
//! - [`worker`]: the correlator threads, their batches and commands.
//! - `fetch`: batch polling: partitions' records are routed to one queue
//!   per correlator thread, drained many per call and handed over in
//!   librdkafka's buffers; the consumer queue keeps the events.
//! - `headers`: record headers with names as bytes (rdkafka's own reader
//!   panics on a name that is not UTF-8).
//! - [`repartition`]: for producers that do not key by trace id, a stage
//!   that re-keys the source topics into internal topics first.
//! - [`alert_sink`]: the `kind = "kafka"` alert sink, registered with the
//!   alert crate by the binary.
//! - [`copartition`]: in co-partitioned mode, the running check that every
//!   trace stays on one partition.
//! - [`checkpoint`]: the files — partition snapshots, staged outcome files
//!   and their publication, recovery's cleanup.
//!
//! Checkpoint order, every `[checkpoint] interval` and on revoke or stop:
//! outcome files of the partition are flushed (fsync) and moved from staging
//! into `outcomes/`; then its snapshot (state + next offsets) replaces the
//! old one atomically; then offsets are committed to Kafka. Recovery trusts
//! only the snapshot: it drops files of checkpoints that did not finish and
//! seeks to the snapshot's offsets.

pub mod alert_sink;
pub mod checkpoint;
pub mod copartition;
pub mod engine;
pub mod errors;
mod fetch;
pub mod group;
mod headers;
pub mod repartition;
pub mod run;
pub mod worker;

pub use engine::{EngineOptions, RunError};
pub use run::{RunOptions, run};
