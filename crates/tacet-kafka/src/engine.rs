//! The per-partition correlator state of one consumer, and its checkpoints.
//!
//! Partition `p` of every topic forms one group with its own shard, watermark
//! inputs and outcome writer, so a rebalance moves whole groups: the owner
//! that loses `p` checkpoints it, the one that gains `p` restores exactly that
//! snapshot.
//!
//! Watermark inputs are the topics in the co-partitioned layout. In the
//! repartitioned layout the topics are tacet's internal ones, where the
//! records of every source partition meet; there each *source* partition is
//! an input (named by the `tacet-origin` header the repartitioner adds), so
//! the watermark keeps the disorder bound of the producers, not of the
//! repartitioner's reading order.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use smallvec::SmallVec;
use tacet_alert::AlertFeed;
use tacet_core::config::KafkaPlan;
use tacet_core::outcome::Tee;
use tacet_core::{AttrSlot, AttrValue, Catalog, Event, EventTime, TraceKey};
use tacet_correlate::watermark::Watermarks;
use tacet_correlate::{InFlight, Shard};
use tacet_engine::Metrics;
use tacet_engine::pipeline::{AlertProgress, AlertResult};
use tacet_ingest::decode::AttrCow;
use tacet_ingest::{DeadLetter, DecodeError, DecodeStats, Decoder};
use tacet_store::OutcomeWriter;

use crate::checkpoint::{self, CheckpointError, SnapshotHeader};
use crate::errors::{ErrorKind, RunErrors};

/// Errors that stop `tacet run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] tacet_core::ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Store(#[from] tacet_store::StoreError),
    #[error("partition {partition}: {source}")]
    Snapshot {
        partition: i32,
        source: tacet_correlate::SnapshotError,
    },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("Kafka: {0}")]
    Kafka(String),
}

/// Settings of the engine side of a run.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub out_dir: PathBuf,
    pub state_dir: PathBuf,
    pub flush_rows: usize,
    pub max_open_journeys: usize,
    pub allowed_lateness: Duration,
    pub idle_timeout: Duration,
    pub max_line_bytes: usize,
}

/// One consumed topic: its name and the decoder of its source's mapping.
struct Topic {
    name: String,
    decoder: Decoder,
    /// `tacet_events{source}`, looked up once.
    events: Option<tacet_engine::metrics::Counter>,
    /// Repartitioned layout: the source topic behind this internal one.
    origin: Option<Origin>,
}

/// The source topic an internal topic re-keys.
struct Origin {
    topic: String,
    /// Watermark input of source partition 0; partition `q` is `base + q`.
    base: usize,
    partitions: usize,
}

/// How the consumed topics relate to what the producers wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The plan's topics, keyed by trace id and co-partitioned.
    Copartitioned,
    /// tacet's internal topics (see [`crate::repartition`]), re-keyed from
    /// source topics with these partition counts (in plan order).
    Repartitioned { source_partitions: Vec<usize> },
}

/// Decisions go to the group's outcome files and to the alert rules.
type GroupSink = Tee<OutcomeWriter, AlertFeed>;

/// Partition `p` of every topic.
struct Group {
    shard: Shard<GroupSink>,
    watermarks: Watermarks,
    /// Next offset per topic (index as in `Engine::topics`); `None` before
    /// the first record when no snapshot said.
    next: Vec<Option<i64>>,
    /// Largest event time per watermark input (`Engine::inputs`).
    max_seen: Vec<Option<EventTime>>,
    /// Repartitioned layout: next source offset per input.
    origin_next: Vec<Option<i64>>,
    /// Last completed checkpoint of this partition.
    seq: u64,
}

/// Counters of a run.
#[derive(Debug, Clone, Default)]
pub struct RunCounters {
    pub decode: DecodeStats,
    pub dead_letters: u64,
    pub rows: u64,
    pub checkpoints: u64,
    pub discarded_files: u64,
    /// Records the repartitioner wrote twice (it crashed between writing
    /// them and committing its source offsets), recognised and skipped.
    pub repartition_duplicates: u64,
}

/// All groups this consumer owns.
pub struct Engine {
    catalog: Arc<Catalog>,
    topics: Vec<Topic>,
    /// Names of the watermark inputs of every group (also snapshot keys).
    inputs: Vec<String>,
    groups: BTreeMap<i32, Group>,
    opts: EngineOptions,
    config_hash: u64,
    dead: Option<BufWriter<File>>,
    pub(crate) counters: RunCounters,
    metrics: Option<Arc<Metrics>>,
    /// Bumped by every assign and revoke.
    pub(crate) assignment_epoch: u64,
    /// The alert thread (SLO rules over this consumer's decisions).
    alerts: Option<Sender<AlertProgress>>,
    alert_thread: Option<tacet_engine::pipeline::AlertThread>,
    errors: Arc<RunErrors>,
    synthetic_attribute: String,
}

