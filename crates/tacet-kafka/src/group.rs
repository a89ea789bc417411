//! Partition groups: the correlator state of partition `p` of every topic,
//! and what one correlator thread does with the groups it owns.
//!
//! A [`GroupSet`] is single-threaded and knows nothing of Kafka clients or
//! threads: records in, checkpoints out. [`crate::worker`] runs one per
//! correlator thread; [`crate::engine::Engine`] decides which set owns which
//! group. What every set reads but nobody changes per record (decoders,
//! options, the dead-letter file) is in [`Shared`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tacet_alert::AlertFeed;
use tacet_core::outcome::Tee;
use tacet_core::{Catalog, Event, EventTime, TraceKey};
use tacet_correlate::watermark::Watermarks;
use tacet_correlate::{InFlight, Shard, ShardStats, SlotHint};
use tacet_engine::Metrics;
use tacet_engine::pipeline::AlertProgress;
use tacet_ingest::deadletter::DeadLetterFile;
use tacet_ingest::decode::Decoded;
use tacet_ingest::{DeadLetter, DecodeError, DecodeStats, Decoder};
use tacet_store::OutcomeWriter;

use crate::checkpoint::{self, SnapshotHeader};
use crate::engine::{EngineOptions, RunError};
use crate::errors::{ErrorKind, RunErrors};

/// One consumed topic: its name and the decoder of its source's mapping.
pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) decoder: Decoder,
    /// `tacet_events{source}`, looked up once.
    pub(crate) events: Option<tacet_engine::metrics::Counter>,
    /// Repartitioned layout: the source topic behind this internal one.
    pub(crate) origin: Option<Origin>,
}

/// The source topic an internal topic re-keys.
pub(crate) struct Origin {
    pub(crate) topic: String,
    /// Watermark input of source partition 0; partition `q` is `base + q`.
    pub(crate) base: usize,
    pub(crate) partitions: usize,
}

/// Decisions go to the group's outcome files and to the alert rules.
pub(crate) type GroupSink = Tee<OutcomeWriter, AlertFeed>;

/// Partition `p` of every topic.
pub(crate) struct Group {
    pub(crate) shard: Shard<GroupSink>,
    pub(crate) watermarks: Watermarks,
    /// Next offset per topic (index as in `Shared::topics`); `None` before
    /// the first record when no snapshot said.
    pub(crate) next: Vec<Option<i64>>,
    /// Largest event time per watermark input (`Shared::inputs`).
    pub(crate) max_seen: Vec<Option<EventTime>>,
    /// Repartitioned layout: next source offset per input.
    pub(crate) origin_next: Vec<Option<i64>>,
    /// Last completed checkpoint of this partition.
    pub(crate) seq: u64,
}

/// Counters of a run.
#[derive(Debug, Clone, Default)]
pub struct RunCounters {
    pub decode: DecodeStats,
    pub dead_letters: u64,
    /// Journeys evicted by `max_open_journeys` or `max_events_per_journey`
    /// (each also one of `dead_letters`).
    pub evicted: u64,
    pub rows: u64,
    pub checkpoints: u64,
    pub discarded_files: u64,
    /// Records the repartitioner wrote twice (it crashed between writing
    /// them and committing its source offsets), recognised and skipped.
    pub repartition_duplicates: u64,
    /// What the correlators counted (as in `tacet replay`'s summary): events
    /// ignored as duplicates within their trace, events for an already
    /// decided trace, openers of another journey than their trace's, and
    /// events whose service name was past a shard's cap (`(other)`).
    pub duplicates: u64,
    pub late_events: u64,
    pub conflicting_openers: u64,
    pub services_overflow: u64,
    /// Tombstones forgotten early to keep decided state within its budget.
    pub tombstones_evicted: u64,
}

impl RunCounters {
    /// Adds `other` into `self` (`checkpoints` counts rounds, not groups, and
    /// is kept by the engine).
    pub fn merge(&mut self, other: &RunCounters) {
        self.decode.merge(&other.decode);
        self.dead_letters += other.dead_letters;
        self.evicted += other.evicted;
        self.rows += other.rows;
        self.discarded_files += other.discarded_files;
        self.repartition_duplicates += other.repartition_duplicates;
        self.duplicates += other.duplicates;
        self.late_events += other.late_events;
        self.conflicting_openers += other.conflicting_openers;
        self.services_overflow += other.services_overflow;
        self.tombstones_evicted += other.tombstones_evicted;
    }

