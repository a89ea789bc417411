//! The consumer loop of `tacet run`.
//!
//! One thread polls librdkafka and hands each batch of records, still in
//! librdkafka's buffers, to the correlator thread that owns their
//! partitions ([`crate::worker`]); decoding,
//! correlation and Parquet encoding run there, in parallel with the polling.
//! In-flight memory is bounded twice: librdkafka's prefetch by
//! `queued.max.messages.kbytes` per correlator thread's fetch queue (set
//! here unless the config overrides it; see [`crate::fetch`]),
//! and the batches between the threads by a bounded channel, on which the
//! poll thread waits when a correlator falls behind.
//! Rebalances run inside `poll`, on this thread, through [`Context`]: a
//! revoke checkpoints the groups it takes away before they are released; an
//! assign restores each group's snapshot and starts its partitions at the
//! snapshot's offsets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tacet_core::Config;
use tacet_core::config::{KafkaPlan, Partitioning};
use tacet_engine::Metrics;

use tacet_alert::service::AlertResult;
use tacet_engine::{RunReport, SourceFigures};

use crate::engine::{Engine, EngineOptions, Layout, Record, RunError};
use crate::errors::{ErrorKind, RunErrors};
use crate::fetch::{self, FetchQueue, RawQueue, Wakeup};
use crate::headers::RecordHeaders;
use crate::repartition;
use crate::worker::BATCH_RECORDS;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub engine: EngineOptions,
    pub checkpoint_interval: Duration,
    /// `[output] flush_interval`: checkpoints (which publish outcome rows)
    /// come at least this often.
    pub flush_interval: Duration,
    /// Exit after this long with no input (then decide what is due, write
    /// the in-flight journeys, checkpoint).
    pub stop_when_idle: Option<Duration>,
    /// Set by SIGINT/SIGTERM: checkpoint and exit.
    pub stop: Arc<AtomicBool>,
    pub metrics: Option<Arc<Metrics>>,
}

/// The consumer's context: the engine (behind a mutex only because
/// librdkafka calls back through `&self`; one thread uses it), lag from
/// librdkafka's statistics, and the last error seen, for log throttling.
pub struct Context {
    engine: Mutex<Engine>,
    metrics: Option<Arc<Metrics>>,
    lag: Mutex<i64>,
    failed: Mutex<Option<RunError>>,
    errors: Arc<RunErrors>,
    /// Where assigned partitions' records are routed (see [`crate::fetch`]):
    /// one queue per correlator thread, set while the poll loop's
    /// [`FetchQueue`]s live.
    fetch_queues: Mutex<Option<Vec<RawQueue>>>,
}

impl Context {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, e: RunError) {
        tracing::error!(error = %e, "Stopping: cannot continue safely.");
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
    }

    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<(usize, i32)> {
        let engine = self.engine();
        tpl.elements()
            .iter()
            .filter_map(|e: &TopicPartitionListElem<'_>| engine.topic_index(e.topic()).map(|t| (t, e.partition())))
            .collect()
    }
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let mut total = 0;
        let mut offsets = Vec::new();
        for (topic, t) in &statistics.topics {
            let index = self.engine().topic_index(topic);
            for (p, part) in &t.partitions {
                if let Some(index) = index
                    && *p >= 0
                    && part.hi_offset >= 0
                {
                    offsets.push((index, *p, part.lo_offset.max(0), part.hi_offset));
                }
                if *p < 0 || part.consumer_lag < 0 {
                    continue;
                }
                total += part.consumer_lag;
                if let Some(m) = &self.metrics {
                    m.consumer_lag
                        .get_or_create(&tacet_engine::metrics::PartitionLabels {
                            topic: topic.clone(),
                            partition: *p as i64,
                        })
                        .set(part.consumer_lag);
                }
            }
        }
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = total;
        if let Err(e) = self.engine().broker_offsets(&offsets) {
            self.fail(e);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka retries by itself; say so once every 10 s, not per retry.
        if self.errors.note(ErrorKind::Client) {
            tracing::warn!(error = %error, reason, "Kafka client error; librdkafka keeps retrying and tacet resumes when the broker is back.");
        }
    }
}

