//! One shard of the join: the traces it owns, their timers and tombstones,
//! and the outcome rules of SPEC §3.
//!
//! Every decision is a function of event times, never of wall-clock or of
//! when the watermark happened to move: `decided_at` is the ack for `failed`,
//! the last required step for `completed`, the deadline for `silent_failure`
//! and `stalled`, first-seen + `orphan_timeout` for `orphan`. Two engines that
//! see the same events per trace therefore write the same rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hashbrown::HashTable;
use smallvec::SmallVec;
use tacet_core::hint::{prefetch_line, prefetch_slice};
use tacet_core::outcome::OutcomeSink;
use tacet_core::{AttrValue, Catalog, Event, EventTime, JourneyId, NameId, Outcome, OutcomeRecord, Role, TraceKey};

use crate::attrs::Blob;
use crate::index::TraceIndex;
use crate::slab::{Slab, Vacant};
use crate::stats::ShardStats;
use crate::timers::TimerQueue;

/// `journey` of a trace that has steps but no start or ack yet.
pub(crate) const PENDING: u16 = u16::MAX;
/// `journey` of a vacant slab entry.
const VACANT: u16 = u16::MAX - 1;
/// Cap on distinct service names per shard; beyond it they read `(other)`.
const SERVICE_CAP: usize = 100_000;
/// Cap on the bytes of those names; beyond it they read `(other)` too.
/// Without it, made-up names of up to a line each would grow the shard
/// without bound, and one journey's `services` list could pass the 2 GiB an
/// outcome file's string column can hold.
pub const SERVICE_BYTES_CAP: usize = tacet_core::outcome::SERVICE_NAME_BYTES_CAP;
/// Tombstones are swept in buckets of this much event time.
const TOMB_BUCKET_MS: i64 = 60_000;
/// Below this share of `max_open` an eviction episode is over.
const EVICTION_EPISODE_END: f64 = 0.9;
/// Bytes one tombstone holds: its table entry and its key in a sweep bucket.
const TOMB_BYTES: usize = std::mem::size_of::<Tomb>() + std::mem::size_of::<TraceKey>() + 8;

/// One event kept in an open trace: 24 bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    pub(crate) fingerprint: u64,
    pub(crate) time: EventTime,
    pub(crate) service: u32,
    pub(crate) name: NameId,
    pub(crate) ok: bool,
}

/// An open trace: 128 bytes in the slab, three events inline.
#[derive(Default)]
pub(crate) struct OpenTrace {
    pub(crate) key: TraceKey,
    pub(crate) events: SmallVec<[Seen; 3]>,
    pub(crate) blob: Blob,
    /// The one timer in force for this trace.
    pub(crate) timer_at: EventTime,
    /// Bumped on every timer change and on release: heap entries with an
    /// older generation are stale and skipped.
    pub(crate) generation: u32,
    pub(crate) journey: u16,
    pub(crate) duplicates: u16,
}

// Two cache lines, as the docs and the memory budget say.
const _: () = assert!(std::mem::size_of::<OpenTrace>() == 128);

impl Vacant for OpenTrace {
    fn is_vacant(&self) -> bool {
        self.journey == VACANT
    }
}

/// A decided trace, remembered until the watermark passes `expires`.
pub(crate) struct Tomb {
    pub(crate) key: TraceKey,
    pub(crate) expires: EventTime,
}

/// A silent failure kept in full until `late_horizon`, for its correction.
pub(crate) struct SilentTomb {
    pub(crate) trace: OpenTrace,
    pub(crate) journey: JourneyId,
    pub(crate) started_at: Option<EventTime>,
    pub(crate) acked_at: EventTime,
    pub(crate) deadline_at: EventTime,
    pub(crate) missing: u32,
}

/// Bytes one kept silent failure holds: its entry, its map slot, and its
/// attributes and events on the heap.
fn silent_bytes(s: &SilentTomb) -> usize {
    let events = if s.trace.events.spilled() {
        s.trace.events.capacity() * std::mem::size_of::<Seen>()
    } else {
        0
    };
    std::mem::size_of::<SilentTomb>() + std::mem::size_of::<TraceKey>() + 8 + s.trace.blob.heap_bytes() + events
}

/// Why a journey was evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// `max_open_journeys`: the shard was full and this journey was the
    /// closest to its decision.
    StateLimit,
    /// `max_events_per_journey`: the journey (open, or a silent failure
    /// awaiting its correction) passed the cap.
    EventLimit,
    /// `max_decided_state_bytes`: a silent failure kept for its correction
    /// was among the earliest to expire when decided state passed its
    /// budget; its late_completion can no longer be written.
    DecidedStateLimit,
}

impl EvictReason {
    /// The dead-letter reason.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::StateLimit => "state_limit_evicted",
            EvictReason::EventLimit => "event_limit_evicted",
            EvictReason::DecidedStateLimit => "decided_state_evicted",
        }
    }
}

/// A journey pushed out by a cap, for the dead-letter sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Evicted {
    pub reason: EvictReason,
    pub trace_id: String,
    pub journey: Option<String>,
    pub first_seen: EventTime,
    pub n_events: usize,
    pub timer_at: EventTime,
}

/// A journey still open at the end of a finite input.
#[derive(Debug, Clone, PartialEq)]
pub struct InFlight {
    pub trace_id: String,
    /// The journey; for a trace with steps only, the one it would be an
    /// orphan of (see `awaiting_start`).
    pub journey: String,
    /// Only steps seen so far: neither start nor ack.
    pub awaiting_start: bool,
    pub first_seen: EventTime,
    pub started_at: Option<EventTime>,
    pub acked_at: Option<EventTime>,
    /// When it will be decided unless more events arrive.
    pub decides_at: EventTime,
    pub n_events: usize,
}