    /// Adds what one shard counted. (Its evictions are already counted, as
    /// dead letters, when they are written.)
    fn add_shard(&mut self, s: &ShardStats) {
        self.duplicates += s.duplicates;
        self.late_events += s.late_events;
        self.conflicting_openers += s.conflicting_openers;
        self.services_overflow += s.services_overflow;
        self.tombstones_evicted += s.tombstones_evicted;
    }
}

/// The next offset to commit: (topic index, partition, offset).
pub(crate) type CommitOffset = (usize, i32, i64);

/// What all correlator threads read, and the dead-letter file they share.
pub(crate) struct Shared {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) topics: Vec<Topic>,
    /// Names of the watermark inputs of every group (also snapshot keys).
    pub(crate) inputs: Vec<String>,
    pub(crate) opts: EngineOptions,
    pub(crate) config_hash: u64,
    pub(crate) metrics: Option<Arc<Metrics>>,
    pub(crate) errors: Arc<RunErrors>,
    pub(crate) synthetic_attribute: String,
    /// Opened on the first refused record. Refusals are rare, so one lock
    /// for every thread costs nothing on the hot path.
    dead: Mutex<Option<DeadLetterFile>>,
}

impl Shared {
    /// The index of `topic` among the consumed ones, if consumed.
    pub(crate) fn topic_index(&self, topic: &str) -> Option<usize> {
        self.topics.iter().position(|t| t.name == topic)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        catalog: Arc<Catalog>,
        topics: Vec<Topic>,
        inputs: Vec<String>,
        opts: EngineOptions,
        config_hash: u64,
        metrics: Option<Arc<Metrics>>,
        errors: Arc<RunErrors>,
        synthetic_attribute: String,
    ) -> Self {
        Self {
            catalog,
            topics,
            inputs,
            opts,
            config_hash,
            metrics,
            errors,
            synthetic_attribute,
            dead: Mutex::new(None),
        }
    }

    pub(crate) fn feed(&self) -> AlertFeed {
        AlertFeed::new(self.catalog.clone(), &self.synthetic_attribute)
    }

    pub(crate) fn writer(&self, partition: i32, seq: u64) -> OutcomeWriter {
        OutcomeWriter::new(
            self.catalog.clone(),
            &checkpoint::staging_dir(&self.opts.out_dir, partition),
            &checkpoint::writer_name(partition, seq),
            self.opts.flush_rows,
        )
    }

    fn dead_path_error(&self, source: std::io::Error) -> RunError {
        RunError::Io {
            path: self.opts.out_dir.join("dead-letter.ndjson").display().to_string(),
            source,
        }
    }

    /// Appends one record to `<out>/dead-letter.ndjson` (appending to what
    /// an earlier run left, rotated at `[output] dead_letter_max_bytes`).
    pub(crate) fn dead_letter(&self, record: &serde_json::Value) -> Result<(), RunError> {
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        if dead.is_none() {
            let mut file = DeadLetterFile::open(&self.opts.out_dir, self.opts.dead_letters, false)
                .map_err(|e| self.dead_path_error(e))?;
            if let Some(m) = &self.metrics {
                file = file.with_hook(m.dead_letter_hook());
            }
            *dead = Some(file);
        }
        let file = dead.as_mut().expect("opened");
        file.write(record).map_err(|e| self.dead_path_error(e))
    }

    /// Makes every dead letter written so far durable.
    pub(crate) fn sync_dead_letters(&self) -> Result<(), RunError> {
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = dead.as_mut() {
            file.sync().map_err(|e| self.dead_path_error(e))?;
        }
        Ok(())
    }