impl ConsumerContext for Context {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let wanted = self.partitions(tpl);
                let starts = self.engine().assign(&wanted);
                match starts {
                    Ok(starts) => {
                        for (t, p, offset) in starts {
                            if let Some(offset) = offset {
                                let topic = self.engine().topic_name(t).to_owned();
                                if let Err(e) = tpl.set_partition_offset(&topic, p, Offset::Offset(offset)) {
                                    self.fail(RunError::Rebalance(e.to_string()));
                                }
                            }
                        }
                        // Route before assigning: the fetchers start with the
                        // assign. Each partition to the queue of the thread its
                        // group lives on (always the same one: see `Engine::assign`).
                        if let Some(queues) = &*self.fetch_queues.lock().unwrap_or_else(|p| p.into_inner()) {
                            for e in tpl.elements() {
                                let w = self.engine().worker_of(e.partition()).unwrap_or(0);
                                let queue = queues[w % queues.len()];
                                // SAFETY: the queues are set only while their FetchQueues live.
                                if let Err(e) = unsafe { fetch::route(consumer, queue, e.topic(), e.partition()) } {
                                    self.fail(RunError::Rebalance(e));
                                }
                            }
                        }
                        if let Err(e) = consumer.assign(tpl) {
                            self.fail(RunError::Rebalance(format!("assign: {e}")));
                        }
                    }
                    Err(e) => {
                        self.fail(e);
                        let _ = consumer.assign(tpl);
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let gone = self.partitions(tpl);
                let result = self.engine().revoke(&gone);
                match result {
                    Ok(offsets) => commit(consumer, &self.engine(), &offsets, CommitMode::Sync, &self.errors),
                    Err(e) => self.fail(e),
                }
                let _ = consumer.unassign();
            }
            other => {
                tracing::warn!(error = ?other, "Rebalance error; releasing the assignment.");
                let _ = consumer.unassign();
            }
        }
    }
}

/// The poll loop's [`FetchQueue`]s, one per correlator thread, published to
/// the rebalance callback for as long as they live (and withdrawn before
/// they are destroyed).
///
/// One queue per thread, not one for all: librdkafka fills a queue a
/// partition's fetch at a time, thousands of records in a row for one
/// thread. From a single queue the poll thread waited on that thread's full
/// channel while the other thread ran dry; from one queue per thread it
/// feeds whichever thread has the least queued (see [`poll_round`]).
///
/// With nothing to do, the poll thread waits on all queues at once through
/// their [`Wakeup`].
struct Routed {
    ctx: Arc<Context>,
    // Dropped in this order: the queues signal the wakeup.
    queues: Vec<FetchQueue>,
    wakeup: Wakeup,
}

