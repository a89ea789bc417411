//! The correlator side of one consumer, as the poll thread sees it.
//!
//! Partition `p` of every topic forms one group with its own shard, watermark
//! inputs and outcome writer ([`crate::group`]), so a rebalance moves whole
//! groups: the owner that loses `p` checkpoints it, the one that gains `p`
//! restores exactly that snapshot. Groups are spread over correlator threads
//! ([`crate::worker`]); the [`Engine`] places each group on one, hands each
//! polled batch to the thread whose fetch queue it came from, and turns
//! checkpoints, revokes and ticks into commands that follow the records
//! polled before them.
//!
//! Watermark inputs are the topics in the co-partitioned layout. In the
//! repartitioned layout the topics are tacet's internal ones, where the
//! records of every source partition meet; there each *source* partition is
//! an input (named by the `tacet-origin` header the repartitioner adds), so
//! the watermark keeps the disorder bound of the producers, not of the
//! repartitioner's reading order.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tacet_alert::service::{AlertResult, AlertService, AlertSetup};
use tacet_alert::sink::SinkKinds;
use tacet_core::Catalog;
use tacet_core::config::KafkaPlan;
use tacet_correlate::InFlight;
use tacet_engine::Metrics;
use tacet_ingest::Decoder;
use tacet_ingest::deadletter::DeadLetters;

use crate::checkpoint::CheckpointError;
use crate::errors::RunErrors;
use crate::fetch::Messages;
use crate::group::{CommitOffset, Origin, Shared, Topic};
pub use crate::group::{Record, RunCounters};
use crate::worker::{BATCH_RECORDS, Command, Worker};

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
        source: tacet_engine::StageError,
    },
    #[error(transparent)]
    Stage(#[from] tacet_engine::StageError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot create the Kafka {client}: {reason}")]
    Client { client: &'static str, reason: String },
    #[error("cannot subscribe to {topics:?}: {reason}")]
    Subscribe { topics: Vec<String>, reason: String },
    #[error("rebalance: {0}")]
    Rebalance(String),
    #[error("stopped while waiting for the broker: {0}")]
    BrokerUnreachable(String),
    #[error("source topic {0} does not exist (repartition mode reads it to re-key it)")]
    MissingSourceTopic(String),
    #[error("internal topic {topic}: {reason}")]
    InternalTopic { topic: String, reason: String },
    #[error("repartition: {0}")]
    Repartition(String),
    #[error("the repartitioner stopped")]
    RepartitionerStopped,
    #[error(
        "{seen} sampled trace ids were seen on two partitions (engine.max_misrouted_traces = {max}): the producers \
         do not key every topic by the trace id as tacet reads it, so co-partitioned mode would decide journeys \
         from parts of their traces. Set partitioning = \"repartition\" on every Kafka source (the default), \
         or key every topic by the trace id"
    )]
    NotCopartitioned { seen: u64, max: u64 },
    #[error("a correlator thread stopped")]
    CorrelatorStopped,
    #[error("a correlator thread failed earlier; see its error")]
    CorrelatorFailed,
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    #[error("cannot start the {what}: {source}")]
    Start { what: &'static str, source: std::io::Error },
    #[error(transparent)]
    Alerts(#[from] tacet_alert::service::AlertServiceError),
}

/// Settings of the engine side of a run.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub out_dir: PathBuf,
    pub state_dir: PathBuf,
    pub flush_rows: usize,
    pub max_open_journeys: usize,
    /// Budget of tombstones and kept silent failures (`[engine]`).
    pub max_decided_state_bytes: usize,
    pub allowed_lateness: Duration,
    pub idle_timeout: Duration,
    pub max_line_bytes: usize,
    /// How large the dead-letter file may grow, and rotated files kept.
    pub dead_letters: tacet_ingest::deadletter::DeadLetterLimits,
    /// Correlator threads the partition groups are spread over; 0 means
    /// one per CPU core (`[engine] shards`).
    pub workers: usize,
    /// Alert sink kinds built outside the alert crate (the Kafka sink).
    pub sink_kinds: SinkKinds,
    /// `engine.max_misrouted_traces` (co-partitioned layout).
    pub max_misrouted_traces: u64,
}

