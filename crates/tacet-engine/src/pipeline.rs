//! The replay pipeline: reader, decoders, shards, writers, dead letters.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use tacet_alert::sink::{Dispatcher, SinkStats};
use tacet_alert::{AlertEngine, AlertFeed, AlertStats, JourneyGauges, Note};
use tacet_core::config::{AlertSinkConfig, AlertSinkKind};
use tacet_core::outcome::Tee;
use tacet_core::{Catalog, Config, EventTime};
use tacet_correlate::{Evicted, InFlight, Shard, ShardStats};
use tacet_ingest::deadletter::{DeadLetterFile, DeadLetterLimits, DeadLetterStats};
use tacet_ingest::{ChunkReader, DeadLetter, DecodeStats, Decoder, ShardBatch};
use tacet_store::{OutcomeWriter, WriterStats};

use crate::metrics::{
    CorrelatorExport, JourneyLabels, Metrics, OutcomeLabels, ReasonLabels, SinkLabels, SourceLabels, WindowLabels,
};
use crate::summary::RunReport;

/// Errors that stop a run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] tacet_core::ConfigError),
    #[error(transparent)]
    Read(#[from] tacet_ingest::reader::ReadError),
    #[error(transparent)]
    Store(#[from] tacet_store::StoreError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("a pipeline thread stopped unexpectedly: {0}")]
    Thread(String),
    #[error("an alert sink cannot start: {0}")]
    AlertSink(tacet_alert::sink::SinkError),
}

/// How to run a replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Correlator shards (threads owning disjoint traces).
    pub shards: usize,
    /// Decoder threads.
    pub decoders: usize,
    /// Output folder: `outcomes/`, `dead-letter.ndjson`, `state/`.
    pub out_dir: PathBuf,
    /// Bytes per input chunk.
    pub chunk_bytes: usize,
    /// Longer input lines are dead-lettered.
    pub max_line_bytes: usize,
    /// Cap on open journeys over all shards.
    pub max_open_journeys: usize,
    /// Budget of tombstones and kept silent failures over all shards.
    pub max_decided_state_bytes: usize,
    /// Rows per Parquet file (per journey and date).
    pub flush_rows: usize,
    /// Longest a decided row waits in memory.
    pub flush_interval: Duration,
    /// How large the dead-letter file may grow, and rotated files kept.
    pub dead_letters: DeadLetterLimits,
    /// Prefix that makes this run's file names unique.
    pub run_name: String,
    /// The config: alert rules, sinks and journey SLOs.
    pub config: Arc<Config>,
    /// Live metrics to update, when served.
    pub metrics: Option<Arc<Metrics>>,
}

impl ReplayOptions {
    /// Defaults from the config: shards and decoders per core when 0.
    pub fn from_config(config: &tacet_core::Config, out_dir: PathBuf) -> Self {
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        let or_cores = |n: usize| if n == 0 { cores } else { n };
        Self {
            shards: or_cores(config.engine.shards),
            decoders: or_cores(config.engine.decoders),
            out_dir,
            chunk_bytes: 1 << 20,
            max_line_bytes: config.engine.max_line_bytes,
            max_open_journeys: config.engine.max_open_journeys,
            max_decided_state_bytes: config.engine.max_decided_state_bytes,
            flush_rows: config.output.flush_rows,
            flush_interval: config.output.flush_interval,
            dead_letters: DeadLetterLimits::from_config(&config.output),
            config: Arc::new(config.clone()),
            metrics: None,
            run_name: format!(
                "{:x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
            ),
        }
    }
}

/// A replay ready to run: the compiled catalog, the decoder of the chosen
/// `[[source]]` mapping and the opened inputs.
pub struct PreparedReplay {
    pub catalog: Arc<Catalog>,
    pub decoder: Decoder,
    pub reader: ChunkReader,
}