/// What the events of a trace say about its journey.
#[derive(Debug, Clone, Copy)]
struct View {
    start: Option<EventTime>,
    ack_ok: Option<EventTime>,
    ack_error: Option<EventTime>,
}

/// A decision about to be written.
struct Decision {
    journey: JourneyId,
    outcome: Outcome,
    started_at: Option<EventTime>,
    acked_at: Option<EventTime>,
    completed_at: Option<EventTime>,
    deadline_at: Option<EventTime>,
    decided_at: EventTime,
    missing: u32,
}

pub(crate) struct Interner {
    pub(crate) ids: hashbrown::HashMap<Box<str>, u32>,
    pub(crate) names: Vec<Box<str>>,
    /// The id last found for a name of each (length, first byte) bucket:
    /// a shard sees a handful of services over and over, and comparing one
    /// name is cheaper than hashing it. Only ever holds ids that `ids` gave
    /// (0 for none), which never change while the interner lives (a
    /// snapshot is restored into a fresh one).
    recent: [u32; RECENT_SERVICES],
    /// Bytes of `names` (see [`SERVICE_BYTES_CAP`]).
    pub(crate) bytes: usize,
}

/// Buckets of [`Interner::recent`] (a power of two).
const RECENT_SERVICES: usize = 32;

impl Interner {
    fn new() -> Self {
        let mut this = Self {
            ids: Default::default(),
            names: Vec::new(),
            recent: [0; RECENT_SERVICES],
            bytes: 0,
        };
        this.names.push("".into());
        this.names.push("(other)".into());
        this
    }