impl EngineOptions {
    /// The options `config` gives, writing outcomes under `out_dir` and
    /// snapshots under `state_dir`.
    pub fn from_config(config: &tacet_core::Config, out_dir: PathBuf, state_dir: PathBuf) -> Self {
        Self {
            out_dir,
            state_dir,
            flush_rows: config.output.flush_rows,
            max_open_journeys: config.engine.max_open_journeys,
            max_decided_state_bytes: config.engine.max_decided_state_bytes,
            allowed_lateness: config.engine.allowed_lateness,
            idle_timeout: config.engine.idle_timeout,
            max_line_bytes: config.engine.max_line_bytes,
            dead_letters: tacet_ingest::deadletter::DeadLetterLimits::from_config(&config.output),
            workers: config.engine.shards,
            sink_kinds: SinkKinds::default(),
            max_misrouted_traces: config.engine.max_misrouted_traces,
        }
    }
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

/// All groups this consumer owns, on their correlator threads.
pub struct Engine {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    /// Owned groups and the worker each lives on.
    owner: BTreeMap<i32, usize>,
    /// The worker each partition was first placed on. A partition that comes
    /// back goes there again: its records are routed to that worker's fetch
    /// queue for the consumer's life (see [`crate::fetch`]), and records
    /// fetched before a revoke must not overtake those fetched after it.
    home: BTreeMap<i32, usize>,
    /// Bumped by every assign and revoke.
    pub(crate) assignment_epoch: u64,
    /// Records handed to the correlator threads.
    dispatched: u64,
    /// What the engine itself counted (checkpoint rounds, discarded files),
    /// and, once the threads stopped, theirs.
    counters: RunCounters,
    /// The correlators' counts already added to `tacet_correlator_events`.
    exported: tacet_engine::metrics::CorrelatorExport,
    stopped: bool,
    /// A correlator thread's failure, for the poll loop to stop on.
    failed: Arc<Mutex<Option<RunError>>>,
    /// The alert thread (SLO rules over this consumer's decisions); each
    /// group's stage holds a sender.
    alerts: Option<AlertService>,
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
                decoder: Decoder::from_config(catalog.clone(), &t.mapping, &t.source, &config.engine),
                events: metrics.as_ref().map(|m| m.source_events(&t.source)),
                origin,
            });
        }
        let alerts = tacet_alert::service::spawn(AlertSetup {
            catalog: catalog.clone(),
            config: Arc::new(config.clone()),
            out_dir: opts.out_dir.clone(),
            awaited: 0,
            kinds: opts.sink_kinds.clone(),
            metrics: metrics
                .clone()
                .map(|m| m as Arc<dyn tacet_alert::service::AlertMetrics>),
        })?;
        let threads = match opts.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let hook = metrics.as_ref().map(|m| m.dead_letter_hook());
        let shared = Arc::new(Shared {
            dead_letters: DeadLetters::new(&opts.out_dir, opts.dead_letters, false, hook),
            catalog,
            topics,
            inputs,
            opts,
            config_hash: crate::checkpoint::state_hash(config),
            metrics,
            errors,
            synthetic_attribute: config.alerts.synthetic_attribute.clone(),
            copartition: (*layout == Layout::Copartitioned).then(Default::default),
        });
        let failed = Arc::new(Mutex::new(None));
        let workers = (0..threads)
            .map(|i| Worker::spawn(i, shared.clone(), failed.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| RunError::Start {
                what: "correlator thread",
                source,
            })?;
        Ok(Self {
            shared,
            workers,
            owner: BTreeMap::new(),
            home: BTreeMap::new(),
            assignment_epoch: 0,
            dispatched: 0,
            counters: RunCounters::default(),
            exported: Default::default(),
            stopped: false,
            failed,
            alerts: Some(alerts),
        })
    }

    /// The index of `topic`, if consumed.
    pub fn topic_index(&self, topic: &str) -> Option<usize> {
        self.shared.topic_index(topic)
    }

    /// Topics consumed.
    pub fn topic_count(&self) -> usize {
        self.shared.topics.len()
    }

    pub fn topic_name(&self, index: usize) -> &str {
        &self.shared.topics[index].name
    }

    /// Whether records of topic `index` need their headers: a `header:NAME`
    /// trace id, or the repartitioner's origin. Parsing and copying them
    /// otherwise is poll-thread time taken from the correlators.
    pub fn reads_headers(&self, index: usize) -> bool {
        let topic = &self.shared.topics[index];
        topic.origin.is_some() || topic.decoder.reads_headers()
    }

    /// Partitions owned now.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.owner.keys().copied()
    }

    /// Open journeys over every group (as of each thread's last batch).
    pub fn open_journeys(&self) -> usize {
        self.workers.iter().map(Worker::open_journeys).sum()
    }

    /// Records handed to the correlator threads so far.
    pub fn records_dispatched(&self) -> u64 {
        self.dispatched
    }

    /// When a correlator thread last finished applying a batch of records.
    pub fn last_applied(&self) -> Option<Instant> {
        self.workers.iter().filter_map(Worker::applied_at).max()
    }

    /// The first failure of a correlator thread, once.
    pub fn take_failure(&self) -> Option<RunError> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Correlator threads.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// The correlator thread partition group `p` lives on (or will again,
    /// if it comes back), if it was ever placed.
    pub fn worker_of(&self, partition: i32) -> Option<usize> {
        self.home.get(&partition).copied()
    }

    /// Batches waiting for correlator thread `w`.
    pub(crate) fn backlog(&self, w: usize) -> usize {
        self.workers[w].backlog()
    }

    /// Whether thread `w` takes another batch without making the poll
    /// thread wait.
    pub(crate) fn has_room(&self, w: usize) -> bool {
        self.workers[w].has_room()
    }

    /// Takes ownership of `partitions`, restoring each group from its
    /// snapshot onto the correlator thread it lived on before in this run,
    /// else the one with the fewest groups.
    /// Returns where to start consuming each `(topic index, partition)`:
    /// `Some(offset)` from the snapshot, `None` for the group's committed offset.
    pub fn assign(&mut self, partitions: &[(usize, i32)]) -> Result<Vec<(usize, i32, Option<i64>)>, RunError> {
        self.assignment_epoch += 1;
        if self.stopped {
            return Err(RunError::CorrelatorStopped);
        }
        let mut starts = Vec::with_capacity(partitions.len());
        let mut restored: BTreeMap<i32, Vec<Option<i64>>> = BTreeMap::new();
        for &(_, p) in partitions {
            if self.owner.contains_key(&p) || restored.contains_key(&p) {
                continue;
            }
            let owned = self.owner.len() + restored.len() + 1;
            let alerts = self.alerts.as_ref().map(|a| a.progress.clone());
            let (group, discarded) = self.shared.restore(p, owned, alerts)?;
            self.counters.discarded_files += discarded as u64;
            restored.insert(p, group.next.clone());
            let fewest = || {
                (0..self.workers.len())
                    .min_by_key(|&w| self.workers[w].groups)
                    .expect("at least one correlator thread")
            };
            let w = *self.home.entry(p).or_insert_with(fewest);
            self.workers[w].command(Command::Adopt(p, Box::new(group)))?;
            self.workers[w].groups += 1;
            self.owner.insert(p, w);
        }
        self.share_limits()?;
        // A group owned already (never with the eager range assignor, which
        // revokes everything before it assigns) starts at the committed
        // offset: what it re-reads below its next offset is skipped.
        for &(t, p) in partitions {
            starts.push((t, p, restored.get(&p).and_then(|next| next[t])));
        }
        Ok(starts)
    }

    /// Gives up `partitions`: checkpoints their groups and drops them.
    /// Returns the offsets to commit.
    pub fn revoke(&mut self, partitions: &[(usize, i32)]) -> Result<Vec<CommitOffset>, RunError> {
        self.assignment_epoch += 1;
        if self.stopped {
            // The run is ending in error (the consumer's close revokes
            // after the threads stopped): nothing may be made durable.
            return Ok(Vec::new());
        }
        let mut ps: Vec<i32> = partitions.iter().map(|&(_, p)| p).collect();
        ps.sort_unstable();
        ps.dedup();
        let mut offsets = Vec::new();
        for p in ps {
            if let Some(w) = self.owner.remove(&p) {
                offsets.extend(self.workers[w].ask(|reply| Command::Release(p, reply))??);
                self.workers[w].groups -= 1;
            }
        }
        self.share_limits()?;
        Ok(offsets)
    }

    /// Splits the process-wide caps (`max_open_journeys`,
    /// `max_decided_state_bytes`) over the groups owned now, as a replay
    /// splits them over its shards.
    fn share_limits(&mut self) -> Result<(), RunError> {
        let groups = self.owner.len();
        for w in &mut self.workers {
            w.command(Command::Limits(groups))?;
        }
        Ok(())
    }

    /// Checkpoints every group in the order SPEC §7 asks: outcomes durable,
    /// then state, then (by the caller) offsets. Covers every record handed
    /// over so far. Returns the offsets to commit.
    pub fn checkpoint(&mut self) -> Result<Vec<CommitOffset>, RunError> {
        // Ask every thread first, then wait: they checkpoint in parallel.
        let mut replies = Vec::with_capacity(self.workers.len());
        for w in &mut self.workers {
            let (tx, rx) = crossbeam_channel::bounded(1);
            w.command(Command::Checkpoint(tx))?;
            replies.push(rx);
        }
        let mut offsets = Vec::new();
        // The threads' counts come back with their offsets: every thread
        // answers a checkpoint, so the run's counts need no second round.
        let mut counted = self.counters.clone();
        for rx in replies {
            let result = rx.recv().map_err(|_| RunError::CorrelatorStopped)?;
            let (thread_offsets, thread_counts) = result?;
            offsets.extend(thread_offsets);
            counted.merge(&thread_counts);
        }
        self.counters.checkpoints += 1;
        if let Some(m) = &self.shared.metrics {
            m.checkpoints.inc();
        }
        self.export_correlator_counts(&counted);
        Ok(offsets)
    }

    /// Brings `tacet_correlator_events` up to the run's counts `c`, as of a
    /// checkpoint: the counts live in the correlator threads, off the
    /// per-record path, so the metric is as fresh as the last checkpoint.
    /// The totals never fall (a revoked group's counts fold into its
    /// thread's), so the counters are raised by the difference.
    fn export_correlator_counts(&mut self, c: &RunCounters) {
        if let Some(m) = &self.shared.metrics {
            self.exported.export_stats(m, &c.correlate);
        }
    }

    /// One Kafka record, copied into the batch of the thread that owns its
    /// partition. `headers` are its record headers.
    pub fn record<'h>(
        &mut self,
        record: Record<'_>,
        headers: impl Iterator<Item = (&'h [u8], Option<&'h [u8]>)>,
        now: Instant,
    ) -> Result<(), RunError> {
        let Some(&w) = self.owner.get(&record.partition) else {
            // A record of a partition we no longer own (fetched before a revoke).
            return Ok(());
        };
        self.dispatched += 1;
        let worker = &mut self.workers[w];
        worker.pending.push(record, headers, now);
        if worker.pending.len() >= BATCH_RECORDS {
            worker.flush()?;
        }
        Ok(())
    }

    /// Records polled from thread `w`'s fetch queue (`records` of them, the
    /// rest per-partition errors), handed to it as they are (see
    /// [`crate::fetch::Messages`]), after its copied ones. The thread drops
    /// records of partitions it no longer owns, as [`Engine::record`] does
    /// here.
    pub(crate) fn fetched(
        &mut self,
        w: usize,
        messages: Messages,
        records: usize,
        now: Instant,
    ) -> Result<(), RunError> {
        self.dispatched += records as u64;
        self.workers[w].command(Command::Fetched(messages, now))
    }

    /// Sends every partly filled batch (the poll found nothing more for now).
    pub fn flush(&mut self) -> Result<(), RunError> {
        self.workers.iter_mut().try_for_each(Worker::flush)
    }

    /// Sends thread `w`'s partly filled batch.
    pub(crate) fn flush_worker(&mut self, w: usize) -> Result<(), RunError> {
        self.workers[w].flush()
    }

    /// Moves every group's watermark by wall clock (idleness), deciding what is due.
    pub fn tick(&mut self, now: Instant) -> Result<(), RunError> {
        for w in &mut self.workers {
            w.command(Command::Tick(now))?;
        }
        if let Some(m) = &self.shared.metrics {
            m.open_journeys.set(self.open_journeys() as i64);
        }
        Ok(())
    }

    /// End of a finite run: every group's watermark becomes the largest event
    /// time this consumer has seen; what is still ahead stays in flight, in
    /// the snapshot and in `<out>/state/in-flight-p<P>.ndjson`.
    pub fn finish(&mut self) -> Result<Vec<InFlight>, RunError> {
        let Some(max) = self.max_seen()? else {
            return Ok(Vec::new());
        };
        let mut all = Vec::new();
        for w in &mut self.workers {
            all.extend(w.ask(|reply| Command::Finish(max, reply))??);
        }
        Ok(all)
    }

    /// The largest event time any owned group has seen.
    pub fn max_seen(&mut self) -> Result<Option<tacet_core::EventTime>, RunError> {
        let mut max = None;
        for w in &mut self.workers {
            max = max.max(w.ask(Command::MaxSeen)?);
        }
        Ok(max)
    }

    /// Counters of the run so far (every record handed over is counted).
    pub fn counters(&mut self) -> Result<RunCounters, RunError> {
        let mut all = self.counters.clone();
        if !self.stopped {
            for w in &mut self.workers {
                all.merge(&w.ask(Command::Counters)?);
            }
        }
        Ok(all)
    }

    /// Stops the correlator threads after what they were sent, if not
    /// stopped yet, dropping their counters (the run is ending in error).
    pub(crate) fn stop_threads(&mut self) {
        if !self.stopped {
            self.workers.clear();
            self.stopped = true;
        }
    }

    /// Stops the correlator threads, then the alert rules after the
    /// decisions reported so far; returns what the rules did.
    pub fn close_alerts(&mut self) -> Result<Option<AlertResult>, RunError> {
        if !self.stopped {
            for w in &mut self.workers {
                let counters = w.stop()?;
                self.counters.merge(&counters);
            }
            self.stopped = true;
        }
        match self.alerts.take() {
            None => Ok(None),
            Some(service) => Ok(Some(service.join()?)),
        }
    }

    /// The broker's offsets of partitions, `(topic, partition, low, high)`
    /// (from librdkafka's statistics), to the threads owning them.
    pub fn broker_offsets(&mut self, offsets: &[crate::group::BrokerOffsets]) -> Result<(), RunError> {
        if self.stopped {
            return Ok(());
        }
        let mut per_worker: BTreeMap<usize, Vec<crate::group::BrokerOffsets>> = BTreeMap::new();
        for &o in offsets {
            if let Some(&w) = self.owner.get(&o.1) {
                per_worker.entry(w).or_default().push(o);
            }
        }
        for (w, offsets) in per_worker {
            self.workers[w].command(Command::BrokerOffsets(offsets))?;
        }
        Ok(())
    }

    /// Co-partitioned layout: sampled trace ids seen on two partitions so far.
    pub fn misrouted_traces(&self) -> u64 {
        self.shared.copartition.as_ref().map_or(0, |c| c.misrouted())
    }

    /// Records written to the dead-letter file, its rotations and pauses.
    pub fn dead_letter_stats(&self) -> tacet_ingest::deadletter::DeadLetterStats {
        self.shared.dead_letters.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tacet_core::Config;
    use tacet_core::config::{SourceConfig, SourceKind};

    /// The default journeys reading topic `payments` on `workers`
    /// correlator threads, owning partitions `0..partitions`; with the
    /// config hash its snapshots carry.
    fn test_engine(dir: &std::path::Path, layout: Layout, workers: usize, partitions: i32) -> (Engine, u64) {
        metered_engine(dir, layout, workers, partitions, None)
    }

    fn metered_engine(
        dir: &std::path::Path,
        layout: Layout,
        workers: usize,
        partitions: i32,
        metrics: Option<Arc<Metrics>>,
    ) -> (Engine, u64) {
        capped_engine(dir, layout, workers, partitions, metrics, 100_000)
    }

    /// As [`metered_engine`], with `engine.max_open_journeys = max_open`.
    fn capped_engine(
        dir: &std::path::Path,
        layout: Layout,
        workers: usize,
        partitions: i32,
        metrics: Option<Arc<Metrics>>,
        max_open: usize,
    ) -> (Engine, u64) {
        let config = kafka_config(&layout);
        let engine = start_engine(dir, &config, &layout, workers, partitions, metrics, max_open);
        (engine, crate::checkpoint::state_hash(&config))
    }

    /// The default journeys reading topic `payments`.
    fn kafka_config(layout: &Layout) -> Config {
        let partitioning = match layout {
            Layout::Copartitioned => tacet_core::config::Partitioning::Copartitioned,
            Layout::Repartitioned { .. } => tacet_core::config::Partitioning::Repartition,
        };
        let mut config = Config::embedded_default();
        config.sources = vec![SourceConfig {
            name: "events".into(),
            kind: Some(SourceKind::Kafka),
            brokers: Some("127.0.0.1:9".into()),
            topics: vec!["payments".into()],
            group_id: Some("g".into()),
            properties: Default::default(),
            partitioning,
            fields: Default::default(),
        }];
        config
    }

    /// An engine over `config` owning partitions `0..partitions`.
    fn start_engine(
        dir: &std::path::Path,
        config: &Config,
        layout: &Layout,
        workers: usize,
        partitions: i32,
        metrics: Option<Arc<Metrics>>,
        max_open: usize,
    ) -> Engine {
        let plan = config.kafka_plan().unwrap();
        let mut opts = EngineOptions::from_config(config, dir.to_path_buf(), dir.join("state"));
        opts.flush_rows = 1000;
        opts.max_open_journeys = max_open;
        opts.max_decided_state_bytes = usize::MAX;
        opts.allowed_lateness = Duration::from_secs(5);
        opts.idle_timeout = Duration::from_secs(30);
        opts.max_line_bytes = 1 << 20;
        opts.workers = workers;
        let mut engine = Engine::new(config, &plan, layout, opts, metrics, Arc::new(RunErrors::default())).unwrap();
        let owned: Vec<(usize, i32)> = (0..partitions).map(|p| (0, p)).collect();
        engine.assign(&owned).unwrap();
        engine
    }

    /// Repartitioned from a 4-partition source; internal partition 0 owned.
    fn repartitioned_engine(dir: &std::path::Path) -> Engine {
        let layout = Layout::Repartitioned {
            source_partitions: vec![4],
        };
        test_engine(dir, layout, 1, 1).0
    }

    fn copartitioned_engine(dir: &std::path::Path, workers: usize, partitions: i32) -> (Engine, u64) {
        test_engine(dir, Layout::Copartitioned, workers, partitions)
    }

    fn plain(engine: &mut Engine, partition: i32, offset: i64, payload: &[u8]) {
        let record = Record {
            topic: 0,
            partition,
            offset,
            payload: Some(payload),
        };
        engine.record(record, std::iter::empty(), Instant::now()).unwrap();
    }

    #[test]
    fn a_checkpoint_covers_every_record_handed_over_before_it_on_every_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, hash) = copartitioned_engine(dir.path(), 2, 4);
        // 1,000 per partition: whole batches and a partly filled one each.
        for p in 0..4 {
            for offset in 0..1000 {
                let line = format!(
                    r#"{{"ts":"2026-11-22T10:00:00.000Z","trace_id":"t-{p}-{offset}","service":"mobile-bff","event":"transfer.requested"}}"#
                );
                plain(&mut engine, p, offset, line.as_bytes());
            }
        }
        let mut offsets = engine.checkpoint().unwrap();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..4).map(|p| (0, p, 1000)).collect::<Vec<_>>());
        for p in 0..4 {
            let (_, snap) = crate::checkpoint::read_latest(&dir.path().join("state"), p, hash)
                .unwrap()
                .unwrap();
            assert_eq!(snap.header.offsets["payments"], 1000, "partition {p}");
        }
        let counters = engine.counters().unwrap();
        assert_eq!(counters.decode.records, 4000);
        assert_eq!(engine.open_journeys(), 4000);
    }

    /// The rule a polled batch relies on (the poll thread hands it over
    /// without looking at ownership): a thread applies what it was sent
    /// before a revoke, in the revoke's snapshot, and drops what arrives
    /// after it, for the next owner to read from that snapshot's offsets.
    #[test]
    fn a_thread_applies_records_sent_before_a_revoke_and_drops_those_after() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, hash) = copartitioned_engine(dir.path(), 1, 1);
        let send = |engine: &mut Engine, offset: i64| {
            let line = format!(
                r#"{{"ts":"2026-11-22T10:00:00.000Z","trace_id":"t-{offset}","service":"mobile-bff","event":"transfer.requested"}}"#
            );
            let record = Record {
                topic: 0,
                partition: 0,
                offset,
                payload: Some(line.as_bytes()),
            };
            engine.workers[0]
                .pending
                .push(record, std::iter::empty(), Instant::now());
        };
        for offset in 0..10 {
            send(&mut engine, offset);
        }
        assert_eq!(engine.revoke(&[(0, 0)]).unwrap(), vec![(0, 0, 10)]);
        // Polled before the revoke, reaching the thread after it.
        for offset in 10..20 {
            send(&mut engine, offset);
        }
        engine.workers[0].flush().unwrap();
        assert_eq!(engine.counters().unwrap().decode.records, 10);
        let (_, snap) = crate::checkpoint::read_latest(&dir.path().join("state"), 0, hash)
            .unwrap()
            .unwrap();
        assert_eq!(snap.header.offsets["payments"], 10);
    }

    /// The opening event of trace `t-<p>`.
    fn opener_of(p: i32) -> String {
        format!(
            r#"{{"ts":"2026-11-22T10:00:00.000Z","trace_id":"t-{p}","service":"mobile-bff","event":"transfer.requested"}}"#
        )
    }

    /// The same event twice on each of `partitions` (offsets 0 and 1): one
    /// duplicate each.
    fn send_each_twice(engine: &mut Engine, partitions: i32) {
        for p in 0..partitions {
            plain(engine, p, 0, opener_of(p).as_bytes());
            plain(engine, p, 1, opener_of(p).as_bytes());
        }
    }

    /// What the correlators count (here, duplicates) reaches the run's
    /// counters, also from a partition revoked before the end (its shard
    /// goes with its group), and a partition assigned again counts afresh
    /// from its snapshot: nothing lost, nothing counted twice.
    #[test]
    fn correlator_counts_outlive_a_revoked_partition_and_are_not_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, _) = copartitioned_engine(dir.path(), 2, 2);
        send_each_twice(&mut engine, 2);
        assert_eq!(engine.counters().unwrap().correlate.duplicates, 2);
        engine.revoke(&[(0, 0)]).unwrap();
        assert_eq!(
            engine.counters().unwrap().correlate.duplicates,
            2,
            "partition 0's count outlives its group"
        );
        // Restored from its snapshot, which holds the event: a third copy is
        // a duplicate again, counted once.
        engine.assign(&[(0, 0)]).unwrap();
        plain(&mut engine, 0, 2, opener_of(0).as_bytes());
        assert_eq!(engine.counters().unwrap().correlate.duplicates, 3);
        engine.close_alerts().unwrap();
        assert_eq!(
            engine.counters().unwrap().correlate.duplicates,
            3,
            "the threads' last word, once"
        );
    }

    /// `/metrics` carries the correlators' counts as of the last checkpoint,
    /// each reason in its own series, and a checkpoint with nothing new adds
    /// nothing (the counters rise by the difference, not by the total).
    #[test]
    fn correlator_counts_reach_the_metrics_at_each_checkpoint_once() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let (mut engine, _) = metered_engine(dir.path(), Layout::Copartitioned, 2, 2, Some(metrics.clone()));
        let series = |reason: &str| {
            let text = metrics.encode();
            let prefix = format!("tacet_correlator_events_total{{reason=\"{reason}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map(|v| v.parse::<u64>().unwrap())
        };
        send_each_twice(&mut engine, 2);
        assert_eq!(series("duplicate"), None, "nothing exported before a checkpoint");
        engine.checkpoint().unwrap();
        assert_eq!(series("duplicate"), Some(2));
        assert_eq!(series("late"), Some(0));
        assert_eq!(series("conflicting_opener"), Some(0));
        assert_eq!(series("services_overflow"), Some(0));
        engine.checkpoint().unwrap();
        assert_eq!(series("duplicate"), Some(2), "an idle checkpoint adds nothing");
        plain(&mut engine, 1, 2, opener_of(1).as_bytes());
        engine.checkpoint().unwrap();
        assert_eq!(series("duplicate"), Some(3));
        assert_eq!(
            engine.counters().unwrap().correlate.duplicates,
            3,
            "the metric is the run's count"
        );
    }

    /// A journey evicted by a cap reaches the dead-letter file with its
    /// reason and is counted apart from refused records, so `tacet run`'s
    /// stop line can say how many journeys got no outcome.
    #[test]
    fn a_journey_past_the_event_cap_is_dead_lettered_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, _) = copartitioned_engine(dir.path(), 1, 1);
        let cap = Config::embedded_default().engine.max_events_per_journey as i64;
        for offset in 0..=cap {
            // Distinct events (times differ) on one trace id.
            let line = format!(
                r#"{{"ts":"2026-11-22T10:00:{:02}.{:03}Z","trace_id":"t-hot","service":"mobile-bff","event":"transfer.requested"}}"#,
                offset / 1000,
                offset % 1000
            );
            plain(&mut engine, 0, offset, line.as_bytes());
        }
        let counters = engine.counters().unwrap();
        assert_eq!(counters.correlate.evicted, 1);
        assert_eq!(engine.dead_letter_stats().written, 1);
        assert_eq!(counters.decode.error_total(), 0, "no record was refused");
        engine.checkpoint().unwrap();
        let letters = std::fs::read_to_string(dir.path().join("dead-letter.ndjson")).unwrap();
        let letter: serde_json::Value = serde_json::from_str(letters.lines().next().unwrap()).unwrap();
        assert_eq!(letter["reason"], "event_limit_evicted");
        assert_eq!(letter["position"], "trace:t-hot");
    }

    /// `engine.max_open_journeys` bounds the open journeys of the whole
    /// process, as in a replay: the groups owned share it, and it is
    /// re-split when the assignment changes.
    #[test]
    fn the_open_journey_cap_is_shared_by_every_group_of_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, _) = capped_engine(dir.path(), Layout::Copartitioned, 2, 4, None, 100);
        let open = |engine: &mut Engine, p: i32, from: i64, n: i64| {
            for offset in from..from + n {
                let line = format!(
                    r#"{{"ts":"2026-11-22T10:00:00.000Z","trace_id":"t-{p}-{offset}","service":"mobile-bff","event":"transfer.requested"}}"#
                );
                plain(engine, p, offset, line.as_bytes());
            }
        };
        for p in 0..4 {
            open(&mut engine, p, 0, 60);
        }
        let counters = engine.counters().unwrap();
        assert_eq!(engine.open_journeys(), 100, "four groups of 25");
        assert_eq!(counters.correlate.evicted, 4 * 35);
        // Two partitions leave: the two left may hold 50 each.
        engine.revoke(&[(0, 2), (0, 3)]).unwrap();
        for p in 0..2 {
            open(&mut engine, p, 60, 60);
        }
        engine.counters().unwrap();
        assert_eq!(engine.open_journeys(), 100, "two groups of 50");
        // Four again: each group is cut back to 25 at once.
        engine.assign(&[(0, 2), (0, 3)]).unwrap();
        engine.counters().unwrap();
        assert_eq!(engine.open_journeys(), 100, "four groups of 25 again");
        assert_eq!(engine.counters().unwrap().correlate.evicted, 4 * 35 + 2 * 35 + 2 * 25);
    }

    /// A rejected transfer on trace `t-<n>`: decided `failed` at once.
    fn rejected(engine: &mut Engine, n: i64) {
        for (i, event) in ["transfer.requested", "transfer.rejected"].iter().enumerate() {
            let line = format!(
                r#"{{"ts":"2026-11-22T10:00:0{i}.000Z","trace_id":"t-{n}","service":"mobile-bff","event":"{event}"}}"#
            );
            plain(engine, 0, 2 * n + i as i64, line.as_bytes());
        }
    }

    /// Every outcome file under `dir/outcomes`.
    fn published(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
        let mut files = Vec::new();
        walk(&dir.join("outcomes"), &mut files);
        files.sort();
        files
    }

    /// Recovery never deletes a published outcome: a restart without the
    /// state folder is refused with what to do (the files stay), and a
    /// restart after an SLO edit keeps the snapshot, while a changed
    /// deadline refuses it with the two safe ways on.
    #[test]
    fn restarts_keep_every_published_file_and_only_a_change_of_state_shape_refuses_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::Copartitioned;
        let config = kafka_config(&layout);
        let mut engine = start_engine(dir.path(), &config, &layout, 1, 1, None, 1000);
        for n in 0..3 {
            rejected(&mut engine, n);
            engine.checkpoint().unwrap();
        }
        engine.close_alerts().unwrap();
        drop(engine);
        let files = published(dir.path());
        assert_eq!(files.len(), 3, "{files:?}");

        // An SLO and a description edited: the snapshot still fits.
        let mut edited = config.clone();
        edited.journeys[0].slo = 0.95;
        edited.journeys[0].description = Some("edited".into());
        let mut engine = start_engine(dir.path(), &edited, &layout, 1, 1, None, 1000);
        rejected(&mut engine, 3);
        engine.checkpoint().unwrap();
        engine.close_alerts().unwrap();
        drop(engine);
        let after = published(dir.path());
        assert_eq!(after.len(), 4);
        assert!(files.iter().all(|f| after.contains(f)), "nothing published disappears");

        // A deadline edited: the snapshot would be misread; refused, saying how on.
        let mut reshaped = config.clone();
        reshaped.journeys[0].deadline = Duration::from_secs(600);
        let plan = reshaped.kafka_plan().unwrap();
        let opts = EngineOptions::from_config(&reshaped, dir.path().to_path_buf(), dir.path().join("state"));
        let mut engine = Engine::new(&reshaped, &plan, &layout, opts, None, Arc::new(RunErrors::default())).unwrap();
        let err = engine.assign(&[(0, 0)]).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("Two safe ways on"), "{err}");
        drop(engine);

        // The state folder moved away: refused, naming the partition; no file deleted.
        std::fs::rename(dir.path().join("state"), dir.path().join("state-moved")).unwrap();
        let opts = EngineOptions::from_config(&config, dir.path().to_path_buf(), dir.path().join("state"));
        let mut engine = Engine::new(&config, &plan, &layout, opts, None, Arc::new(RunErrors::default())).unwrap();
        let err = engine.assign(&[(0, 0)]).map(|_| ()).unwrap_err().to_string();
        assert!(
            err.contains("partition 0 has outcomes published up to checkpoint 4"),
            "{err}"
        );
        assert_eq!(published(dir.path()), after);
    }

    /// Idleness is for quiet partitions, not slow ones: while the broker
    /// has records of a partition tacet has not read, its watermark does
    /// not move by the wall clock, so no journey is decided before its late
    /// steps are read. Once caught up and quiet, it goes idle as usual.
    #[test]
    fn a_lagging_partition_decides_nothing_by_the_wall_clock() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, _) = copartitioned_engine(dir.path(), 1, 1);
        let started = Instant::now();
        plain(&mut engine, 0, 0, opener_of(0).as_bytes());
        // The broker holds offsets 0..100; only offset 0 is read.
        engine.broker_offsets(&[(0, 0, 0, 100)]).unwrap();
        // Ten minutes of silence, far past the idle timeout and the deadline.
        engine.tick(started + Duration::from_secs(600)).unwrap();
        engine.counters().unwrap();
        assert_eq!(engine.open_journeys(), 1, "decided while behind the broker");
        // Caught up (nothing more at the broker), and quiet: idle.
        engine.broker_offsets(&[(0, 0, 0, 1)]).unwrap();
        engine.tick(started + Duration::from_secs(1200)).unwrap();
        engine.counters().unwrap();
        assert_eq!(engine.open_journeys(), 0, "a quiet partition goes idle");
    }

    /// Two instances on one state folder that both believe they own
    /// partition 0 (the first paused past its session timeout while the
    /// second was given it): the second claims it, and the first's next
    /// checkpoint is refused and counted — its state dropped, its staged
    /// outcomes never published — so every decision is published once.
    #[test]
    fn a_stale_owner_is_fenced_and_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::Copartitioned;
        let config = kafka_config(&layout);
        let mut a = start_engine(dir.path(), &config, &layout, 1, 1, None, 1000);
        rejected(&mut a, 0);
        a.checkpoint().unwrap();
        // A pauses; B is given partition 0 and resumes from A's commit.
        let mut b = start_engine(dir.path(), &config, &layout, 1, 1, None, 1000);
        // A wakes with records it fetched before the pause, and checkpoints.
        rejected(&mut a, 1);
        assert_eq!(
            a.checkpoint().unwrap(),
            vec![],
            "no offsets to commit for a fenced group"
        );
        let counters = a.counters().unwrap();
        assert_eq!(counters.fenced, 1);
        // B reads the same records from A's committed offsets.
        rejected(&mut b, 1);
        b.checkpoint().unwrap();
        rejected(&mut a, 2); // A no longer holds the group: dropped
        a.checkpoint().unwrap();
        a.close_alerts().unwrap();
        b.close_alerts().unwrap();
        let rows = tacet_store::read_outcomes(dir.path()).unwrap();
        let mut traces: Vec<&str> = rows.iter().map(|r| r.trace_id.as_str()).collect();
        traces.sort_unstable();
        assert_eq!(traces, ["t-0", "t-1"], "each decision published once");
    }

    #[test]
    fn a_partition_that_comes_back_lives_on_the_same_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, _) = copartitioned_engine(dir.path(), 2, 4);
        let placed: Vec<usize> = (0..4).map(|p| engine.worker_of(p).unwrap()).collect();
        assert_eq!(
            placed.iter().filter(|&&w| w == 0).count(),
            2,
            "spread evenly: {placed:?}"
        );
        // Lose 0 and 1 (one from each thread), gain 1 back, then 0: with
        // "fewest groups" alone they would swap threads, but their records
        // are routed to the old ones.
        assert_ne!(placed[0], placed[1]);
        engine.revoke(&[(0, 0), (0, 1)]).unwrap();
        engine.assign(&[(0, 1)]).unwrap();
        engine.assign(&[(0, 0)]).unwrap();
        for p in 0..4 {
            assert_eq!(engine.worker_of(p), Some(placed[p as usize]), "partition {p}");
        }
        assert_eq!(engine.worker_of(9), None, "never placed");
    }

    #[test]
    fn a_failed_correlator_makes_nothing_durable_or_final() {
        let dir = tempfile::tempdir().unwrap();
        // The dead-letter file cannot be opened: refusing a record fails.
        std::fs::create_dir_all(dir.path().join("dead-letter.ndjson")).unwrap();
        let (mut engine, hash) = copartitioned_engine(dir.path(), 1, 1);
        plain(&mut engine, 0, 0, EVENT);
        plain(&mut engine, 0, 1, b"not json");
        plain(&mut engine, 0, 2, EVENT);
        assert!(engine.checkpoint().is_err(), "no checkpoint after a failure");
        assert!(matches!(engine.take_failure(), Some(RunError::Io { .. })));
        assert!(engine.finish().is_err(), "no in-flight files from a broken state");
        assert!(engine.revoke(&[(0, 0)]).is_err(), "no offsets to commit either");
        let state = dir.path().join("state");
        let (_, claimed) = crate::checkpoint::read_latest(&state, 0, hash).unwrap().unwrap();
        assert!(claimed.shard.is_empty(), "only the claim was committed");
        // Nothing after the failing record was applied.
        assert_eq!(engine.counters().unwrap().decode.records, 2);
    }

    /// One record of internal partition 0 carrying `origin` as its header.
    fn feed(engine: &mut Engine, offset: i64, origin: &str, payload: &[u8]) {
        let headers = [(crate::repartition::ORIGIN_HEADER.as_bytes(), Some(origin.as_bytes()))];
        let record = Record {
            topic: 0,
            partition: 0,
            offset,
            payload: Some(payload),
        };
        engine.record(record, headers.into_iter(), Instant::now()).unwrap();
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
        let counters = engine.counters().unwrap();
        assert_eq!(counters.repartition_duplicates, 2);
        assert_eq!(counters.decode.records, 3);
        // A hostile header neither panics nor wraps into accepting the past.
        feed(&mut engine, 5, &format!("3/{}", i64::MAX), EVENT);
        feed(&mut engine, 6, "3/0", EVENT);
        assert_eq!(engine.counters().unwrap().repartition_duplicates, 3);
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