impl PreparedReplay {
    /// Compiles `config`, picks the mapping (`source`, see
    /// [`tacet_core::Config::replay_mapping`]) and opens `files` (`-` is stdin).
    pub fn open(
        config: &tacet_core::Config,
        source: Option<&str>,
        files: &[String],
        opts: &ReplayOptions,
    ) -> Result<Self, EngineError> {
        let catalog = Arc::new(Catalog::new(config)?);
        let (_, mapping) = config.replay_mapping(source)?;
        let (source_name, _) = config.replay_mapping(source)?;
        let engine = tacet_core::config::EngineConfig {
            max_line_bytes: opts.max_line_bytes,
            ..config.engine.clone()
        };
        let decoder = Decoder::from_config(catalog.clone(), &mapping, &source_name, &engine);
        let reader = ChunkReader::open(files, opts.chunk_bytes, opts.max_line_bytes)?;
        Ok(Self {
            catalog,
            decoder,
            reader,
        })
    }

    /// Runs it to the end of input.
    pub fn run(self, opts: &ReplayOptions) -> Result<RunReport, EngineError> {
        replay(self.catalog, self.decoder, self.reader, opts)
    }
}

/// A batch plus the count of shards that have not yet applied its chunk.
struct Delivery {
    batch: ShardBatch,
    pending_shards: Arc<AtomicUsize>,
}

/// Records for the dead-letter file.
enum Letter {
    Decode(Vec<DeadLetter>),
    Evicted(Vec<Evicted>),
}

/// What a decision-maker (a replay shard, a Kafka partition group) tells
/// the alert thread after each batch.
pub struct AlertProgress {
    /// Which one: a shard index, or a Kafka partition.
    pub source: usize,
    pub watermark: EventTime,
    /// Largest event time it has seen (for the watermark-lag gauge).
    pub max_time: EventTime,
    pub notes: Vec<Note>,
    /// It is gone (a revoked Kafka partition) and no longer holds the
    /// alert clock back.
    pub gone: bool,
}

/// The alert thread, joined for its [`AlertResult`].
pub type AlertThread = thread::JoinHandle<Result<AlertResult, EngineError>>;

/// What the alert thread reports at the end.
pub struct AlertResult {
    pub stats: AlertStats,
    pub sinks: Vec<SinkStats>,
    pub gauges: Vec<JourneyGauges>,
}

/// Progress messages queued for the alert thread before a sender waits.
/// Each carries one batch's decisions, so this bounds the notes in flight;
/// the alert thread never waits on its senders, so they cannot deadlock.
pub const ALERT_QUEUE_MESSAGES: usize = 1024;

/// Starts the alert thread: rules evaluated in event time as the slowest
/// source's watermark passes, incidents to `<out>/incidents.ndjson` and the
/// configured sinks. Sources `0..awaited` hold the clock back from the start
/// (a replay's shards); others join with their first message. Ends when
/// every sender is dropped.
///
/// The sinks are opened here, before anything runs: one that cannot start
/// (an unset `secret_env`, a file that cannot be written, a bad Kafka
/// setting) fails the start with its reason, instead of alerting being off
/// until shutdown.
pub fn spawn_alerts(
    catalog: Arc<Catalog>,
    config: Arc<Config>,
    out: PathBuf,
    awaited: usize,
    metrics: Option<Arc<Metrics>>,
) -> Result<(Sender<AlertProgress>, AlertThread), EngineError> {
    let dispatcher = open_sinks(&config, &out, metrics.as_ref())?;
    let (tx, rx) = bounded::<AlertProgress>(ALERT_QUEUE_MESSAGES);
    let handle = thread::Builder::new()
        .name("tacet-alerts".into())
        .spawn(move || run_alerts(catalog, &config, dispatcher, awaited, rx, metrics))
        .map_err(|e| EngineError::Thread(e.to_string()))?;
    Ok((tx, handle))
}

