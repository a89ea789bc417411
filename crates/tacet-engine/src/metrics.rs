//! Live metrics: Prometheus text format on `/metrics`, and `/health`.
//!
//! Labels stay low-cardinality (source, reason, journey, outcome, window,
//! sink, result), never a trace id. Counters are bumped per chunk or per
//! decision by the stage that owns the number, so a scrape mid-run sees the
//! run as it is.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub journey: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JourneyLabels {
    pub journey: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WindowLabels {
    pub journey: String,
    pub window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
    pub result: String,
}

/// The `reason` labels of `tacet_correlator_events`, in the order of
/// [`CorrelatorExport::export`]'s totals.
pub const CORRELATOR_REASONS: [&str; 5] = [
    "duplicate",
    "late",
    "conflicting_opener",
    "services_overflow",
    "tombstone_evicted",
];

/// What one holder of correlator counts (a replay shard thread, a `tacet
/// run`) has added to `tacet_correlator_events` so far. Its counts are
/// totals that never fall, so the counters rise by the difference, and
/// several holders add up.
#[derive(Debug, Default)]
pub struct CorrelatorExport {
    /// `None` until the first export, which creates every series (at 0 too).
    exported: Option<[u64; 5]>,
}

impl CorrelatorExport {
    /// Raises `tacet_correlator_events` to `totals` (duplicate, late,
    /// conflicting_opener, services_overflow, as [`CORRELATOR_REASONS`]).
    pub fn export(&mut self, m: &Metrics, totals: [u64; 5]) {
        let before = self.exported.unwrap_or_default();
        if self.exported == Some(totals) {
            return; // nothing new: no label lookups
        }
        for ((reason, total), exported) in CORRELATOR_REASONS.iter().zip(totals).zip(before) {
            m.correlator_events
                .get_or_create(&ReasonLabels {
                    reason: (*reason).to_owned(),
                })
                .inc_by(total.saturating_sub(exported));
        }
        self.exported = Some(std::array::from_fn(|i| before[i].max(totals[i])));
    }

    /// [`CorrelatorExport::export`] of what correlators counted in `s`.
    pub fn export_stats(&mut self, m: &Metrics, s: &tacet_correlate::ShardStats) {
        self.export(
            m,
            [
                s.duplicates,
                s.late_events,
                s.conflicting_openers,
                s.services_overflow,
                s.tombstones_evicted,
            ],
        );
    }
}