impl Routed {
    fn new(consumer: &BaseConsumer<Context>, ctx: Arc<Context>, threads: usize) -> Result<Self, RunError> {
        let wakeup = Wakeup::new().map_err(|source| RunError::Start {
            what: "poll thread's wakeup socket",
            source,
        })?;
        // One poll fills about one correlator batch.
        let queues: Vec<FetchQueue> = (0..threads.max(1))
            .map(|_| FetchQueue::new(consumer, BATCH_RECORDS, &wakeup))
            .collect();
        *ctx.fetch_queues.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(queues.iter().map(FetchQueue::raw).collect());
        Ok(Self { ctx, queues, wakeup })
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        *self.ctx.fetch_queues.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Stops the correlator threads when dropped, so that the librdkafka
/// messages they hold are destroyed before the consumer is (see
/// [`crate::fetch::Messages`]). A run that ends normally stopped them already.
struct StopThreadsOnDrop(Arc<Context>);

impl Drop for StopThreadsOnDrop {
    fn drop(&mut self) {
        self.0.engine().stop_threads();
    }
}

/// One poll of every thread's fetch queue, the thread with the fewest
/// batches queued first, each poll's records handed over. A thread whose
/// channel is full is skipped once another got records in this round (the
/// poll thread must not wait on it while others run dry); reached with
/// nothing handed over yet, it is polled, and the hand-over waits for room:
/// backpressure. A queue that comes back empty gets its thread's partly
/// filled batch sent, so a round that finds nothing leaves no batch behind.
/// Never waits for records. Returns whether any record was handed over.
fn poll_round(fetched: &mut Routed, ctx: &Context) -> Result<bool, RunError> {
    // Only this thread takes the lock (the rebalance callback runs inside
    // the consumer's poll, not here): one lock for the round.
    let mut engine = ctx.engine();
    let mut order: smallvec::SmallVec<[usize; 8]> = (0..fetched.queues.len()).collect();
    order.sort_by_key(|&w| engine.backlog(w));
    let mut handed_over = false;
    for w in order {
        if handed_over && !engine.has_room(w) {
            continue;
        }
        let batch = fetched.queues[w].poll(Duration::ZERO);
        if batch.len() == 0 {
            engine.flush_worker(w)?;
            continue;
        }
        // One clock read per batch: it stamps partition activity. The
        // records stay in librdkafka's buffers; the thread reads them there.
        // Per-partition errors librdkafka puts in a batch are not records:
        // a batch of them alone is no input (idleness) and counts none.
        let records = batch.iter().filter(|m| m.error().is_none()).count();
        handed_over |= records > 0;
        engine.fetched(w, batch, records, Instant::now())?;
    }
    Ok(handed_over)
}

/// Hands one record to the engine, reading its headers only for topics
/// that use them.
fn hand_over<'m, H>(
    engine: &mut Engine,
    record: Record<'_>,
    headers: impl FnOnce() -> H,
    now: Instant,
) -> Result<(), RunError>
where
    H: Iterator<Item = (&'m [u8], Option<&'m [u8]>)>,
{
    let headers = engine.reads_headers(record.topic).then(headers).into_iter().flatten();
    engine.record(record, headers, now)
}

/// Commits `offsets` (the next offset to read, per topic and partition).
/// Only a convenience for lag tools: recovery reads offsets from snapshots.
fn commit(
    consumer: &BaseConsumer<Context>,
    engine: &Engine,
    offsets: &[(usize, i32, i64)],
    mode: CommitMode,
    errors: &RunErrors,
) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for &(t, p, o) in offsets {
        let _ = tpl.add_partition_offset(engine.topic_name(t), p, Offset::Offset(o));
    }
    if let Err(e) = consumer.commit(&tpl, mode)
        && errors.note(ErrorKind::Commit)
    {
        tracing::warn!(error = %e, "Offset commit failed; the next checkpoint commits again.");
    }
}

/// Subscribed topics with no partition assigned to this consumer.
fn unassigned_topics<'a>(consumer: &BaseConsumer<Context>, topics: &[&'a str]) -> Vec<&'a str> {
    let assigned: std::collections::BTreeSet<String> = consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.topic().to_owned()).collect())
        .unwrap_or_default();
    topics.iter().copied().filter(|t| !assigned.contains(*t)).collect()
}

/// What every tacet consumer sets (the correlator's and the
/// repartitioner's), before the config's `properties`.
pub(crate) fn consumer_settings(plan: &KafkaPlan, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &plan.brokers)
        .set("group.id", group)
        // Commits are made by tacet, after what they cover is durable.
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // Bound librdkafka's prefetch: 16 MiB per partition queue, and retry
        // a full queue after 10 ms, not librdkafka's 1 s, which starved the
        // consumer whenever the engine fell behind.
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.queue.backoff.ms", "10")
        // librdkafka has one fetch in flight per broker. When the partitions
        // of one correlator thread are held back (their queue is full) and
        // the others are at their end, that fetch long-polls the idle ones
        // for `fetch.wait.max.ms`, and the held-back partitions wait behind
        // it: with librdkafka's 500 ms, a quarter of the benchmark's runs
        // took twice as long. 100 ms costs an idle consumer 10 fetches/s.
        .set("fetch.wait.max.ms", "100")
        // A subscribed topic created after the start is found within 10 s
        // (librdkafka's default is 5 minutes).
        .set("topic.metadata.refresh.interval.ms", "10000")
        // A dead member's partitions move on within 10 s.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    c
}

