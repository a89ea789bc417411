//! The correlation stage: one unit of correlation state and everything it
//! owns — the shard (open journeys, timers, tombstones), the watermark of its
//! inputs, its outcome writer and alert feed, its share of the dead-letter
//! sink and its counters.
//!
//! Replay and Kafka are two *sources* that feed stages. A replay shard is a
//! stage whose inputs are the input files; a Kafka partition group is a
//! stage whose inputs are its topics (or, repartitioned, the source
//! partitions behind them). Sources differ only in where records come from,
//! how they name an input's event-time progress, and who asks for
//! checkpoints; every rule below is written once, here.
//!
//! Lifecycle, in the manner of Arroyo's operators:
//! [`Stage::new`] or [`Stage::restore`], then any number of
//! [`Stage::on_event`] / [`Stage::on_input_progress`] /
//! [`Stage::on_input_end`] closed by [`Stage::on_batch_end`];
//! [`Stage::on_tick`] as the wall clock passes; [`Stage::on_checkpoint`]
//! when the source makes state durable; [`Stage::on_finish`] at the end of
//! finite input, and [`Stage::close`] when the stage goes away.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tacet_alert::AlertFeed;
use tacet_alert::service::AlertProgress;
use tacet_core::outcome::Tee;
use tacet_core::{Catalog, Event, EventTime};
use tacet_correlate::watermark::Watermarks;
use tacet_correlate::{Evicted, InFlight, Shard, ShardStats, SlotHint};
use tacet_ingest::deadletter::DeadLetters;
use tacet_store::{OutcomeWriter, StoreError, WriterStats};

/// Decisions go to the stage's outcome files and to the alert rules.
pub type StageSink = Tee<OutcomeWriter, AlertFeed>;

/// Why a stage cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Snapshot(#[from] tacet_correlate::SnapshotError),
}

/// The bounds and timings every stage of a run shares (`[engine]`, `[output]`).
#[derive(Debug, Clone, Copy)]
pub struct StageLimits {
    /// This stage's share of `engine.max_open_journeys` (see [`share_of`]).
    pub max_open_journeys: usize,
    /// This stage's share of `engine.max_decided_state_bytes`.
    pub max_decided_state_bytes: usize,
    /// `output.flush_interval`, when [`Stage::on_tick`] writes rows decided
    /// longer ago than that. `None` when the source publishes rows at its
    /// checkpoints instead (`tacet run` brings its checkpoints forward to
    /// keep the same bound).
    pub flush_interval: Option<Duration>,
    /// `engine.allowed_lateness`.
    pub allowed_lateness: Duration,
    /// `engine.idle_timeout`, or `None` for a finite replay (deterministic).
    pub idle_timeout: Option<Duration>,
}

/// One unit's share of a process-wide cap split over `units`: the shares
/// add up to at most the cap (plus one per unit for rounding up), whatever
/// the number of shards or partitions.
pub fn share_of(cap: usize, units: usize) -> usize {
    cap.div_ceil(units.max(1)).max(1)
}

/// Where a stage's side outputs go.
#[derive(Clone)]
pub struct StageLinks {
    /// Its name on the alert clock: a shard index or a Kafka partition.
    pub id: usize,
    pub dead_letters: DeadLetters,
    /// The alert thread, if alerts are on.
    pub alerts: Option<Sender<AlertProgress>>,
}

/// One unit of correlation state (see the module docs).
pub struct Stage {
    shard: Shard<StageSink>,
    watermarks: Watermarks,
    links: StageLinks,
    flush_interval: Option<Duration>,
}

impl Stage {
    /// An empty stage with `inputs` watermark inputs, writing outcomes with `writer`.
    pub fn new(
        catalog: Arc<Catalog>,
        limits: &StageLimits,
        inputs: usize,
        writer: OutcomeWriter,
        feed: AlertFeed,
        links: StageLinks,
        now: Instant,
    ) -> Self {
        let shard = Shard::new(catalog, limits.max_open_journeys, Tee(writer, feed));
        Self::assemble(shard, limits, inputs, links, now)
    }