    /// Group `p` as its snapshot left it (or empty), with the number of
    /// outcome files of unfinished checkpoints that recovery discarded.
    pub(crate) fn restore(&self, p: i32) -> Result<(Group, usize), RunError> {
        let now = Instant::now();
        let mut watermarks = Watermarks::new(
            self.inputs.len(),
            self.opts.allowed_lateness,
            Some(self.opts.idle_timeout),
            now,
        );
        let snapshot = checkpoint::read_snapshot(&self.opts.state_dir, p, self.config_hash)?;
        let seq = snapshot.as_ref().map_or(0, |s| s.header.seq);
        let discarded = checkpoint::discard_after(&self.opts.out_dir, p, seq)?;
        let writer = self.writer(p, seq + 1);
        let mut next = vec![None; self.topics.len()];
        let mut max_seen = vec![None; self.inputs.len()];
        let mut origin_next = vec![None; self.inputs.len()];
        let shard = match &snapshot {
            Some(snap) => {
                for (i, topic) in self.topics.iter().enumerate() {
                    next[i] = snap.header.offsets.get(&topic.name).copied();
                }
                for (i, input) in self.inputs.iter().enumerate() {
                    max_seen[i] = snap.header.max_seen.get(input).copied();
                    origin_next[i] = snap.header.origin_offsets.get(input).copied();
                    if let Some(t) = max_seen[i] {
                        watermarks.observe(i, t, now);
                    }
                }
                Shard::restore(
                    self.catalog.clone(),
                    self.opts.max_open_journeys,
                    Tee(writer, self.feed()),
                    &snap.shard,
                )
                .map_err(|source| RunError::Snapshot { partition: p, source })?
                .with_decided_budget(self.opts.max_decided_state_bytes)
            }
            None => Shard::new(
                self.catalog.clone(),
                self.opts.max_open_journeys,
                Tee(writer, self.feed()),
            )
            .with_decided_budget(self.opts.max_decided_state_bytes),
        };
        tracing::info!(
            partition = p,
            checkpoint = seq,
            open_journeys = shard.open_traces(),
            discarded_files = discarded,
            "Partition assigned; {}.",
            if snapshot.is_some() {
                "state restored from its snapshot"
            } else {
                "no snapshot, starting empty"
            }
        );
        let group = Group {
            shard,
            watermarks,
            next,
            max_seen,
            origin_next,
            seq,
        };
        Ok((group, discarded))
    }
}

/// The known values among `values`, keyed by the name at the same index
/// (the snapshot header's offsets and event times per topic or input).
fn by_name<'n>(names: impl Iterator<Item = &'n String>, values: &[Option<i64>]) -> BTreeMap<String, i64> {
    names
        .zip(values)
        .filter_map(|(name, v)| v.map(|v| (name.clone(), v)))
        .collect()
}

/// Where one Kafka record sits, and its value.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Index of its topic among the consumed ones ([`crate::engine::Engine::topic_index`]).
    pub topic: usize,
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<&'a [u8]>,
}

/// A record decoded ahead of being applied, in a slot the correlator
/// reuses (see [`GroupSet::prepare`]).
pub(crate) struct Prepared<'a> {
    /// Meaningful when `result` is `Ok`.
    decoded: Decoded<'a>,
    result: Result<(), DecodeError>,
    /// The trace key of a decoded event of some journey.
    trace: Option<(TraceKey, bool)>,
    /// Where [`GroupSet::prefetch`] saw its open journey.
    hint: Option<SlotHint>,
}

impl Default for Prepared<'_> {
    fn default() -> Self {
        Self {
            decoded: Decoded::default(),
            result: Ok(()),
            trace: None,
            hint: None,
        }
    }
}

/// Partition numbers below this are looked up in a table; others (Kafka
/// gives none) in a map.
const DENSE_PARTITIONS: usize = 1 << 16;

/// The groups of one correlator thread, by partition. Every record looks its
/// group up three times (decode, two prefetch steps) and once more to be
/// applied: a table indexed by partition number answers without the
/// branching of a map search.
struct Groups<G = Group> {
    dense: Vec<Option<Box<G>>>,
    /// Partitions outside `0..DENSE_PARTITIONS`.
    other: BTreeMap<i32, G>,
}

impl<G> Default for Groups<G> {
    fn default() -> Self {
        Self {
            dense: Vec::new(),
            other: BTreeMap::new(),
        }
    }
}

impl<G> Groups<G> {
    fn dense_index(p: i32) -> Option<usize> {
        usize::try_from(p).ok().filter(|&i| i < DENSE_PARTITIONS)
    }

    #[inline]
    fn get(&self, p: i32) -> Option<&G> {
        match Self::dense_index(p) {
            Some(i) => self.dense.get(i)?.as_deref(),
            None => self.other.get(&p),
        }
    }

    #[inline]
    fn get_mut(&mut self, p: i32) -> Option<&mut G> {
        match Self::dense_index(p) {
            Some(i) => self.dense.get_mut(i)?.as_deref_mut(),
            None => self.other.get_mut(&p),
        }
    }

