//! Where notifications go. Each sink runs on its own thread behind a bounded
//! queue: a sink that is slow or down delays only its own alerts, is counted,
//! and loses nothing while its queue has room.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, unbounded};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tacet_core::config::{AlertSinkConfig, AlertSinkKind};

use crate::engine::Notification;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The receiver answered with this status; 4xx other than 408/429 will
    /// not get better by retrying.
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    #[error("webhook unreachable: {0}")]
    Transport(String),
    #[error("the webhook secret variable {0} is not set")]
    MissingSecret(String),
    /// A sink kind no maker was registered for (see [`SinkKinds`]).
    #[error("{0} alert sinks are not available in this build")]
    Unsupported(String),
}

impl SinkError {
    /// Whether trying again can help.
    pub fn retryable(&self) -> bool {
        match self {
            SinkError::Status(code) => *code >= 500 || *code == 408 || *code == 429,
            SinkError::Transport(_) | SinkError::Io { .. } => true,
            SinkError::MissingSecret(_) | SinkError::Unsupported(_) => false,
        }
    }
}

/// Counters of one sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    pub name: String,
    pub delivered: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Notifications given up on after `max_attempts` (ERROR logged).
    pub failed: u64,
    /// Notifications dropped because the queue was full (ERROR logged).
    pub dropped: u64,
    /// Notifications already delivered before a restart, not sent again.
    pub skipped_delivered: u64,
}

/// One destination.
pub trait AlertSink: Send {
    /// Delivers one notification (already serialized as `body`), or says why not.
    fn deliver(&mut self, n: &Notification, body: &[u8]) -> Result<(), SinkError>;
}

/// Prints each notification as a JSON line.
pub struct StdoutSink;

impl AlertSink for StdoutSink {
    fn deliver(&mut self, _: &Notification, body: &[u8]) -> Result<(), SinkError> {
        let mut out = std::io::stdout().lock();
        out.write_all(body)
            .and_then(|_| out.write_all(b"\n"))
            .map_err(|source| SinkError::Io {
                path: "stdout".into(),
                source,
            })
    }
}

/// Appends each notification to an NDJSON file.
pub struct FileSink {
    path: PathBuf,
    file: File,
}

impl FileSink {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Io {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }
}

impl AlertSink for FileSink {
    fn deliver(&mut self, _: &Notification, body: &[u8]) -> Result<(), SinkError> {
        let mut line = Vec::with_capacity(body.len() + 1);
        line.extend_from_slice(body);
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| SinkError::Io {
            path: self.path.display().to_string(),
            source,
        })
    }
}