    #[inline]
    fn intern(&mut self, name: &str, overflow: &mut u64) -> u32 {
        let Some(&first) = name.as_bytes().first() else {
            return 0;
        };
        let bucket = (name.len() ^ usize::from(first) << 1) & (RECENT_SERVICES - 1);
        let guess = self.recent[bucket];
        if guess != 0 && self.names.get(guess as usize).is_some_and(|n| **n == *name) {
            return guess;
        }
        if let Some(&id) = self.ids.get(name) {
            self.recent[bucket] = id;
            return id;
        }
        if self.names.len() >= SERVICE_CAP || self.bytes + name.len() > SERVICE_BYTES_CAP {
            if *overflow == 0 {
                // Once per shard; every one is counted (`services_overflow`).
                tracing::warn!(
                    names = self.names.len(),
                    bytes = self.bytes,
                    "A shard holds as many service names as it keeps (100,000 names or 64 MiB); new ones read (other)."
                );
            }
            *overflow += 1;
            return 1;
        }
        let id = self.names.len() as u32;
        self.bytes += name.len();
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        self.recent[bucket] = id;
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

/// Where a trace's open journey was seen, from [`Shard::prefetch`]: lets
/// the steps after it skip the index. Only meaningful to the shard that made
/// it, and only as a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotHint(u32);

/// One shard of the correlator. See the crate docs for the API contract.
pub struct Shard<S> {
    catalog: Arc<Catalog>,
    sink: S,
    table: TraceIndex,
    pub(crate) slab: Slab<OpenTrace>,
    timers: TimerQueue,
    pub(crate) tombs: HashTable<Tomb>,
    tomb_buckets: BTreeMap<i64, Vec<TraceKey>>,
    pub(crate) silent: HashMap<TraceKey, SilentTomb>,
    /// Bytes held by `silent` (see [`silent_bytes`]).
    silent_bytes: usize,
    /// Budget of tombstones and `silent` together.
    decided_budget: usize,
    /// Whether decided state is past its budget, for one log line an episode.
    evicting_decided: bool,
    pub(crate) services: Interner,
    pub(crate) watermark: EventTime,
    max_open: usize,
    evicting: bool,
    /// Whether a journey passing `max_events_per_journey` was logged yet.
    warned_event_limit: bool,
    evicted: Vec<Evicted>,
    stats: ShardStats,
    trace_id: String,
    /// Where [`Blob::merge`] builds a changed blob.
    blob_scratch: Vec<u8>,
}

impl<S: OutcomeSink> Shard<S> {
    /// A shard that may hold up to `max_open` open traces and writes to `sink`.
    pub fn new(catalog: Arc<Catalog>, max_open: usize, sink: S) -> Self {
        let stats = ShardStats::new(
            catalog.journeys().len(),
            catalog.journeys().iter().map(|j| j.groups.len()),
        );
        Self {
            catalog,
            sink,
            table: TraceIndex::default(),
            slab: Slab::new(),
            timers: TimerQueue::new(),
            tombs: HashTable::new(),
            tomb_buckets: BTreeMap::new(),
            silent: HashMap::new(),
            silent_bytes: 0,
            decided_budget: usize::MAX,
            evicting_decided: false,
            services: Interner::new(),
            watermark: EventTime::MIN,
            max_open: max_open.max(1),
            evicting: false,
            warned_event_limit: false,
            evicted: Vec::new(),
            stats,
            trace_id: String::new(),
            blob_scratch: Vec::new(),
        }
    }

    /// Bounds the bytes of decided state (tombstones, and silent failures
    /// kept for their correction) to `bytes`: past it the earliest to expire
    /// are evicted, counted, and silent failures among them dead-lettered,
    /// as `max_open` does for open journeys.
    pub fn with_decided_budget(mut self, bytes: usize) -> Self {
        self.decided_budget = bytes.max(1);
        self
    }

    /// New caps (a process-wide cap re-split when the number of shards
    /// sharing it changes): past the new `max_open`, the open journeys
    /// closest to their timers are evicted now, so the cap holds at once.
    pub fn set_limits(&mut self, max_open: usize, decided_budget: usize) {
        self.max_open = max_open.max(1);
        self.decided_budget = decided_budget.max(1);
        while self.slab.len() > self.max_open {
            let before = self.slab.len();
            self.evict_one();
            if self.slab.len() == before {
                break; // nothing with a timer left to evict
            }
        }
    }

    /// Bytes of decided state: tombstones and kept silent failures.
    pub fn decided_state_bytes(&self) -> usize {
        self.tombs.len() * TOMB_BYTES + self.silent_bytes
    }

    /// The catalog this shard decides by.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Traces open now.
    pub fn open_traces(&self) -> usize {
        self.slab.len()
    }

    /// The watermark this shard has reached.
    pub fn watermark(&self) -> EventTime {
        self.watermark
    }

    /// The counters so far, by reference (without the gauges
    /// [`Shard::stats`] fills in).
    pub fn counted(&self) -> &ShardStats {
        &self.stats
    }

    /// Counters so far (gauges refreshed).
    pub fn stats(&self) -> ShardStats {
        let mut s = self.stats.clone();
        s.open = self.slab.len() as u64;
        s.tombstones = self.tombs.len() as u64;
        s
    }

    /// The sink, e.g. to flush it.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Consumes the shard, returning its sink.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Journeys evicted since the last call, for the dead-letter sink.
    pub fn take_evicted(&mut self) -> Vec<Evicted> {
        std::mem::take(&mut self.evicted)
    }

    /// Bytes of state held for the open traces: slab entries, timers,
    /// blobs, spilled event lists and the index, for memory reports.
    pub fn approx_state_bytes(&self) -> usize {
        let per_entry = std::mem::size_of::<OpenTrace>() + 16;
        self.slab
            .iter()
            .map(|t| {
                per_entry
                    + t.blob.heap_bytes()
                    + if t.events.spilled() {
                        t.events.capacity() * std::mem::size_of::<Seen>()
                    } else {
                        0
                    }
            })
            .sum::<usize>()
            + self.table.heap_bytes()
    }

    /// Moves the watermark to `watermark` (never backwards) and decides every
    /// journey whose timer it passes: a timer at `t` fires once the watermark
    /// is strictly greater than `t`, so a step at exactly the deadline is on time.
    pub fn advance(&mut self, watermark: EventTime) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        while let Some((at, slot, generation)) = self.timers.pop_before(watermark) {
            let t = self.slab.get(slot);
            if t.is_vacant() || t.generation != generation {
                continue;
            }
            if t.timer_at > at {
                // The timer moved later since this entry was pushed: re-arm.
                self.timers.push((t.timer_at, slot, generation));
                continue;
            }
            self.on_timer(slot);
        }
        self.sweep_tombstones();
    }

    /// A hint that an event of `trace` comes in two events' time: starts
    /// loading the index bucket where its lookup begins. Changes nothing.
    /// A lookup costs two cache misses (the index, then the slab entry); a
    /// caller that knows the events ahead overlaps them with its work.
    #[inline]
    pub fn prefetch_index(&self, trace: &TraceKey) {
        self.table.prefetch(trace.table_hash());
    }

    /// A hint that an event of `trace` comes next: starts loading its open
    /// trace (best after [`Shard::prefetch_index`]). Changes nothing. Returns
    /// where the trace seemed to be, for [`Shard::prefetch_attrs`] and
    /// [`Shard::apply_hinted`]: they then skip the index.
    #[inline]
    pub fn prefetch(&self, trace: &TraceKey) -> Option<SlotHint> {
        // The first entry with the trace's tag, keys not compared: comparing
        // would wait for the very load this starts (and a tag is shared one
        // time in four billion; `apply_hinted` checks the key).
        let slot = self.table.find(trace.table_hash(), |_| true)?;
        // An open trace is two cache lines.
        let at: *const u8 = std::ptr::from_ref(self.slab.get(slot)).cast();
        prefetch_line(at);
        prefetch_line(at.wrapping_add(64));
        Some(SlotHint(slot))
    }

    /// A hint that the event [`Shard::prefetch`] gave `hint` for comes next
    /// (best one event after that call): starts loading what its open trace
    /// keeps in separate allocations, which the event reads: the attribute
    /// blob, and the event list once it outgrew its inline room (the
    /// duplicate check reads it). No index probe; changes nothing, whatever
    /// happened to the slot since.
    #[inline]
    pub fn prefetch_attrs(&self, hint: SlotHint) {
        let Some(t) = self.slab.try_get(hint.0) else {
            return;
        };
        if let Some(bytes) = t.blob.as_bytes() {
            prefetch_slice(bytes);
        }
        if t.events.spilled() {
            prefetch_slice(&t.events);
        }
    }

    /// Applies one event at the current watermark.
    pub fn apply(&mut self, e: &Event<'_>) {
        self.apply_hinted(e, None);
    }

    /// [`Shard::apply`], given where [`Shard::prefetch`] saw the event's
    /// trace a few events ago. The hint is checked, not trusted: the events
    /// applied since may have decided that journey and reused its slot, or
    /// opened it (the hint is then `None`, and the index is asked).
    pub fn apply_hinted(&mut self, e: &Event<'_>, hint: Option<SlotHint>) {
        self.stats.events += 1;
        let hash = e.trace.table_hash();
        let hinted = hint
            .map(|h| h.0)
            .filter(|&s| self.slab.try_get(s).is_some_and(|t| !t.is_vacant() && t.key == e.trace));
        // An open trace has no tombstone, so most events need one probe.
        let slot = match hinted.or_else(|| self.table.find(hash, |s| self.slab.get(s).key == e.trace)) {
            Some(slot) => slot,
            None => {
                if let Ok(entry) = self.tombs.find_entry(hash, |t| t.key == e.trace) {
                    if entry.get().expires >= self.watermark {
                        self.on_late(e);
                        return;
                    }
                    entry.remove();
                    self.take_silent(&e.trace);
                }
                self.open(e, hash)
            }
        };
        let service = self.services.intern(e.service, &mut self.stats.services_overflow);
        let opener = self.catalog.opener(e.name);
        let t = self.slab.get_mut(slot);
        if t.events.iter().any(|s| s.fingerprint == e.fingerprint) {
            t.duplicates = t.duplicates.saturating_add(1);
            self.stats.duplicates += 1;
            return;
        }
        t.events.push(Seen {
            fingerprint: e.fingerprint,
            time: e.time,
            service,
            name: e.name,
            ok: e.ok,
        });
        if t.events.len() > self.catalog.max_events_per_journey {
            // Every event re-reads the journey's events: past the cap, one
            // trace id on every event would make each cost more than the last.
            self.evict(slot, EvictReason::EventLimit);
            return;
        }
        if !e.attrs.is_empty() {
            let from_start = matches!(opener, Some((_, Role::Start)));
            t.blob.merge(e.attrs, from_start, &mut self.blob_scratch);
        }
        match (t.journey, opener) {
            (PENDING, Some((journey, _))) => t.journey = journey,
            (current, Some((journey, _))) if current != journey => self.stats.conflicting_openers += 1,
            _ => {}
        }
        self.evaluate(slot);
    }

    /// End of a finite input: the watermark becomes the largest event time
    /// seen (`max_time`); journeys whose timer is not passed stay in flight
    /// and are returned, not invented as failures.
    pub fn finish(&mut self, max_time: EventTime) -> Vec<InFlight> {
        self.advance(max_time);
        let mut out = Vec::new();
        for t in self.slab.iter() {
            let view = (t.journey != PENDING).then(|| view(&self.catalog, t.journey, &t.events));
            let trace_id = trace_text(t).into_owned();
            match t.journey {
                PENDING => self.stats.pending_in_flight += 1,
                j => self.stats.journeys[j as usize].in_flight += 1,
            }
            out.push(InFlight {
                trace_id,
                journey: match t.journey {
                    PENDING => self
                        .catalog
                        .journey(orphan_journey(&self.catalog, &t.events))
                        .name
                        .clone(),
                    j => self.catalog.journey(j).name.clone(),
                },
                awaiting_start: t.journey == PENDING,
                first_seen: first_seen(&t.events),
                started_at: view.and_then(|v| v.start),
                acked_at: view.and_then(|v| v.ack_ok),
                decides_at: t.timer_at,
                n_events: t.events.len(),
            });
        }
        out.sort_by(|a, b| a.trace_id.cmp(&b.trace_id));
        out
    }

    /// Puts a restored open trace back, with its timer (see `snapshot`).
    pub(crate) fn insert_open(&mut self, mut trace: OpenTrace) {
        let slot = self.slab.alloc();
        let t = self.slab.get_mut(slot);
        trace.generation = t.generation.wrapping_add(1);
        let (at, generation, hash) = (trace.timer_at, trace.generation, trace.key.table_hash());
        *t = trace;
        self.table.insert(hash, slot);
        if at != EventTime::MIN {
            self.timers.push((at, slot, generation));
        }
        self.stats.peak_open = self.stats.peak_open.max(self.slab.len() as u64);
    }

    fn open(&mut self, e: &Event<'_>, hash: u64) -> u32 {
        if self.slab.len() >= self.max_open {
            self.evict_one();
        }
        let slot = self.slab.alloc();
        let t = self.slab.get_mut(slot);
        t.key = e.trace;
        t.journey = PENDING;
        t.duplicates = 0;
        t.timer_at = EventTime::MIN;
        t.events.clear();
        t.blob.clear();
        if let Some(text) = e.trace_text {
            t.blob.set_trace_text(text);
        }
        self.table.insert(hash, slot);
        let open = self.slab.len() as u64;
        self.stats.peak_open = self.stats.peak_open.max(open);
        if self.evicting && (open as f64) < self.max_open as f64 * EVICTION_EPISODE_END {
            self.evicting = false;
        }
        slot
    }

    /// Re-examines a trace after an event: decide now, or set its one timer.
    fn evaluate(&mut self, slot: u32) {
        let t = self.slab.get(slot);
        if t.journey == PENDING {
            let at = first_seen(&t.events).saturating_add(self.catalog.orphan_timeout_ms);
            self.set_timer(slot, at);
            return;
        }
        let spec = self.catalog.journey(t.journey);
        let v = view(&self.catalog, t.journey, &t.events);
        if let Some(failed_at) = v.ack_error {
            let d = Decision {
                journey: t.journey,
                outcome: Outcome::Failed,
                started_at: v.start,
                acked_at: Some(failed_at),
                completed_at: None,
                deadline_at: None,
                decided_at: failed_at,
                missing: 0,
            };
            self.decide(slot, d);
        } else if let Some(ack) = v.ack_ok {
            let deadline = ack.saturating_add(spec.deadline_ms);
            let (mask, done_at) = satisfied(&self.catalog, t.journey, &t.events, deadline);
            if mask == spec.all_groups {
                let d = Decision {
                    journey: t.journey,
                    outcome: Outcome::Completed,
                    started_at: v.start,
                    acked_at: Some(ack),
                    completed_at: Some(done_at),
                    deadline_at: Some(deadline),
                    decided_at: done_at.max(ack),
                    missing: 0,
                };
                self.decide(slot, d);
            } else {
                self.set_timer(slot, deadline);
            }
        } else {
            // A known journey has a start or an ack; an ack that is not in
            // time implies a start, so this is the stall timer.
            let at = match v.start {
                Some(start) => start.saturating_add(spec.ack_timeout_ms),
                None => first_seen(&t.events).saturating_add(self.catalog.orphan_timeout_ms),
            };
            self.set_timer(slot, at);
        }
    }

    /// The trace's timer has passed: the watermark decides it.
    fn on_timer(&mut self, slot: u32) {
        let t = self.slab.get(slot);
        let first = first_seen(&t.events);
        let orphan_at = first.saturating_add(self.catalog.orphan_timeout_ms);
        let (journey, view) = match t.journey {
            PENDING => (orphan_journey(&self.catalog, &t.events), None),
            j => (j, Some(view(&self.catalog, j, &t.events))),
        };
        let spec = self.catalog.journey(journey);
        // (outcome, started_at, acked_at, decided at, steps counted up to)
        let (outcome, started_at, acked_at, at, until) = match view {
            Some(View {
                ack_ok: Some(ack),
                start,
                ..
            }) => {
                let deadline = ack.saturating_add(spec.deadline_ms);
                (Outcome::SilentFailure, start, Some(ack), deadline, deadline)
            }
            Some(View { start: Some(start), .. }) => {
                let at = start.saturating_add(spec.ack_timeout_ms);
                (Outcome::Stalled, Some(start), None, at, at)
            }
            // Steps only (or a known journey with neither start nor a timely
            // ack, which `evaluate` never leaves open): an orphan.
            _ => (Outcome::Orphan, None, None, orphan_at, EventTime::MAX),
        };
        let (mask, _) = satisfied(&self.catalog, journey, &t.events, until);
        let d = Decision {
            journey,
            outcome,
            started_at,
            acked_at,
            completed_at: None,
            deadline_at: Some(at),
            decided_at: at,
            missing: spec.all_groups & !mask,
        };
        self.decide(slot, d);
    }

    /// Sets the trace's timer, or decides at once when the watermark has
    /// already passed it (an event that arrived beyond the allowed lateness).
    fn set_timer(&mut self, slot: u32, at: EventTime) {
        if at < self.watermark {
            self.on_timer(slot);
            return;
        }
        let t = self.slab.get_mut(slot);
        if t.timer_at == at {
            return;
        }
        if t.timer_at != EventTime::MIN && at > t.timer_at {
            // One heap entry per trace: the entry already queued fires no
            // later than `at` and re-arms itself (see `advance`). A trace's
            // timer mostly moves later (stall timer, then deadline), so this
            // halves the timer memory of open journeys.
            t.timer_at = at;
            return;
        }
        t.generation = t.generation.wrapping_add(1);
        t.timer_at = at;
        self.timers.push((at, slot, t.generation));
    }

    /// Writes the decision, frees the trace and leaves a tombstone.
    fn decide(&mut self, slot: u32, d: Decision) {
        let t = self.slab.get(slot);
        emit(
            &self.catalog,
            &self.services,
            t,
            &d,
            &mut self.sink,
            &mut self.stats,
            &mut self.trace_id,
        );
        let key = t.key;
        let last_time = t.events.iter().map(|s| s.time).max().unwrap_or(d.decided_at);
        let expires = d.decided_at.max(last_time).saturating_add(self.catalog.late_horizon_ms);
        let trace = self.release(slot);
        self.bury(key, expires);
        if d.outcome == Outcome::SilentFailure {
            let spec = self.catalog.journey(d.journey);
            let horizon = d.decided_at.saturating_add(self.catalog.late_horizon_ms);
            let (mask, done_at) = satisfied(&self.catalog, d.journey, &trace.events, horizon);
            let silent = SilentTomb {
                journey: d.journey,
                started_at: d.started_at,
                acked_at: d.acked_at.unwrap_or(d.decided_at),
                deadline_at: d.decided_at,
                missing: d.missing,
                trace,
            };
            if mask == spec.all_groups {
                // The missing steps are already in, only late: correct at once.
                self.late_completion(&silent, done_at);
            } else {
                self.keep_silent(silent);
            }
        }
        self.enforce_decided_budget();
    }

    pub(crate) fn keep_silent(&mut self, silent: SilentTomb) {
        self.silent_bytes += silent_bytes(&silent);
        if let Some(old) = self.silent.insert(silent.trace.key, silent) {
            self.silent_bytes -= silent_bytes(&old);
        }
    }

    fn take_silent(&mut self, key: &TraceKey) -> Option<SilentTomb> {
        let s = self.silent.remove(key)?;
        self.silent_bytes -= silent_bytes(&s);
        Some(s)
    }

    /// Evicts the decided state closest to expiry until it fits its budget.
    fn enforce_decided_budget(&mut self) {
        while self.decided_state_bytes() > self.decided_budget {
            let Some(mut bucket) = self.tomb_buckets.first_entry() else {
                return;
            };
            let Some(key) = bucket.get_mut().pop() else {
                bucket.remove();
                continue;
            };
            if bucket.get().is_empty() {
                bucket.remove();
            }
            if !self.evicting_decided {
                self.evicting_decided = true;
                tracing::warn!(
                    max_decided_state_bytes = self.decided_budget,
                    "Decided-journey state reached its byte budget; forgetting the tombstones closest to expiry (counted) and dead-lettering the silent failures among them until it fits."
                );
            }
            let hash = key.table_hash();
            if let Ok(tomb) = self.tombs.find_entry(hash, |t| t.key == key) {
                tomb.remove();
                self.stats.tombstones_evicted += 1;
            }
            if let Some(s) = self.take_silent(&key) {
                let horizon = s.deadline_at.saturating_add(self.catalog.late_horizon_ms);
                let n_events = s.trace.events.len();
                self.note_eviction(
                    EvictReason::DecidedStateLimit,
                    &s.trace,
                    Some(s.journey),
                    n_events,
                    horizon,
                );
            }
        }
        if self.evicting_decided
            && (self.decided_state_bytes() as f64) < self.decided_budget as f64 * EVICTION_EPISODE_END
        {
            self.evicting_decided = false;
        }
    }

    fn late_completion(&mut self, s: &SilentTomb, done_at: EventTime) {
        let d = Decision {
            journey: s.journey,
            outcome: Outcome::LateCompletion,
            started_at: s.started_at,
            acked_at: Some(s.acked_at),
            completed_at: Some(done_at),
            deadline_at: Some(s.deadline_at),
            decided_at: done_at,
            missing: s.missing,
        };
        emit(
            &self.catalog,
            &self.services,
            &s.trace,
            &d,
            &mut self.sink,
            &mut self.stats,
            &mut self.trace_id,
        );
    }

    /// An event for a decided trace: counted as late; it can only complete a
    /// silent failure late.
    fn on_late(&mut self, e: &Event<'_>) {
        self.stats.late_events += 1;
        let Some(s) = self.silent.get_mut(&e.trace) else {
            return;
        };
        let bytes_before = silent_bytes(s);
        if s.trace.events.iter().any(|x| x.fingerprint == e.fingerprint) {
            return;
        }
        if s.trace.events.len() >= self.catalog.max_events_per_journey {
            // Its correction is no longer watched for (its tombstone stays,
            // so its events still count as late).
            let s = self.take_silent(&e.trace).expect("present");
            let horizon = s.deadline_at.saturating_add(self.catalog.late_horizon_ms);
            let n_events = s.trace.events.len() + 1;
            self.note_eviction(EvictReason::EventLimit, &s.trace, Some(s.journey), n_events, horizon);
            return;
        }
        let service = self.services.intern(e.service, &mut self.stats.services_overflow);
        if !e.attrs.is_empty() {
            let from_start = matches!(self.catalog.opener(e.name), Some((_, Role::Start)));
            s.trace.blob.merge(e.attrs, from_start, &mut self.blob_scratch);
        }
        s.trace.events.push(Seen {
            fingerprint: e.fingerprint,
            time: e.time,
            service,
            name: e.name,
            ok: e.ok,
        });
        let horizon = s.deadline_at.saturating_add(self.catalog.late_horizon_ms);
        let (mask, done_at) = satisfied(&self.catalog, s.journey, &s.trace.events, horizon);
        let complete = mask == self.catalog.journey(s.journey).all_groups;
        self.silent_bytes = self.silent_bytes - bytes_before + silent_bytes(s);
        if complete {
            let s = self.take_silent(&e.trace).expect("present");
            self.late_completion(&s, done_at);
        } else {
            self.enforce_decided_budget();
        }
    }

    fn release(&mut self, slot: u32) -> OpenTrace {
        let hash = self.slab.get(slot).key.table_hash();
        self.table.remove(hash, slot);
        let t = self.slab.get_mut(slot);
        let generation = t.generation.wrapping_add(1);
        let trace = std::mem::take(t);
        t.generation = generation;
        t.journey = VACANT;
        self.slab.release(slot);
        trace
    }

    pub(crate) fn bury(&mut self, key: TraceKey, expires: EventTime) {
        let hash = key.table_hash();
        self.tombs
            .insert_unique(hash, Tomb { key, expires }, |t| t.key.table_hash());
        self.tomb_buckets
            .entry(expires.div_euclid(TOMB_BUCKET_MS))
            .or_default()
            .push(key);
    }

    /// Frees tombstones the watermark has passed (whole buckets at a time; a
    /// lookup also checks `expires`, so the sweep only bounds memory).
    fn sweep_tombstones(&mut self) {
        while let Some(entry) = self.tomb_buckets.first_entry() {
            let bucket_end = entry.key().saturating_add(1).saturating_mul(TOMB_BUCKET_MS);
            if bucket_end > self.watermark {
                break;
            }
            for key in entry.remove() {
                let hash = key.table_hash();
                if let Ok(tomb) = self.tombs.find_entry(hash, |t| t.key == key)
                    && tomb.get().expires < self.watermark
                {
                    tomb.remove();
                    self.take_silent(&key);
                }
            }
        }
    }

    /// Makes room under `max_open` by deciding nothing: the open journey
    /// closest to its timer goes to the dead-letter sink, counted and
    /// tombstoned so its later events are counted as late, not re-opened.
    fn evict_one(&mut self) {
        while let Some((_, slot, generation)) = self.timers.pop() {
            let t = self.slab.get(slot);
            if t.is_vacant() || t.generation != generation {
                continue;
            }
            if !self.evicting {
                self.evicting = true;
                tracing::warn!(
                    max_open = self.max_open,
                    "Open-journey limit reached; evicting the journeys closest to their deadline to the dead-letter sink until load falls below 90%."
                );
            }
            self.evict(slot, EvictReason::StateLimit);
            return;
        }
    }

    /// Writes the open journey at `slot` to the dead-letter list, forgets
    /// it and tombstones its trace: its later events count as late, none
    /// opens an orphan, and it gets no outcome it did not earn.
    fn evict(&mut self, slot: u32, reason: EvictReason) {
        let trace = self.release(slot);
        let journey = (trace.journey != PENDING).then_some(trace.journey);
        self.note_eviction(reason, &trace, journey, trace.events.len(), trace.timer_at);
        let last = trace.events.iter().map(|s| s.time).max().unwrap_or(self.watermark);
        self.bury(trace.key, last.saturating_add(self.catalog.late_horizon_ms));
    }

    /// Counts an evicted journey and keeps it for the dead-letter sink (the
    /// one place both caps, and both kinds of journey, go through).
    fn note_eviction(
        &mut self,
        reason: EvictReason,
        trace: &OpenTrace,
        journey: Option<JourneyId>,
        n_events: usize,
        timer_at: EventTime,
    ) {
        if reason == EvictReason::EventLimit {
            self.warn_event_limit();
        }
        self.stats.evicted += 1;
        self.evicted.push(Evicted {
            reason,
            trace_id: trace_text(trace).into_owned(),
            journey: journey.map(|j| self.catalog.journey(j).name.clone()),
            first_seen: first_seen(&trace.events),
            n_events,
            timer_at,
        });
    }

    #[cold]
    fn warn_event_limit(&mut self) {
        if !self.warned_event_limit {
            self.warned_event_limit = true;
            tracing::warn!(
                max_events_per_journey = self.catalog.max_events_per_journey,
                "A journey passed engine.max_events_per_journey and was evicted to the dead-letter sink (a trace id shared by unrelated events?); logged once per shard, each one counted."
            );
        }
    }
}

/// The earliest event time of a trace.
fn first_seen(events: &[Seen]) -> EventTime {
    events.iter().map(|s| s.time).min().unwrap_or(EventTime::MAX)
}

/// Start, and the acks that count: an ack counts when there is no start or
/// it is at or before start + ack_timeout. A failing ack is an `ack_error`
/// event, or an `ack_ok` event whose status is error.
fn view(catalog: &Catalog, journey: JourneyId, events: &[Seen]) -> View {
    let spec = catalog.journey(journey);
    let start = events
        .iter()
        .filter(|s| spec.role(s.name) == Role::Start)
        .map(|s| s.time)
        .min();
    let in_time = |t: EventTime| start.is_none_or(|s| t <= s.saturating_add(spec.ack_timeout_ms));
    let mut ack_ok: Option<EventTime> = None;
    let mut ack_error: Option<EventTime> = None;
    for s in events {
        let slot = match (spec.role(s.name), s.ok) {
            (Role::AckOk, true) => &mut ack_ok,
            (Role::AckOk, false) | (Role::AckError, _) => &mut ack_error,
            _ => continue,
        };
        if in_time(s.time) {
            *slot = Some(slot.map_or(s.time, |t| t.min(s.time)));
        }
    }
    View {
        start,
        ack_ok,
        ack_error,
    }
}

/// The required-step groups satisfied by ok events at or before `until`, and
/// when the last of them was first satisfied.
fn satisfied(catalog: &Catalog, journey: JourneyId, events: &[Seen], until: EventTime) -> (u32, EventTime) {
    let spec = catalog.journey(journey);
    let mut earliest = [EventTime::MAX; 32];
    let mut mask = 0u32;
    for s in events.iter().filter(|s| s.ok && s.time <= until) {
        if let Role::Step(groups) = spec.role(s.name) {
            mask |= groups;
            let mut g = groups;
            while g != 0 {
                let bit = g.trailing_zeros() as usize;
                earliest[bit] = earliest[bit].min(s.time);
                g &= g - 1;
            }
        }
    }
    let done_at = (0..spec.groups.len())
        .filter(|&g| mask & (1 << g) != 0)
        .map(|g| earliest[g])
        .max()
        .unwrap_or(EventTime::MIN);
    (mask, done_at)
}

/// The journey an orphan is reported under: that of its earliest step (by
/// event time, then arrival), the first journey in config order requiring it.
fn orphan_journey(catalog: &Catalog, events: &[Seen]) -> JourneyId {
    let mut best: Option<&Seen> = None;
    for s in events {
        if best.is_none_or(|b| s.time < b.time) {
            best = Some(s);
        }
    }
    best.and_then(|s| catalog.orphan_journey(s.name)).unwrap_or(0)
}

fn trace_text(t: &OpenTrace) -> std::borrow::Cow<'_, str> {
    match t.blob.trace_text() {
        Some(text) => std::borrow::Cow::Borrowed(text),
        None => {
            let mut out = String::with_capacity(32);
            t.key.write_hex(&mut out);
            std::borrow::Cow::Owned(out)
        }
    }
}