/// Every metric tacet exports.
pub struct Metrics {
    registry: Registry,
    pub events: Family<SourceLabels, Counter>,
    pub decode_errors: Family<ReasonLabels, Counter>,
    pub journeys: Family<OutcomeLabels, Counter>,
    pub open_journeys: Gauge,
    pub watermark_lag_seconds: Gauge<f64, AtomicU64>,
    pub error_budget_left: Family<JourneyLabels, Gauge<f64, AtomicU64>>,
    pub burn_rate: Family<WindowLabels, Gauge<f64, AtomicU64>>,
    pub alerts: Family<SinkLabels, Counter>,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    pub checkpoints: Counter,
    /// Kafka client, poll, commit and outcome-write errors of `tacet run`,
    /// by kind (retried; logged at most every 10 s per kind).
    pub kafka_errors: Family<ReasonLabels, Counter>,
    /// What `tacet run`'s correlators counted but did not turn into a
    /// journey (duplicate, late, conflicting_opener, services_overflow),
    /// brought up to date at every checkpoint.
    pub correlator_events: Family<ReasonLabels, Counter>,
    /// What the dead-letter file did: rotated, file_dropped, disk_full.
    pub dead_letter_file: Family<ReasonLabels, Counter>,
    pub misrouted_traces: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let events = Family::<SourceLabels, Counter>::default();
        let decode_errors = Family::<ReasonLabels, Counter>::default();
        let journeys = Family::<OutcomeLabels, Counter>::default();
        let open_journeys = Gauge::default();
        let watermark_lag_seconds = Gauge::<f64, AtomicU64>::default();
        let error_budget_left = Family::<JourneyLabels, Gauge<f64, AtomicU64>>::default();
        let burn_rate = Family::<WindowLabels, Gauge<f64, AtomicU64>>::default();
        let alerts = Family::<SinkLabels, Counter>::default();
        let consumer_lag = Family::<PartitionLabels, Gauge>::default();
        let checkpoints = Counter::default();
        let kafka_errors = Family::<ReasonLabels, Counter>::default();
        let correlator_events = Family::<ReasonLabels, Counter>::default();
        let dead_letter_file = Family::<ReasonLabels, Counter>::default();
        let misrouted_traces = Counter::default();
        registry.register(
            "tacet_misrouted_traces",
            "Co-partitioned Kafka: sampled trace ids seen on two partitions (producers not keying by the trace id as tacet reads it); past engine.max_misrouted_traces tacet run stops",
            misrouted_traces.clone(),
        );
        registry.register(
            "tacet_dead_letter_file",
            "What the dead-letter file did, by event: rotated at its size cap, file_dropped (the oldest rotated file deleted), disk_full (writing paused until there was room)",
            dead_letter_file.clone(),
        );
        registry.register(
            "tacet_kafka_errors",
            "Errors tacet run retried, by kind (client, poll, commit, outcome_write, repartition_poll)",
            kafka_errors.clone(),
        );
        registry.register(
            "tacet_correlator_events",
            "Events the correlators set aside, by reason (duplicate, late, conflicting_opener, services_overflow), and tombstones forgotten early to keep decided state within engine.max_decided_state_bytes (tombstone_evicted); tacet run updates it at every checkpoint, tacet replay after every chunk",
            correlator_events.clone(),
        );
        registry.register(
            "tacet_consumer_lag",
            "Kafka records not yet consumed, by topic and partition",
            consumer_lag.clone(),
        );
        registry.register("tacet_checkpoints", "Checkpoints completed", checkpoints.clone());
        registry.register("tacet_events", "Input records read, by source", events.clone());
        registry.register(
            "tacet_decode_errors",
            "Input records refused, by reason",
            decode_errors.clone(),
        );
        registry.register(
            "tacet_journeys",
            "Journeys decided, by journey and outcome",
            journeys.clone(),
        );
        registry.register("tacet_open_journeys", "Journeys open now", open_journeys.clone());
        registry.register(
            "tacet_watermark_lag_seconds",
            "Largest event time seen minus the slowest shard's watermark",
            watermark_lag_seconds.clone(),
        );
        registry.register(
            "tacet_error_budget_left",
            "Share of the error budget left over the budget period (negative: overspent)",
            error_budget_left.clone(),
        );
        registry.register(
            "tacet_burn_rate",
            "Error-budget burn rate, by journey and window",
            burn_rate.clone(),
        );
        registry.register(
            "tacet_alerts",
            "Alert notifications, by sink and result",
            alerts.clone(),
        );
        Arc::new(Self {
            registry,
            events,
            decode_errors,
            journeys,
            open_journeys,
            watermark_lag_seconds,
            error_budget_left,
            burn_rate,
            alerts,
            consumer_lag,
            checkpoints,
            kafka_errors,
            correlator_events,
            dead_letter_file,
            misrouted_traces,
        })
    }

    /// A hook that counts a dead-letter file's notices on
    /// `tacet_dead_letter_file` (replay and `tacet run` alike).
    pub fn dead_letter_hook(self: &Arc<Self>) -> tacet_ingest::deadletter::NoticeHook {
        let m = self.clone();
        Box::new(move |notice| {
            m.dead_letter_file
                .get_or_create(&ReasonLabels {
                    reason: notice.as_str().to_owned(),
                })
                .inc();
        })
    }

    /// Adds what a decoder counted since `before` to `tacet_events` and
    /// `tacet_decode_errors`.
    pub fn add_decode(&self, source: &str, now: &tacet_ingest::DecodeStats, before: &tacet_ingest::DecodeStats) {
        self.events
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .inc_by(now.records - before.records);
        for reason in tacet_ingest::DecodeError::ALL {
            let delta = now.errors[reason.index()] - before.errors[reason.index()];
            if delta > 0 {
                self.decode_error(reason, delta);
            }
        }
    }

    /// Counts `n` records refused for `reason` on `tacet_decode_errors`.
    pub fn decode_error(&self, reason: tacet_ingest::DecodeError, n: u64) {
        self.decode_errors
            .get_or_create(&ReasonLabels {
                reason: reason.as_str().to_owned(),
            })
            .inc_by(n);
    }

    /// The `tacet_events` counter of `source`, for a hot path to keep
    /// instead of looking the label set up per record.
    pub fn source_events(&self, source: &str) -> Counter {
        self.events
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .clone()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl tacet_alert::service::AlertMetrics for Metrics {
    fn decided(&self, journey: &str, outcome: &str) {
        self.journeys
            .get_or_create(&OutcomeLabels {
                journey: journey.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    fn evaluated(
        &self,
        catalog: &tacet_core::Catalog,
        gauges: &[tacet_alert::JourneyGauges],
        watermark_lag: std::time::Duration,
    ) {
        for (spec, g) in catalog.journeys().iter().zip(gauges) {
            self.error_budget_left
                .get_or_create(&JourneyLabels {
                    journey: spec.name.clone(),
                })
                .set(g.error_budget_left);
            for (window, burn) in &g.burn {
                self.burn_rate
                    .get_or_create(&WindowLabels {
                        journey: spec.name.clone(),
                        window: format!("{}s", window / 1000),
                    })
                    .set(*burn);
            }
        }
        self.watermark_lag_seconds.set(watermark_lag.as_secs_f64());
    }

    fn delivery(&self, sink: &str, result: &str) {
        self.alerts
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }
}

/// Bounds of the `/metrics` and `/health` server: a scraper is one client,
/// but whoever can reach the port can be hostile.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Request line and headers; past it the answer is 431.
    pub max_header_bytes: usize,
    /// Time a connection has to send its request head (each one, on a
    /// kept-alive connection): a silent or trickling client is dropped.
    pub header_read_timeout: Duration,
    /// Longest a connection may stay open at all.
    pub connection_lifetime: Duration,
    /// Connections served at once; more are closed as soon as accepted.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            // hyper's least buffer; a scrape's head is a few hundred bytes.
            max_header_bytes: 8 << 10,
            header_read_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(120),
            max_connections: 64,
        }
    }
}

/// A running `/metrics` and `/health` endpoint (hyper, on a thread of its own).
pub struct MetricsServer {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `metrics` on `addr` (e.g. `127.0.0.1:9898`; port 0 picks one).
    pub fn start(addr: &str, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        Self::start_with(addr, metrics, HttpLimits::default())
    }

    /// As [`MetricsServer::start`], within `limits`.
    pub fn start_with(addr: &str, metrics: Arc<Metrics>, limits: HttpLimits) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let handle = std::thread::Builder::new()
            .name("tacet-metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve_http(listener, metrics, limits, stopped).await,
                        Err(e) => tracing::error!(error = %e, "The metrics endpoint cannot serve."),
                    }
                });
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Accepts connections until `stopped`, each served within `limits`.
async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    limits: HttpLimits,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "Could not accept a metrics connection; retrying.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                max_connections = limits.max_connections,
                "Refused a metrics connection: too many open."
            );
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &metrics)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.connection_lifetime, connection).await;
            drop(permit);
        });
    }
}