    /// A stage as its snapshot `bytes` left it ([`Stage::on_checkpoint`]),
    /// with each input's progress as the snapshot's source recorded it.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        catalog: Arc<Catalog>,
        limits: &StageLimits,
        inputs: &[Option<EventTime>],
        writer: OutcomeWriter,
        feed: AlertFeed,
        links: StageLinks,
        bytes: &[u8],
        now: Instant,
    ) -> Result<Self, StageError> {
        let shard = Shard::restore(catalog, limits.max_open_journeys, Tee(writer, feed), bytes)?;
        let mut stage = Self::assemble(shard, limits, inputs.len(), links, now);
        for (input, progress) in inputs.iter().enumerate() {
            if let Some(t) = progress {
                stage.watermarks.observe(input, *t, now);
            }
        }
        Ok(stage)
    }

    fn assemble(shard: Shard<StageSink>, limits: &StageLimits, inputs: usize, links: StageLinks, now: Instant) -> Self {
        let watermarks = Watermarks::new(inputs, limits.allowed_lateness, limits.idle_timeout, now);
        let mut stage = Self {
            shard: shard.with_decided_budget(limits.max_decided_state_bytes),
            watermarks,
            links,
            flush_interval: limits.flush_interval,
        };
        // The alert clock waits for this stage from now on.
        stage.report(false);
        stage
    }

    /// Applies one event of `input`, whose event-time progress has reached
    /// `progress` (the event's own time, or more when the source knows
    /// more: a replay chunk's running maximum over every shard). `hint` is
    /// where [`Stage::prefetch`] saw its journey.
    #[inline]
    pub fn on_event(
        &mut self,
        input: usize,
        progress: EventTime,
        event: &Event<'_>,
        hint: Option<SlotHint>,
        now: Instant,
    ) {
        self.watermarks.observe(input, progress, now);
        if let Some(w) = self.watermarks.watermark(now) {
            self.shard.advance(w);
        }
        self.shard.apply_hinted(event, hint);
    }

    /// `input` has progressed to `progress` without an event for this stage.
    pub fn on_input_progress(&mut self, input: usize, progress: EventTime, now: Instant) {
        self.watermarks.observe(input, progress, now);
    }

    /// Whether `input` is known to be behind its source (records at the
    /// broker not read yet): a lagging input is never idle.
    pub fn set_input_lagging(&mut self, input: usize, lagging: bool) {
        self.watermarks.set_lagging(input, lagging);
    }

    /// `input` has ended (end of a file): it no longer holds the watermark back.
    pub fn on_input_end(&mut self, input: usize) {
        self.watermarks.finish(input);
    }

    /// After a batch of records: the watermark as of `now`, evicted
    /// journeys to the dead letters, decisions and watermark to the alert rules.
    pub fn on_batch_end(&mut self, now: Instant) -> Result<(), StageError> {
        if let Some(w) = self.watermarks.watermark(now) {
            self.shard.advance(w);
        }
        self.settle()
    }

    /// The wall clock passed: idle inputs let the watermark move, and rows
    /// decided longer than `flush_interval` ago are written.
    pub fn on_tick(&mut self, now: Instant) -> Result<(), StageError> {
        if let Some(w) = self.watermarks.watermark(now) {
            self.shard.advance(w);
        }
        if let Some(interval) = self.flush_interval {
            self.shard.sink_mut().0.flush_older(Some(interval))?;
        }
        self.settle()
    }

    /// Makes the outcome rows decided so far durable and returns the state
    /// snapshot that goes with them. The source publishes the rows, stores
    /// the snapshot and, for Kafka, commits offsets, in that order (SPEC §7).
    pub fn on_checkpoint(&mut self) -> Result<Vec<u8>, StageError> {
        self.settle()?;
        self.shard.sink_mut().0.flush()?;
        let mut bytes = Vec::new();
        self.shard.write_snapshot(&mut bytes);
        Ok(bytes)
    }

    /// This stage's new share of the process-wide caps (a Kafka assignment
    /// grew or shrank); open journeys past the new cap are evicted now.
    pub fn set_limits(&mut self, max_open_journeys: usize, max_decided_state_bytes: usize) -> Result<(), StageError> {
        self.shard.set_limits(max_open_journeys, max_decided_state_bytes);
        self.settle()
    }

    /// Starts writing outcome files with `writer`; returns the old one's figures.
    pub fn replace_writer(&mut self, writer: OutcomeWriter) -> WriterStats {
        let old = std::mem::replace(&mut self.shard.sink_mut().0, writer);
        old.stats().clone()
    }

    /// The end of finite input at event time `max`: decides what is due and
    /// returns the journeys still ahead of their deadline (never invented
    /// as failures).
    pub fn on_finish(&mut self, max: EventTime) -> Result<Vec<InFlight>, StageError> {
        let in_flight = self.shard.finish(max);
        self.settle()?;
        Ok(in_flight)
    }

    /// The stage goes away (end of a replay, a revoked partition): the alert
    /// clock stops waiting for it. Returns its shard's counters and writer.
    pub fn close(mut self) -> (ShardStats, OutcomeWriter) {
        self.report(true);
        let stats = self.shard.stats();
        let Tee(writer, _) = self.shard.into_sink();
        (stats, writer)
    }

    /// Evicted journeys to the dead letters, decisions to the alert rules.
    fn settle(&mut self) -> Result<(), StageError> {
        let evicted = self.shard.take_evicted();
        if !evicted.is_empty() {
            // Each is counted by the shard (`ShardStats::evicted`).
            let dead = &self.links.dead_letters;
            dead.write_all(evicted.iter().map(evicted_letter))
                .map_err(|source| StageError::Io {
                    path: dead.path().display().to_string(),
                    source,
                })?;
        }
        self.report(false);
        Ok(())
    }

    /// Hands new decisions and the watermark to the alert thread.
    fn report(&mut self, gone: bool) {
        if let Some(tx) = &self.links.alerts {
            let _ = tx.send(AlertProgress {
                source: self.links.id,
                watermark: self.shard.watermark(),
                max_time: self.watermarks.max_seen().unwrap_or(EventTime::MIN),
                notes: self.shard.sink_mut().1.take(),
                gone,
            });
        }
    }

    /// Starts loading the index bucket of `key`'s journey into the cache.
    #[inline]
    pub fn prefetch_index(&self, key: &tacet_core::TraceKey) {
        self.shard.prefetch_index(key);
    }

    /// Starts loading `key`'s open journey; returns where it is.
    #[inline]
    pub fn prefetch(&self, key: &tacet_core::TraceKey) -> Option<SlotHint> {
        self.shard.prefetch(key)
    }

    /// Starts loading the attributes of the journey at `hint`.
    #[inline]
    pub fn prefetch_attrs(&self, hint: SlotHint) {
        self.shard.prefetch_attrs(hint);
    }

    /// Open journeys now.
    pub fn open_journeys(&self) -> usize {
        self.shard.open_traces()
    }

    /// The largest event time seen on `input`, if any.
    pub fn input_progress(&self, input: usize) -> Option<EventTime> {
        self.watermarks.max_seen_of(input)
    }

    /// The largest event time seen on any input.
    pub fn max_seen(&self) -> Option<EventTime> {
        self.watermarks.max_seen()
    }

    /// What the shard counted so far (without its gauges).
    pub fn shard_counts(&self) -> &ShardStats {
        self.shard.counted()
    }
}

/// The dead-letter record of a journey evicted by a cap.
fn evicted_letter(j: &Evicted) -> serde_json::Value {
    serde_json::json!({
        "source": "engine",
        "position": format!("trace:{}", j.trace_id),
        "reason": j.reason.as_str(),
        "journey": j.journey,
        "first_seen": j.first_seen,
        "n_events": j.n_events,
        "decides_at": j.timer_at,
    })
}

/// Writes `dir/name` (atomically) with one JSON line per in-flight journey;
/// `tacet verify` reads every `in-flight*.ndjson` of `<out>/state`.
pub fn write_in_flight(dir: &Path, name: &str, in_flight: &[InFlight]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for f in in_flight {
        let record = serde_json::json!({
            "trace_id": f.trace_id,
            "journey": f.journey,
            "awaiting_start": f.awaiting_start,
            "first_seen": f.first_seen,
            "started_at": f.started_at,
            "acked_at": f.acked_at,
            "decides_at": f.decides_at,
            "n_events": f.n_events,
        });
        serde_json::to_writer(&mut w, &record)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, dir.join(name))
}