/// Builds the row of a decision and hands it to the sink.
fn emit<S: OutcomeSink>(
    catalog: &Catalog,
    services: &Interner,
    t: &OpenTrace,
    d: &Decision,
    sink: &mut S,
    stats: &mut ShardStats,
    trace_id: &mut String,
) {
    let spec = catalog.journey(d.journey);
    trace_id.clear();
    match t.blob.trace_text() {
        Some(text) => trace_id.push_str(text),
        None => t.key.write_hex(trace_id),
    }
    // Most journeys miss nothing and fail nothing: those rows skip
    // building both lists (a collect costs ~80 instructions even when empty).
    let mut missing: SmallVec<[&str; 8]> = SmallVec::new();
    if d.missing != 0 {
        missing.extend(
            (0..spec.groups.len())
                .filter(|&g| d.missing & (1 << g) != 0)
                .map(|g| spec.groups[g].as_str()),
        );
    }
    let mut failed: SmallVec<[&str; 4]> = SmallVec::new();
    if t.events.iter().any(|s| !s.ok) {
        failed.extend(
            t.events
                .iter()
                .filter(|s| !s.ok && spec.role(s.name) != Role::None)
                .map(|s| catalog.name(s.name)),
        );
        failed.sort_unstable();
        failed.dedup();
    }
    // Duplicates go by interned id first (integer compares), so that only
    // distinct names are sorted; ids and names are one to one but for a
    // service literally named like the overflow bucket, hence the last dedup.
    let mut service_ids: SmallVec<[u32; 8]> = t.events.iter().filter(|s| s.service != 0).map(|s| s.service).collect();
    service_ids.sort_unstable();
    service_ids.dedup();
    let mut service_names: SmallVec<[&str; 8]> = service_ids.iter().map(|&id| services.name(id)).collect();
    service_names.sort_unstable();
    service_names.dedup();
    // The last event in event time; ties go to the greatest (name, service)
    // so that arrival order never changes a row. Names are looked up on a
    // tie only.
    let last = t.events.iter().max_by(|a, b| {
        a.time.cmp(&b.time).then_with(|| {
            (catalog.name(a.name), services.name(a.service)).cmp(&(catalog.name(b.name), services.name(b.service)))
        })
    });
    let mut attributes: SmallVec<[Option<AttrValue<'_>>; 8]> = SmallVec::from_elem(None, catalog.columns().len());
    t.blob.for_each_attr(|slot, value| {
        for &(column, s) in &spec.attributes {
            if s == slot {
                attributes[column] = Some(value);
            }
        }
    });
    let origin = d.started_at.or(d.acked_at);
    let latency_ms = match d.outcome {
        Outcome::Completed | Outcome::LateCompletion => d.completed_at.zip(origin).map(|(c, o)| c - o),
        Outcome::Failed => d.started_at.map(|s| d.decided_at - s),
        _ => None,
    };
    let record = OutcomeRecord {
        trace_id,
        journey: d.journey,
        outcome: d.outcome,
        started_at: d.started_at,
        acked_at: d.acked_at,
        completed_at: d.completed_at,
        deadline_at: d.deadline_at,
        decided_at: d.decided_at,
        latency_ms,
        missing_steps: &missing,
        missing_groups: d.missing,
        failed_steps: &failed,
        last_step: last.map(|s| catalog.name(s.name)),
        last_service: last.filter(|s| s.service != 0).map(|s| services.name(s.service)),
        services: &service_names,
        n_events: t.events.len() as u32,
        n_duplicates: t.duplicates as u32,
        attributes: &attributes,
    };
    let js = &mut stats.journeys[d.journey as usize];
    js.outcomes[d.outcome.index()] += 1;
    let money = spec
        .money_column
        .and_then(|c| attributes[c]?.as_number())
        .unwrap_or(0.0);
    match d.outcome {
        Outcome::SilentFailure => {
            js.silent_amount += money;
            for g in 0..spec.groups.len() {
                if d.missing & (1 << g) != 0 {
                    js.missing[g] += 1;
                }
            }
            if let Some(service) = record.last_service {
                *js.last_services.entry(service.to_owned()).or_default() += 1;
            }
        }
        Outcome::LateCompletion => js.late_amount += money,
        _ => {}
    }
    sink.emit(&record);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Interner;

    proptest! {
        /// Model check of the recent-name cache: names that share a bucket
        /// (same length and first byte) or not, in any order, get the ids
        /// a plain first-seen numbering gives (0 for the empty name), and
        /// each id names its name.
        #[test]
        fn interned_ids_are_the_first_seen_numbering(
            names in prop::collection::vec(prop::sample::select(vec![
                "", "ab", "ac", "ba", "abc", "abd", "mobile-app", "mobile-api", "core-ledger", "notify",
            ]), 0..60),
        ) {
            let (mut interner, mut overflow) = (Interner::new(), 0);
            let mut model: Vec<&str> = Vec::new();
            for name in names {
                let id = interner.intern(name, &mut overflow);
                let expected = if name.is_empty() {
                    0
                } else {
                    let i = model.iter().position(|n| *n == name).unwrap_or_else(|| {
                        model.push(name);
                        model.len() - 1
                    });
                    i as u32 + 2
                };
                prop_assert_eq!(id, expected, "{}", name);
                prop_assert_eq!(interner.name(id), name);
            }
            prop_assert_eq!(overflow, 0);
        }
    }

    #[test]
    fn names_past_the_byte_cap_read_other_and_are_counted() {
        let (mut interner, mut overflow) = (Interner::new(), 0);
        let mib = |c: char| c.to_string().repeat(1 << 20);
        // 64 names of 1 MiB fill the cap exactly; the 65th does not fit.
        for i in 0..64u8 {
            let name = mib(char::from(b'0' + i));
            assert_eq!(interner.intern(&name, &mut overflow), u32::from(i) + 2);
        }
        assert_eq!(overflow, 0);
        assert_eq!(interner.bytes, super::SERVICE_BYTES_CAP);
        let over = mib('~');
        assert_eq!(interner.intern(&over, &mut overflow), 1);
        assert_eq!(interner.name(1), "(other)");
        assert_eq!(overflow, 1);
        // Names already known are still found; a short new one does not fit either.
        assert_eq!(interner.intern(&mib('0'), &mut overflow), 2);
        assert_eq!(interner.intern("a", &mut overflow), 1);
        assert_eq!(overflow, 2);
    }
}