/// `<out>/incidents.ndjson` and the config's `[[alert_sink]]`s, started.
fn open_sinks(
    config: &Config,
    out: &std::path::Path,
    metrics: Option<&Arc<Metrics>>,
) -> Result<Dispatcher, EngineError> {
    let observer: Option<tacet_alert::sink::Observer> = metrics.cloned().map(|m| {
        let observer: tacet_alert::sink::Observer = Arc::new(move |sink: &str, result: &str| {
            m.alerts
                .get_or_create(&SinkLabels {
                    sink: sink.to_owned(),
                    result: result.to_owned(),
                })
                .inc();
        });
        observer
    });
    let mut sinks = vec![AlertSinkConfig {
        name: "replay-incidents".into(),
        kind: AlertSinkKind::File,
        path: Some(out.join("incidents.ndjson")),
        url: None,
        secret: None,
        secret_env: None,
        timeout: Duration::from_secs(5),
        max_attempts: 3,
        queue: 1_000_000,
        topic: None,
        brokers: None,
        properties: Default::default(),
    }];
    sinks.extend(config.alert_sinks.iter().cloned());
    let kafka_brokers = config
        .sources
        .iter()
        .find(|s| s.kind == Some(tacet_core::config::SourceKind::Kafka))
        .and_then(|s| s.brokers.clone());
    std::fs::create_dir_all(out).map_err(|source| EngineError::Io {
        path: out.display().to_string(),
        source,
    })?;
    Dispatcher::from_config(&sinks, kafka_brokers.as_deref(), Some(&out.join("state")), observer)
        .map_err(EngineError::AlertSink)
}

type ShardSink = Tee<OutcomeWriter, AlertFeed>;

struct ShardResult {
    stats: ShardStats,
    writer: WriterStats,
    in_flight: Vec<InFlight>,
    max_time: EventTime,
}