/// A hash of what gives snapshot bytes their meaning: the journeys and the
/// attribute columns.
pub fn config_hash(config: &tacet_core::Config) -> u64 {
    let text = format!("{:?}", config.journeys);
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

impl Engine {
    pub fn new(
        config: &tacet_core::Config,
        plan: &KafkaPlan,
        layout: &Layout,
        opts: EngineOptions,
        metrics: Option<Arc<Metrics>>,
        errors: Arc<RunErrors>,
    ) -> Result<Self, RunError> {
        let catalog = Arc::new(Catalog::new(config)?);
        let mut topics = Vec::new();
        let mut inputs = Vec::new();
        for (i, t) in plan.topics.iter().enumerate() {
            let (name, origin) = match layout {
                Layout::Copartitioned => {
                    inputs.push(t.topic.clone());
                    (t.topic.clone(), None)
                }
                Layout::Repartitioned { source_partitions } => {
                    let partitions = source_partitions.get(i).copied().unwrap_or(0);
                    let base = inputs.len();
                    inputs.extend((0..partitions).map(|q| format!("{}/{q}", t.topic)));
                    let origin = Origin {
                        topic: t.topic.clone(),
                        base,
                        partitions,
                    };
                    (
                        crate::repartition::internal_topic(&plan.group_id, &t.topic),
                        Some(origin),
                    )
                }
            };
            topics.push(Topic {
                name,
                decoder: Decoder::new(catalog.clone(), &t.mapping).with_source(&t.source),
                events: metrics.as_ref().map(|m| m.source_events(&t.source)),
                origin,
            });
        }
        let (alerts, alert_thread) = tacet_engine::pipeline::spawn_alerts(
            catalog.clone(),
            Arc::new(config.clone()),
            opts.out_dir.clone(),
            0,
            metrics.clone(),
        )
        .map_err(|e| RunError::Kafka(format!("cannot start the alert rules: {e}")))?;
        Ok(Self {
            errors,
            alerts: Some(alerts),
            alert_thread: Some(alert_thread),
            synthetic_attribute: config.alerts.synthetic_attribute.clone(),
            catalog,
            topics,
            inputs,
            groups: BTreeMap::new(),
            opts,
            config_hash: config_hash(config),
            dead: None,
            counters: RunCounters::default(),
            metrics,
            assignment_epoch: 0,
        })
    }

    /// The index of `topic`, if consumed.
    pub fn topic_index(&self, topic: &str) -> Option<usize> {
        self.topics.iter().position(|t| t.name == topic)
    }

    pub fn topic_name(&self, index: usize) -> &str {
        &self.topics[index].name
    }

    /// Partitions owned now.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.groups.keys().copied()
    }

    pub fn open_journeys(&self) -> usize {
        self.groups.values().map(|g| g.shard.open_traces()).sum()
    }

    /// Hands group `p`'s new decisions and watermark to the alert rules.
    fn report_alerts(&mut self, p: i32, gone: bool) {
        let (Some(tx), Some(g)) = (&self.alerts, self.groups.get_mut(&p)) else {
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

    /// Stops the alert rules after the decisions reported so far; returns
    /// what they did.
    pub fn close_alerts(&mut self) -> Result<Option<AlertResult>, RunError> {
        let ps: Vec<i32> = self.groups.keys().copied().collect();
        for p in ps {
            self.report_alerts(p, false);
        }
        self.alerts = None;
        match self.alert_thread.take() {
            None => Ok(None),
            Some(handle) => handle
                .join()
                .map_err(|_| RunError::Kafka("the alert thread panicked".into()))?
                .map(Some)
                .map_err(|e| RunError::Kafka(format!("alerts: {e}"))),
        }
    }

    fn feed(&self) -> AlertFeed {
        AlertFeed::new(self.catalog.clone(), &self.synthetic_attribute)
    }

    fn writer(&self, partition: i32, seq: u64) -> OutcomeWriter {
        OutcomeWriter::new(
            self.catalog.clone(),
            &checkpoint::staging_dir(&self.opts.out_dir, partition),
            &checkpoint::writer_name(partition, seq),
            self.opts.flush_rows,
        )
    }

    /// Takes ownership of `partitions`, restoring each from its snapshot.
    /// Returns where to start consuming each `(topic index, partition)`:
    /// `Some(offset)` from the snapshot, `None` for the group's committed offset.
    pub fn assign(&mut self, partitions: &[(usize, i32)]) -> Result<Vec<(usize, i32, Option<i64>)>, RunError> {
        self.assignment_epoch += 1;
        for &(_, p) in partitions {
            if !self.groups.contains_key(&p) {
                let group = self.restore(p)?;
                self.groups.insert(p, group);
                // Registered at once: the alert clock waits for this group
                // from now on, not from its first tick.
                self.report_alerts(p, false);
            }
        }
        Ok(partitions
            .iter()
            .map(|&(t, p)| (t, p, self.groups.get(&p).and_then(|g| g.next[t])))
            .collect())
    }

    fn restore(&mut self, p: i32) -> Result<Group, RunError> {
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
        self.counters.discarded_files += discarded as u64;
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
            }
            None => Shard::new(
                self.catalog.clone(),
                self.opts.max_open_journeys,
                Tee(writer, self.feed()),
            ),
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
        Ok(Group {
            shard,
            watermarks,
            next,
            max_seen,
            origin_next,
            seq,
        })
    }

    /// Gives up `partitions`: checkpoints their groups and drops them.
    /// Returns the offsets to commit.
    pub fn revoke(&mut self, partitions: &[(usize, i32)]) -> Result<Vec<(usize, i32, i64)>, RunError> {
        self.assignment_epoch += 1;
        let mut ps: Vec<i32> = partitions.iter().map(|&(_, p)| p).collect();
        ps.sort_unstable();
        ps.dedup();
        let mut offsets = Vec::new();
        for p in ps {
            if self.groups.contains_key(&p) {
                offsets.extend(self.checkpoint_group(p)?);
                self.report_alerts(p, true);
                self.groups.remove(&p);
                tracing::info!(partition = p, "Partition revoked after a checkpoint.");
            }
        }
        self.sync_dead_letters()?;
        Ok(offsets)
    }

    /// Checkpoints every group in the order SPEC §7 asks: outcomes durable,
    /// then state, then (by the caller) offsets. Returns the offsets to commit.
    pub fn checkpoint(&mut self) -> Result<Vec<(usize, i32, i64)>, RunError> {
        // Dead letters first: a record refused before this checkpoint must not
        // be lost if we crash after it.
        self.sync_dead_letters()?;
        let ps: Vec<i32> = self.groups.keys().copied().collect();
        let mut offsets = Vec::new();
        for p in ps {
            offsets.extend(self.checkpoint_group(p)?);
        }
        self.counters.checkpoints += 1;
        if let Some(m) = &self.metrics {
            m.checkpoints.inc();
        }
        Ok(offsets)
    }

    fn checkpoint_group(&mut self, p: i32) -> Result<Vec<(usize, i32, i64)>, RunError> {
        let g = self.groups.get_mut(&p).expect("owned group");
        g.shard.sink_mut().0.flush()?;
        checkpoint::publish(&self.opts.out_dir, p)?;
        let header = SnapshotHeader {
            partition: p,
            seq: g.seq + 1,
            config_hash: self.config_hash,
            offsets: self
                .topics
                .iter()
                .zip(&g.next)
                .filter_map(|(t, n)| n.map(|n| (t.name.clone(), n)))
                .collect(),
            max_seen: self
                .inputs
                .iter()
                .zip(&g.max_seen)
                .filter_map(|(input, m)| m.map(|m| (input.clone(), m)))
                .collect(),
            origin_offsets: self
                .inputs
                .iter()
                .zip(&g.origin_next)
                .filter_map(|(input, n)| n.map(|n| (input.clone(), n)))
                .collect(),
        };
        let mut bytes = Vec::new();
        g.shard.write_snapshot(&mut bytes);
        checkpoint::write_snapshot(&self.opts.state_dir, &header, &bytes)?;
        g.seq += 1;
        let seq = g.seq;
        let writer = self.writer(p, seq + 1);
        let g = self.groups.get_mut(&p).expect("owned group");
        // A fresh writer per checkpoint: file names carry the sequence.
        let old = std::mem::replace(&mut g.shard.sink_mut().0, writer);
        self.counters.rows += old.stats().rows;
        Ok(g.next
            .iter()
            .enumerate()
            .filter_map(|(t, n)| n.map(|n| (t, p, n)))
            .collect())
    }

    /// One Kafka record.
    pub fn record<'a>(
        &mut self,
        topic: usize,
        partition: i32,
        offset: i64,
        payload: Option<&'a [u8]>,
        header: &dyn Fn(&str) -> Option<&'a [u8]>,
        now: Instant,
    ) -> Result<(), RunError> {
        let Some(g) = self.groups.get_mut(&partition) else {
            // A record of a partition we no longer own (fetched before a revoke).
            return Ok(());
        };
        if g.next[topic].is_some_and(|n| offset < n) {
            return Ok(()); // already in the restored state
        }
        g.next[topic] = Some(offset + 1);
        let t = &self.topics[topic];
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
                        origin.base.min(self.inputs.len().saturating_sub(1)),
                        (&t.name, partition, offset),
                    ),
                }
            }
        };
        let stats = &mut self.counters.decode;
        stats.records += 1;
        let payload = payload.unwrap_or(&[]);
        stats.bytes += payload.len() as u64;
        let decoded = if payload.len() > self.opts.max_line_bytes {
            Err(DecodeError::OversizedLine)
        } else {
            t.decoder.decode(payload, header)
        };
        let decoded = match decoded {
            Ok(d) => d,
            Err(reason) => {
                stats.errors[reason.index()] += 1;
                if let Some(m) = &self.metrics {
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
                return self.dead_letter(&serde_json::to_value(&letter).expect("serializes"));
            }
        };
        let Some(name) = decoded.name else {
            stats.unmatched += 1;
            return Ok(());
        };
        stats.events += 1;
        let (key, canonical) = TraceKey::from_text(&decoded.trace_id);
        let mut attrs: SmallVec<[(AttrSlot, AttrValue<'_>); 8]> = SmallVec::new();
        for (slot, value) in &decoded.attrs {
            attrs.push((
                *slot,
                match value {
                    AttrCow::Str(s) => AttrValue::Str(s),
                    AttrCow::Num(n) => AttrValue::Num(*n),
                    AttrCow::Bool(b) => AttrValue::Bool(*b),
                },
            ));
        }
        let event = Event {
            trace: key,
            trace_text: (!canonical).then_some(&*decoded.trace_id),
            time: decoded.time,
            name,
            ok: decoded.ok,
            fingerprint: decoded.fingerprint,
            service: &decoded.service,
            attrs: &attrs,
        };
        g.max_seen[input] = Some(g.max_seen[input].map_or(event.time, |m| m.max(event.time)));
        g.watermarks.observe(input, event.time, now);
        if let Some(w) = g.watermarks.watermark(now) {
            g.shard.advance(w);
        }
        g.shard.apply(&event);
        let evicted = g.shard.take_evicted();
        if let Some(events) = &t.events {
            events.inc();
        }
        for j in evicted {
            self.dead_letter(&tacet_engine::pipeline::evicted_letter(&j))?;
        }
        Ok(())
    }

    /// Moves every group's watermark by wall clock (idleness), deciding what is due.
    pub fn tick(&mut self, now: Instant) {
        let mut open = 0;
        for g in self.groups.values_mut() {
            if let Some(w) = g.watermarks.watermark(now) {
                g.shard.advance(w);
            }
            if let Err(e) = g.shard.sink_mut().0.flush_older(Some(Duration::from_secs(3600)))
                && self.errors.note(ErrorKind::OutcomeWrite)
            {
                tracing::error!(error = %e, "Could not write an outcome file; kept for the next checkpoint.");
            }
            open += g.shard.open_traces();
        }
        let ps: Vec<i32> = self.groups.keys().copied().collect();
        for p in ps {
            self.report_alerts(p, false);
        }
        if let Some(m) = &self.metrics {
            m.open_journeys.set(open as i64);
        }
    }

    /// End of a finite run: every group's watermark becomes the largest event
    /// time this consumer has seen; what is still ahead stays in flight, in
    /// the snapshot and in `<out>/state/in-flight-p<P>.ndjson`.
    pub fn finish(&mut self) -> Result<usize, RunError> {
        let max = self
            .groups
            .values()
            .flat_map(|g| g.max_seen.iter().flatten().copied())
            .max();
        let Some(max) = max else {
            return Ok(0);
        };
        let dir = self.opts.out_dir.join("state");
        let mut total = 0;
        for (p, g) in &mut self.groups {
            let in_flight: Vec<InFlight> = g.shard.finish(max);
            total += in_flight.len();
            tacet_engine::pipeline::write_in_flight_file(&dir, &format!("in-flight-p{p}.ndjson"), &in_flight)
                .map_err(|e| RunError::Kafka(e.to_string()))?;
        }
        let ps: Vec<i32> = self.groups.keys().copied().collect();
        for p in ps {
            self.report_alerts(p, false);
        }
        Ok(total)
    }

    fn dead_letter(&mut self, record: &serde_json::Value) -> Result<(), RunError> {
        let path = self.opts.out_dir.join("dead-letter.ndjson");
        let io = |source| RunError::Io {
            path: path.display().to_string(),
            source,
        };
        if self.dead.is_none() {
            std::fs::create_dir_all(&self.opts.out_dir).map_err(io)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            self.dead = Some(BufWriter::new(file));
        }
        let w = self.dead.as_mut().expect("opened");
        serde_json::to_writer(&mut *w, record).map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
        self.counters.dead_letters += 1;
        Ok(())
    }

    fn sync_dead_letters(&mut self) -> Result<(), RunError> {
        if let Some(w) = &mut self.dead {
            let path = self.opts.out_dir.join("dead-letter.ndjson");
            let io = |source| RunError::Io {
                path: path.display().to_string(),
                source,
            };
            w.flush().map_err(io)?;
            w.get_ref().sync_data().map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tacet_core::Config;
    use tacet_core::config::{SourceConfig, SourceKind};

    fn repartitioned_engine(dir: &std::path::Path) -> Engine {
        let mut config = Config::embedded_default();
        config.sources = vec![SourceConfig {
            name: "events".into(),
            kind: Some(SourceKind::Kafka),
            brokers: Some("127.0.0.1:9".into()),
            topics: vec!["payments".into()],
            group_id: Some("g".into()),
            properties: Default::default(),
            partitioning: tacet_core::config::Partitioning::Repartition,
            fields: Default::default(),
        }];
        let plan = config.kafka_plan().unwrap();
        let opts = EngineOptions {
            out_dir: dir.to_path_buf(),
            state_dir: dir.join("state"),
            flush_rows: 1000,
            max_open_journeys: 1000,
            allowed_lateness: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_line_bytes: 1 << 20,
        };
        let layout = Layout::Repartitioned {
            source_partitions: vec![4],
        };
        let mut engine = Engine::new(&config, &plan, &layout, opts, None, Arc::new(RunErrors::default())).unwrap();
        engine.assign(&[(0, 0)]).unwrap();
        engine
    }

    /// One record of internal partition 0 carrying `origin` as its header.
    fn feed(engine: &mut Engine, offset: i64, origin: &str, payload: &[u8]) {
        let origin = origin.as_bytes();
        let header = |name: &str| (name == crate::repartition::ORIGIN_HEADER).then_some(origin);
        engine
            .record(0, 0, offset, Some(payload), &header, Instant::now())
            .unwrap();
    }

    const EVENT: &[u8] = br#"{"ts":"2026-11-22T10:00:00.000Z","trace_id":"t-1","service":"mobile-bff","event":"transfer.requested","status":"ok"}"#;

    #[test]
    fn copies_a_restarted_repartitioner_wrote_again_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = repartitioned_engine(dir.path());
        feed(&mut engine, 0, "1/5", EVENT);
        feed(&mut engine, 1, "1/6", EVENT);
        // The repartitioner restarted from source offset 5: copies follow.
        feed(&mut engine, 2, "1/5", EVENT);
        feed(&mut engine, 3, "1/6", EVENT);
        // Another source partition is independent.
        feed(&mut engine, 4, "2/5", EVENT);
        assert_eq!(engine.counters.repartition_duplicates, 2);
        assert_eq!(engine.counters.decode.records, 3);
        // A hostile header neither panics nor wraps into accepting the past.
        feed(&mut engine, 5, &format!("3/{}", i64::MAX), EVENT);
        feed(&mut engine, 6, "3/0", EVENT);
        assert_eq!(engine.counters.repartition_duplicates, 3);
    }

    #[test]
    fn dead_letters_name_the_source_position_not_the_internal_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = repartitioned_engine(dir.path());
        feed(&mut engine, 9, "2/77", b"not json");
        engine.checkpoint().unwrap();
        let letters = std::fs::read_to_string(dir.path().join("dead-letter.ndjson")).unwrap();
        let letter: serde_json::Value = serde_json::from_str(letters.lines().next().unwrap()).unwrap();
        assert_eq!(letter["position"], "payments/2/77");
    }
}
