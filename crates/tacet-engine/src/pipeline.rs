//! The replay pipeline: reader, decoders, shards, writers, dead letters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use tacet_alert::AlertFeed;
use tacet_alert::service::{AlertService, AlertSetup};
use tacet_alert::sink::SinkKinds;
use tacet_core::{Catalog, Config, EventTime};
use tacet_correlate::{InFlight, ShardStats};
use tacet_ingest::deadletter::{DeadLetterLimits, DeadLetters};
use tacet_ingest::{ChunkReader, DecodeStats, Decoder, ShardBatch};
use tacet_store::{OutcomeWriter, WriterStats};

use crate::metrics::Metrics;
use crate::stage::{Stage, StageError, StageLimits, StageLinks, share_of, write_in_flight};
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
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("a pipeline thread stopped unexpectedly: {0}")]
    Thread(String),
    #[error(transparent)]
    Alerts(#[from] tacet_alert::service::AlertServiceError),
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
    /// `engine.idle_timeout`, for live inputs (stdin): files are never idle.
    pub idle_timeout: Duration,
    /// How large the dead-letter file may grow, and rotated files kept.
    pub dead_letters: DeadLetterLimits,
    /// Prefix that makes this run's file names unique.
    pub run_name: String,
    /// The config: alert rules, sinks and journey SLOs.
    pub config: Arc<Config>,
    /// Live metrics to update, when served.
    pub metrics: Option<Arc<Metrics>>,
    /// Alert sink kinds built outside the alert crate (Kafka).
    pub sink_kinds: SinkKinds,
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
            idle_timeout: config.engine.idle_timeout,
            dead_letters: DeadLetterLimits::from_config(&config.output),
            config: Arc::new(config.clone()),
            metrics: None,
            sink_kinds: SinkKinds::default(),
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

/// Replays `reader` to its end through `decoder` and the configured shards.
///
/// ```text
///  reader (this thread) ──chunks──▶ decoders ──ShardBatch──▶ shard stages ──▶ outcome files
///        ▲                              │                        │
///        └──────── credits ◀────────────┼────────────────────────┘
///                                       └──▶ dead letters (shared)      └──▶ alert thread
/// ```
pub fn replay(
    catalog: Arc<Catalog>,
    decoder: Decoder,
    reader: ChunkReader,
    opts: &ReplayOptions,
) -> Result<RunReport, EngineError> {
    let started = Instant::now();
    let outputs = Outputs::open(&catalog, opts)?;
    let plan = Plan::new(opts, &reader);
    let mut lanes = Lanes::new(&plan);
    let decoders = start_decoders(&plan, decoder, &mut lanes, &outputs, opts.metrics.clone())?;
    let shards = start_shards(&plan, &catalog, &mut lanes, &outputs, opts)?;
    let (reader_stats, read_result) = read_input(reader, &lanes, &outputs, &decoders.source, opts.metrics.as_ref());
    drop(lanes);
    let decode = decoders.join(reader_stats)?;
    let shards = shards.join();
    let alert_result = outputs.alerts.join()?;
    read_result?;
    let shards = shards?;
    outputs.dead_letters.flush().map_err(|source| EngineError::Io {
        path: outputs.dead_letters.path().display().to_string(),
        source,
    })?;
    let dead_letter_file = outputs.dead_letters.stats();
    let mut in_flight = shards.in_flight;
    in_flight.sort_by(|a, b| a.trace_id.cmp(&b.trace_id));
    let state = opts.out_dir.join("state");
    write_in_flight(&state, "in-flight.ndjson", &in_flight).map_err(|source| EngineError::Io {
        path: state.join("in-flight.ndjson").display().to_string(),
        source,
    })?;
    Ok(RunReport {
        decode,
        correlate: shards.stats,
        writer: shards.writer,
        in_flight,
        dead_letters: dead_letter_file.written,
        dead_letter_file,
        max_event_time: (shards.max_time > EventTime::MIN).then_some(shards.max_time),
        elapsed: started.elapsed(),
        active: started.elapsed(),
        shards: plan.shards,
        decoders: plan.decoders,
        alerts: alert_result.stats,
        sinks: alert_result.sinks,
        gauges: alert_result.gauges,
        source: Default::default(),
    })
}

/// Threads and bounds of one replay.
struct Plan {
    shards: usize,
    decoders: usize,
    partitions: usize,
    /// An input is live (stdin): it may pause, so idleness applies to it.
    live: bool,
    /// Chunks between the reader and the last shard that applies them.
    max_in_flight: usize,
}

impl Plan {
    fn new(opts: &ReplayOptions, reader: &ChunkReader) -> Self {
        let shards = opts.shards.max(1);
        let decoders = opts.decoders.max(1);
        Self {
            shards,
            decoders,
            partitions: reader.partitions(),
            live: reader.is_streaming(),
            max_in_flight: 2 * (decoders + shards) + 2,
        }
    }
}

/// What every thread of a replay writes to besides its outcome files.
struct Outputs {
    dead_letters: DeadLetters,
    alerts: AlertService,
}

impl Outputs {
    /// `<out>/dead-letter.ndjson` (started empty) and the alert thread with
    /// its sinks (each opened now: one that cannot start fails the run here).
    fn open(catalog: &Arc<Catalog>, opts: &ReplayOptions) -> Result<Self, EngineError> {
        std::fs::create_dir_all(&opts.out_dir).map_err(|source| EngineError::Io {
            path: opts.out_dir.display().to_string(),
            source,
        })?;
        let hook = opts.metrics.as_ref().map(|m| m.dead_letter_hook());
        let dead_letters = DeadLetters::new(&opts.out_dir, opts.dead_letters, true, hook);
        let path = dead_letters.path();
        let dead_letters = dead_letters.open_now().map_err(|source| EngineError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let alerts = tacet_alert::service::spawn(AlertSetup {
            catalog: catalog.clone(),
            config: opts.config.clone(),
            out_dir: opts.out_dir.clone(),
            awaited: opts.shards.max(1),
            kinds: opts.sink_kinds.clone(),
            metrics: opts
                .metrics
                .clone()
                .map(|m| m as Arc<dyn tacet_alert::service::AlertMetrics>),
        })?;
        Ok(Self { dead_letters, alerts })
    }
}

/// The channels between the threads. Credits bound the chunks between the
/// reader and the last shard that applies them, so memory stays flat
/// whatever the input size or a slow stage.
struct Lanes {
    credit_tx: Option<Sender<()>>,
    credit_rx: Receiver<()>,
    chunk_tx: Option<Sender<tacet_ingest::Chunk>>,
    chunk_rx: Receiver<tacet_ingest::Chunk>,
    shard_txs: Vec<Sender<Delivery>>,
    shard_rxs: Vec<Receiver<Delivery>>,
}

impl Lanes {
    fn new(plan: &Plan) -> Self {
        let (credit_tx, credit_rx) = bounded::<()>(plan.max_in_flight);
        for _ in 0..plan.max_in_flight {
            credit_tx.send(()).expect("capacity");
        }
        let (chunk_tx, chunk_rx) = bounded(plan.decoders * 2);
        let (shard_txs, shard_rxs) = (0..plan.shards)
            .map(|_| bounded::<Delivery>(plan.max_in_flight))
            .unzip();
        Self {
            credit_tx: Some(credit_tx),
            credit_rx,
            chunk_tx: Some(chunk_tx),
            chunk_rx,
            shard_txs,
            shard_rxs,
        }
    }
}

/// The decoder threads, joined for what they counted.
struct Decoders {
    handles: Vec<thread::JoinHandle<Result<DecodeStats, EngineError>>>,
    source: String,
}

impl Decoders {
    /// What the reader and every decoder counted; the first decoder's
    /// failure (a dead letter it could not write) fails the replay.
    fn join(self, reader: DecodeStats) -> Result<DecodeStats, EngineError> {
        let mut decode = reader;
        for h in self.handles {
            decode.merge(&h.join().map_err(|_| EngineError::Thread("decoder panicked".into()))??);
        }
        Ok(decode)
    }
}

/// Decoders: chunk → one batch per shard (each shard gets every chunk's
/// progress, even with no events for it); refused lines → dead letters.
fn start_decoders(
    plan: &Plan,
    decoder: Decoder,
    lanes: &mut Lanes,
    outputs: &Outputs,
    metrics: Option<Arc<Metrics>>,
) -> Result<Decoders, EngineError> {
    let source = decoder.source().to_owned();
    let decoder = Arc::new(decoder);
    let mut handles = Vec::new();
    for i in 0..plan.decoders {
        let rx = lanes.chunk_rx.clone();
        let txs = lanes.shard_txs.clone();
        let decoder = decoder.clone();
        let dead_letters = outputs.dead_letters.clone();
        let metrics = metrics.clone();
        let handle = thread::Builder::new()
            .name(format!("tacet-decode-{i}"))
            .spawn(move || {
                let mut stats = DecodeStats::default();
                let mut published = DecodeStats::default();
                for chunk in rx {
                    let mut dead = Vec::new();
                    let batches = decoder.decode_chunk(&chunk, txs.len(), &mut stats, &mut dead);
                    if let Some(m) = &metrics {
                        m.add_decode(decoder.source(), &stats, &published);
                        published = stats.clone();
                    }
                    // A refused line that cannot be written stops the replay:
                    // nothing is dropped silently.
                    dead_letters.write_all(&dead).map_err(|source| EngineError::Io {
                        path: dead_letters.path().display().to_string(),
                        source,
                    })?;
                    let pending_shards = Arc::new(AtomicUsize::new(txs.len()));
                    for (tx, batch) in txs.iter().zip(batches) {
                        let delivery = Delivery {
                            batch,
                            pending_shards: pending_shards.clone(),
                        };
                        if tx.send(delivery).is_err() {
                            return Ok(stats);
                        }
                    }
                }
                Ok(stats)
            })
            .map_err(|e| EngineError::Thread(e.to_string()))?;
        handles.push(handle);
    }
    // Only the decoders hold these now: the shards see the end of input
    // when the last decoder stops.
    lanes.shard_txs.clear();
    Ok(Decoders { handles, source })
}

/// What the shard threads left, merged.
struct ShardsResult {
    stats: ShardStats,
    writer: WriterStats,
    in_flight: Vec<InFlight>,
    max_time: EventTime,
}

/// The shard threads.
struct Shards {
    handles: Vec<thread::JoinHandle<Result<ShardsResult, StageError>>>,
}

impl Shards {
    fn join(self) -> Result<ShardsResult, EngineError> {
        let mut all = ShardsResult {
            stats: ShardStats::default(),
            writer: WriterStats::default(),
            in_flight: Vec::new(),
            max_time: EventTime::MIN,
        };
        let mut failure = None;
        for h in self.handles {
            match h.join().map_err(|_| EngineError::Thread("shard panicked".into()))? {
                Ok(r) => {
                    all.stats.merge(&r.stats);
                    all.writer.merge(&r.writer);
                    all.in_flight.extend(r.in_flight);
                    all.max_time = all.max_time.max(r.max_time);
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(all),
        }
    }
}

/// One [`Stage`] per shard, each on its thread, fed every chunk in input order.
fn start_shards(
    plan: &Plan,
    catalog: &Arc<Catalog>,
    lanes: &mut Lanes,
    outputs: &Outputs,
    opts: &ReplayOptions,
) -> Result<Shards, EngineError> {
    let limits = StageLimits {
        // Caps are over the whole process: each shard holds its share.
        max_open_journeys: share_of(opts.max_open_journeys, plan.shards),
        max_decided_state_bytes: share_of(opts.max_decided_state_bytes, plan.shards),
        flush_interval: Some(opts.flush_interval),
        allowed_lateness: Duration::from_millis(catalog.allowed_lateness_ms.max(0) as u64),
        // A file has data until its end, where it stops holding the
        // watermark back: no wall clock, so a replay of files is
        // deterministic. A live input (stdin) may pause: idleness applies.
        idle_timeout: plan.live.then_some(opts.idle_timeout),
    };
    let credits = lanes.credit_tx.take().expect("shards start once");
    let mut handles = Vec::new();
    for (i, rx) in std::mem::take(&mut lanes.shard_rxs).into_iter().enumerate() {
        let writer = OutcomeWriter::new(
            catalog.clone(),
            &opts.out_dir,
            &format!("{}-s{i}", opts.run_name),
            opts.flush_rows,
        );
        let feed = AlertFeed::new(catalog.clone(), &opts.config.alerts.synthetic_attribute);
        let links = StageLinks {
            id: i,
            dead_letters: outputs.dead_letters.clone(),
            alerts: Some(outputs.alerts.progress.clone()),
        };
        let stage = Stage::new(
            catalog.clone(),
            &limits,
            plan.partitions,
            writer,
            feed,
            links,
            Instant::now(),
        );
        let credits = credits.clone();
        let metrics = opts.metrics.clone();
        let live = plan.live;
        let handle = thread::Builder::new()
            .name(format!("tacet-shard-{i}"))
            .spawn(move || ShardThread::new(stage, metrics, live).run(rx, credits))
            .map_err(|e| EngineError::Thread(e.to_string()))?;
        handles.push(handle);
    }
    Ok(Shards { handles })
}

/// Reads the input on this thread, one chunk per credit. Returns what the
/// reader counted (lines it refused itself) and how reading ended.
fn read_input(
    mut reader: ChunkReader,
    lanes: &Lanes,
    outputs: &Outputs,
    source: &str,
    metrics: Option<&Arc<Metrics>>,
) -> (DecodeStats, Result<(), EngineError>) {
    let chunk_tx = lanes.chunk_tx.as_ref().expect("the reader runs once");
    let mut stats = DecodeStats::default();
    let mut result = Ok(());
    loop {
        if lanes.credit_rx.recv().is_err() {
            break; // every shard stopped
        }
        let mut dead = Vec::new();
        match reader.next_chunk(&mut dead, &mut stats) {
            Ok(Some(chunk)) => {
                if let Err(source) = outputs.dead_letters.write_all(&dead) {
                    result = Err(EngineError::Io {
                        path: outputs.dead_letters.path().display().to_string(),
                        source,
                    });
                    break;
                }
                if chunk_tx.send(chunk).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    if let Some(m) = metrics {
        m.add_decode(source, &stats, &DecodeStats::default());
    }
    (stats, result)
}

/// A replay shard: its stage, fed chunks strictly in input order.
struct ShardThread {
    stage: Stage,
    metrics: Option<Arc<Metrics>>,
    published_open: i64,
    exported: crate::metrics::CorrelatorExport,
    /// Whether the wall clock matters (a live input, idleness on). For
    /// files it never does, and the stage reads one instant for the whole run.
    live: bool,
    fixed: Instant,
}

impl ShardThread {
    fn new(stage: Stage, metrics: Option<Arc<Metrics>>, live: bool) -> Self {
        Self {
            stage,
            metrics,
            published_open: 0,
            exported: Default::default(),
            live,
            fixed: Instant::now(),
        }
    }

    /// The wall clock, where it matters.
    fn now(&self) -> Instant {
        if self.live { Instant::now() } else { self.fixed }
    }

    fn run(mut self, rx: Receiver<Delivery>, credits: Sender<()>) -> Result<ShardsResult, StageError> {
        let mut waiting: BTreeMap<u64, Delivery> = BTreeMap::new();
        let mut next_seq = 0u64;
        let mut last_tick = Instant::now();
        loop {
            // Wake at least once a second so rows are flushed by time even
            // while the input pauses (stdin).
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(d) => {
                    waiting.insert(d.batch.seq, d);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            while let Some(delivery) = waiting.remove(&next_seq) {
                next_seq += 1;
                self.apply(&delivery.batch)?;
                if delivery.pending_shards.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let _ = credits.send(());
                }
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                if let Err(e) = self.stage.on_tick(self.now()) {
                    tracing::error!(error = %e, "Could not write an outcome file; the rows are kept and retried.");
                }
            }
        }
        self.finish()
    }

    /// One chunk's events for this shard, each with the watermark a single
    /// thread would have had: its input's progress is the chunk's running
    /// maximum up to the event, over every shard.
    fn apply(&mut self, batch: &ShardBatch) -> Result<(), StageError> {
        let input = batch.partition as usize;
        let clock = self.now();
        let stage = &mut self.stage;
        batch.for_each(|event, running_max| stage.on_event(input, running_max, event, None, clock));
        if batch.chunk_max > EventTime::MIN {
            stage.on_input_progress(input, batch.chunk_max, clock);
        }
        if batch.last_of_partition {
            stage.on_input_end(input);
        }
        stage.on_batch_end(clock)?;
        self.publish();
        Ok(())
    }

    /// Open journeys and correlator counts to `/metrics`.
    fn publish(&mut self) {
        if let Some(m) = &self.metrics {
            let open = self.stage.open_journeys() as i64;
            m.open_journeys.inc_by(open - self.published_open);
            self.published_open = open;
            self.exported.export_stats(m, self.stage.shard_counts());
        }
    }

    /// End of input: decide what is due at the largest event time, keep
    /// what is still ahead as in-flight, write every outcome file.
    fn finish(mut self) -> Result<ShardsResult, StageError> {
        let max_time = self.stage.max_seen().unwrap_or(EventTime::MIN);
        let in_flight = if max_time > EventTime::MIN {
            self.stage.on_finish(max_time)?
        } else {
            Vec::new()
        };
        self.publish();
        let (stats, mut writer) = self.stage.close();
        writer.flush()?;
        Ok(ShardsResult {
            stats,
            writer: writer.stats().clone(),
            in_flight,
            max_time,
        })
    }
}