/// The correlator's consumer: the shared settings, ours, then the config's
/// `properties` on top.
fn client_config(plan: &KafkaPlan) -> ClientConfig {
    let mut c = consumer_settings(plan, &plan.group_id);
    // Offsets live in snapshots; commits are for lag tooling only.
    c.set("enable.auto.offset.store", "false")
        // Partition p of every topic to the same member (co-partitioning).
        .set("partition.assignment.strategy", "range")
        .set("statistics.interval.ms", "5000");
    for (k, v) in &plan.properties {
        c.set(k, v);
    }
    c
}

/// Runs until stopped, idle (with `stop_when_idle`), or failed.
pub fn run(config: &Config, opts: RunOptions) -> Result<RunReport, RunError> {
    let plan = config.kafka_plan()?;
    let started = Instant::now();
    let errors = Arc::new(RunErrors::new(opts.metrics.clone()));
    // Repartition mode: a second stage re-keys the source topics into
    // internal ones, which this consumer then reads as co-partitioned topics.
    let (layout, repartitioner) = match plan.partitioning {
        Partitioning::Copartitioned => (Layout::Copartitioned, None),
        Partitioning::Repartition => {
            let source_partitions = repartition::prepare(&plan, &opts.stop)?;
            let stage = repartition::spawn(config, &plan, opts.checkpoint_interval, errors.clone())?;
            (Layout::Repartitioned { source_partitions }, Some(stage))
        }
    };
    let engine = Engine::new(
        config,
        &plan,
        &layout,
        opts.engine.clone(),
        opts.metrics.clone(),
        errors.clone(),
    )?;
    let shards = engine.worker_count();
    let consumer = subscribe(&plan, engine, &opts, &errors)?;
    let ctx = consumer.context().clone();
    // Dropped before the consumer, on every return: the correlator threads
    // hold librdkafka messages until they stop.
    let _threads_first = StopThreadsOnDrop(ctx.clone());
    let fetched = Routed::new(&consumer, ctx.clone(), shards)?;
    let mut poll = PollLoop::new(&consumer, fetched, repartitioner, &opts);
    let in_flight = poll.run_until_stopped()?;
    let active = poll.active_time();
    // Asked before leaving the group, which releases every group.
    let max_event_time = ctx.engine().max_seen()?;
    poll.shut_down()?;
    let mut engine = ctx.engine();
    let alerts = engine.close_alerts()?;
    if let Some(e) = engine.take_failure() {
        return Err(e);
    }
    let counters = engine.counters()?;
    let misrouted_traces = engine.misrouted_traces();
    let dead_letter_file = engine.dead_letter_stats();
    let alerts = alerts.unwrap_or(AlertResult {
        stats: Default::default(),
        sinks: Vec::new(),
        gauges: Vec::new(),
    });
    Ok(RunReport {
        max_event_time,
        decode: counters.decode,
        correlate: counters.correlate,
        writer: counters.writer,
        in_flight,
        dead_letters: dead_letter_file.written,
        dead_letter_file,
        elapsed: started.elapsed(),
        active,
        shards,
        decoders: shards,
        alerts: alerts.stats,
        sinks: alerts.sinks,
        gauges: alerts.gauges,
        source: SourceFigures {
            checkpoints: counters.checkpoints,
            discarded_files: counters.discarded_files,
            repartition_duplicates: counters.repartition_duplicates,
            misrouted_traces,
            retried_errors: errors.counts().into_iter().map(|(k, n)| (k.to_owned(), n)).collect(),
        },
    })
}

