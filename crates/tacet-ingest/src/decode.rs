//! The decoder: one pass per line, steered by a trie of the field mapping's
//! JSON pointers.
//!
//! At each object level only keys on a mapped path are descended into; every
//! other value is skipped, building nothing. Captured strings are borrowed
//! from the input unless JSON escaped them.
//!
//! The pass is [`crate::scan`]'s hand-written scanner for the plain case;
//! on anything else it falls back to the serde_json pass here, which stays
//! the authority on what a line means (and on every refusal).

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;
pub use tacet_core::AttrCow;
use tacet_core::config::{ParsedMapping, TraceIdSource};
use tacet_core::event::{fingerprint_by_fields, fingerprint_by_id, traceparent_trace_id};
use tacet_core::{AttrSlot, Catalog, EventTime, NameId, TraceKey};

use crate::batch::{RawEvent, ShardBatch, Span, SpanValue};
use crate::deadletter::{DeadLetter, DecodeError};
use crate::reader::Chunk;
use crate::time::parse_rfc3339;

/// What a mapped path feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
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
pub(crate) struct Node {
    pub(crate) children: Vec<(String, Node)>,
    /// [`key_signature`] of each child's key, in the same order: most keys
    /// of an event are not mapped, and the signatures reject them without
    /// touching the keys themselves.
    signatures: Vec<u64>,
    /// Open-addressed index of the signatures: slot `h` holds a child's
    /// index plus one (0: empty), probed linearly from the signature's
    /// hash. A lookup is one or two probes, not a pass over every child.
    index: Vec<usize>,
    /// The raw form of every key this object has a [`KeyId`] for, for
    /// [`Node::predicted`]: first each child's key (set when the trie is
    /// built), then up to [`LEARNED_KEYS`] keys that map to nothing, learned
    /// from the lines as they come (each slot set once, never changed, so a
    /// reader sees a whole key or none).
    raw_keys: Box<[OnceLock<RawKey>]>,
    /// `after[k]`: the key that followed key `k` in the last line scanned
    /// here (`after[0]`: the object's first key, or the key after one that
    /// has no id), as a [`KeyId`]; 0 when none. Producers write their keys
    /// in one order, and events of different kinds differ by a few members
    /// left out, so the key after a key is nearly always the one after it
    /// in the line before — unmapped keys included, which is why they are
    /// learned. Shared by every thread decoding with this node; a stale or
    /// raced value only costs a miss, since a prediction is always checked
    /// against the line's bytes.
    after: Box<[AtomicU16]>,
    pub(crate) targets: SmallVec<[Target; 2]>,
}

/// Keys per object that map to nothing and are learned for prediction; the
/// first this many distinct ones (a line of made-up keys can fill them, and
/// then costs later lines their predictions, never their results).
const LEARNED_KEYS: usize = 16;

/// A key of one object level as the scanner knows it: 0 for none (the
/// object's start, or a key without an id), `i + 1` for `raw_keys[i]`, so
/// `1..=children.len()` are the children's keys and the rest learned ones.
pub(crate) type KeyId = u16;

/// A key and its closing quote as sixteen bytes to compare at once: `bytes`
/// holds them (zero-padded), `mask` has 0xff on each of their bytes. A key
/// that JSON would have to escape, or that is 16 bytes or longer, has an
/// empty mask and is never predicted.
#[derive(Debug, Clone, Copy, Default)]
struct RawKey {
    bytes: u128,
    mask: u128,
    /// The key's length and its closing quote's.
    len: usize,
}

impl RawKey {
    fn new(key: &str) -> Self {
        let plain = key.bytes().all(|b| b != b'"' && b != b'\\' && b >= 0x20);
        if !plain || key.len() >= 16 {
            return Self::default();
        }
        let mut bytes = [0u8; 16];
        bytes[..key.len()].copy_from_slice(key.as_bytes());
        bytes[key.len()] = b'"';
        Self {
            bytes: u128::from_le_bytes(bytes),
            mask: u128::MAX >> (8 * (15 - key.len())),
            len: key.len() + 1,
        }
    }

