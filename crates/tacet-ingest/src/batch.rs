//! Decoded events bound for one shard, borrowing their strings from the
//! input chunk (or from the batch's own arena for strings JSON escaped).

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;
use tacet_core::{AttrCow, AttrSlot, Event, EventTime, NameId, TraceKey};

use crate::reader::ChunkBytes;

/// Where a string lives: in the input chunk, or in the batch arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub len: u32,
    pub in_arena: bool,
}

/// An attribute value whose string, if any, is a [`Span`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpanValue {
    Str(Span),
    Num(f64),
    Bool(bool),
}

/// One decoded event inside a batch.
#[derive(Debug, Clone, Copy)]
pub struct RawEvent {
    pub trace: TraceKey,
    pub trace_text: Option<Span>,
    pub time: EventTime,
    pub name: NameId,
    pub ok: bool,
    pub fingerprint: u64,
    pub service: Span,
    pub attrs_start: u32,
    pub attrs_len: u16,
    /// Largest event time in this chunk up to and including this event, over
    /// all shards: with the chunk sequence it gives every shard the exact
    /// watermark a single-threaded engine would have had at this event.
    pub running_max: EventTime,
}

/// The events of one input chunk that belong to one shard.
#[derive(Debug)]
pub struct ShardBatch {
    /// Order of the chunk in the whole input.
    pub seq: u64,
    /// Input partition (file, or Kafka partition) of the chunk.
    pub partition: u32,
    /// This chunk ends its partition.
    pub last_of_partition: bool,
    /// Largest event time in the whole chunk, over all shards.
    pub chunk_max: EventTime,
    pub(crate) chunk: Arc<ChunkBytes>,
    pub(crate) arena: String,
    pub(crate) events: Vec<RawEvent>,
    pub(crate) attrs: Vec<(AttrSlot, SpanValue)>,
}

impl ShardBatch {
    pub(crate) fn new(seq: u64, partition: u32, chunk: Arc<ChunkBytes>) -> Self {
        Self {
            seq,
            partition,
            last_of_partition: false,
            chunk_max: EventTime::MIN,
            chunk,
            arena: String::new(),
            events: Vec::new(),
            attrs: Vec::new(),
        }
    }

    /// A batch with no events, carrying only progress (sequence, partition end).
    pub fn progress(seq: u64, partition: u32, chunk_max: EventTime, last_of_partition: bool) -> Self {
        let mut b = Self::new(seq, partition, Arc::default());
        b.chunk_max = chunk_max;
        b.last_of_partition = last_of_partition;
        b
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The text of a span. `chunk` is the chunk as `&str` when it is valid
    /// UTF-8 as a whole (then slicing needs no further validation).
    fn text<'s>(&'s self, chunk: Option<&'s str>, span: Span) -> &'s str {
        let range = span.start as usize..(span.start + span.len) as usize;
        // Spans are cut from `&str`s at char boundaries; the fallbacks never
        // trigger but keep this panic-free.
        if span.in_arena {
            return self.arena.get(range).unwrap_or("");
        }
        match chunk {
            Some(text) => text.get(range).unwrap_or(""),
            None => self
                .chunk
                .get(range)
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or(""),
        }
    }

    /// Calls `f` with each event, in input order, and its running maximum.
    pub fn for_each(&self, mut f: impl FnMut(&Event<'_>, EventTime)) {
        // One SIMD pass per batch instead of a validation per string.
        let chunk = if self.events.is_empty() {
            None
        } else {
            simdutf8::basic::from_utf8(&self.chunk).ok()
        };
        let mut attrs: SmallVec<[(AttrSlot, AttrCow<'_>); 8]> = SmallVec::new();
        for raw in &self.events {
            attrs.clear();
            let start = raw.attrs_start as usize;
            for (slot, value) in &self.attrs[start..start + raw.attrs_len as usize] {
                attrs.push((
                    *slot,
                    match *value {
                        SpanValue::Str(s) => AttrCow::Str(Cow::Borrowed(self.text(chunk, s))),
                        SpanValue::Num(n) => AttrCow::Num(n),
                        SpanValue::Bool(b) => AttrCow::Bool(b),
                    },
                ));
            }
            let event = Event {
                trace: raw.trace,
                trace_text: raw.trace_text.map(|s| self.text(chunk, s)),
                time: raw.time,
                name: raw.name,
                ok: raw.ok,
                fingerprint: raw.fingerprint,
                service: self.text(chunk, raw.service),
                attrs: &attrs,
            };
            f(&event, raw.running_max);
        }
    }
}