    fn insert(&mut self, p: i32, group: G) {
        match Self::dense_index(p) {
            Some(i) => {
                if self.dense.len() <= i {
                    self.dense.resize_with(i + 1, || None);
                }
                self.dense[i] = Some(Box::new(group));
            }
            None => {
                self.other.insert(p, group);
            }
        }
    }

    fn remove(&mut self, p: i32) {
        match Self::dense_index(p) {
            Some(i) => {
                if let Some(slot) = self.dense.get_mut(i) {
                    *slot = None;
                }
            }
            None => {
                self.other.remove(&p);
            }
        }
    }

    /// In partition order.
    fn iter(&self) -> impl Iterator<Item = (i32, &G)> {
        let dense = (self.dense.iter().enumerate()).filter_map(|(i, g)| Some((i as i32, g.as_deref()?)));
        let negative = self.other.range(..0).map(|(&p, g)| (p, g));
        let beyond = self.other.range(0..).map(|(&p, g)| (p, g));
        negative.chain(dense).chain(beyond)
    }

    /// In partition order.
    fn iter_mut(&mut self) -> impl Iterator<Item = (i32, &mut G)> {
        let (negative, positive): (Vec<_>, Vec<_>) = self.other.iter_mut().partition(|(p, _)| **p < 0);
        let dense = (self.dense.iter_mut().enumerate()).filter_map(|(i, g)| Some((i as i32, g.as_deref_mut()?)));
        let negative = negative.into_iter().map(|(&p, g)| (p, g));
        let positive = positive.into_iter().map(|(&p, g)| (p, g));
        negative.chain(dense).chain(positive)
    }
}

/// The groups one correlator thread owns, and its share of the counters.
pub(crate) struct GroupSet {
    shared: Arc<Shared>,
    groups: Groups,
    /// Counted here, and what the shards of released groups had counted;
    /// [`GroupSet::counters`] adds the shards of the groups owned now.
    counters: RunCounters,
    alerts: Option<Sender<AlertProgress>>,
    /// Events per topic since the last [`GroupSet::publish_events`]: the
    /// `tacet_events` counters are shared by every thread, so they are
    /// bumped per batch, not per record.
    events: Vec<u64>,
}