    /// Whether both are the same key (a key never predicted is none).
    fn same(&self, other: &RawKey) -> bool {
        self.mask != 0 && self.mask == other.mask && self.bytes == other.bytes
    }
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
                        self.signatures.push(key_signature(head));
                        self.children.len() - 1
                    }
                };
                self.children[idx].1.insert(rest, target);
            }
        }
    }

    /// Builds `index` (at most half full) here and below, once every
    /// pointer is inserted.
    fn index_children(&mut self) {
        if self.children.is_empty() {
            return; // a leaf: `child` answers `None` without a probe
        }
        // (Ids past `KeyId::MAX`, at a level of more than 65,000 mapped
        // keys, are 0: such keys are looked up, never predicted.)
        let known = self.children.len() + LEARNED_KEYS;
        self.raw_keys = (0..known).map(|_| OnceLock::new()).collect();
        for ((key, _), raw) in self.children.iter().zip(&self.raw_keys) {
            raw.get_or_init(|| RawKey::new(key));
        }
        self.after = (0..=known).map(|_| AtomicU16::new(0)).collect();
        let slots = (2 * self.children.len()).next_power_of_two().max(8);
        self.index = vec![0; slots];
        for (i, &signature) in self.signatures.iter().enumerate() {
            let mut h = index_slot(signature, slots);
            while self.index[h] != 0 {
                h = (h + 1) & (slots - 1);
            }
            self.index[h] = i + 1;
        }
        for (_, child) in &mut self.children {
            child.index_children();
        }
    }

    /// The child for `key`.
    #[inline(always)]
    pub(crate) fn child(&self, key: &str) -> Option<&Node> {
        self.child_index(key).map(|i| &self.children[i].1)
    }

    /// The index in `children` of the child for `key`.
    #[inline(always)]
    fn child_index(&self, key: &str) -> Option<usize> {
        if self.index.is_empty() {
            return None;
        }
        let signature = key_signature(key);
        let mask = self.index.len() - 1;
        let mut h = index_slot(signature, self.index.len());
        loop {
            let i = self.index[h].checked_sub(1)?;
            if self.signatures[i] == signature && self.children[i].0 == key {
                return Some(i);
            }
            h = (h + 1) & mask;
        }
    }

    /// The key that followed key `previous` in the last line, when the
    /// bytes at `rest` (right after the key's opening quote) are exactly that
    /// key and its closing quote: its id, its child (`None` for a learned
    /// key, which maps to nothing) and the length of key and quote.
    #[inline(always)]
    pub(crate) fn predicted(&self, previous: KeyId, rest: &[u8]) -> Option<(KeyId, Option<&Node>, usize)> {
        let id = self.after.get(usize::from(previous))?.load(Ordering::Relaxed);
        let i = usize::from(id).checked_sub(1)?;
        let raw = self.raw_keys.get(i)?.get()?;
        // Sixteen bytes at once.
        let window = match rest.first_chunk::<16>() {
            Some(window) => u128::from_le_bytes(*window),
            // Near the line's end (the last key of nearly every line): the
            // bytes left, padded with zeros, which no key byte equals.
            None => {
                let mut window = [0u8; 16];
                window[..rest.len()].copy_from_slice(rest);
                u128::from_le_bytes(window)
            }
        };
        if raw.mask == 0 || (window ^ raw.bytes) & raw.mask != 0 {
            return None;
        }
        Some((id, self.children.get(i).map(|(_, child)| child), raw.len))
    }

    /// Looks `key` up as the key after `previous`, and remembers it as the
    /// prediction for the next line: its id (0 when it has none) and child.
    #[inline(always)]
    pub(crate) fn key_after(&self, previous: KeyId, key: &str) -> (KeyId, Option<&Node>) {
        let (id, child) = match self.child_index(key) {
            Some(i) => (i + 1, Some(&self.children[i].1)),
            None => (self.learned_key(key), None),
        };
        let id = KeyId::try_from(id).unwrap_or(0);
        if let Some(slot) = self.after.get(usize::from(previous)) {
            // Written only when it changes: the line stays shared between cores.
            if slot.load(Ordering::Relaxed) != id {
                slot.store(id, Ordering::Relaxed);
            }
        }
        (id, child)
    }

    /// The id of `key`, which maps to nothing, learning it if there is
    /// room; 0 for a key that cannot be predicted or when the room is full.
    #[cold]
    fn learned_key(&self, key: &str) -> usize {
        let raw = RawKey::new(key);
        if raw.mask == 0 {
            return 0;
        }
        let children = self.children.len();
        for (i, slot) in self.raw_keys.iter().enumerate().skip(children) {
            // A slot another thread fills meanwhile is read as it was set.
            if slot.get_or_init(|| raw).same(&raw) {
                return i + 1;
            }
        }
        0
    }
}