/// POSTs each notification as JSON, with `Idempotency-Key` and, when a secret
/// is set, `X-Tacet-Signature: sha256=<hex HMAC-SHA256 of the body>`.
pub struct WebhookSink {
    url: String,
    secret: Option<Vec<u8>>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The signature header value for `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl WebhookSink {
    /// A webhook to `url` with per-request `timeout`.
    pub fn new(url: &str, secret: Option<Vec<u8>>, timeout: Duration) -> Self {
        Self {
            url: url.to_owned(),
            secret,
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
        }
    }
}

impl AlertSink for WebhookSink {
    fn deliver(&mut self, n: &Notification, body: &[u8]) -> Result<(), SinkError> {
        let mut req = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/json")
            .set("Idempotency-Key", &n.idempotency_key)
            .set("X-Tacet-Incident", &n.incident_id);
        if let Some(secret) = &self.secret {
            req = req.set("X-Tacet-Signature", &signature(secret, body));
        }
        match req.send_bytes(body) {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, _)) => Err(SinkError::Status(code)),
            Err(e) => Err(SinkError::Transport(e.kind().to_string())),
        }
    }
}

/// Builds a sink of a kind this crate does not know how to build.
pub type MakeSink = dyn Fn(&AlertSinkConfig) -> Result<Box<dyn AlertSink>, SinkError> + Send + Sync;

/// Sink kinds built elsewhere (the Kafka sink lives with the Kafka code),
/// registered by the binary: the alert crate needs no Kafka client.
#[derive(Clone, Default)]
pub struct SinkKinds {
    makers: Vec<(AlertSinkKind, Arc<MakeSink>)>,
}

impl SinkKinds {
    /// Builds `kind` sinks with `make`.
    pub fn with(mut self, kind: AlertSinkKind, make: Arc<MakeSink>) -> Self {
        self.makers.retain(|(k, _)| *k != kind);
        self.makers.push((kind, make));
        self
    }

    fn make(&self, config: &AlertSinkConfig) -> Result<Box<dyn AlertSink>, SinkError> {
        match self.makers.iter().find(|(k, _)| *k == config.kind) {
            Some((_, make)) => make(config),
            None => Err(SinkError::Unsupported(format!("{:?}", config.kind).to_lowercase())),
        }
    }
}

impl std::fmt::Debug for SinkKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.makers.iter().map(|(k, _)| k)).finish()
    }
}

/// Called by sink threads with (sink, result) for every delivery outcome:
/// `delivered`, `retried`, `failed`, `dropped`, `skipped` (already delivered).
pub type Observer = std::sync::Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The running sinks of an engine.
pub struct Dispatcher {
    /// Per sink: its name, its queue, and how many notifications may wait in it.
    senders: Vec<(String, Sender<Notification>, usize)>,
    handles: Vec<JoinHandle<SinkStats>>,
    dropped: Vec<u64>,
    observer: Option<Observer>,
}

/// Keys already delivered by a sink in an earlier run (one per line).
fn delivered_log(state_dir: Option<&Path>, sink: &str) -> Option<PathBuf> {
    state_dir.map(|d| d.join("alerts").join(format!("delivered-{sink}.log")))
}

impl Dispatcher {
    /// Starts one thread per sink. `state_dir` keeps each sink's delivered
    /// idempotency keys, so a restarted engine does not send them again.
    pub fn start(
        sinks: Vec<(String, Box<dyn AlertSink>, u32, usize)>,
        state_dir: Option<&Path>,
        observer: Option<Observer>,
    ) -> Self {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for (name, sink, attempts, queue) in sinks {
            // Bounded by count in `send`, allocated as used: crossbeam's
            // `bounded(n)` reserves all n slots up front, and the built-in
            // incidents file (n = 1,000,000) then cost ~300 MB of zeroed
            // pages at every engine start.
            let (tx, rx) = unbounded();
            let log = delivered_log(state_dir, &name);
            let thread_name = name.clone();
            let observer = observer.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("tacet-sink-{name}"))
                    .spawn(move || run_sink(thread_name, sink, attempts, rx, log, observer))
                    .expect("spawn sink thread"),
            );
            senders.push((name, tx, queue));
        }
        let dropped = vec![0; senders.len()];
        Self {
            senders,
            handles,
            dropped,
            observer,
        }
    }

    /// Builds the sinks of a config: `stdout`, `file` and `webhook` here,
    /// other kinds (`kafka`) by the makers in `kinds`.
    pub fn from_config(
        configs: &[AlertSinkConfig],
        kinds: &SinkKinds,
        state_dir: Option<&Path>,
        observer: Option<Observer>,
    ) -> Result<Self, SinkError> {
        let mut sinks: Vec<(String, Box<dyn AlertSink>, u32, usize)> = Vec::new();
        for c in configs {
            let sink: Box<dyn AlertSink> = match c.kind {
                AlertSinkKind::Stdout => Box::new(StdoutSink),
                AlertSinkKind::File => Box::new(FileSink::open(
                    c.path.as_deref().unwrap_or(Path::new("incidents.ndjson")),
                )?),
                AlertSinkKind::Webhook => {
                    let secret = match (&c.secret, &c.secret_env) {
                        (_, Some(var)) => Some(
                            std::env::var(var)
                                .map_err(|_| SinkError::MissingSecret(var.clone()))?
                                .into_bytes(),
                        ),
                        (Some(s), None) => Some(s.0.clone().into_bytes()),
                        (None, None) => None,
                    };
                    Box::new(WebhookSink::new(
                        c.url.as_deref().unwrap_or_default(),
                        secret,
                        c.timeout,
                    ))
                }
                AlertSinkKind::Kafka => kinds.make(c)?,
            };
            let attempts = if matches!(c.kind, AlertSinkKind::Webhook | AlertSinkKind::Kafka) {
                c.max_attempts
            } else {
                3
            };
            sinks.push((c.name.clone(), sink, attempts, c.queue));
        }
        Ok(Self::start(sinks, state_dir, observer))
    }

    /// Queues `n` for every sink without waiting; a full queue drops it for
    /// that sink only, counted and logged.
    pub fn send(&mut self, n: &Notification) {
        for (i, (name, tx, queue)) in self.senders.iter().enumerate() {
            // Only this thread sends, so the length read here cannot be
            // overtaken before the send.
            let sent = if tx.len() >= *queue {
                Err(TrySendError::Full(()))
            } else {
                tx.send(n.clone()).map_err(|_| TrySendError::Disconnected(()))
            };
            match sent {
                Ok(()) => {}
                Err(TrySendError::Full(())) => {
                    self.dropped[i] += 1;
                    if let Some(o) = &self.observer {
                        o(name, "dropped");
                    }
                    tracing::error!(sink = %name, incident = %n.incident_id, "Alert queue full; notification dropped for this sink.");
                }
                Err(TrySendError::Disconnected(_)) => self.dropped[i] += 1,
            }
        }
    }

    /// Closes the queues and waits until every sink has delivered or given up.
    pub fn finish(self) -> Vec<SinkStats> {
        drop(self.senders);
        self.handles
            .into_iter()
            .zip(self.dropped)
            .map(|(h, dropped)| {
                let mut s = h.join().unwrap_or_default();
                s.dropped += dropped;
                s
            })
            .collect()
    }
}

fn run_sink(
    name: String,
    mut sink: Box<dyn AlertSink>,
    attempts: u32,
    rx: Receiver<Notification>,
    log: Option<PathBuf>,
    observer: Option<Observer>,
) -> SinkStats {
    let observe = |result: &str| {
        if let Some(o) = &observer {
            o(&name, result);
        }
    };
    let mut stats = SinkStats {
        name: name.clone(),
        ..Default::default()
    };
    let mut done: HashSet<String> = log
        .as_ref()
        .and_then(|p| File::open(p).ok())
        .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
        .unwrap_or_default();
    let mut log_file = log.as_ref().and_then(|p| {
        let _ = std::fs::create_dir_all(p.parent()?);
        OpenOptions::new().create(true).append(true).open(p).ok()
    });
    for n in rx {
        if done.contains(&n.idempotency_key) {
            stats.skipped_delivered += 1;
            observe("skipped");
            continue;
        }
        let body = serde_json::to_vec(&n).expect("notifications serialize");
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=attempts.max(1) {
            match sink.deliver(&n, &body) {
                Ok(()) => {
                    stats.delivered += 1;
                    observe("delivered");
                    if let Some(f) = log_file.as_mut() {
                        let _ = writeln!(f, "{}", n.idempotency_key);
                    }
                    done.insert(n.idempotency_key.clone());
                    break;
                }
                Err(e) if e.retryable() && attempt < attempts => {
                    stats.retries += 1;
                    observe("retried");
                    tracing::warn!(sink = %name, attempt, error = %e, "Alert delivery failed; retrying.");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    stats.failed += 1;
                    observe("failed");
                    tracing::error!(sink = %name, incident = %n.incident_id, error = %e, "Alert not delivered; giving up on this notification.");
                    break;
                }
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Burn, Counts};
    use crate::rules::{RuleKind, Severity};

    fn notification(seq: u32) -> Notification {
        Notification {
            incident_id: "i".into(),
            event: "opened",
            seq,
            idempotency_key: format!("i-{seq}"),
            journey: "funds_transfer".into(),
            severity: Severity::Page,
            rule: RuleKind::PageFast,
            window: "1h/5m".into(),
            at: String::new(),
            at_ms: 0,
            first_seen: String::new(),
            counts: Counts {
                decided: 0,
                completed: 0,
                silent_failure: 0,
                stalled: 0,
            },
            silent_rate: 0.0,
            burn_rate: Burn { long: 0.0, short: 0.0 },
            error_budget_left: 1.0,
            money_at_risk: 0.0,
            top_missing_step: None,
            top_last_service: None,
            sample_trace_ids: Vec::new(),
        }
    }

    /// Says when it starts delivering, then waits to be let go.
    struct Stuck {
        started: Sender<()>,
        go: Receiver<()>,
    }

    impl AlertSink for Stuck {
        fn deliver(&mut self, _: &Notification, _: &[u8]) -> Result<(), SinkError> {
            let _ = self.started.send(());
            let _ = self.go.recv();
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_beyond_its_size_and_delivers_the_rest() {
        let (started, started_rx) = unbounded();
        let (go_tx, go) = unbounded();
        let sink = Stuck { started, go };
        let mut dispatcher = Dispatcher::start(vec![("stuck".into(), Box::new(sink), 1, 2)], None, None);
        dispatcher.send(&notification(0));
        // The sink holds the first; two may wait behind it, the rest drop.
        started_rx.recv().unwrap();
        for seq in 1..6 {
            dispatcher.send(&notification(seq));
        }
        for _ in 0..3 {
            go_tx.send(()).unwrap();
        }
        let stats = dispatcher.finish();
        assert_eq!(stats[0].delivered, 3);
        assert_eq!(stats[0].dropped, 3);
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(SinkError::Status(503).retryable());
        assert!(SinkError::Status(429).retryable());
        assert!(!SinkError::Status(400).retryable());
        assert!(SinkError::Transport("refused".into()).retryable());
    }
}