/// Replays `reader` to its end through `decoder` and the configured shards.
pub fn replay(
    catalog: Arc<Catalog>,
    decoder: Decoder,
    mut reader: ChunkReader,
    opts: &ReplayOptions,
) -> Result<RunReport, EngineError> {
    let started = Instant::now();
    let shards = opts.shards.max(1);
    let decoders = opts.decoders.max(1);
    let partitions = reader.partitions();
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| EngineError::Io {
        path: opts.out_dir.display().to_string(),
        source,
    })?;

    // Credits bound the chunks between the reader and the last shard.
    let max_in_flight = 2 * (decoders + shards) + 2;
    let (credit_tx, credit_rx) = bounded::<()>(max_in_flight);
    for _ in 0..max_in_flight {
        credit_tx.send(()).expect("capacity");
    }
    let (chunk_tx, chunk_rx) = bounded(decoders * 2);
    // Bounded like the chunks: a dead-letter file paused on a full disk
    // holds the input back instead of letters piling up in memory.
    let (letter_tx, letter_rx) = bounded::<Letter>(max_in_flight);
    let mut shard_txs = Vec::new();
    let mut shard_rxs = Vec::new();
    for _ in 0..shards {
        let (tx, rx) = bounded::<Delivery>(max_in_flight);
        shard_txs.push(tx);
        shard_rxs.push(rx);
    }

    let mut dead_file =
        DeadLetterFile::open(&opts.out_dir, opts.dead_letters, true).map_err(|source| EngineError::Io {
            path: opts.out_dir.join("dead-letter.ndjson").display().to_string(),
            source,
        })?;
    if let Some(m) = &opts.metrics {
        dead_file = dead_file.with_hook(m.dead_letter_hook());
    }
    let letters = thread::Builder::new()
        .name("tacet-deadletter".into())
        .spawn(move || write_letters(letter_rx, dead_file))
        .map_err(|e| EngineError::Thread(e.to_string()))?;

    let (alert_tx, alerts) = spawn_alerts(
        catalog.clone(),
        opts.config.clone(),
        opts.out_dir.clone(),
        shards,
        opts.metrics.clone(),
    )?;

    let decoder = Arc::new(decoder);
    let mut decoder_handles = Vec::new();
    for i in 0..decoders {
        let rx: Receiver<tacet_ingest::Chunk> = chunk_rx.clone();
        let txs = shard_txs.clone();
        let decoder = decoder.clone();
        let letter_tx = letter_tx.clone();
        let metrics = opts.metrics.clone();
        let handle = thread::Builder::new()
            .name(format!("tacet-decode-{i}"))
            .spawn(move || {
                let mut stats = DecodeStats::default();
                let mut published = DecodeStats::default();
                for chunk in rx {
                    let mut dead = Vec::new();
                    let batches = decoder.decode_chunk(&chunk, txs.len(), &mut stats, &mut dead);
                    if let Some(m) = &metrics {
                        publish_decode(m, decoder.source(), &stats, &published);
                        published = stats.clone();
                    }
                    if !dead.is_empty() {
                        let _ = letter_tx.send(Letter::Decode(dead));
                    }
                    let pending_shards = Arc::new(AtomicUsize::new(txs.len()));
                    for (tx, batch) in txs.iter().zip(batches) {
                        let delivery = Delivery {
                            batch,
                            pending_shards: pending_shards.clone(),
                        };
                        if tx.send(delivery).is_err() {
                            return stats;
                        }
                    }
                }
                stats
            })
            .map_err(|e| EngineError::Thread(e.to_string()))?;
        decoder_handles.push(handle);
    }
    drop(chunk_rx);
    drop(shard_txs);

    let mut shard_handles = Vec::new();
    for (i, rx) in shard_rxs.into_iter().enumerate() {
        let catalog = catalog.clone();
        let credit_tx = credit_tx.clone();
        let letter_tx = letter_tx.clone();
        let alert_tx = alert_tx.clone();
        let feed = AlertFeed::new(catalog.clone(), &opts.config.alerts.synthetic_attribute);
        let writer = OutcomeWriter::new(
            catalog.clone(),
            &opts.out_dir,
            &format!("{}-s{i}", opts.run_name),
            opts.flush_rows,
        );
        let max_open = opts.max_open_journeys.div_ceil(shards);
        let decided_budget = opts.max_decided_state_bytes.div_ceil(shards);
        let flush_interval = opts.flush_interval;
        let metrics = opts.metrics.clone();
        let handle = thread::Builder::new()
            .name(format!("tacet-shard-{i}"))
            .spawn(move || {
                run_shard(
                    i,
                    Shard::new(catalog, max_open, Tee(writer, feed)).with_decided_budget(decided_budget),
                    rx,
                    partitions,
                    credit_tx,
                    letter_tx,
                    alert_tx,
                    flush_interval,
                    metrics,
                )
            })
            .map_err(|e| EngineError::Thread(e.to_string()))?;
        shard_handles.push(handle);
    }
    drop(credit_tx);
    drop(alert_tx);

    // The reader runs on this thread.
    let mut reader_stats = DecodeStats::default();
    let mut read_result = Ok(());
    loop {
        if credit_rx.recv().is_err() {
            break; // every shard stopped
        }
        let mut dead = Vec::new();
        match reader.next_chunk(&mut dead, &mut reader_stats) {
            Ok(Some(chunk)) => {
                if !dead.is_empty() {
                    let _ = letter_tx.send(Letter::Decode(dead));
                }
                if chunk_tx.send(chunk).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                read_result = Err(e);
                break;
            }
        }
    }
    drop(chunk_tx);
    drop(letter_tx);

    if let Some(m) = &opts.metrics {
        publish_decode(m, decoder.source(), &reader_stats, &DecodeStats::default());
    }
    let mut decode = reader_stats;
    for h in decoder_handles {
        decode.merge(&h.join().map_err(|_| EngineError::Thread("decoder panicked".into()))?);
    }
    let mut stats = ShardStats::default();
    let mut writer = WriterStats::default();
    let mut in_flight = Vec::new();
    let mut max_time = EventTime::MIN;
    let mut store_error = None;
    for h in shard_handles {
        let result = h.join().map_err(|_| EngineError::Thread("shard panicked".into()))?;
        match result {
            Ok(r) => {
                stats.merge(&r.stats);
                writer.rows += r.writer.rows;
                writer.files += r.writer.files;
                writer.bytes += r.writer.bytes;
                writer.errors += r.writer.errors;
                in_flight.extend(r.in_flight);
                max_time = max_time.max(r.max_time);
            }
            Err(e) => store_error = Some(e),
        }
    }
    let alert_result = alerts
        .join()
        .map_err(|_| EngineError::Thread("alert thread panicked".into()))??;
    let dead_letter_file = letters
        .join()
        .map_err(|_| EngineError::Thread("dead-letter writer panicked".into()))??;
    read_result?;
    if let Some(e) = store_error {
        return Err(e.into());
    }
    in_flight.sort_by(|a, b| a.trace_id.cmp(&b.trace_id));
    write_in_flight(&opts.out_dir, &in_flight)?;
    Ok(RunReport {
        decode,
        correlate: stats,
        writer,
        in_flight,
        dead_letters: dead_letter_file.written,
        dead_letter_file,
        max_event_time: (max_time > EventTime::MIN).then_some(max_time),
        elapsed: started.elapsed(),
        shards,
        decoders,
        alerts: alert_result.stats,
        sinks: alert_result.sinks,
        gauges: alert_result.gauges,
    })
}