/// Where a signature's probe starts in an index of `slots` (a power of two).
#[inline]
fn index_slot(signature: u64, slots: usize) -> usize {
    // Fibonacci hashing: the top bits of the product mix every byte.
    (signature.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & (slots - 1)
}

/// Length, first, second, middle and last byte of a key in one word.
#[inline]
fn key_signature(key: &str) -> u64 {
    let b = key.as_bytes();
    match b {
        [] => 0,
        [first, .., last] | [first @ last] => {
            let at = |i: usize| u64::from(b.get(i).copied().unwrap_or(0));
            (b.len() as u64 & 0xffff)
                | u64::from(*first) << 16
                | at(1) << 24
                | at(b.len() / 2) << 32
                | u64::from(*last) << 40
        }
    }
}

/// A captured JSON value.
#[derive(Debug, Clone, Default)]
pub(crate) enum Raw<'de> {
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
pub(crate) struct Fields<'de> {
    pub(crate) is_object: bool,
    trace: Raw<'de>,
    time: Raw<'de>,
    event: Raw<'de>,
    service: Raw<'de>,
    status: Raw<'de>,
    event_id: Raw<'de>,
    /// Attribute values as [`Decoded`] holds them (a value that is no
    /// attribute — null, an object — is not kept), so that they can be
    /// handed over whole instead of converted one by one.
    attrs: SmallVec<[(AttrSlot, AttrCow<'de>); 8]>,
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

    #[inline(always)]
    pub(crate) fn capture(&mut self, targets: &[Target], value: Raw<'de>) {
        // Nearly every mapped path feeds one target: move the value there.
        match targets {
            [] => {}
            [only] => self.put(*only, value),
            [first @ .., last] => {
                for &target in first {
                    self.put(target, value.clone());
                }
                self.put(*last, value);
            }
        }
    }

    #[inline(always)]
    fn put(&mut self, target: Target, value: Raw<'de>) {
        match target {
            Target::TraceId => self.trace = value,
            Target::Time => self.time = value,
            Target::Event => self.event = value,
            Target::Service => self.service = value,
            Target::Status => self.status = value,
            Target::EventId => self.event_id = value,
            Target::Attr(s) => {
                if let Some(value) = attr_value(value) {
                    self.attrs.push((s, value));
                }
            }
        }
    }
}

pub(crate) struct NodeSeed<'n, 'f, 'de> {
    node: &'n Node,
    out: &'f mut Fields<'de>,
    root: bool,
}

impl<'n, 'f, 'de> NodeSeed<'n, 'f, 'de> {
    /// Captures one value below the root into `node`'s targets.
    pub(crate) fn new(node: &'n Node, out: &'f mut Fields<'de>) -> Self {
        Self { node, out, root: false }
    }
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

/// A record's bytes as text. Records are nearly always ASCII, and checking
/// for that sixteen bytes at a time is cheaper than a full UTF-8
/// validation of a short line (see [`crate::scan::is_ascii`]); a record with any other
/// byte is validated in full.
fn text_of(line: &[u8]) -> Result<&str, DecodeError> {
    if crate::scan::is_ascii(line) {
        // SAFETY: ASCII is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(line) })
    } else {
        simdutf8::basic::from_utf8(line).map_err(|_| DecodeError::InvalidUtf8)
    }
}

/// A W3C trace id (32 hex digits) is case-insensitive (SPEC §1): upper-case
/// hex is written in lower case, so both spellings are one trace. Other ids
/// are kept as they are.
#[inline]
fn lowercase_w3c_id(id: Cow<'_, str>) -> Cow<'_, str> {
    let b = id.as_bytes();
    if b.len() != 32 || !b.iter().any(u8::is_ascii_uppercase) || !b.iter().all(u8::is_ascii_hexdigit) {
        return id;
    }
    Cow::Owned(id.to_ascii_lowercase())
}

/// One line, decoded.
#[derive(Debug, Clone, PartialEq, Default)]
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
        // NaN and the infinities are no amount: stored as null, never summed.
        Raw::Float(f) if f.is_finite() => Some(AttrCow::Num(f)),
        Raw::Float(_) => None,
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
    pub errors: [u64; DecodeError::ALL.len()],
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

/// Longest trace id accepted (SPEC §1): ids are kept per open trace, per
/// silent failure and in alert samples, so their length is bounded.
pub const MAX_TRACE_ID_BYTES: usize = 256;

/// SPEC §1's default `max_future_skew`.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(15 * 60);

/// Refuses event times later than the wall clock + a skew (SPEC §1): one
/// record in epoch microseconds would otherwise push event time into the
/// year 50,000 and decide every open journey at once.
///
/// The limit is cached: a time at or under the cached limit (every sane
/// record) costs one load; only a time past it reads the clock again, and
/// the clock only moves the limit later.
#[derive(Debug)]
struct FutureLimit {
    skew_ms: i64,
    clock: fn() -> EventTime,
    cached: AtomicI64,
}

impl FutureLimit {
    fn new(skew: Duration, clock: fn() -> EventTime) -> Self {
        let skew_ms = i64::try_from(skew.as_millis()).unwrap_or(i64::MAX);
        Self {
            skew_ms,
            clock,
            cached: AtomicI64::new(clock().saturating_add(skew_ms)),
        }
    }

    #[inline]
    fn allows(&self, time: EventTime) -> bool {
        time <= self.cached.load(Ordering::Relaxed) || self.allows_now(time)
    }

    #[cold]
    fn allows_now(&self, time: EventTime) -> bool {
        let limit = (self.clock)().saturating_add(self.skew_ms);
        self.cached.fetch_max(limit, Ordering::Relaxed);
        time <= limit
    }
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn wall_clock_ms() -> EventTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Decodes records of one source with its field mapping.
pub struct Decoder {
    catalog: Arc<Catalog>,
    root: Node,
    trace_header: Option<String>,
    max_line: usize,
    future: FutureLimit,
    source: String,
}

impl<'a> Decoded<'a> {
    /// Holds `head` and the attributes captured in `fields`.
    fn set(&mut self, head: Head<'a>, fields: &mut Fields<'a>) {
        self.trace_id = head.trace_id;
        self.time = head.time;
        self.name = head.name;
        self.event = head.event;
        self.ok = head.ok;
        self.service = head.service;
        self.fingerprint = head.fingerprint;
        // A swap: the slot's old attributes leave with `fields`.
        std::mem::swap(&mut self.attrs, &mut fields.attrs);
    }
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
        root.index_children();
        Self {
            catalog,
            root,
            trace_header,
            max_line: usize::MAX,
            future: FutureLimit::new(DEFAULT_MAX_FUTURE_SKEW, wall_clock_ms),
            source: "events".into(),
        }
    }

    /// The decoder of `[[source]]` `source` as the engine settings say, the
    /// one replay and `tacet run` both use: lines up to
    /// `engine.max_line_bytes`, times up to the wall clock +
    /// `engine.max_future_skew`.
    pub fn from_config(
        catalog: Arc<Catalog>,
        mapping: &ParsedMapping,
        source: &str,
        engine: &tacet_core::config::EngineConfig,
    ) -> Self {
        Self::new(catalog, mapping)
            .with_source(source)
            .with_max_line(engine.max_line_bytes)
            .with_max_future_skew(engine.max_future_skew)
    }

    /// Refuses event times later than the wall clock + `skew` as
    /// [`DecodeError::TimeInFuture`] (default [`DEFAULT_MAX_FUTURE_SKEW`]).
    pub fn with_max_future_skew(self, skew: Duration) -> Self {
        self.with_future_limit(skew, wall_clock_ms)
    }

    /// As [`Decoder::with_max_future_skew`], against `clock` (epoch
    /// milliseconds) instead of the wall clock: for tests.
    pub fn with_future_limit(mut self, skew: Duration, clock: fn() -> EventTime) -> Self {
        self.future = FutureLimit::new(skew, clock);
        self
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
        let line = text_of(line)?;
        self.decode_str(line, header)
    }

    /// Decodes one record already known to be UTF-8 (serde_json then skips
    /// validating each string again).
    pub fn decode_str<'a>(
        &self,
        line: &'a str,
        header: &dyn Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<Decoded<'a>, DecodeError> {
        self.decode_with(line, header, Self::parse)
    }

    /// Decodes one record, capturing its fields with `parse`.
    fn decode_with<'a>(
        &self,
        line: &'a str,
        header: &dyn Fn(&str) -> Option<&'a [u8]>,
        parse: impl FnOnce(&Self, &'a str, &mut Fields<'a>) -> Result<(), DecodeError>,
    ) -> Result<Decoded<'a>, DecodeError> {
        let mut out = Decoded::default();
        self.decode_with_into(line, header, parse, &mut out)?;
        Ok(out)
    }

    /// Decodes one record into `out`, reusing it (a decoded record is ~450
    /// bytes: a hot loop that keeps its own avoids moving each one). On an
    /// error `out` holds nothing meaningful.
    pub fn decode_into<'a>(
        &self,
        line: &'a [u8],
        header: &dyn Fn(&str) -> Option<&'a [u8]>,
        out: &mut Decoded<'a>,
    ) -> Result<(), DecodeError> {
        let mut fields = Fields::default();
        let head = self.decode_record(line, None, header, &mut fields)?;
        out.set(head, &mut fields);
        Ok(())
    }

    /// What one input record is: the one decision both sources make, a
    /// file's line in [`Decoder::decode_chunk`] and a Kafka record's value
    /// in [`Decoder::decode_into`]. A refused record (too long, not UTF-8,
    /// not JSON, a field missing or bad) is the error its dead letter
    /// names; otherwise the head of an event, which is *unmatched* when
    /// `name` is `None` (no journey uses its event name). `text` is `line`
    /// already known to be UTF-8, when it is. Attributes stay in `fields`.
    fn decode_record<'a>(
        &self,
        line: &'a [u8],
        text: Option<&'a str>,
        header: &dyn Fn(&str) -> Option<&'a [u8]>,
        fields: &mut Fields<'a>,
    ) -> Result<Head<'a>, DecodeError> {
        if line.len() > self.max_line {
            return Err(DecodeError::OversizedLine);
        }
        let text = match text {
            Some(t) => t,
            None => text_of(line)?,
        };
        fields.reset();
        self.parse(text, fields)?;
        self.interpret(fields, header)
    }

    fn decode_with_into<'a>(
        &self,
        line: &'a str,
        header: &dyn Fn(&str) -> Option<&'a [u8]>,
        parse: impl FnOnce(&Self, &'a str, &mut Fields<'a>) -> Result<(), DecodeError>,
        out: &mut Decoded<'a>,
    ) -> Result<(), DecodeError> {
        let mut fields = Fields::default();
        parse(self, line, &mut fields)?;
        let head = self.interpret(&mut fields, header)?;
        out.set(head, &mut fields);
        Ok(())
    }

    /// Captures the mapped fields of `line` into (reset) `fields`.
    fn parse<'a>(&self, line: &'a str, fields: &mut Fields<'a>) -> Result<(), DecodeError> {
        if crate::scan::scan(line, &self.root, fields) == crate::scan::Scan::Done {
            return Ok(());
        }
        fields.reset();
        self.parse_with_serde(line, fields)
    }

    /// One serde_json pass over `line`, capturing the mapped fields.
    fn parse_with_serde<'a>(&self, line: &'a str, fields: &mut Fields<'a>) -> Result<(), DecodeError> {
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
        if trace_id.len() > MAX_TRACE_ID_BYTES {
            return Err(DecodeError::TraceIdTooLong);
        }
        let trace_id = lowercase_w3c_id(trace_id);
        let time = match &fields.time {
            Raw::Missing | Raw::Null => return Err(DecodeError::MissingTime),
            Raw::Str(s) => parse_rfc3339(s).ok_or(DecodeError::BadTime)?,
            Raw::Int(ms) => *ms,
            Raw::Float(ms) if ms.is_finite() && ms.abs() < 9.0e15 => ms.floor() as i64,
            _ => return Err(DecodeError::BadTime),
        };
        if !self.future.allows(time) {
            return Err(DecodeError::TimeInFuture);
        }
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
            // Line ends are ASCII, so a valid chunk slices into valid lines.
            let line_text = text.map(|t| &t[line_start..line_end]);
            let head = match self.decode_record(line, line_text, &|_| None, &mut fields) {
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
                    AttrCow::Str(s) => SpanValue::Str(span(s, batch)),
                    AttrCow::Num(n) => SpanValue::Num(*n),
                    AttrCow::Bool(b) => SpanValue::Bool(*b),
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

#[cfg(test)]
mod tests {
    //! The scanner against the serde_json pass: same decisions on every line.

    use std::path::Path;

    use proptest::prelude::*;
    use tacet_core::config::Config;

    use super::*;
    use crate::scan::{Scan, scan};

    const JOURNEY: &str = include_str!("../../../testdata/decode/transfer-journey.toml");

    const NESTED: &str = include_str!("../../../testdata/decode/nested-source.toml");

    fn decoder(extra: &str) -> Decoder {
        let config = Config::from_toml(&format!("{JOURNEY}{extra}"), Path::new("t.toml")).unwrap();
        let catalog = Arc::new(Catalog::new(&config).unwrap());
        let (_, mapping) = config.replay_mapping(None).unwrap();
        Decoder::new(catalog, &mapping)
    }

    /// The flat default mapping and a nested one, with attributes under both.
    static DECODERS: std::sync::LazyLock<[Decoder; 2]> = std::sync::LazyLock::new(|| [decoder(""), decoder(NESTED)]);

    /// Both paths on one line: the fast one (with its fallback) and serde_json alone.
    fn both<'a>(d: &Decoder, line: &'a str) -> (Result<Decoded<'a>, DecodeError>, Result<Decoded<'a>, DecodeError>) {
        (
            d.decode_str(line, &|_| None),
            d.decode_with(line, &|_| None, Decoder::parse_with_serde),
        )
    }

    fn takes_fast_path(d: &Decoder, line: &str) -> bool {
        scan(line, &d.root, &mut Fields::default()) == Scan::Done
    }

    proptest! {
        /// The indexed lookup finds exactly the child with that key. Keys
        /// from three letters collide in signature (length, first, second,
        /// middle and last byte) all the time, so the index must compare
        /// keys, not only signatures.
        #[test]
        fn a_child_is_found_by_its_key_and_only_by_it(
            keys in prop::collection::vec("[abc]{0,6}", 0..40),
            asked in prop::collection::vec("[abc]{0,6}", 0..40),
        ) {
            let mut node = Node::default();
            for (i, key) in keys.iter().enumerate() {
                node.insert(std::slice::from_ref(key), Target::Attr(i as AttrSlot));
            }
            node.index_children();
            for key in keys.iter().chain(&asked) {
                let naive = node.children.iter().find(|(k, _)| k == key).map(|(_, n)| n);
                prop_assert!(
                    std::ptr::eq(node.child(key).map_or(std::ptr::null(), |n| n), naive.map_or(std::ptr::null(), |n| n)),
                    "{key:?}"
                );
            }
        }
    }

    /// A record with a byte past ASCII is validated in full: UTF-8 text
    /// decodes, anything else is refused as invalid UTF-8 wherever the bad
    /// byte is (in a value the decoder skips too).
    #[test]
    fn records_past_ascii_are_validated_in_full() {
        let d = decoder("");
        let line = r#"{"ts":1,"trace_id":"t-1","event":"ledger.posted","customer_id":"c-é","host":"pod-ü"}"#;
        let decoded = d.decode(line.as_bytes(), &|_| None).expect("UTF-8");
        assert!(decoded.attrs.iter().any(|(_, v)| *v == AttrCow::Str("c-é".into())));
        for bad in ["é", "ü"] {
            // The character's first byte alone: not UTF-8.
            let mut bytes = line.as_bytes().to_vec();
            bytes.remove(line.find(bad).unwrap() + 1);
            assert_eq!(
                d.decode(&bytes, &|_| None).map(|_| ()),
                Err(DecodeError::InvalidUtf8),
                "{bad}"
            );
        }
    }

    #[test]
    fn plain_events_take_the_fast_path() {
        let d = decoder("");
        for line in [
            r#"{"ts":"2026-11-22T08:00:00.919Z","trace_id":"b2039459e84be74464c8dc89c43e42d1","service":"mobile-bff","event":"transfer.requested","status":"ok","event_id":"ev-1a13b8647","amount":375.59,"currency":"EUR","customer_id":"c-90877","channel":"mobile","region":"eu-west","level":"info","host":"pod-1"}"#,
            r#" { "ts" : 17 , "trace_id" : "t" , "event" : "ledger.posted" , "x" : [ 1 , -2.5e3 , { "y" : null } ] , "tags" : [ "a" , "b" ] } "#,
            r#"{"trace_id":"t","ts":1,"event":"x","skipped":"esc\"aped \u00e9","geo":{"region":"eu","n":[true,false]}}"#,
        ] {
            assert!(takes_fast_path(&d, line), "{line}");
            let (fast, serde) = both(&d, line);
            assert!(fast.is_ok(), "{line}");
            assert_eq!(fast, serde, "{line}");
        }
        let nested = decoder(NESTED);
        let line = r#"{"meta":{"type":"ledger.posted","epoch_ms":1795342503123,"emitter":{"name":"core-ledger"},"ids":["ev-1","x"]},"ctx":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},"http":{"code":503}}"#;
        assert!(takes_fast_path(&nested, line));
        let (fast, serde) = both(&nested, line);
        assert!(fast.is_ok());
        assert_eq!(fast, serde);
    }

    /// A predicted key is only a guess: it is taken when the line's bytes
    /// are that key and its closing quote, and every other line is looked
    /// up as before. Each odd line below comes right after `first`, so its
    /// members meet `first`'s keys as predictions: keys that moved, keys
    /// that a predicted key is a prefix of (and the reverse), unmapped keys
    /// where mapped ones were, a line that ends within sixteen bytes of a key.
    #[test]
    fn a_predicted_key_is_checked_against_the_line() {
        let d = decoder("");
        let first = r#"{"trace_id":"t1","ts":1,"event":"ledger.posted","amount":5,"level":"info"}"#;
        assert_eq!(d.root.after[0].load(Ordering::Relaxed), 0, "nothing predicted yet");
        for odd in [
            first,                                                                 // the same line: predicted key after key
            r#"{"ts":2,"trace_id":"t2","event":"ledger.posted","amount":6}"#,      // members swapped
            r#"{"trace_idx":"x","ts":3,"trace_id":"t3","event":"ledger.posted"}"#, // a longer key
            r#"{"trace":"x","ts":4,"trace_id":"t4","event":"ledger.posted"}"#,     // a shorter one
            r#"{"trace_id":"t5","tsx":9,"ts":5,"event":"ledger.posted"}"#,
            r#"{"trace_id":"t6","ts":6,"event":"ledger.posted","level":"x","amount":7.25}"#,
            r#"{"level":"t6","ts":6,"event":"ledger.posted","trace_id":"x","amount":7.25}"#,
            r#"{"trace_id":"t6","ts":6,"event":"ledger.posted","amount":7.25,"levels":1}"#,
            r#"{"trace_id":"t7","ts":7,"event":"ledger.posted","am"#, // truncated: an error
            r#"{"trace_id":"t8","ts":8,"event":"ledger.posted","amount"}"#,
        ] {
            for line in [first, odd] {
                let (fast, serde) = both(&d, line);
                assert_eq!(fast, serde, "{line}");
            }
        }
        // After `first`, the object's first key is predicted to be
        // `trace_id`, and taken only where the line holds exactly that key.
        both(&d, first).0.unwrap();
        let trace_id = d.root.children.iter().position(|(k, _)| k == "trace_id").unwrap();
        let trace_id = KeyId::try_from(trace_id + 1).unwrap();
        assert_eq!(d.root.after[0].load(Ordering::Relaxed), trace_id);
        let rest = br#"trace_id":"t10","ts":10}"#;
        assert!(
            d.root
                .predicted(0, rest)
                .is_some_and(|(id, child, len)| id == trace_id && child.is_some() && len == "trace_id\"".len())
        );
        assert!(d.root.predicted(0, br#"trace_idx":"t10","ts":10}"#).is_none());
        assert!(d.root.predicted(0, br#"trace_i":"t10","ts":10}"#).is_none());
        // Fewer than sixteen bytes left: compared as far as they go.
        assert!(d.root.predicted(0, br#"trace_id":1}"#).is_some());
        assert!(d.root.predicted(0, br#"trace_id"#).is_none());
        assert!(d.root.predicted(0, br#"trace_i"#).is_none());
        assert!(d.root.predicted(0, b"").is_none());
    }

    /// Lines of a few shapes, as a topic carries them (events of different
    /// kinds leave different members out), are predicted key after key,
    /// unmapped keys included: once each shape has been seen, a line costs
    /// at most a miss where its shape differs from the line before.
    #[test]
    fn keys_that_map_to_nothing_are_learned_and_predicted() {
        let d = decoder("");
        let full = r#"{"ts":1,"trace_id":"t","event":"ledger.posted","status":"ok","event_id":"e","amount":1.5,"customer_id":"c","level":"info","host":"pod-1"}"#;
        let short = r#"{"ts":2,"trace_id":"u","event":"ledger.posted","status":"ok","event_id":"f","level":"info","host":"pod-2"}"#;
        for line in [full, short, full, short] {
            let (fast, serde) = both(&d, line);
            assert_eq!(fast, serde, "{line}");
        }
        let id_of = |key: &str| {
            let raw = RawKey::new(key);
            let i = d
                .root
                .raw_keys
                .iter()
                .position(|k| k.get().is_some_and(|k| k.same(&raw)));
            KeyId::try_from(i.expect(key) + 1).unwrap()
        };
        let (level, host) = (id_of("level"), id_of("host"));
        assert!(usize::from(level) > d.root.children.len(), "learned, not a child");
        // `host` follows `level` in both shapes: predicted, and mapped to nothing.
        assert!(matches!(
            d.root.predicted(level, br#"host":"pod-3"}    "#),
            Some((id, None, 5)) if id == host
        ));
        // The key after `event_id` is the one of the last line (`short`).
        assert_eq!(
            d.root.after[usize::from(id_of("event_id"))].load(Ordering::Relaxed),
            level
        );
    }

    /// Learning is bounded: after [`LEARNED_KEYS`] distinct unmapped keys no
    /// more are learned, and lines with any others decode as before.
    #[test]
    fn learned_keys_are_bounded() {
        let d = decoder("");
        for n in 0..LEARNED_KEYS + 8 {
            let line = format!(r#"{{"ts":1,"trace_id":"t","event":"ledger.posted","x{n}":1,"y{n}":"v"}}"#);
            assert!(takes_fast_path(&d, &line));
            let (fast, serde) = both(&d, &line);
            assert_eq!(fast, serde, "{line}");
        }
        let learned = d.root.raw_keys.iter().skip(d.root.children.len());
        assert_eq!(learned.filter(|k| k.get().is_some()).count(), LEARNED_KEYS);
        assert_eq!(d.root.raw_keys.len(), d.root.children.len() + LEARNED_KEYS);
    }

    /// A mapped key of sixteen bytes or more is never predicted, and is
    /// still found and captured by the lookup, line after line.
    #[test]
    fn long_keys_are_looked_up_not_predicted() {
        let d = decoder(
            r#"
[[journey]]
name = "refund"
start = "refund.requested"
ack_ok = "refund.accepted"
complete = ["refund.posted"]
deadline = "2m"
ack_timeout = "30s"
slo = 0.999
attributes = { reference = "/payment_reference_number" }
"#,
        );
        let line = r#"{"payment_reference_number":"pr-7","trace_id":"t","ts":1,"event":"refund.requested"}"#;
        for _ in 0..3 {
            assert!(takes_fast_path(&d, line));
            let (fast, serde) = both(&d, line);
            let fast = fast.unwrap();
            assert!(fast.attrs.iter().any(|(_, v)| *v == AttrCow::Str("pr-7".into())));
            assert_eq!(Ok(fast), serde);
        }
        assert!(d.root.predicted(0, &line.as_bytes()[2..]).is_none());
    }

    #[test]
    fn unusual_lines_fall_back_and_decide_as_serde_json_does() {
        let d = decoder("");
        for line in [
            r#"{"trace_id":"t\u0041","ts":1,"event":"ledger.posted"}"#, // escape in a captured string
            r#"{"tr\u0061ce_id":"t","ts":1,"event":"ledger.posted"}"#,  // escape in a mapped-level key
            r#"{"trace_id":"t","ts":1,"event":"ledger.posted","amount":1e400}"#, // out of range
            r#"{"trace_id":"t","ts":1,"event":"ledger.posted","x":01}"#, // leading zero
            r#"{"trace_id":"t","ts":1,"event":"ledger.posted",}"#,      // trailing comma
            r#"{"trace_id":"t","ts":1,"event":"ledger.posted"} x"#,     // trailing text
            r#"{"trace_id":"t","ts":1,"event":"ledger.posted","x":"\q"}"#, // bad escape, ignored value
            r#"{"trace_id":"t","ts":1,"event":"ledger.posted","x":"a	b"}"#, // control character
            r#"[{"trace_id":"t"}]"#,
            r#""just a string""#,
            "",
        ] {
            assert!(!takes_fast_path(&d, line), "{line}");
            let (fast, serde) = both(&d, line);
            assert_eq!(fast, serde, "{line}");
        }
        let deep = format!(
            r#"{{"trace_id":"t","ts":1,"event":"ledger.posted","x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(!takes_fast_path(&d, &deep));
        let (fast, serde) = both(&d, &deep);
        assert!(fast.is_ok(), "serde_json skips ignored values at any depth");
        assert_eq!(fast, serde);
    }

    /// JSON values as producers write them, escapes and odd numbers included.
    fn value(depth: u32) -> BoxedStrategy<String> {
        let leaf = prop_oneof![
            4 => "[a-z0-9 ._-]{0,12}".prop_map(|s| format!("\"{s}\"")),
            1 => r#""([a-z]|\\[nrt"\\/]|\\u00[0-9a-f]{2}|é|€){0,6}""#,
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => any::<u64>().prop_map(|n| n.to_string()),
            1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| f.to_string()),
            1 => "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,3})?",
            1 => Just("true".to_string()),
            1 => Just("false".to_string()),
            1 => Just("null".to_string()),
            1 => Just("\"2026-11-22T08:00:00.919Z\"".to_string()),
        ];
        if depth == 0 {
            return leaf.boxed();
        }
        let inner = value(depth - 1);
        prop_oneof![
            3 => leaf,
            1 => prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            1 => prop::collection::vec((key(), inner), 0..4).prop_map(|v| {
                let members: Vec<String> = v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
        .boxed()
    }

    /// Keys: mostly the mapped ones, so captures and nesting happen.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::sample::select(vec![
                "ts", "trace_id", "service", "event", "status", "event_id", "amount", "customer_id", "tags", "geo",
                "region", "meta", "type", "epoch_ms", "emitter", "name", "ids", "ctx", "traceparent", "http", "code",
                "0",
            ])
            .prop_map(str::to_owned),
            3 => "[a-z_]{1,8}",
            1 => Just("tr\\u0061ce_id".to_string()),
        ]
    }

    /// An event object: mapped fields with plausible values, then anything.
    fn line() -> impl Strategy<Value = String> {
        let members = prop::collection::vec((key(), value(3)), 0..10);
        let plausible = (
            prop_oneof![
                Just("\"ledger.posted\"".to_string()),
                Just("\"transfer.requested\"".to_string()),
                value(0)
            ],
            prop_oneof![
                Just("1795342503123".to_string()),
                Just("\"2026-11-22T08:00:00.919Z\"".to_string()),
                value(0)
            ],
            prop_oneof![Just("\"4bf92f3577b34da6a3ce929d0e0e4736\"".to_string()), value(0)],
        );
        (plausible, members, prop::sample::select(vec!["", " ", "\t", " \r\n "])).prop_map(
            |((event, ts, trace), members, ws)| {
                let mut all = vec![
                    format!("\"event\"{ws}:{ws}{event}"),
                    format!("\"ts\":{ts}"),
                    format!("\"trace_id\":{trace}"),
                ];
                all.extend(members.into_iter().map(|(k, v)| format!("\"{k}\":{ws}{v}")));
                format!("{ws}{{{}}}{ws}", all.join(&format!("{ws},")))
            },
        )
    }

    proptest! {
        /// Model check of the key prediction: a fresh decoder reads lines of
        /// a few shapes in any order (keys that are prefixes of each other,
        /// mapped and unmapped, more unmapped ones than it learns), and
        /// every line decodes as serde_json decodes it, whatever the lines
        /// before it left predicted.
        #[test]
        fn lines_of_a_few_shapes_decode_whatever_was_predicted(
            shapes in prop::collection::vec(
                prop::collection::vec(prop_oneof![
                    3 => prop::sample::select(vec![
                        "ts", "trace_id", "event", "status", "event_id", "amount", "customer_id",
                        "level", "levels", "lev", "host", "hostname", "trace", "trace_idx",
                    ]).prop_map(str::to_owned),
                    1 => "[a-z]{1,18}",
                ], 0..12),
                1..5,
            ),
            lines in prop::collection::vec((any::<prop::sample::Index>(), value(1)), 1..40),
        ) {
            let d = decoder("");
            for (shape, value) in lines {
                let keys = &shapes[shape.index(shapes.len())];
                let mut members = vec![
                    r#""event":"ledger.posted""#.to_string(),
                    r#""ts":"2026-11-22T08:00:00.919Z""#.to_string(),
                ];
                members.extend(keys.iter().map(|k| format!("\"{k}\":{value}")));
                let line = format!("{{{}}}", members.join(","));
                let (fast, serde) = both(&d, &line);
                prop_assert_eq!(fast, serde, "{}", line);
            }
        }

        /// Decoding into one reused record gives what decoding each line
        /// afresh gives: nothing of an earlier line (its attributes, its
        /// fields) survives into a later one.
        #[test]
        fn a_reused_record_decodes_as_a_fresh_one(lines in prop::collection::vec(line(), 1..20)) {
            for d in &*DECODERS {
                let mut reused = Decoded::default();
                for line in &lines {
                    let fresh = d.decode(line.as_bytes(), &|_| None);
                    let into = d.decode_into(line.as_bytes(), &|_| None, &mut reused);
                    match fresh {
                        Ok(fresh) => {
                            prop_assert_eq!(into, Ok(()), "{}", line);
                            prop_assert_eq!(&reused, &fresh, "{}", line);
                        }
                        Err(e) => prop_assert_eq!(into, Err(e), "{}", line),
                    }
                }
            }
        }
    }

    /// The equivalence below would hold trivially if everything fell back.
    #[test]
    fn most_generated_lines_take_the_fast_path() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = line();
        let (mut fast, total) = (0, 1000);
        for _ in 0..total {
            let line = strategy.new_tree(&mut runner).unwrap().current();
            fast += usize::from(takes_fast_path(&DECODERS[0], &line));
        }
        assert!(fast * 2 > total, "only {fast} of {total} took the fast path");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Generated events decode identically on both paths.
        #[test]
        fn generated_lines_decode_as_serde_json_decodes_them(line in line()) {
            for d in &*DECODERS {
                let (fast, serde) = both(d, &line);
                prop_assert_eq!(fast, serde, "{}", line);
            }
        }

        /// So do broken ones: a byte deleted, replaced or inserted anywhere.
        #[test]
        fn mutated_lines_decode_as_serde_json_decodes_them(
            line in line(),
            at in any::<prop::sample::Index>(),
            edit in 0u8..3,
            byte in prop::sample::select(b"{}[]\",:\\ 0123456789.eE+-tfnulx\t\n".to_vec()),
        ) {
            let mut bytes = line.into_bytes();
            let i = at.index(bytes.len() + 1);
            match edit {
                0 if i < bytes.len() => { bytes.remove(i); }
                1 if i < bytes.len() => bytes[i] = byte,
                _ => bytes.insert(i, byte),
            }
            // Only UTF-8 reaches this stage; a cut multi-byte char is the
            // UTF-8 check's business, not the scanner's.
            if let Ok(line) = String::from_utf8(bytes) {
                for d in &*DECODERS {
                    let (fast, serde) = both(d, &line);
                    prop_assert_eq!(fast, serde, "{}", line);
                }
            }
        }
    }
}
