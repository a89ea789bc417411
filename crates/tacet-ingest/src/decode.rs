//! The decoder: one serde_json pass per line, steered by a trie of the field
//! mapping's JSON pointers.
//!
//! At each object level only keys on a mapped path are descended into; every
//! other value is skipped with `IgnoredAny`, which builds nothing. Captured
//! strings are borrowed from the input unless JSON escaped them.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;
use tacet_core::config::{ParsedMapping, TraceIdSource};
use tacet_core::event::{fingerprint_by_fields, fingerprint_by_id, traceparent_trace_id};
use tacet_core::{AttrSlot, Catalog, EventTime, NameId, TraceKey};

use crate::batch::{RawEvent, ShardBatch, Span, SpanValue};
use crate::deadletter::{DeadLetter, DecodeError};
use crate::reader::Chunk;
use crate::time::parse_rfc3339;

/// What a mapped path feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    TraceId,
    Time,
    Event,
    Service,
    Status,
    EventId,
    Attr(AttrSlot),
}

/// One level of the pointer trie.
#[derive(Debug, Default)]
struct Node {
    children: Vec<(String, Node)>,
    targets: SmallVec<[Target; 2]>,
}

impl Node {
    fn insert(&mut self, tokens: &[String], target: Target) {
        match tokens.split_first() {
            None => self.targets.push(target),
            Some((head, rest)) => {
                let idx = match self.children.iter().position(|(k, _)| k == head) {
                    Some(i) => i,
                    None => {
                        self.children.push((head.clone(), Node::default()));
                        self.children.len() - 1
                    }
                };
                self.children[idx].1.insert(rest, target);
            }
        }
    }

    /// The child for `key`. Most keys of an event are not mapped, so the
    /// length and first byte reject them before any full comparison.
    #[inline]
    fn child(&self, key: &str) -> Option<&Node> {
        let (len, first) = (key.len(), key.as_bytes().first());
        self.children
            .iter()
            .find(|(k, _)| k.len() == len && k.as_bytes().first() == first && k == key)
            .map(|(_, n)| n)
    }
}

/// A captured JSON value.
#[derive(Debug, Clone, Default)]
enum Raw<'de> {
    #[default]
    Missing,
    Null,
    Str(Cow<'de, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// An object or array where a scalar was expected.
    Compound,
}