/// The alert thread: counts every decision, evaluates the rules at each
/// minute the slowest shard's watermark passes, and hands notifications to
/// the sinks (always `<out>/incidents.ndjson`, plus the configured ones).
fn run_alerts(
    catalog: Arc<Catalog>,
    config: &Config,
    mut dispatcher: Dispatcher,
    awaited: usize,
    rx: Receiver<AlertProgress>,
    metrics: Option<Arc<Metrics>>,
) -> Result<AlertResult, EngineError> {
    let mut engine = AlertEngine::new(catalog.clone(), config);
    let mut watermarks: BTreeMap<usize, EventTime> = (0..awaited).map(|s| (s, EventTime::MIN)).collect();
    let mut max_time = EventTime::MIN;
    for msg in rx {
        for note in &msg.notes {
            engine.add(note);
            if let Some(m) = &metrics {
                m.journeys
                    .get_or_create(&OutcomeLabels {
                        journey: catalog.journey(note.journey).name.clone(),
                        outcome: note.outcome.as_str().to_owned(),
                    })
                    .inc();
            }
        }
        if msg.gone {
            watermarks.remove(&msg.source);
        } else {
            let w = watermarks.entry(msg.source).or_insert(EventTime::MIN);
            *w = (*w).max(msg.watermark);
        }
        max_time = max_time.max(msg.max_time);
        let slowest = watermarks.values().copied().min().unwrap_or(EventTime::MIN);
        if slowest > EventTime::MIN {
            let notifications = engine.advance(slowest);
            for n in &notifications {
                dispatcher.send(n);
            }
            if let Some(m) = &metrics {
                publish_alert_gauges(m, &catalog, &engine, max_time, slowest);
            }
        }
    }
    Ok(AlertResult {
        stats: engine.stats(),
        gauges: engine.gauges().to_vec(),
        sinks: dispatcher.finish(),
    })
}

