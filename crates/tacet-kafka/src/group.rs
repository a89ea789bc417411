//! Partition groups: the correlation stage of partition `p` of every
//! topic, and what one correlator thread does with the groups it owns.
//!
//! A group is a [`tacet_engine::Stage`] (the one correlation stage replay
//! uses too) plus what only Kafka has: the next offset per topic, the next
//! source offset per repartitioned input, and the checkpoint sequence.
//! A [`GroupSet`] is single-threaded and knows nothing of Kafka clients or
//! threads: records in, checkpoints out. [`crate::worker`] runs one per
//! correlator thread; [`crate::engine::Engine`] decides which set owns which
//! group. What every set reads but nobody changes per record (decoders,
//! options, the dead-letter sink) is in [`Shared`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use tacet_alert::AlertFeed;
use tacet_alert::service::AlertProgress;
use tacet_core::{Catalog, Event, EventTime, TraceKey};
use tacet_correlate::{InFlight, ShardStats, SlotHint};
use tacet_engine::Metrics;
use tacet_engine::stage::{Stage, StageLimits, StageLinks, share_of};
use tacet_ingest::deadletter::DeadLetters;
use tacet_ingest::decode::Decoded;
use tacet_ingest::{DeadLetter, DecodeError, DecodeStats, Decoder};
use tacet_store::{OutcomeWriter, WriterStats};

use crate::checkpoint::{self, Commit, SnapshotHeader};
use crate::engine::{EngineOptions, RunError};
use crate::errors::ErrorKind;

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

/// Partition `p` of every topic.
pub(crate) struct Group {
    pub(crate) stage: Stage,
    /// Next offset per topic (index as in `Shared::topics`); `None` before
    /// the first record when no snapshot said.
    pub(crate) next: Vec<Option<i64>>,
    /// Repartitioned layout: next source offset per input.
    pub(crate) origin_next: Vec<Option<i64>>,
    /// Last completed checkpoint of this partition.
    pub(crate) seq: u64,
    /// The generation this instance claimed the partition under.
    pub(crate) generation: u64,
    /// The partition's last commit this instance made or claimed (see
    /// [`checkpoint::commit_dir`]): its next checkpoint creates the one after.
    pub(crate) commit: u64,
}

/// Counters of a run: the same figures a replay reports (decoding,
/// correlation, outcome files), plus what only checkpointing has.
#[derive(Debug, Clone, Default)]
pub struct RunCounters {
    pub decode: DecodeStats,
    /// What the correlation stages counted (events, duplicates, late,
    /// evictions, per-journey decisions).
    pub correlate: ShardStats,
    /// Outcome files published.
    pub writer: WriterStats,
    pub checkpoints: u64,
    pub discarded_files: u64,
    /// Records the repartitioner wrote twice (it crashed between writing
    /// them and committing its source offsets), recognised and skipped.
    pub repartition_duplicates: u64,
    /// Checkpoints refused because another instance owned the partition.
    pub fenced: u64,
}

impl RunCounters {
    /// Adds `other` into `self` (`checkpoints` counts rounds, not groups, and
    /// is kept by the engine).
    pub fn merge(&mut self, other: &RunCounters) {
        self.decode.merge(&other.decode);
        self.correlate.merge(&other.correlate);
        self.writer.merge(&other.writer);
        self.discarded_files += other.discarded_files;
        self.repartition_duplicates += other.repartition_duplicates;
        self.fenced += other.fenced;
    }
}

/// The next offset to commit: (topic index, partition, offset).
pub(crate) type CommitOffset = (usize, i32, i64);

/// A partition's offsets at the broker: (topic index, partition, low, high).
pub type BrokerOffsets = (usize, i32, i64, i64);

