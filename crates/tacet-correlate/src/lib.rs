//! # tacet-correlate
//!
//! The join stage: events of one trace, from any service, partition or order,
//! are gathered under their trace key and each journey is decided exactly once
//! by the rules of SPEC §3, in event time.
//!
//! ## Layout
//! - [`Shard`]: owns a disjoint set of traces (routed by
//!   [`tacet_core::TraceKey::shard`]). Its whole API is [`Shard::advance`]
//!   (move the watermark, firing due timers), [`Shard::apply`] (one event) and
//!   [`Shard::finish`] (end of finite input), plus hints that change nothing
//!   ([`Shard::prefetch_index`], [`Shard::prefetch`], [`Shard::prefetch_attrs`]:
//!   a caller that knows the events ahead starts their cache misses early).
//!   One thread owns one shard: no lock is taken per event.
//! - [`watermark`]: the per-partition watermark of SPEC §4, with idleness.
//! - [`ShardStats`]: counters per journey and outcome, merged for summaries.
//! - Inside a shard (private modules, each with its own docs): `slab` (open
//!   traces), `index` (trace hash → slab slot, prefetchable), `timers` (one
//!   per open trace, in event-time buckets), `attrs` (attribute blobs),
//!   `snapshot` (state as bytes).
//!
//! Memory per open journey is the budget that matters at scale (SPEC asks for
//! millions open at once): a journey is one 128-byte slab entry, an 8-byte
//! index bucket (the index is at most 3/4 full), a 16-byte timer and a small
//! attribute blob. State is freed the moment a journey is decided; a compact
//! tombstone remembers the trace for `late_horizon` so that late events never
//! open a second journey.

mod attrs;
mod index;
mod shard;
mod slab;
mod snapshot;
mod stats;
mod timers;
pub mod watermark;

pub use shard::{EvictReason, Evicted, InFlight, SERVICE_BYTES_CAP, Shard, SlotHint};
pub use snapshot::SnapshotError;
pub use stats::{JourneyStats, ShardStats};