/// One shard's loop: apply chunks in input order with per-event watermarks.
#[allow(clippy::too_many_arguments)]
fn run_shard(
    index: usize,
    mut shard: Shard<ShardSink>,
    rx: Receiver<Delivery>,
    partitions: usize,
    credits: Sender<()>,
    letters: Sender<Letter>,
    alerts: Sender<AlertProgress>,
    flush_interval: Duration,
    metrics: Option<Arc<Metrics>>,
) -> Result<ShardResult, tacet_store::StoreError> {
    let mut published_open = 0i64;
    let mut exported = CorrelatorExport::default();
    let lateness = shard_lateness(&shard);
    let mut progress = Progress::new(partitions);
    let mut waiting: BTreeMap<u64, Delivery> = BTreeMap::new();
    let mut next_seq = 0u64;
    let mut last_flush_check = Instant::now();
    loop {
        // Wake at least once a second so rows are flushed by time even while
        // the input pauses (stdin).
        let delivery = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(d) => Some(d),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(delivery) = delivery {
            waiting.insert(delivery.batch.seq, delivery);
        }
        while let Some(delivery) = waiting.remove(&next_seq) {
            next_seq += 1;
            let batch = &delivery.batch;
            let p = batch.partition as usize;
            let others = progress.min_excluding(p);
            let own = progress.max[p];
            batch.for_each(|event, running_max| {
                let here = own.max(running_max);
                let watermark = others.min(here).saturating_sub(lateness);
                shard.advance(watermark);
                shard.apply(event);
            });
            progress.max[p] = progress.max[p].max(batch.chunk_max);
            progress.max_all = progress.max_all.max(batch.chunk_max);
            if batch.last_of_partition {
                progress.finished[p] = true;
            }
            if let Some(w) = progress.watermark(lateness) {
                shard.advance(w);
            }
            let evicted = shard.take_evicted();
            if !evicted.is_empty() {
                let _ = letters.send(Letter::Evicted(evicted));
            }
            let _ = alerts.send(AlertProgress {
                source: index,
                watermark: shard.watermark(),
                max_time: progress.max_all,
                notes: shard.sink_mut().1.take(),
                gone: false,
            });
            if let Some(m) = &metrics {
                let open = shard.open_traces() as i64;
                m.open_journeys.inc_by(open - published_open);
                published_open = open;
                exported.export(m, correlator_totals(shard.counted()));
            }
            if delivery.pending_shards.fetch_sub(1, Ordering::AcqRel) == 1 {
                let _ = credits.send(());
            }
        }
        if last_flush_check.elapsed() >= Duration::from_secs(1) {
            last_flush_check = Instant::now();
            if let Err(e) = shard.sink_mut().0.flush_older(Some(flush_interval)) {
                tracing::error!(error = %e, "Could not write an outcome file; the rows are kept and retried.");
            }
        }
    }
    let max_time = progress.max_all;
    let in_flight = if max_time > EventTime::MIN {
        shard.finish(max_time)
    } else {
        Vec::new()
    };
    let _ = alerts.send(AlertProgress {
        source: index,
        watermark: max_time,
        max_time,
        notes: shard.sink_mut().1.take(),
        gone: false,
    });
    if let Some(m) = &metrics {
        let open = shard.open_traces() as i64;
        m.open_journeys.inc_by(open - published_open);
        exported.export(m, correlator_totals(shard.counted()));
    }
    let stats = shard.stats();
    let Tee(mut writer, _) = shard.into_sink();
    writer.flush()?;
    Ok(ShardResult {
        stats,
        writer: writer.stats().clone(),
        in_flight,
        max_time,
    })
}

/// A shard's counts for `tacet_correlator_events`, in
/// [`crate::metrics::CORRELATOR_REASONS`] order.
fn correlator_totals(s: &ShardStats) -> [u64; 5] {
    [
        s.duplicates,
        s.late_events,
        s.conflicting_openers,
        s.services_overflow,
        s.tombstones_evicted,
    ]
}

fn shard_lateness(shard: &Shard<ShardSink>) -> i64 {
    shard.catalog().allowed_lateness_ms
}

/// Event-time progress per input partition, as every shard sees it.
struct Progress {
    max: Vec<EventTime>,
    finished: Vec<bool>,
    max_all: EventTime,
}