/// Creates the consumer around `engine` and subscribes to its topics.
fn subscribe(
    plan: &KafkaPlan,
    engine: Engine,
    opts: &RunOptions,
    errors: &Arc<RunErrors>,
) -> Result<BaseConsumer<Context>, RunError> {
    let topics: Vec<String> = (0..plan.topics.len())
        .map(|i| engine.topic_name(i).to_owned())
        .collect();
    let context = Context {
        engine: Mutex::new(engine),
        metrics: opts.metrics.clone(),
        lag: Mutex::new(0),
        failed: Mutex::new(None),
        errors: errors.clone(),
        fetch_queues: Mutex::new(None),
    };
    let consumer: BaseConsumer<Context> =
        client_config(plan)
            .create_with_context(context)
            .map_err(|e| RunError::Client {
                client: "consumer",
                reason: e.to_string(),
            })?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(|e| RunError::Subscribe {
        topics: topics.clone(),
        reason: e.to_string(),
    })?;
    tracing::info!(brokers = %plan.brokers, group = %plan.group_id, ?topics, "Consuming.");
    Ok(consumer)
}

/// Something the poll loop does every so often, by the wall clock.
struct Every {
    period: Duration,
    last: Instant,
}

impl Every {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: Instant::now(),
        }
    }

    /// Whether a period has passed since it was last due (and, if so, restarts it).
    fn due(&mut self, now: Instant) -> bool {
        let due = now.duration_since(self.last) >= self.period;
        if due {
            self.last = now;
        }
        due
    }
}

/// The poll thread's loop: hand records to the correlator threads, and on
/// the clock tick the groups, checkpoint, log progress and watch for idleness.
struct PollLoop<'c> {
    consumer: &'c BaseConsumer<Context>,
    ctx: Arc<Context>,
    fetched: Routed,
    repartitioner: Option<repartition::Repartitioner>,
    stop: Arc<AtomicBool>,
    stop_when_idle: Option<Duration>,
    max_misrouted_traces: u64,
    topics: Vec<String>,
    tick: Every,
    /// Every `[checkpoint] interval`, or `[output] flush_interval` when that
    /// is shorter: rows are published at checkpoints, and no decided row
    /// waits longer than `flush_interval` (as in a replay).
    checkpoint: Every,
    progress: Every,
    /// Records dispatched, and when, at the last progress line.
    records_at_progress: u64,
    progress_at: Instant,
    idle: IdleWatch,
    first_input: Option<Instant>,
    last_record: Instant,
}

/// When input last arrived, as `--stop-when-idle` counts it: owning
/// partitions and getting nothing from them (joining the group or waiting
/// for an assignment does not count).
struct IdleWatch {
    last_input: Instant,
    seen_epoch: u64,
    seen_rekeyed: u64,
}

impl<'c> PollLoop<'c> {
    fn new(
        consumer: &'c BaseConsumer<Context>,
        fetched: Routed,
        repartitioner: Option<repartition::Repartitioner>,
        opts: &RunOptions,
    ) -> Self {
        let ctx = consumer.context().clone();
        let topics = {
            let engine = ctx.engine();
            (0..engine.topic_count())
                .map(|i| engine.topic_name(i).to_owned())
                .collect()
        };
        let now = Instant::now();
        Self {
            consumer,
            ctx,
            fetched,
            repartitioner,
            stop: opts.stop.clone(),
            stop_when_idle: opts.stop_when_idle,
            max_misrouted_traces: opts.engine.max_misrouted_traces,
            topics,
            tick: Every::new(Duration::from_millis(200)),
            checkpoint: Every::new(opts.checkpoint_interval.min(opts.flush_interval)),
            progress: Every::new(Duration::from_secs(10)),
            records_at_progress: 0,
            progress_at: now,
            idle: IdleWatch {
                last_input: now,
                seen_epoch: 0,
                seen_rekeyed: 0,
            },
            first_input: None,
            last_record: now,
        }
    }