fn respond(
    req: &hyper::Request<hyper::body::Incoming>,
    metrics: &Metrics,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, body, kind) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET | &hyper::Method::HEAD, "/metrics") => {
            (200, metrics.encode(), "text/plain; version=0.0.4; charset=utf-8")
        }
        (&hyper::Method::GET | &hyper::Method::HEAD, "/health") => (200, "ok\n".to_owned(), "text/plain"),
        (&hyper::Method::GET | &hyper::Method::HEAD, _) => {
            (404, "not found: try /metrics or /health\n".to_owned(), "text/plain")
        }
        _ => (405, "only GET and HEAD\n".to_owned(), "text/plain"),
    };
    hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, kind)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::{CORRELATOR_REASONS, CorrelatorExport, Metrics};

    fn series(m: &Metrics, reason: &str) -> Option<u64> {
        let prefix = format!("tacet_correlator_events_total{{reason=\"{reason}\"}} ");
        m.encode()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|v| v.parse().unwrap())
    }

    /// Each holder raises the counters by what it counted since its last
    /// export, so two holders add up, a repeated total adds nothing, and the
    /// first export shows every reason, at 0 too.
    #[test]
    fn correlator_counts_rise_by_the_difference_and_holders_add_up() {
        let m = Metrics::new();
        let (mut a, mut b) = (CorrelatorExport::default(), CorrelatorExport::default());
        a.export(&m, [0, 0, 0, 0, 0]);
        for reason in CORRELATOR_REASONS {
            assert_eq!(series(&m, reason), Some(0), "{reason}");
        }
        a.export(&m, [2, 1, 0, 0, 0]);
        a.export(&m, [2, 1, 0, 0, 0]);
        b.export(&m, [3, 0, 1, 0, 2]);
        a.export(&m, [5, 1, 0, 4, 0]);
        assert_eq!(series(&m, "duplicate"), Some(5 + 3));
        assert_eq!(series(&m, "late"), Some(1));
        assert_eq!(series(&m, "conflicting_opener"), Some(1));
        assert_eq!(series(&m, "services_overflow"), Some(4));
        assert_eq!(series(&m, "tombstone_evicted"), Some(2));
    }

    /// A hostile client of the metrics port: an oversized head is refused
    /// with 431, a silent connection is dropped after the header timeout,
    /// and a scrape still works meanwhile.
    #[test]
    fn the_metrics_port_bounds_heads_and_silent_connections() {
        use std::io::{Read, Write};
        use std::time::Instant;
        let limits = super::HttpLimits {
            header_read_timeout: std::time::Duration::from_millis(500),
            ..Default::default()
        };
        let server = super::MetricsServer::start_with("127.0.0.1:0", Metrics::new(), limits).unwrap();
        let addr = server.addr();
        let ask = |request: &[u8]| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            let _ = s.write_all(request);
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer
        };
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(64 << 10)
        );
        assert!(
            ask(huge.as_bytes()).starts_with("HTTP/1.1 431"),
            "an oversized head is refused"
        );
        let silent = std::net::TcpStream::connect(addr).unwrap();
        let ok = ask(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("ok\n"), "{ok}");
        let started = Instant::now();
        let mut silent = silent;
        silent
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        let read = silent.read(&mut buf);
        assert!(matches!(read, Ok(0)), "the server closed it: {read:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "after the header timeout"
        );
        let answer = ask(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    }
}