impl GroupSet {
    pub(crate) fn new(shared: Arc<Shared>, alerts: Option<Sender<AlertProgress>>) -> Self {
        let topics = shared.topics.len();
        Self {
            shared,
            groups: Groups::default(),
            counters: RunCounters::default(),
            alerts,
            events: vec![0; topics],
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// This thread's counters so far. A shard's counts live as long as its
    /// group here (they are not in snapshots): a group's are folded in when
    /// it is released, so none is lost on a rebalance or counted twice.
    pub(crate) fn counters(&self) -> RunCounters {
        let mut all = self.counters.clone();
        for (_, g) in self.groups.iter() {
            all.add_shard(g.shard.counted());
        }
        all
    }

    pub(crate) fn open_journeys(&self) -> usize {
        self.groups.iter().map(|(_, g)| g.shard.open_traces()).sum()
    }

    /// Takes group `p` (restored by the engine) and registers it with the
    /// alert clock at once, so the clock waits for it from now on.
    pub(crate) fn adopt(&mut self, p: i32, group: Group) {
        self.groups.insert(p, group);
        self.report_alerts(p, false);
    }

    /// Checkpoints group `p` and drops it. Returns the offsets to commit.
    pub(crate) fn release(&mut self, p: i32) -> Result<Vec<CommitOffset>, RunError> {
        if self.groups.get(p).is_none() {
            return Ok(Vec::new());
        }
        self.shared.sync_dead_letters()?;
        let offsets = self.checkpoint_group(p)?;
        self.report_alerts(p, true);
        if let Some(g) = self.groups.get(p) {
            self.counters.add_shard(g.shard.counted());
        }
        self.groups.remove(p);
        tracing::info!(partition = p, "Partition revoked after a checkpoint.");
        Ok(offsets)
    }

    /// Checkpoints every group in the order SPEC §7 asks: dead letters and
    /// outcomes durable, then state, then (by the caller) offsets.
    pub(crate) fn checkpoint(&mut self) -> Result<Vec<CommitOffset>, RunError> {
        // Dead letters first: a record refused before this checkpoint must not
        // be lost if we crash after it.
        self.shared.sync_dead_letters()?;
        let ps: Vec<i32> = self.groups.iter().map(|(p, _)| p).collect();
        let mut offsets = Vec::new();
        for p in ps {
            offsets.extend(self.checkpoint_group(p)?);
        }
        Ok(offsets)
    }

    fn checkpoint_group(&mut self, p: i32) -> Result<Vec<CommitOffset>, RunError> {
        let shared = &self.shared;
        let g = self.groups.get_mut(p).expect("owned group");
        g.shard.sink_mut().0.flush()?;
        checkpoint::publish(&shared.opts.out_dir, p)?;
        let header = SnapshotHeader {
            partition: p,
            seq: g.seq + 1,
            config_hash: shared.config_hash,
            offsets: by_name(shared.topics.iter().map(|t| &t.name), &g.next),
            max_seen: by_name(shared.inputs.iter(), &g.max_seen),
            origin_offsets: by_name(shared.inputs.iter(), &g.origin_next),
        };
        let mut bytes = Vec::new();
        g.shard.write_snapshot(&mut bytes);
        checkpoint::write_snapshot(&shared.opts.state_dir, &header, &bytes)?;
        g.seq += 1;
        // A fresh writer per checkpoint: file names carry the sequence.
        let old = std::mem::replace(&mut g.shard.sink_mut().0, shared.writer(p, g.seq + 1));
        self.counters.rows += old.stats().rows;
        Ok(g.next
            .iter()
            .enumerate()
            .filter_map(|(t, n)| n.map(|n| (t, p, n)))
            .collect())
    }

    /// Decodes `record` into `out` ahead of [`GroupSet::record`] and starts loading
    /// the index bucket of its journey into the cache. Decoding depends on
    /// the record alone, so the correlator decodes three records ahead of
    /// the one it applies, and the lookup's cache misses overlap the work
    /// (see [`GroupSet::prefetch`] and [`GroupSet::prefetch_attrs`] for the
    /// next ones).
    pub(crate) fn prepare<'a>(
        &self,
        record: &Record<'a>,
        header: &dyn Fn(&str) -> Option<&'a [u8]>,
        out: &mut Prepared<'a>,
    ) {
        let payload = record.payload.unwrap_or(&[]);
        out.result = if payload.len() > self.shared.opts.max_line_bytes {
            Err(DecodeError::OversizedLine)
        } else {
            self.shared.topics[record.topic]
                .decoder
                .decode_into(payload, header, &mut out.decoded)
        };
        out.trace = match out.result {
            Ok(()) if out.decoded.name.is_some() => Some(TraceKey::from_text(&out.decoded.trace_id)),
            _ => None,
        };
        out.hint = None;
        if let (Some((key, _)), Some(g)) = (&out.trace, self.groups.get(record.partition)) {
            g.shard.prefetch_index(key);
        }
    }

    /// Starts loading the open journey of a prepared record, two records
    /// before it is applied (its index bucket is in the cache by then), and
    /// keeps where it is for the steps after.
    #[inline]
    pub(crate) fn prefetch(&self, record: &Record<'_>, prepared: &mut Prepared<'_>) {
        if let (Some((key, _)), Some(g)) = (&prepared.trace, self.groups.get(record.partition)) {
            prepared.hint = g.shard.prefetch(key);
        }
    }

    /// Starts loading the attributes of a prepared record's journey, one
    /// record before it is applied (its open journey is in the cache by then).
    #[inline]
    pub(crate) fn prefetch_attrs(&self, record: &Record<'_>, prepared: &Prepared<'_>) {
        if let (Some(hint), Some(g)) = (prepared.hint, self.groups.get(record.partition)) {
            g.shard.prefetch_attrs(hint);
        }
    }

    /// One Kafka record, decoded by [`GroupSet::prepare`]; `header` looks up
    /// its record headers.
    pub(crate) fn record<'a>(
        &mut self,
        record: Record<'a>,
        prepared: &Prepared<'a>,
        header: &dyn Fn(&str) -> Option<&'a [u8]>,
        now: Instant,
    ) -> Result<(), RunError> {
        let Record {
            topic,
            partition,
            offset,
            payload,
        } = record;
        let shared = &*self.shared;
        let Some(g) = self.groups.get_mut(partition) else {
            // A record of a partition we no longer own (fetched before a revoke).
            return Ok(());
        };
        if g.next[topic].is_some_and(|n| offset < n) {
            return Ok(()); // already in the restored state
        }
        // Offsets come from the broker: never overflow on one.
        g.next[topic] = Some(offset.saturating_add(1));
        let t = &shared.topics[topic];
        // Where the record was written by its producer: the watermark input
        // it feeds and the position dead letters name.
        let (input, position) = match &t.origin {
            None => (topic, (&t.name, partition, offset)),
            Some(origin) => {
                match header(crate::repartition::ORIGIN_HEADER).and_then(crate::repartition::parse_origin) {
                    Some((q, source_offset)) if (q as usize) < origin.partitions => {
                        let input = origin.base + q as usize;
                        if g.origin_next[input].is_some_and(|n| source_offset < n) {
                            self.counters.repartition_duplicates += 1;
                            return Ok(());
                        }
                        // The header is data: never overflow on it.
                        g.origin_next[input] = Some(source_offset.saturating_add(1));
                        (input, (&origin.topic, q, source_offset))
                    }
                    // Not written by tacet's repartitioner (no or a bad origin):
                    // still an event; it feeds the topic's first input.
                    _ => (
                        origin.base.min(shared.inputs.len().saturating_sub(1)),
                        (&t.name, partition, offset),
                    ),
                }
            }
        };
        let stats = &mut self.counters.decode;
        stats.records += 1;
        let payload = payload.unwrap_or(&[]);
        stats.bytes += payload.len() as u64;
        let Prepared {
            decoded,
            result,
            trace,
            hint,
        } = prepared;
        match *result {
            Ok(()) => {}
            Err(reason) => {
                stats.errors[reason.index()] += 1;
                if let Some(m) = &shared.metrics {
                    m.decode_errors
                        .get_or_create(&tacet_engine::metrics::ReasonLabels {
                            reason: reason.as_str().to_owned(),
                        })
                        .inc();
                }
                let (position_topic, position_partition, position_offset) = position;
                let letter = DeadLetter::new(
                    t.decoder.source(),
                    format!("{position_topic}/{position_partition}/{position_offset}"),
                    reason,
                    payload,
                );
                shared.dead_letter(&serde_json::to_value(&letter).expect("serializes"))?;
                self.counters.dead_letters += 1;
                return Ok(());
            }
        };
        let Some(name) = decoded.name else {
            stats.unmatched += 1;
            return Ok(());
        };
        stats.events += 1;
        let (key, canonical) = trace.unwrap_or_else(|| TraceKey::from_text(&decoded.trace_id));
        let event = Event {
            trace: key,
            trace_text: (!canonical).then_some(&*decoded.trace_id),
            time: decoded.time,
            name,
            ok: decoded.ok,
            fingerprint: decoded.fingerprint,
            service: &decoded.service,
            attrs: &decoded.attrs,
        };
        g.max_seen[input] = Some(g.max_seen[input].map_or(event.time, |m| m.max(event.time)));
        g.watermarks.observe(input, event.time, now);
        if let Some(w) = g.watermarks.watermark(now) {
            g.shard.advance(w);
        }
        g.shard.apply_hinted(&event, *hint);
        let evicted = g.shard.take_evicted();
        self.events[topic] += 1;
        for j in evicted {
            shared.dead_letter(&tacet_engine::pipeline::evicted_letter(&j))?;
            self.counters.dead_letters += 1;
            self.counters.evicted += 1;
        }
        Ok(())
    }