impl Progress {
    fn new(partitions: usize) -> Self {
        Self {
            max: vec![EventTime::MIN; partitions],
            finished: vec![false; partitions],
            max_all: EventTime::MIN,
        }
    }

    /// The smallest progress over unfinished partitions other than `p`.
    fn min_excluding(&self, p: usize) -> EventTime {
        (0..self.max.len())
            .filter(|&q| q != p && !self.finished[q])
            .map(|q| self.max[q])
            .min()
            .unwrap_or(EventTime::MAX)
    }

    /// The watermark between chunks; `None` before every partition has data.
    fn watermark(&self, lateness: i64) -> Option<EventTime> {
        let w = (0..self.max.len())
            .filter(|&q| !self.finished[q])
            .map(|q| self.max[q])
            .min()?;
        (w > EventTime::MIN).then(|| w.saturating_sub(lateness))
    }
}

/// Adds what a decoder counted since `before` to the metrics.
fn publish_decode(m: &Metrics, source: &str, now: &DecodeStats, before: &DecodeStats) {
    m.events
        .get_or_create(&SourceLabels {
            source: source.to_owned(),
        })
        .inc_by(now.records - before.records);
    for reason in tacet_ingest::DecodeError::ALL {
        let delta = now.errors[reason.index()] - before.errors[reason.index()];
        if delta > 0 {
            m.decode_errors
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str().to_owned(),
                })
                .inc_by(delta);
        }
    }
}

/// Error budget, burn rates and watermark lag, as of the last evaluation.
fn publish_alert_gauges(
    m: &Metrics,
    catalog: &Catalog,
    engine: &AlertEngine,
    max_time: EventTime,
    watermark: EventTime,
) {
    for (spec, g) in catalog.journeys().iter().zip(engine.gauges()) {
        m.error_budget_left
            .get_or_create(&JourneyLabels {
                journey: spec.name.clone(),
            })
            .set(g.error_budget_left);
        for (window, burn) in &g.burn {
            m.burn_rate
                .get_or_create(&WindowLabels {
                    journey: spec.name.clone(),
                    window: format!("{}s", window / 1000),
                })
                .set(*burn);
        }
    }
    m.watermark_lag_seconds
        .set(max_time.saturating_sub(watermark).max(0) as f64 / 1000.0);
}

/// The journeys still open at the end, kept as the state snapshot
/// (`<out>/state/in-flight.ndjson`): not failures, just not decided yet.
fn write_in_flight(out: &std::path::Path, in_flight: &[InFlight]) -> Result<(), EngineError> {
    write_in_flight_file(&out.join("state"), "in-flight.ndjson", in_flight)
}

/// Writes `dir/name` (atomically) with one JSON line per in-flight journey;
/// `tacet verify` reads every `in-flight*.ndjson` of `<out>/state`.
pub fn write_in_flight_file(dir: &std::path::Path, name: &str, in_flight: &[InFlight]) -> Result<(), EngineError> {
    let path = dir.join(name);
    let io = |source| EngineError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut w = BufWriter::new(File::create(&tmp).map_err(io)?);
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
        serde_json::to_writer(&mut w, &record).map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
    }
    w.flush().map_err(io)?;
    drop(w);
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(())
}

/// The dead-letter record of a journey evicted by a cap.
pub fn evicted_letter(j: &Evicted) -> serde_json::Value {
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

fn write_letters(rx: Receiver<Letter>, mut file: DeadLetterFile) -> Result<DeadLetterStats, EngineError> {
    let io = |source| EngineError::Io {
        path: "dead-letter.ndjson".into(),
        source,
    };
    for letter in rx {
        match letter {
            Letter::Decode(records) => {
                for r in records {
                    file.write(&r).map_err(io)?;
                }
            }
            Letter::Evicted(journeys) => {
                for j in journeys {
                    file.write(&evicted_letter(&j)).map_err(io)?;
                }
            }
        }
    }
    file.flush().map_err(io)?;
    Ok(file.stats())
}
