//! # tacet-ingest
//!
//! From bytes to decoded events: the field mapping of SPEC §1, the decoder and
//! the file source.
//!
//! ## Layout
//! - [`decode::Decoder`]: one pass over each line, steered by a trie of the
//!   mapping's JSON pointers: a hand-written scanner (`scan`) for the plain
//!   case, serde_json for everything else. Fields the mapping does not name are
//!   skipped without being built; strings are borrowed from the input where
//!   JSON has no escapes. No `serde_json::Value`, no allocation per event.
//! - [`batch::ShardBatch`]: the decoded events of one input chunk bound for
//!   one shard, with the per-event watermark hints of the pipeline.
//! - [`reader::ChunkReader`]: NDJSON files (or stdin) cut into line-aligned
//!   chunks, several files read round-robin as separate partitions.
//! - [`deadletter`]: bad input, with its reason and source position.
//! - [`time`]: RFC 3339 timestamps, the common shape parsed by position.

pub mod batch;
pub mod deadletter;
pub mod decode;
pub mod reader;
mod scan;
pub mod time;

pub use batch::ShardBatch;
pub use deadletter::{DeadLetter, DecodeError};
pub use decode::{DecodeStats, Decoder};
pub use reader::{Chunk, ChunkReader};