    /// Adds the events counted since the last call to `tacet_events{source}`.
    pub(crate) fn publish_events(&mut self) {
        for (topic, n) in self.shared.topics.iter().zip(&mut self.events) {
            if let Some(counter) = &topic.events
                && *n > 0
            {
                counter.inc_by(*n);
            }
            *n = 0;
        }
    }

    /// Moves every group's watermark by wall clock (idleness), deciding what
    /// is due, and reports to the alert rules.
    pub(crate) fn tick(&mut self, now: Instant) {
        for (_, g) in self.groups.iter_mut() {
            if let Some(w) = g.watermarks.watermark(now) {
                g.shard.advance(w);
            }
            if let Err(e) = g.shard.sink_mut().0.flush_older(Some(Duration::from_secs(3600)))
                && self.shared.errors.note(ErrorKind::OutcomeWrite)
            {
                tracing::error!(error = %e, "Could not write an outcome file; kept for the next checkpoint.");
            }
        }
        self.report_all_alerts();
    }

    /// The largest event time any group has seen.
    pub(crate) fn max_seen(&self) -> Option<EventTime> {
        self.groups
            .iter()
            .flat_map(|(_, g)| g.max_seen.iter().flatten().copied())
            .max()
    }

    /// End of a finite run at watermark `max`: decides what is due and writes
    /// what is still ahead to `<out>/state/in-flight-p<P>.ndjson`.
    pub(crate) fn finish(&mut self, max: EventTime) -> Result<usize, RunError> {
        let dir = self.shared.opts.out_dir.join("state");
        let mut total = 0;
        for (p, g) in self.groups.iter_mut() {
            let in_flight: Vec<InFlight> = g.shard.finish(max);
            total += in_flight.len();
            tacet_engine::pipeline::write_in_flight_file(&dir, &format!("in-flight-p{p}.ndjson"), &in_flight)
                .map_err(|e| RunError::Kafka(e.to_string()))?;
        }
        self.report_all_alerts();
        Ok(total)
    }