    /// Polls until a stop is asked for or the idle limit passes; returns
    /// the journeys in flight (decided at the idle limit's end, else none).
    fn run_until_stopped(&mut self) -> Result<Vec<tacet_correlate::InFlight>, RunError> {
        // After a round with records, poll again without waiting; once a round
        // finds nothing, hand the partly filled batches over and wait.
        let mut drained = true;
        loop {
            self.check_health()?;
            if self.stop.load(Ordering::Relaxed) {
                tracing::info!("Stop requested; checkpointing and leaving the group.");
                return Ok(Vec::new());
            }
            if drained
                && let Err(e) = self.fetched.wakeup.wait(Duration::from_millis(100))
                && self.ctx.errors.note(ErrorKind::Poll)
            {
                tracing::warn!(error = %e, "Cannot wait on the fetch queues' wakeup socket; polling them every 100 ms.");
            }
            let mut handed_over = poll_round(&mut self.fetched, &self.ctx)?;
            // One clock read per round drives the timers below.
            let now = Instant::now();
            handed_over |= self.poll_consumer_queue(now)?;
            drained = !handed_over;
            if handed_over {
                self.idle.last_input = now;
                self.last_record = now;
                self.first_input.get_or_insert(now);
            }
            if self.tick.due(now) {
                self.tick_groups(now)?;
            }
            if self.checkpoint.due(now) {
                self.checkpoint(CommitMode::Async)?;
            }
            if self.progress.due(now) {
                self.log_progress(now);
            }
            if drained {
                self.watch_idleness(now);
            }
            if let Some(idle) = self.stop_when_idle
                && now.duration_since(self.idle.last_input) >= idle
            {
                tracing::info!(idle = ?idle, "No input for the idle limit; deciding what is due and stopping.");
                return self.ctx.engine().finish();
            }
        }
    }

    /// Stops on a failure of the rebalance callback or of the repartitioner.
    fn check_health(&mut self) -> Result<(), RunError> {
        if let Some(e) = self.ctx.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        if self.repartitioner.as_ref().is_some_and(|r| r.is_finished()) {
            return Err(match self.repartitioner.take().map(|r| r.stop()) {
                Some(Err(e)) => e,
                _ => RunError::RepartitionerStopped,
            });
        }
        Ok(())
    }