/// What all correlator threads read, and the dead-letter sink they share.
pub(crate) struct Shared {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) topics: Vec<Topic>,
    /// Names of the watermark inputs of every group (also snapshot keys).
    pub(crate) inputs: Vec<String>,
    pub(crate) opts: EngineOptions,
    pub(crate) config_hash: u64,
    pub(crate) metrics: Option<Arc<Metrics>>,
    pub(crate) errors: Arc<crate::errors::RunErrors>,
    pub(crate) synthetic_attribute: String,
    pub(crate) dead_letters: DeadLetters,
    /// Co-partitioned layout: the check that traces stay on one partition.
    pub(crate) copartition: Option<crate::copartition::CopartitionCheck>,
}

impl Shared {
    /// The index of `topic` among the consumed ones, if consumed.
    pub(crate) fn topic_index(&self, topic: &str) -> Option<usize> {
        self.topics.iter().position(|t| t.name == topic)
    }

    pub(crate) fn writer(&self, partition: i32, generation: u64, seq: u64) -> OutcomeWriter {
        OutcomeWriter::new(
            self.catalog.clone(),
            &self.opts.out_dir.join(checkpoint::staging_rel(partition, generation)),
            &checkpoint::writer_name(partition, generation, seq),
            self.opts.flush_rows,
        )
    }

    fn dead_letter_error(&self, source: std::io::Error) -> RunError {
        RunError::Io {
            path: self.dead_letters.path().display().to_string(),
            source,
        }
    }

    /// Makes every dead letter written so far durable.
    pub(crate) fn sync_dead_letters(&self) -> Result<(), RunError> {
        self.dead_letters.sync().map_err(|e| self.dead_letter_error(e))
    }

    /// The stage limits of one of `groups` groups sharing the process-wide caps.
    pub(crate) fn limits(&self, groups: usize) -> StageLimits {
        StageLimits {
            max_open_journeys: share_of(self.opts.max_open_journeys, groups),
            max_decided_state_bytes: share_of(self.opts.max_decided_state_bytes, groups),
            // Rows are published at checkpoints, which the poll loop brings
            // forward to `output.flush_interval` when that is shorter.
            flush_interval: None,
            allowed_lateness: self.opts.allowed_lateness,
            idle_timeout: Some(self.opts.idle_timeout),
        }
    }