    /// Hands every group's new decisions and watermark to the alert rules.
    pub(crate) fn report_all_alerts(&mut self) {
        let ps: Vec<i32> = self.groups.iter().map(|(p, _)| p).collect();
        for p in ps {
            self.report_alerts(p, false);
        }
    }

    /// Hands group `p`'s new decisions and watermark to the alert rules.
    fn report_alerts(&mut self, p: i32, gone: bool) {
        let (Some(tx), Some(g)) = (&self.alerts, self.groups.get_mut(p)) else {
            return;
        };
        let max_time = g.max_seen.iter().flatten().copied().max().unwrap_or(EventTime::MIN);
        let _ = tx.send(AlertProgress {
            source: p as usize,
            watermark: g.shard.watermark(),
            max_time,
            notes: g.shard.sink_mut().1.take(),
            gone,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{Groups, RunCounters};
    use tacet_correlate::ShardStats;

    /// Every count a shard keeps for the stop line reaches `RunCounters`,
    /// and survives the merge of the threads' counters, each from its own
    /// field. A shard's own eviction count is not added: evictions are
    /// counted as they are dead-lettered.
    #[test]
    fn shard_counts_reach_the_run_counters_each_in_its_field() {
        let shard = ShardStats {
            duplicates: 1,
            late_events: 2,
            conflicting_openers: 3,
            services_overflow: 4,
            evicted: 5,
            ..Default::default()
        };
        let mut thread = RunCounters {
            evicted: 6,
            ..Default::default()
        };
        thread.add_shard(&shard);
        let mut run = RunCounters::default();
        run.merge(&thread);
        run.merge(&thread);
        assert_eq!(
            (
                run.duplicates,
                run.late_events,
                run.conflicting_openers,
                run.services_overflow,
                run.evicted
            ),
            (2, 4, 6, 8, 12)
        );
    }

    #[test]
    fn groups_are_found_by_partition_and_listed_in_partition_order() {
        let mut groups = Groups::<&str>::default();
        for (p, g) in [
            (70_000, "far"),
            (3, "three"),
            (-1, "negative"),
            (0, "zero"),
            (5, "five"),
        ] {
            groups.insert(p, g);
        }
        groups.remove(5);
        groups.remove(9); // never there
        groups.insert(3, "three again");
        let listed: Vec<_> = groups.iter().map(|(p, g)| (p, *g)).collect();
        assert_eq!(
            listed,
            [(-1, "negative"), (0, "zero"), (3, "three again"), (70_000, "far")]
        );
        let listed_mut: Vec<_> = groups.iter_mut().map(|(p, _)| p).collect();
        assert_eq!(listed_mut, [-1, 0, 3, 70_000]);
        assert_eq!(groups.get(70_000), Some(&"far"));
        assert_eq!(groups.get(-1), Some(&"negative"));
        assert_eq!(groups.get(5), None);
        assert_eq!(groups.get(1_000), None);
        *groups.get_mut(0).unwrap() = "zero again";
        assert_eq!(groups.get(0), Some(&"zero again"));
        assert!(groups.get_mut(i32::MIN).is_none());
    }
}