#[derive(Debug, Default)]
struct Fields<'de> {
    is_object: bool,
    trace: Raw<'de>,
    time: Raw<'de>,
    event: Raw<'de>,
    service: Raw<'de>,
    status: Raw<'de>,
    event_id: Raw<'de>,
    attrs: SmallVec<[(AttrSlot, Raw<'de>); 8]>,
}

impl<'de> Fields<'de> {
    /// Ready for the next line, keeping the attribute buffer.
    fn reset(&mut self) {
        self.is_object = false;
        for raw in [
            &mut self.trace,
            &mut self.time,
            &mut self.event,
            &mut self.service,
            &mut self.status,
            &mut self.event_id,
        ] {
            *raw = Raw::Missing;
        }
        self.attrs.clear();
    }

    fn capture(&mut self, targets: &[Target], value: Raw<'de>) {
        for target in targets {
            let slot = match target {
                Target::TraceId => &mut self.trace,
                Target::Time => &mut self.time,
                Target::Event => &mut self.event,
                Target::Service => &mut self.service,
                Target::Status => &mut self.status,
                Target::EventId => &mut self.event_id,
                Target::Attr(s) => {
                    self.attrs.push((*s, value.clone()));
                    continue;
                }
            };
            *slot = value.clone();
        }
    }
}

struct NodeSeed<'n, 'f, 'de> {
    node: &'n Node,
    out: &'f mut Fields<'de>,
    root: bool,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> NodeSeed<'_, '_, 'de> {
    fn scalar<E>(self, value: Raw<'de>) -> Result<(), E> {
        self.out.capture(&self.node.targets, value);
        Ok(())
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.root {
            self.out.is_object = true;
        }
        self.out.capture(&self.node.targets, Raw::Compound);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match self.node.child(&key) {
                Some(child) => map.next_value_seed(NodeSeed {
                    node: child,
                    out: self.out,
                    root: false,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.out.capture(&self.node.targets, Raw::Compound);
        let mut index = 0usize;
        let mut key = String::new();
        loop {
            key.clear();
            use std::fmt::Write;
            let _ = write!(key, "{index}");
            let more = match self.node.child(&key) {
                Some(child) => seq
                    .next_element_seed(NodeSeed {
                        node: child,
                        out: self.out,
                        root: false,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.scalar(Raw::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.scalar(Raw::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.scalar(Raw::Str(Cow::Owned(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.scalar(Raw::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.scalar(i64::try_from(v).map_or(Raw::Float(v as f64), Raw::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.scalar(Raw::Float(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.scalar(Raw::Bool(v))
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.scalar(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<(), E> {
        self.scalar(Raw::Null)
    }
}

/// Object keys, borrowed when unescaped.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// An attribute value borrowed from one decoded line.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrCow<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
}

/// One line, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<'a> {
    pub trace_id: Cow<'a, str>,
    pub time: EventTime,
    /// `None` when no journey uses this event name (unmatched).
    pub name: Option<NameId>,
    pub event: Cow<'a, str>,
    pub ok: bool,
    pub service: Cow<'a, str>,
    pub fingerprint: u64,
    pub attrs: SmallVec<[(AttrSlot, AttrCow<'a>); 8]>,
}

/// The fields of an event other than its attributes.
struct Head<'a> {
    trace_id: Cow<'a, str>,
    time: EventTime,
    name: Option<NameId>,
    event: Cow<'a, str>,
    ok: bool,
    service: Cow<'a, str>,
    fingerprint: u64,
}

fn attr_value(raw: Raw<'_>) -> Option<AttrCow<'_>> {
    match raw {
        Raw::Str(s) => Some(AttrCow::Str(s)),
        Raw::Int(n) => Some(AttrCow::Num(n as f64)),
        Raw::Float(f) => Some(AttrCow::Num(f)),
        Raw::Bool(b) => Some(AttrCow::Bool(b)),
        Raw::Missing | Raw::Null | Raw::Compound => None,
    }
}

/// Counters of decoding, per source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Input records (lines or messages), blank lines excluded.
    pub records: u64,
    /// Input bytes.
    pub bytes: u64,
    /// Records that became events of some journey.
    pub events: u64,
    /// Valid events whose name no journey uses.
    pub unmatched: u64,
    /// Refused records by reason, indexed by [`DecodeError::index`].
    pub errors: [u64; 8],
}

impl DecodeStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &DecodeStats) {
        self.records += other.records;
        self.bytes += other.bytes;
        self.events += other.events;
        self.unmatched += other.unmatched;
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
    }

    /// All refused records.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// Decodes records of one source with its field mapping.
pub struct Decoder {
    catalog: Arc<Catalog>,
    root: Node,
    trace_header: Option<String>,
    max_line: usize,
    source: String,
}

impl Decoder {
    /// A decoder for `mapping`, extracting the catalog's attribute pointers too.
    pub fn new(catalog: Arc<Catalog>, mapping: &ParsedMapping) -> Self {
        let mut root = Node::default();
        let trace_header = match &mapping.trace_id {
            TraceIdSource::Field(p) => {
                root.insert(p.tokens(), Target::TraceId);
                None
            }
            TraceIdSource::Header(name) => Some(name.clone()),
        };
        root.insert(mapping.time.tokens(), Target::Time);
        root.insert(mapping.event.tokens(), Target::Event);
        root.insert(mapping.service.tokens(), Target::Service);
        root.insert(mapping.status.tokens(), Target::Status);
        root.insert(mapping.event_id.tokens(), Target::EventId);
        for (slot, pointer) in catalog.attribute_pointers().iter().enumerate() {
            root.insert(pointer.tokens(), Target::Attr(slot as AttrSlot));
        }
        Self {
            catalog,
            root,
            trace_header,
            max_line: usize::MAX,
            source: "events".into(),
        }
    }

    /// Names the `[[source]]` this decoder reads, for counters.
    pub fn with_source(mut self, name: &str) -> Self {
        self.source = name.to_owned();
        self
    }

    /// The `[[source]]` name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether decoding looks at record headers (a `header:NAME` trace id).
    pub fn reads_headers(&self) -> bool {
        self.trace_header.is_some()
    }

    /// Refuses lines longer than `bytes` as [`DecodeError::OversizedLine`].
    pub fn with_max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self
    }

    /// The catalog this decoder resolves names in.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Decodes one record. `header` looks up a record header (Kafka) for a
    /// `header:NAME` trace id; files have none.
    pub fn decode<'a>(
        &self,
        line: &'a [u8],
        header: &dyn Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<Decoded<'a>, DecodeError> {
        let line = simdutf8::basic::from_utf8(line).map_err(|_| DecodeError::InvalidUtf8)?;
        self.decode_str(line, header)
    }

    /// Decodes one record already known to be UTF-8 (serde_json then skips
    /// validating each string again).
    pub fn decode_str<'a>(
        &self,
        line: &'a str,
        header: &dyn Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<Decoded<'a>, DecodeError> {
        let mut fields = Fields::default();
        self.parse(line, &mut fields)?;
        let head = self.interpret(&mut fields, header)?;
        let attrs = fields
            .attrs
            .drain(..)
            .filter_map(|(slot, raw)| attr_value(raw).map(|v| (slot, v)))
            .collect();
        Ok(Decoded {
            trace_id: head.trace_id,
            time: head.time,
            name: head.name,
            event: head.event,
            ok: head.ok,
            service: head.service,
            fingerprint: head.fingerprint,
            attrs,
        })
    }

    /// One serde_json pass over `line`, capturing the mapped fields.
    fn parse<'a>(&self, line: &'a str, fields: &mut Fields<'a>) -> Result<(), DecodeError> {
        let mut de = serde_json::Deserializer::from_str(line);
        NodeSeed {
            node: &self.root,
            out: fields,
            root: true,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|_| DecodeError::NotJson)?;
        if !fields.is_object {
            return Err(DecodeError::NotJson);
        }
        Ok(())
    }

    /// Turns captured fields into an event head (attributes stay in `fields`).
    fn interpret<'a>(
        &self,
        fields: &mut Fields<'a>,
        header: &dyn Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<Head<'a>, DecodeError> {
        let trace_id: Cow<'a, str> = match &self.trace_header {
            Some(name) => match header(name).map(std::str::from_utf8) {
                Some(Ok(v)) => Cow::Borrowed(v),
                _ => return Err(DecodeError::MissingTraceId),
            },
            None => match std::mem::take(&mut fields.trace) {
                Raw::Str(s) => s,
                Raw::Int(n) => Cow::Owned(n.to_string()),
                _ => return Err(DecodeError::MissingTraceId),
            },
        };
        // A W3C traceparent value yields its trace id.
        let trace_id = match trace_id {
            Cow::Borrowed(b) => Cow::Borrowed(traceparent_trace_id(b).unwrap_or(b)),
            Cow::Owned(o) => match traceparent_trace_id(&o) {
                Some(id) => Cow::Owned(id.to_owned()),
                None => Cow::Owned(o),
            },
        };
        if trace_id.is_empty() {
            return Err(DecodeError::MissingTraceId);
        }
        let time = match &fields.time {
            Raw::Missing | Raw::Null => return Err(DecodeError::MissingTime),
            Raw::Str(s) => parse_rfc3339(s).ok_or(DecodeError::BadTime)?,
            Raw::Int(ms) => *ms,
            Raw::Float(ms) if ms.is_finite() && ms.abs() < 9.0e15 => ms.floor() as i64,
            _ => return Err(DecodeError::BadTime),
        };
        let event = match std::mem::take(&mut fields.event) {
            Raw::Str(s) if !s.is_empty() => s,
            _ => return Err(DecodeError::MissingEvent),
        };
        let ok = match &fields.status {
            Raw::Missing | Raw::Null => true,
            Raw::Str(s) => parse_status(s).ok_or(DecodeError::BadStatus)?,
            Raw::Int(code) => *code < 400,
            Raw::Float(code) => *code < 400.0,
            Raw::Bool(b) => *b,
            Raw::Compound => return Err(DecodeError::BadStatus),
        };
        let service = match std::mem::take(&mut fields.service) {
            Raw::Str(s) => s,
            _ => Cow::Borrowed(""),
        };
        let name = self.catalog.lookup(&event);
        let fingerprint = match &fields.event_id {
            Raw::Str(id) if !id.is_empty() => fingerprint_by_id(id.as_bytes()),
            Raw::Int(id) => fingerprint_by_id(id.to_string().as_bytes()),
            _ => fingerprint_by_fields(name.unwrap_or(NameId::MAX), service.as_bytes(), time),
        };
        Ok(Head {
            trace_id,
            time,
            name,
            event,
            ok,
            service,
            fingerprint,
        })
    }

    /// Decodes a chunk of NDJSON lines into one batch per shard (always
    /// `shards` batches, empty ones included: they carry the chunk's progress).
    pub fn decode_chunk(
        &self,
        chunk: &Chunk,
        shards: usize,
        stats: &mut DecodeStats,
        dead: &mut Vec<DeadLetter>,
    ) -> Vec<ShardBatch> {
        let mut batches: Vec<ShardBatch> = (0..shards)
            .map(|_| {
                let mut b = ShardBatch::new(chunk.seq, chunk.partition, chunk.bytes.clone());
                // ~240 bytes per event: size once instead of growing.
                b.events.reserve(chunk.bytes.len() / 200 / shards + 16);
                b
            })
            .collect();
        let bytes = &chunk.bytes[..];
        // One SIMD pass over the chunk; single lines are checked only when it fails.
        let text = simdutf8::basic::from_utf8(bytes).ok();
        let base = bytes.as_ptr() as usize;
        let mut running = EventTime::MIN;
        let mut fields = Fields::default();
        let mut line_no = chunk.first_line;
        let mut start = 0usize;
        stats.bytes += bytes.len() as u64;
        while start < bytes.len() {
            let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
            let line_start = start;
            let mut line_end = end;
            if line_end > line_start && bytes[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            let line = &bytes[line_start..line_end];
            let this_line = line_no;
            start = end + 1;
            line_no += 1;
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            stats.records += 1;
            let refuse = |reason: DecodeError, stats: &mut DecodeStats, dead: &mut Vec<DeadLetter>| {
                stats.errors[reason.index()] += 1;
                dead.push(DeadLetter::new(
                    &chunk.source,
                    format!("{}:{this_line}", chunk.source),
                    reason,
                    line,
                ));
            };
            if line.len() > self.max_line {
                refuse(DecodeError::OversizedLine, stats, dead);
                continue;
            }
            // Line ends are ASCII, so a valid chunk slices into valid lines.
            let line_text = match text {
                Some(t) => &t[line_start..line_end],
                None => match simdutf8::basic::from_utf8(line) {
                    Ok(t) => t,
                    Err(_) => {
                        refuse(DecodeError::InvalidUtf8, stats, dead);
                        continue;
                    }
                },
            };
            fields.reset();
            let head = match self
                .parse(line_text, &mut fields)
                .and_then(|()| self.interpret(&mut fields, &|_| None))
            {
                Ok(h) => h,
                Err(reason) => {
                    refuse(reason, stats, dead);
                    continue;
                }
            };
            let Some(name) = head.name else {
                stats.unmatched += 1;
                continue;
            };
            stats.events += 1;
            running = running.max(head.time);
            let (trace, canonical) = TraceKey::from_text(&head.trace_id);
            let batch = &mut batches[trace.shard(shards)];
            let span = |s: &Cow<'_, str>, batch: &mut ShardBatch| -> Span {
                let inside = |b: &str| {
                    let p = b.as_ptr() as usize;
                    p >= base && p + b.len() <= base + bytes.len()
                };
                match s {
                    Cow::Borrowed(b) if inside(b) => Span {
                        start: (b.as_ptr() as usize - base) as u32,
                        len: b.len() as u32,
                        in_arena: false,
                    },
                    o => {
                        let start = batch.arena.len() as u32;
                        batch.arena.push_str(o);
                        Span {
                            start,
                            len: o.len() as u32,
                            in_arena: true,
                        }
                    }
                }
            };
            let trace_text = (!canonical).then(|| span(&head.trace_id, batch));
            let service = span(&head.service, batch);
            let attrs_start = batch.attrs.len() as u32;
            let mut n_attrs = 0u16;
            for (slot, value) in &fields.attrs {
                let v = match value {
                    Raw::Str(s) => SpanValue::Str(span(s, batch)),
                    Raw::Int(n) => SpanValue::Num(*n as f64),
                    Raw::Float(f) => SpanValue::Num(*f),
                    Raw::Bool(b) => SpanValue::Bool(*b),
                    Raw::Missing | Raw::Null | Raw::Compound => continue,
                };
                batch.attrs.push((*slot, v));
                n_attrs += 1;
            }
            batch.events.push(RawEvent {
                trace,
                trace_text,
                time: head.time,
                name,
                ok: head.ok,
                fingerprint: head.fingerprint,
                service,
                attrs_start,
                attrs_len: n_attrs,
                running_max: running,
            });
        }
        for b in &mut batches {
            b.chunk_max = running;
            b.last_of_partition = chunk.last;
        }
        batches
    }
}

/// `ok`/`success` and `error`/`failure` in any case, or an HTTP-like code.
fn parse_status(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("ok") || s.eq_ignore_ascii_case("success") {
        Some(true)
    } else if s.eq_ignore_ascii_case("error") || s.eq_ignore_ascii_case("failure") {
        Some(false)
    } else {
        s.trim().parse::<u16>().ok().map(|code| code < 400)
    }
}