    /// Group `p` as its snapshot left it (or empty), one of `groups` groups
    /// owned, with the number of outcome files of unfinished checkpoints
    /// that recovery discarded.
    pub(crate) fn restore(
        &self,
        p: i32,
        groups: usize,
        alerts: Option<Sender<AlertProgress>>,
    ) -> Result<(Group, usize), RunError> {
        let now = Instant::now();
        let (out, state) = (&self.opts.out_dir, &self.opts.state_dir);
        if checkpoint::read_latest(state, p, self.config_hash)?.is_none() {
            checkpoint::refuse_missing_state(out, state, p)?;
        }
        // The next generation, committed before anything is restored: a
        // former owner still running can no longer commit.
        let (commit, claimed) = checkpoint::claim(state, p, self.config_hash)?;
        let discarded = checkpoint::recover(out, &claimed.header)?;
        let generation = claimed.header.generation;
        let seq = claimed.header.seq;
        let snapshot = (!claimed.shard.is_empty()).then_some(claimed);
        let writer = self.writer(p, generation, seq + 1);
        let feed = AlertFeed::new(self.catalog.clone(), &self.synthetic_attribute);
        let links = StageLinks {
            id: p as usize,
            dead_letters: self.dead_letters.clone(),
            alerts,
        };
        let limits = self.limits(groups);
        let mut next = vec![None; self.topics.len()];
        let mut origin_next = vec![None; self.inputs.len()];
        let stage = match &snapshot {
            Some(snap) => {
                for (i, topic) in self.topics.iter().enumerate() {
                    next[i] = snap.header.offsets.get(&topic.name).copied();
                }
                let progress: Vec<Option<EventTime>> = self
                    .inputs
                    .iter()
                    .map(|input| snap.header.max_seen.get(input).copied())
                    .collect();
                for (i, input) in self.inputs.iter().enumerate() {
                    origin_next[i] = snap.header.origin_offsets.get(input).copied();
                }
                Stage::restore(
                    self.catalog.clone(),
                    &limits,
                    &progress,
                    writer,
                    feed,
                    links,
                    &snap.shard,
                    now,
                )
                .map_err(|source| RunError::Snapshot { partition: p, source })?
            }
            None => Stage::new(
                self.catalog.clone(),
                &limits,
                self.inputs.len(),
                writer,
                feed,
                links,
                now,
            ),
        };
        tracing::info!(
            partition = p,
            checkpoint = seq,
            generation,
            open_journeys = stage.open_journeys(),
            discarded_files = discarded,
            "Partition assigned; {}.",
            if snapshot.is_some() {
                "state restored from its snapshot"
            } else {
                "no snapshot, starting empty"
            }
        );
        let group = Group {
            stage,
            next,
            origin_next,
            seq,
            generation,
            commit,
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

    /// Removes group `p`, returning it.
    fn take(&mut self, p: i32) -> Option<G> {
        match Self::dense_index(p) {
            Some(i) => self.dense.get_mut(i)?.take().map(|g| *g),
            None => self.other.remove(&p),
        }
    }

    #[cfg(test)]
    fn remove(&mut self, p: i32) {
        self.take(p);
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
    /// Counted here, and what the stages of released groups had counted;
    /// [`GroupSet::counters`] adds the stages of the groups owned now.
    counters: RunCounters,
    /// Events per topic since the last [`GroupSet::publish_events`]: the
    /// `tacet_events` counters are shared by every thread, so they are
    /// bumped per batch, not per record.
    events: Vec<u64>,
    /// Groups that got records since the last [`GroupSet::batch_end`].
    touched: Vec<i32>,
}

impl GroupSet {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let topics = shared.topics.len();
        Self {
            shared,
            groups: Groups::default(),
            counters: RunCounters::default(),
            events: vec![0; topics],
            touched: Vec::new(),
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// This thread's counters so far. A stage's counts live as long as its
    /// group here (they are not in snapshots): a group's are folded in when
    /// it is released, so none is lost on a rebalance or counted twice.
    pub(crate) fn counters(&self) -> RunCounters {
        let mut all = self.counters.clone();
        for (_, g) in self.groups.iter() {
            all.correlate.merge(g.stage.shard_counts());
        }
        all
    }

    pub(crate) fn open_journeys(&self) -> usize {
        self.groups.iter().map(|(_, g)| g.stage.open_journeys()).sum()
    }

    /// Takes group `p` (restored by the engine).
    pub(crate) fn adopt(&mut self, p: i32, group: Group) {
        self.groups.insert(p, group);
    }

    /// Every group's share of the process-wide caps, now that the process
    /// owns `groups` groups.
    pub(crate) fn set_limits(&mut self, groups: usize) -> Result<(), RunError> {
        let limits = self.shared.limits(groups);
        for (_, g) in self.groups.iter_mut() {
            g.stage
                .set_limits(limits.max_open_journeys, limits.max_decided_state_bytes)?;
        }
        Ok(())
    }

    /// Checkpoints group `p` and drops it. Returns the offsets to commit.
    pub(crate) fn release(&mut self, p: i32) -> Result<Vec<CommitOffset>, RunError> {
        if self.groups.get(p).is_none() {
            return Ok(Vec::new());
        }
        self.shared.sync_dead_letters()?;
        let Some(offsets) = self.checkpoint_group(p)? else {
            self.fence(p);
            return Ok(Vec::new());
        };
        if let Some(g) = self.groups.take(p) {
            self.counters.correlate.merge(g.stage.shard_counts());
            g.stage.close();
        }
        tracing::info!(partition = p, "Partition revoked after a checkpoint.");
        Ok(offsets)
    }

    /// Drops group `p` without a write: another instance owns the partition
    /// now (its checkpoint found the next commit taken).
    fn fence(&mut self, p: i32) {
        if let Some(g) = self.groups.take(p) {
            self.counters.correlate.merge(g.stage.shard_counts());
            let generation = g.generation;
            g.stage.close();
            self.counters.fenced += 1;
            self.shared.errors.note(ErrorKind::Fenced);
            tracing::warn!(
                partition = p,
                generation,
                "Another instance took this partition over (this one was paused or cut off past its session \
                 timeout): its state is dropped without a write, its staged outcomes are never published."
            );
        }
    }

    /// Checkpoints every group in the order SPEC §7 asks: dead letters and
    /// outcomes durable, then state, then (by the caller) offsets.
    pub(crate) fn checkpoint(&mut self) -> Result<Vec<CommitOffset>, RunError> {
        // Evictions first: they are dead letters, and dead letters are made
        // durable before any state that no longer holds their journeys.
        let ps: Vec<i32> = self.groups.iter().map(|(p, _)| p).collect();
        for &p in &ps {
            if let Some(g) = self.groups.get_mut(p) {
                g.stage.on_batch_end(Instant::now())?;
            }
        }
        self.shared.sync_dead_letters()?;
        let mut offsets = Vec::new();
        for p in ps {
            match self.checkpoint_group(p)? {
                Some(o) => offsets.extend(o),
                None => self.fence(p),
            }
        }
        Ok(offsets)
    }

    /// Checkpoints group `p`: its outcome files staged, its snapshot
    /// committed (the commit point), the files published. `None` when the
    /// commit was refused because another instance owns `p` now.
    fn checkpoint_group(&mut self, p: i32) -> Result<Option<Vec<CommitOffset>>, RunError> {
        let shared = &self.shared;
        let g = self.groups.get_mut(p).expect("owned group");
        let bytes = g.stage.on_checkpoint()?;
        let max_seen: Vec<Option<EventTime>> = (0..shared.inputs.len()).map(|i| g.stage.input_progress(i)).collect();
        let staging = checkpoint::staging_rel(p, g.generation);
        let header = SnapshotHeader {
            partition: p,
            seq: g.seq + 1,
            config_hash: shared.config_hash,
            offsets: by_name(shared.topics.iter().map(|t| &t.name), &g.next),
            max_seen: by_name(shared.inputs.iter(), &max_seen),
            origin_offsets: by_name(shared.inputs.iter(), &g.origin_next),
            // The manifest: the commit covers these files, and they are
            // moved only once it is made.
            staged: checkpoint::staged_files(&shared.opts.out_dir, &staging)?,
            staging,
            generation: g.generation,
        };
        if checkpoint::try_commit(&shared.opts.state_dir, g.commit + 1, &header, &bytes)? == Commit::Fenced {
            return Ok(None);
        }
        g.commit += 1;
        checkpoint::publish(&shared.opts.out_dir, &header)?;
        g.seq += 1;
        // A fresh writer per checkpoint: file names carry the sequence.
        let published = g.stage.replace_writer(shared.writer(p, g.generation, g.seq + 1));
        self.counters.writer.merge(&published);
        Ok(Some(
            g.next
                .iter()
                .enumerate()
                .filter_map(|(t, n)| n.map(|n| (t, p, n)))
                .collect(),
        ))
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
        out.result = self.shared.topics[record.topic]
            .decoder
            .decode_into(payload, header, &mut out.decoded);
        out.trace = match out.result {
            Ok(()) if out.decoded.name.is_some() => Some(TraceKey::from_text(&out.decoded.trace_id)),
            _ => None,
        };
        out.hint = None;
        if let (Some((key, _)), Some(g)) = (&out.trace, self.groups.get(record.partition)) {
            g.stage.prefetch_index(key);
        }
    }

    /// Starts loading the open journey of a prepared record, two records
    /// before it is applied (its index bucket is in the cache by then), and
    /// keeps where it is for the steps after.
    #[inline]
    pub(crate) fn prefetch(&self, record: &Record<'_>, prepared: &mut Prepared<'_>) {
        if let (Some((key, _)), Some(g)) = (&prepared.trace, self.groups.get(record.partition)) {
            prepared.hint = g.stage.prefetch(key);
        }
    }

    /// Starts loading the attributes of a prepared record's journey, one
    /// record before it is applied (its open journey is in the cache by then).
    #[inline]
    pub(crate) fn prefetch_attrs(&self, record: &Record<'_>, prepared: &Prepared<'_>) {
        if let (Some(hint), Some(g)) = (prepared.hint, self.groups.get(record.partition)) {
            g.stage.prefetch_attrs(hint);
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
        if self.touched.last() != Some(&partition) {
            self.touched.push(partition);
        }
        let Some(origin) = written_at(shared, g, topic, partition, offset, header) else {
            self.counters.repartition_duplicates += 1;
            return Ok(());
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
        if let Err(reason) = *result {
            stats.errors[reason.index()] += 1;
            return refuse(shared, topic, &origin, reason, payload);
        }
        let Some(name) = decoded.name else {
            stats.unmatched += 1;
            return Ok(());
        };
        stats.events += 1;
        let (key, canonical) = trace.unwrap_or_else(|| TraceKey::from_text(&decoded.trace_id));
        if let Some(check) = &shared.copartition
            && crate::copartition::CopartitionCheck::sampled(&key)
            && check.observe(key, partition)
        {
            if let Some(m) = &shared.metrics {
                m.misrouted_traces.inc();
            }
            // The first few are named; the count goes on in the metric.
            if check.misrouted() <= 3 {
                tracing::warn!(
                trace_id = %decoded.trace_id,
                partition,
                    "A trace id is on two partitions: the producers do not key every topic by it as tacet reads it."
                );
            }
        }
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
        g.stage.on_event(origin.input, event.time, &event, *hint, now);
        self.events[topic] += 1;
        Ok(())
    }

    /// The end of a batch of records: each group that got some settles
    /// (watermark, evictions to the dead letters, decisions to the alert rules).
    pub(crate) fn batch_end(&mut self, now: Instant) -> Result<(), RunError> {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &p in &touched {
            if let Some(g) = self.groups.get_mut(p) {
                g.stage.on_batch_end(now)?;
            }
        }
        touched.clear();
        self.touched = touched;
        Ok(())
    }

    /// The broker's offsets of owned partitions, `(topic, partition, low,
    /// high)`: an input with records not read yet is lagging, and a
    /// lagging input is never idle (SPEC §4's idleness is for quiet
    /// partitions, not slow ones).
    pub(crate) fn broker_offsets(&mut self, offsets: &[BrokerOffsets]) {
        let shared = &*self.shared;
        for &(topic, partition, low, high) in offsets {
            let Some(g) = self.groups.get_mut(partition) else {
                continue;
            };
            let read_to = g.next[topic].unwrap_or(low).max(low);
            let lagging = high > read_to;
            match &shared.topics[topic].origin {
                None => g.stage.set_input_lagging(topic, lagging),
                // An internal topic behind holds back every source partition it carries.
                Some(origin) => {
                    for input in origin.base..origin.base + origin.partitions {
                        g.stage.set_input_lagging(input, lagging);
                    }
                }
            }
        }
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
    pub(crate) fn tick(&mut self, now: Instant) -> Result<(), RunError> {
        for (_, g) in self.groups.iter_mut() {
            g.stage.on_tick(now)?;
        }
        Ok(())
    }

    /// The largest event time any group has seen.
    pub(crate) fn max_seen(&self) -> Option<EventTime> {
        self.groups.iter().filter_map(|(_, g)| g.stage.max_seen()).max()
    }

    /// End of a finite run at watermark `max`: decides what is due and writes
    /// what is still ahead to `<out>/state/in-flight-p<P>.ndjson`.
    pub(crate) fn finish(&mut self, max: EventTime) -> Result<Vec<InFlight>, RunError> {
        let dir = self.shared.opts.out_dir.join("state");
        let mut all = Vec::new();
        for (p, g) in self.groups.iter_mut() {
            let in_flight = g.stage.on_finish(max)?;
            let name = format!("in-flight-p{p}.ndjson");
            tacet_engine::stage::write_in_flight(&dir, &name, &in_flight).map_err(|source| RunError::Io {
                path: dir.join(&name).display().to_string(),
                source,
            })?;
            all.extend(in_flight);
        }
        Ok(all)
    }
}

/// Where a record was written by its producer: the watermark input it
/// feeds and the position its dead letter names.
struct WrittenAt<'s> {
    input: usize,
    topic: &'s str,
    partition: i32,
    offset: i64,
}

/// Where record `offset` of `topic`/`partition` was written. In the
/// repartitioned layout that is the source partition and offset its
/// `tacet-origin` header names; `None` when that source offset was
/// applied already (the repartitioner wrote the record twice).
fn written_at<'s, 'a>(
    shared: &'s Shared,
    g: &mut Group,
    topic: usize,
    partition: i32,
    offset: i64,
    header: &dyn Fn(&str) -> Option<&'a [u8]>,
) -> Option<WrittenAt<'s>> {
    let t = &shared.topics[topic];
    let here = |input| WrittenAt {
        input,
        topic: &t.name,
        partition,
        offset,
    };
    let Some(origin) = &t.origin else {
        return Some(here(topic));
    };
    match header(crate::repartition::ORIGIN_HEADER).and_then(crate::repartition::parse_origin) {
        Some((q, source_offset)) if (q as usize) < origin.partitions => {
            let input = origin.base + q as usize;
            if g.origin_next[input].is_some_and(|n| source_offset < n) {
                return None;
            }
            // The header is data: never overflow on it.
            g.origin_next[input] = Some(source_offset.saturating_add(1));
            Some(WrittenAt {
                input,
                topic: &origin.topic,
                partition: q,
                offset: source_offset,
            })
        }
        // Not written by tacet's repartitioner (no or a bad origin): still
        // an event; it feeds the topic's first input.
        _ => Some(here(origin.base.min(shared.inputs.len().saturating_sub(1)))),
    }
}

/// Counts a refused record on `/metrics` and writes its dead letter.
fn refuse(
    shared: &Shared,
    topic: usize,
    at: &WrittenAt<'_>,
    reason: DecodeError,
    payload: &[u8],
) -> Result<(), RunError> {
    if let Some(m) = &shared.metrics {
        m.decode_error(reason, 1);
    }
    let position = format!("{}/{}/{}", at.topic, at.partition, at.offset);
    let letter = DeadLetter::new(shared.topics[topic].decoder.source(), position, reason, payload);
    shared
        .dead_letters
        .write(&letter)
        .map_err(|e| shared.dead_letter_error(e))
}

#[cfg(test)]
mod tests {
    use super::{Groups, RunCounters};
    use tacet_correlate::ShardStats;

    /// What the threads counted survives the merge of their counters:
    /// the correlation stages' counts, the decoders' and the writers'.
    #[test]
    fn thread_counters_merge_into_the_run_counters() {
        let mut thread = RunCounters::default();
        thread.correlate.merge(&ShardStats {
            duplicates: 1,
            late_events: 2,
            evicted: 5,
            ..Default::default()
        });
        thread.decode.records = 7;
        thread.writer.rows = 3;
        thread.repartition_duplicates = 4;
        let mut run = RunCounters::default();
        run.merge(&thread);
        run.merge(&thread);
        assert_eq!(
            (
                run.correlate.duplicates,
                run.correlate.late_events,
                run.correlate.evicted,
                run.decode.records,
                run.writer.rows,
                run.repartition_duplicates
            ),
            (2, 4, 10, 14, 6, 8)
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
