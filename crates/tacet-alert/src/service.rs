//! The alert thread: one per process, fed by every unit of correlation state
//! (a replay shard, a Kafka partition group) with its new decisions and
//! watermark, evaluating the rules at each minute the slowest one passes.
//!
//! Both `tacet replay` and `tacet run` start it through [`spawn`]; what they
//! count on `/metrics` reaches it through [`AlertMetrics`], so this crate
//! needs neither the engine nor Prometheus.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use tacet_core::config::{AlertSinkConfig, AlertSinkKind};
use tacet_core::{Catalog, Config, EventTime};

use crate::sink::{Dispatcher, Observer, SinkError, SinkKinds, SinkStats};
use crate::{AlertEngine, AlertStats, JourneyGauges, Note};

/// Why the alert thread could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AlertServiceError {
    #[error("an alert sink cannot start: {0}")]
    Sink(#[from] SinkError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the alert thread cannot start: {0}")]
    Thread(std::io::Error),
    #[error("the alert thread panicked")]
    Panicked,
}

/// What a unit of correlation state tells the alert thread after each batch.
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

/// What the alert thread reports at the end.
pub struct AlertResult {
    pub stats: AlertStats,
    pub sinks: Vec<SinkStats>,
    pub gauges: Vec<JourneyGauges>,
}

/// Where the alert thread's figures go (`/metrics`, when served).
pub trait AlertMetrics: Send + Sync {
    /// One decision reached the rules.
    fn decided(&self, journey: &str, outcome: &str);
    /// The rules were evaluated: each journey's gauges (in catalog order),
    /// and how far the slowest watermark is behind the largest event time.
    fn evaluated(&self, catalog: &Catalog, gauges: &[JourneyGauges], watermark_lag: Duration);
    /// A sink's delivery result (`delivered`, `retried`, `failed`, `dropped`, `skipped`).
    fn delivery(&self, sink: &str, result: &str);
}

/// Progress messages queued for the alert thread before a sender waits.
/// Each carries one batch's decisions, so this bounds the notes in flight;
/// the alert thread never waits on its senders, so they cannot deadlock.
pub const ALERT_QUEUE_MESSAGES: usize = 1024;

/// How to start the alert thread.
pub struct AlertSetup {
    pub catalog: Arc<Catalog>,
    pub config: Arc<Config>,
    /// `<out>`: `incidents.ndjson` and `state/alerts/` go here.
    pub out_dir: PathBuf,
    /// Sources `0..awaited` hold the clock back from the start (a replay's
    /// shards); others join with their first message.
    pub awaited: usize,
    /// Sink kinds this crate does not build itself (Kafka).
    pub kinds: SinkKinds,
    pub metrics: Option<Arc<dyn AlertMetrics>>,
}

/// The running alert thread and the sender its sources clone.
pub struct AlertService {
    pub progress: Sender<AlertProgress>,
    thread: thread::JoinHandle<AlertResult>,
}

impl AlertService {
    /// Waits for the thread to end (every sender dropped, including
    /// `self.progress`) and returns its figures.
    pub fn join(self) -> Result<AlertResult, AlertServiceError> {
        drop(self.progress);
        self.thread.join().map_err(|_| AlertServiceError::Panicked)
    }
}

/// Starts the alert thread: rules evaluated in event time as the slowest
/// source's watermark passes, incidents to `<out>/incidents.ndjson` and the
/// configured sinks. Ends when every sender is dropped.
///
/// The sinks are opened here, before anything runs: one that cannot start
/// (an unset `secret_env`, a file that cannot be written, a bad Kafka
/// setting) fails the start with its reason, instead of alerting being off
/// until shutdown.
pub fn spawn(setup: AlertSetup) -> Result<AlertService, AlertServiceError> {
    let dispatcher = open_sinks(&setup)?;
    let (tx, rx) = bounded::<AlertProgress>(ALERT_QUEUE_MESSAGES);
    let AlertSetup {
        catalog,
        config,
        awaited,
        metrics,
        ..
    } = setup;
    let thread = thread::Builder::new()
        .name("tacet-alerts".into())
        .spawn(move || run(catalog, &config, dispatcher, awaited, rx, metrics))
        .map_err(AlertServiceError::Thread)?;
    Ok(AlertService { progress: tx, thread })
}

/// The sink every run has: `<out>/incidents.ndjson`.
fn incidents_file(out: &Path) -> AlertSinkConfig {
    AlertSinkConfig {
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
    }
}

/// `<out>/incidents.ndjson` and the config's `[[alert_sink]]`s, started.
fn open_sinks(setup: &AlertSetup) -> Result<Dispatcher, AlertServiceError> {
    let out = &setup.out_dir;
    let observer: Option<Observer> = setup.metrics.clone().map(|m| {
        let observer: Observer = Arc::new(move |sink: &str, result: &str| m.delivery(sink, result));
        observer
    });
    let mut sinks = vec![incidents_file(out)];
    sinks.extend(setup.config.alert_sinks.iter().cloned());
    std::fs::create_dir_all(out).map_err(|source| AlertServiceError::Io {
        path: out.display().to_string(),
        source,
    })?;
    Ok(Dispatcher::from_config(
        &sinks,
        &setup.kinds,
        Some(&out.join("state")),
        observer,
    )?)
}

/// The alert thread: counts every decision, evaluates the rules at each
/// minute the slowest source's watermark passes, and hands notifications to
/// the sinks.
fn run(
    catalog: Arc<Catalog>,
    config: &Config,
    mut dispatcher: Dispatcher,
    awaited: usize,
    rx: Receiver<AlertProgress>,
    metrics: Option<Arc<dyn AlertMetrics>>,
) -> AlertResult {
    let mut engine = AlertEngine::new(catalog.clone(), config);
    let mut watermarks: BTreeMap<usize, EventTime> = (0..awaited).map(|s| (s, EventTime::MIN)).collect();
    let mut max_time = EventTime::MIN;
    for msg in rx {
        for note in &msg.notes {
            engine.add(note);
            if let Some(m) = &metrics {
                m.decided(&catalog.journey(note.journey).name, note.outcome.as_str());
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
            for n in &engine.advance(slowest) {
                dispatcher.send(n);
            }
            if let Some(m) = &metrics {
                let lag_ms = max_time.saturating_sub(slowest).max(0) as u64;
                m.evaluated(&catalog, engine.gauges(), Duration::from_millis(lag_ms));
            }
        }
    }
    AlertResult {
        stats: engine.stats(),
        gauges: engine.gauges().to_vec(),
        sinks: dispatcher.finish(),
    }
}