    /// The consumer queue: rebalances (served inside this call), errors,
    /// statistics, commit results. A record reaches it only from a
    /// partition fetched before it was routed, which routing in the
    /// rebalance callback rules out; one that does is still applied, in
    /// order, and counted. Returns whether a record was handed over.
    fn poll_consumer_queue(&mut self, now: Instant) -> Result<bool, RunError> {
        match self.consumer.poll(Duration::ZERO) {
            Some(Ok(msg)) => {
                if self.ctx.errors.note(ErrorKind::Unrouted) {
                    tracing::warn!(
                        topic = msg.topic(),
                        partition = msg.partition(),
                        "A record reached the consumer queue, not tacet's fetch queue; applied, but batch polling is bypassed."
                    );
                }
                let mut engine = self.ctx.engine();
                let Some(topic) = engine.topic_index(msg.topic()) else {
                    return Ok(false);
                };
                let record = Record {
                    topic,
                    partition: msg.partition(),
                    offset: msg.offset(),
                    payload: msg.payload(),
                };
                hand_over(&mut engine, record, || RecordHeaders::of(&msg), now)?;
                Ok(true)
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => Ok(false),
            Some(Err(e)) => {
                if self.ctx.errors.note(ErrorKind::Poll) {
                    tracing::warn!(error = %e, "Kafka poll error; retrying.");
                }
                Ok(false)
            }
        }
    }

    /// Idle inputs let the watermarks move; a correlator's failure, or
    /// traces that do not stay on one partition in co-partitioned mode,
    /// stop the run.
    fn tick_groups(&mut self, now: Instant) -> Result<(), RunError> {
        let engine = &mut *self.ctx.engine();
        if let Some(e) = engine.take_failure() {
            return Err(e);
        }
        let (seen, max) = (engine.misrouted_traces(), self.max_misrouted_traces);
        if seen > max {
            return Err(RunError::NotCopartitioned { seen, max });
        }
        engine.tick(now)
    }

    /// Checkpoints every group, then commits the offsets it covers.
    fn checkpoint(&mut self, mode: CommitMode) -> Result<(), RunError> {
        let mut engine = self.ctx.engine();
        let offsets = engine.checkpoint()?;
        commit(self.consumer, &engine, &offsets, mode, &self.ctx.errors);
        Ok(())
    }

    fn log_progress(&mut self, now: Instant) {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let missing = unassigned_topics(self.consumer, &topics);
        let engine = self.ctx.engine();
        if !missing.is_empty() && engine.partitions().next().is_some() {
            tracing::warn!(
                topics = ?missing,
                "No partition of these topics is assigned here: they may not exist yet (new topics are found \
                 within 10 s), or the group has more members than they have partitions."
            );
        }
        let records = engine.records_dispatched();
        let seconds = now.duration_since(self.progress_at).as_secs_f64().max(1e-3);
        let rate = (records - self.records_at_progress) as f64 / seconds;
        tracing::info!(
            records,
            rate = format!("{rate:.0}/s"),
            lag = *self.ctx.lag.lock().unwrap_or_else(|p| p.into_inner()),
            open_journeys = engine.open_journeys(),
            partitions = ?engine.partitions().collect::<Vec<_>>(),
            "Progress."
        );
        self.records_at_progress = records;
        self.progress_at = now;
    }

    /// Restarts the idle clock while this consumer owns nothing, its
    /// assignment just changed, or the repartitioner is still busy.
    fn watch_idleness(&mut self, now: Instant) {
        let (epoch, owns) = {
            let engine = self.ctx.engine();
            (engine.assignment_epoch, engine.partitions().next().is_some())
        };
        // A topic without any partition here (it may not exist yet) is
        // not "no input"; `--stop-when-idle` waits for every topic.
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let owns = owns && (self.stop_when_idle.is_none() || unassigned_topics(self.consumer, &topics).is_empty());
        if epoch != self.idle.seen_epoch || !owns {
            self.idle.seen_epoch = epoch;
            self.idle.last_input = now;
        }
        // Repartition mode: the first stage must be idle too (it may
        // still be joining its group, or re-keying a backlog).
        if let Some(stage) = &self.repartitioner {
            let (owned, rekeyed) = stage.progress();
            if owned == 0 || rekeyed != self.idle.seen_rekeyed {
                self.idle.seen_rekeyed = rekeyed;
                self.idle.last_input = now;
            }
        }
    }

    /// From the first record polled until the last one was applied by the
    /// correlator threads (which may apply the last records after they
    /// were polled).
    fn active_time(&self) -> Duration {
        let last_applied = self
            .ctx
            .engine()
            .last_applied()
            .map_or(self.last_record, |a| a.max(self.last_record));
        self.first_input
            .map_or(Duration::ZERO, |f| last_applied.duration_since(f))
    }

    /// Stops the repartitioner after its last commit, checkpoints, and
    /// leaves the group (which revokes, and checkpoints again, cheaply).
    fn shut_down(mut self) -> Result<(), RunError> {
        if let Some(stage) = self.repartitioner.take() {
            let rekeyed = stage.stop()?;
            tracing::info!(records = rekeyed, "Repartitioner stopped after its final commit.");
        }
        self.checkpoint(CommitMode::Sync)?;
        self.consumer.unsubscribe();
        let _ = self.consumer.poll(Duration::from_millis(100));
        if let Some(e) = self.ctx.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        Ok(())
    }
}
