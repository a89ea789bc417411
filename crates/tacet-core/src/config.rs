//! The TOML configuration: `[engine]`, `[output]`, `[[source]]` and `[[journey]]`.
//!
//! Every struct denies unknown fields, so a typo is an error that names the key
//! and the file rather than a setting silently ignored. Durations are written
//! the human way (`"2m"`, `"30s"`, `"24h"`). The catalog ([`crate::Catalog`])
//! does the cross-field checks that serde cannot (ambiguous step names).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::pointer::{JsonPointer, PointerError};

/// The configuration tacet runs when none is given (`tacet demo`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../config/tacet.toml");

/// Result type of configuration loading.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Everything that can be wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("{path}: {cause}")]
    Parse { path: PathBuf, cause: Box<toml::de::Error> },
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: `{key}`: {cause}")]
    Pointer {
        path: PathBuf,
        key: String,
        cause: PointerError,
    },
}

/// A whole tacet configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Engine tuning: shards, lateness, idleness, state limits.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Where and how outcomes are written.
    #[serde(default)]
    pub output: OutputConfig,
    /// Checkpoints of `tacet run`.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Input sources and their field mappings.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// The customer journeys to watch.
    #[serde(default, rename = "journey")]
    pub journeys: Vec<JourneyConfig>,
    /// SLO alerting defaults (per-journey overrides in `[[journey]] alerts`).
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Where incidents are sent.
    #[serde(default, rename = "alert_sink")]
    pub alert_sinks: Vec<AlertSinkConfig>,
    /// Business-metric tables for `tacet sql`.
    #[serde(default, rename = "table")]
    pub tables: Vec<TableConfig>,
    /// `tacet serve-sql` settings.
    #[serde(default)]
    pub sql: SqlConfig,
    /// Where this config came from, for error messages.
    #[serde(skip)]
    pub origin: PathBuf,
    /// The folder the config file is in, against which its relative paths
    /// resolve; `None` for the embedded default and for text without a file.
    #[serde(skip)]
    pub folder: Option<PathBuf>,
}

/// `[engine]`: how the correlator runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Number of correlator shards; 0 means one per CPU core. In `tacet run`
    /// the correlator threads the partition groups are spread over.
    #[serde(default)]
    pub shards: usize,
    /// Number of decoder threads of `tacet replay`; 0 means one per CPU core.
    /// `tacet run` decodes on its correlator threads and refuses another value.
    #[serde(default)]
    pub decoders: usize,
    /// How far event time may run behind the newest event seen before a
    /// deadline is judged (covers disorder and clock skew between services).
    #[serde(default = "default_allowed_lateness", with = "duration")]
    pub allowed_lateness: Duration,
    /// A partition with no data for this long (wall clock) stops holding the
    /// watermark back; with no data anywhere the watermark moves at wall-clock speed.
    /// Live inputs only: Kafka partitions, and stdin in `tacet replay`. A file
    /// has data until its end, where it stops holding the watermark back.
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// How long a decided trace is remembered, so that late steps produce a
    /// `late_completion` correction instead of a new journey.
    #[serde(default = "default_late_horizon", with = "duration")]
    pub late_horizon: Duration,
    /// When a trace with steps but neither start nor ack is decided `orphan`,
    /// counted from its earliest event. Default: the largest
    /// `ack_timeout + deadline` over all journeys.
    #[serde(default, with = "opt_duration")]
    pub orphan_timeout: Option<Duration>,
    /// Cap on open journeys over all shards. When reached, the open journey
    /// closest to its decision is evicted to the dead-letter sink (counted and
    /// logged once per episode); it is never dropped silently.
    #[serde(default = "default_max_open_journeys")]
    pub max_open_journeys: usize,
    /// Cap on the distinct events one journey keeps (default 1,000). A
    /// journey's state is re-read at each of its events, so a trace id that
    /// every event carries (an all-zero id from broken instrumentation)
    /// would otherwise make each event cost as much as all before it. A
    /// journey that passes the cap is evicted to the dead-letter sink
    /// (`event_limit_evicted`, counted) and its later events count as late.
    #[serde(default = "default_max_events_per_journey")]
    pub max_events_per_journey: usize,
    /// Budget, in bytes over all shards, of what decided journeys leave
    /// behind for `late_horizon`: tombstones, and silent failures kept for
    /// their correction. Past it the earliest to expire are forgotten
    /// (counted; the silent failures among them dead-lettered as
    /// `decided_state_evicted`), as `max_open_journeys` does for open ones.
    #[serde(default = "default_max_decided_state_bytes")]
    pub max_decided_state_bytes: usize,
    /// Input lines longer than this are dead-lettered as `oversized_line`.
    /// At most [`MAX_LINE_BYTES_LIMIT`].
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// An event time later than the wall clock + this is refused
    /// (`time_in_future`, SPEC §1): a producer logging epoch microseconds
    /// must not push event time years ahead and decide every open journey.
    #[serde(default = "default_max_future_skew", with = "duration")]
    pub max_future_skew: Duration,
    /// Co-partitioned Kafka: trace ids seen on two partitions (a sample of
    /// them is watched) before `tacet run` stops and says to repartition.
    /// Producers that do not key every topic by the trace id as tacet reads
    /// it would otherwise give silently wrong outcomes.
    #[serde(default = "default_max_misrouted_traces")]
    pub max_misrouted_traces: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shards: 0,
            decoders: 0,
            allowed_lateness: default_allowed_lateness(),
            idle_timeout: default_idle_timeout(),
            late_horizon: default_late_horizon(),
            orphan_timeout: None,
            max_open_journeys: default_max_open_journeys(),
            max_events_per_journey: default_max_events_per_journey(),
            max_decided_state_bytes: default_max_decided_state_bytes(),
            max_line_bytes: default_max_line_bytes(),
            max_future_skew: default_max_future_skew(),
            max_misrouted_traces: default_max_misrouted_traces(),
        }
    }
}

fn default_allowed_lateness() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_late_horizon() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_open_journeys() -> usize {
    20_000_000
}
fn default_max_events_per_journey() -> usize {
    1_000
}
fn default_max_decided_state_bytes() -> usize {
    4 << 30
}
fn default_max_line_bytes() -> usize {
    1 << 20
}
fn default_max_future_skew() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_max_misrouted_traces() -> u64 {
    10
}

/// The longest duration a config may set: ten years. Deadlines, timeouts
/// and horizons are added to one another and to event times, which must
/// never overflow.
pub const MAX_CONFIG_DURATION: Duration = Duration::from_secs(10 * 366 * 86_400);

/// The largest `engine.max_line_bytes` a config may set: 256 MiB. A line's
/// strings end up in outcome files whose string columns must stay under
/// 2 GiB (Arrow's 32-bit offsets); with lines bounded, the outcome writer
/// can guarantee that by writing a file early (see `tacet-store`).
pub const MAX_LINE_BYTES_LIMIT: usize = 256 << 20;

/// `[output]`: the Parquet outcome dataset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Rows buffered per journey and date before a Parquet file is written.
    #[serde(default = "default_flush_rows")]
    pub flush_rows: usize,
    /// Longest time (wall clock) a decided row waits in memory before its file
    /// is written.
    #[serde(default = "default_flush_interval", with = "duration")]
    pub flush_interval: Duration,
    /// Size at which `dead-letter.ndjson` is rotated to `dead-letter.1.ndjson`
    /// (bad input must not fill the disk).
    #[serde(default = "default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: u64,
    /// Rotated dead-letter files kept; the oldest beyond them is deleted
    /// and counted.
    #[serde(default = "default_dead_letter_files")]
    pub dead_letter_files: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            flush_rows: default_flush_rows(),
            flush_interval: default_flush_interval(),
            dead_letter_max_bytes: default_dead_letter_max_bytes(),
            dead_letter_files: default_dead_letter_files(),
        }
    }
}

fn default_dead_letter_max_bytes() -> u64 {
    256 << 20
}
fn default_dead_letter_files() -> usize {
    4
}

fn default_flush_rows() -> usize {
    131_072
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(10)
}

/// `[[source]]`: an input and how its events map onto tacet's fields. A source
/// without `kind` is a mapping only (used by `tacet replay`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name used in counters and dead-letter records. Optional: an unnamed
    /// source is called after its kind (`kafka`, or `events` for a mapping),
    /// which must then be unambiguous.
    #[serde(default)]
    pub name: String,
    /// `"kafka"` for a source `tacet run` consumes; absent for a mapping
    /// used by `tacet replay`.
    #[serde(default)]
    pub kind: Option<SourceKind>,
    /// Kafka bootstrap servers, e.g. `"10.0.0.5:9092,10.0.0.6:9092"`.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Kafka topics of this source (same field mapping for all).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Kafka consumer group; every Kafka source of one config shares it.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Extra librdkafka properties, passed through as given
    /// (e.g. `"security.protocol" = "SASL_SSL"`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// How events reach their correlator: `repartition` (the default: any
    /// producer keying, re-keyed by trace id through internal topics) or
    /// `copartitioned` (the fast path, for topics keyed by the trace id as
    /// tacet reads it, with equal partition counts; checked while it runs,
    /// see `engine.max_misrouted_traces`).
    #[serde(default)]
    pub partitioning: Partitioning,
    /// Where each field is found in the event.
    #[serde(default)]
    pub fields: FieldMapping,
}

/// The kind of a `[[source]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Kafka,
}

/// How a Kafka source's events are grouped by trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// Partition `p` of every topic holds the same traces (keyed by trace id).
    Copartitioned,
    /// Re-key by trace id through internal topics first: right for any
    /// producer keying.
    #[default]
    Repartition,
}

/// `[checkpoint]`: how `tacet run` makes its progress durable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Time between checkpoints (outcomes durable, state snapshotted, offsets committed).
    #[serde(default = "default_checkpoint_interval", with = "duration")]
    pub interval: Duration,
    /// Folder for the per-partition state snapshots; every instance of a
    /// consumer group must reach the same folder (shared storage in production).
    /// A relative path is relative to the config file's folder; default `<out>/state`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            interval: default_checkpoint_interval(),
            state_dir: None,
        }
    }
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(5)
}

/// `[source.fields]`: JSON pointers (RFC 6901) to each field; the reference
/// names are the defaults. `trace_id` may also be `header:NAME` (Kafka headers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// Trace id: a string, a W3C `traceparent`, or `header:NAME`.
    #[serde(default = "default_trace_id")]
    pub trace_id: String,
    /// Event time: RFC 3339 string or epoch milliseconds.
    #[serde(default = "default_time")]
    pub time: String,
    /// The step name, e.g. `ledger.posted`.
    #[serde(default = "default_event")]
    pub event: String,
    /// The emitting service (optional in events).
    #[serde(default = "default_service")]
    pub service: String,
    /// `ok`/`error`/`success`/`failure` or an HTTP-like code; missing means ok.
    #[serde(default = "default_status")]
    pub status: String,
    /// De-duplication key when present.
    #[serde(default = "default_event_id")]
    pub event_id: String,
}

impl Default for FieldMapping {
    fn default() -> Self {
        Self {
            trace_id: default_trace_id(),
            time: default_time(),
            event: default_event(),
            service: default_service(),
            status: default_status(),
            event_id: default_event_id(),
        }
    }
}

fn default_trace_id() -> String {
    "/trace_id".into()
}
fn default_time() -> String {
    "/ts".into()
}
fn default_event() -> String {
    "/event".into()
}
fn default_service() -> String {
    "/service".into()
}
fn default_status() -> String {
    "/status".into()
}
fn default_event_id() -> String {
    "/event_id".into()
}

/// Where the trace id of an event comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceIdSource {
    /// A field of the JSON body.
    Field(JsonPointer),
    /// A Kafka record header (`header:traceparent`).
    Header(String),
}

impl FieldMapping {
    /// Parses every pointer, naming the offending key on error.
    pub fn parsed(&self, path: &Path, source: &str) -> Result<ParsedMapping> {
        let key = |field: &str| format!("source.{source}.fields.{field}");
        let parse = |field: &str, text: &str| {
            JsonPointer::parse(text).map_err(|e| ConfigError::Pointer {
                path: path.to_owned(),
                key: key(field),
                cause: e,
            })
        };
        let trace_id = match self.trace_id.strip_prefix("header:") {
            Some("") => {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    key: key("trace_id"),
                    message: "`header:` needs a header name, e.g. `header:traceparent`".into(),
                });
            }
            Some(name) => TraceIdSource::Header(name.to_owned()),
            None => TraceIdSource::Field(parse("trace_id", &self.trace_id)?),
        };
        Ok(ParsedMapping {
            trace_id,
            time: parse("time", &self.time)?,
            event: parse("event", &self.event)?,
            service: parse("service", &self.service)?,
            status: parse("status", &self.status)?,
            event_id: parse("event_id", &self.event_id)?,
        })
    }
}

/// A [`FieldMapping`] with its pointers parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMapping {
    pub trace_id: TraceIdSource,
    pub time: JsonPointer,
    pub event: JsonPointer,
    pub service: JsonPointer,
    pub status: JsonPointer,
    pub event_id: JsonPointer,
}

/// The Kafka side of a config, as one consumer sees it (see [`Config::kafka_plan`]).
#[derive(Debug, Clone)]
pub struct KafkaPlan {
    pub brokers: String,
    pub group_id: String,
    /// librdkafka properties from every Kafka source.
    pub properties: BTreeMap<String, String>,
    pub partitioning: Partitioning,
    /// Every topic, with the source (and mapping) it belongs to.
    pub topics: Vec<KafkaTopic>,
}

/// One consumed topic.
#[derive(Debug, Clone)]
pub struct KafkaTopic {
    pub topic: String,
    pub source: String,
    pub mapping: ParsedMapping,
}

/// `[[journey]]`: one kind of customer journey (SPEC §2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyConfig {
    /// Name used in outcomes, partitions and alerts.
    pub name: String,
    /// Free text shown by `tacet check`.
    #[serde(default)]
    pub description: Option<String>,
    /// Event(s) that open the journey.
    #[serde(default, deserialize_with = "one_or_many")]
    pub start: Vec<String>,
    /// Events that tell the customer "success".
    #[serde(deserialize_with = "one_or_many")]
    pub ack_ok: Vec<String>,
    /// Events that tell the customer "failed".
    #[serde(default, deserialize_with = "one_or_many")]
    pub ack_error: Vec<String>,
    /// Steps that must all be seen with status ok; `a|b` accepts either.
    pub complete: Vec<String>,
    /// Time allowed from the ack to the last required step.
    #[serde(with = "duration")]
    pub deadline: Duration,
    /// Time allowed from start to an ack of either kind.
    #[serde(with = "duration")]
    pub ack_timeout: Duration,
    /// Target share of good journeys, e.g. 0.999.
    pub slo: f64,
    /// Journey attributes: `name = "/pointer"` (a string column; `amount` is a
    /// number) or `name = { pointer = "/p", type = "float" }`.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeSpec>,
    /// Overrides of the `[alerts.rules]` thresholds for this journey.
    #[serde(default)]
    pub alerts: RuleOverrides,
}

/// `[alerts]`: how SLIs are kept and when incidents open.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Period over which the error budget is counted.
    #[serde(default = "default_budget_period", with = "duration")]
    pub budget_period: Duration,
    /// Least event time between two updates of one open page.
    #[serde(default = "default_update_interval", with = "duration")]
    pub update_interval: Duration,
    /// Least event time between two updates of one open ticket.
    #[serde(default = "default_ticket_update_interval", with = "duration")]
    pub ticket_update_interval: Duration,
    /// Attribute that marks synthetic (probe) journeys: counted apart, never
    /// burning the budget. Its value is synthetic when true, "true" or "1".
    #[serde(default = "default_synthetic_attribute")]
    pub synthetic_attribute: String,
    /// Rule thresholds for every journey.
    #[serde(default)]
    pub rules: RuleOverrides,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            budget_period: default_budget_period(),
            update_interval: default_update_interval(),
            ticket_update_interval: default_ticket_update_interval(),
            synthetic_attribute: default_synthetic_attribute(),
            rules: RuleOverrides::default(),
        }
    }
}

fn default_budget_period() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_update_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_ticket_update_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_synthetic_attribute() -> String {
    "synthetic".into()
}

/// The alert rules, each optional so that a journey overrides only what it names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverrides {
    /// Page: burn ≥ 14.4 over 1h and 5m.
    pub page_fast: Option<BurnRuleConfig>,
    /// Page: burn ≥ 6 over 6h and 30m.
    pub page_slow: Option<BurnRuleConfig>,
    /// Ticket: burn ≥ 3 over 1d and 2h.
    pub ticket_fast: Option<BurnRuleConfig>,
    /// Ticket: burn ≥ 1 over 3d and 6h.
    pub ticket_slow: Option<BurnRuleConfig>,
    /// Page: silent-failure rate above a threshold over a short window.
    pub silent_rate: Option<SilentRateRuleConfig>,
}

/// A multiwindow burn-rate rule; unset fields keep their defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnRuleConfig {
    /// Burn rate both windows must reach.
    pub burn: Option<f64>,
    /// The long window.
    #[serde(default, with = "opt_duration")]
    pub long: Option<Duration>,
    /// The short window.
    #[serde(default, with = "opt_duration")]
    pub short: Option<Duration>,
    /// Fewest decided journeys a window needs before it can fire.
    pub min_decided: Option<u64>,
    /// `false` turns the rule off.
    pub enabled: Option<bool>,
}

/// The fast silent-failure-rate rule; unset fields keep their defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilentRateRuleConfig {
    /// Share of decided journeys that are silent failures.
    pub threshold: Option<f64>,
    /// The window.
    #[serde(default, with = "opt_duration")]
    pub window: Option<Duration>,
    /// Fewest decided journeys in the window before it can fire.
    pub min_decided: Option<u64>,
    /// `false` turns the rule off.
    pub enabled: Option<bool>,
}

/// `[[table]]`: a business-metric table queried next to the outcomes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The SQL name.
    pub name: String,
    /// A file or folder (a relative path is relative to the config file's folder).
    pub path: PathBuf,
    /// `csv`, `parquet` or `ndjson`.
    pub format: TableFormat,
    /// A time column: the table also gets a `minute` column (its value
    /// truncated to the minute) to join with `outcomes_per_minute`.
    #[serde(default)]
    pub time_column: Option<String>,
}

/// File formats of business tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    Csv,
    Parquet,
    Ndjson,
}

/// `[sql]`: the PostgreSQL wire server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Password clients must give (any user name). Prefer `password_env`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS certificate chain (PEM) for clients that ask for TLS (psql
    /// `sslmode=require`); with `tls_key`. Relative to the config's folder.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Connections open at once; more are closed as soon as accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Queries running at once over all connections; more wait their turn
    /// (within their statement timeout).
    #[serde(default = "default_max_concurrent_queries")]
    pub max_concurrent_queries: usize,
    /// Longest a statement may plan and run, sending its rows included;
    /// past it the statement fails (like PostgreSQL's `statement_timeout`).
    #[serde(default = "default_statement_timeout", with = "duration")]
    pub statement_timeout: Duration,
    /// A connection without a query for this long is closed.
    #[serde(default = "default_sql_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Memory one connection's query may hold for sorts, joins and
    /// aggregates (like PostgreSQL's `work_mem`, per query); a query that
    /// needs more fails. Results are streamed and do not count.
    #[serde(default = "default_query_memory_bytes")]
    pub query_memory_bytes: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            password: None,
            password_env: None,
            tls_cert: None,
            tls_key: None,
            max_connections: default_max_connections(),
            max_concurrent_queries: default_max_concurrent_queries(),
            statement_timeout: default_statement_timeout(),
            idle_timeout: default_sql_idle_timeout(),
            query_memory_bytes: default_query_memory_bytes(),
        }
    }
}

fn default_max_connections() -> usize {
    256
}
fn default_max_concurrent_queries() -> usize {
    4
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_sql_idle_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_query_memory_bytes() -> usize {
    512 << 20
}

/// `[[alert_sink]]`: where incidents go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSinkConfig {
    /// Name used in counters and logs. Optional: an unnamed sink is called
    /// after its kind (`webhook`, `file`, ...), which must then be unambiguous.
    #[serde(default)]
    pub name: String,
    /// `stdout`, `file`, `webhook` or `kafka`.
    pub kind: AlertSinkKind,
    /// `file`: the NDJSON file incidents are appended to (a relative path is
    /// relative to the config file's folder).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `webhook`: the URL incidents are POSTed to.
    #[serde(default)]
    pub url: Option<String>,
    /// `webhook`: HMAC-SHA256 key for the `X-Tacet-Signature` header. Prefer
    /// `secret_env`; the secret is never logged.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// `webhook`: environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// `webhook`: per-request timeout.
    #[serde(default = "default_webhook_timeout", with = "duration")]
    pub timeout: Duration,
    /// `webhook`: attempts per notification before it is counted as failed.
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
    /// Notifications queued per sink while it is slow or down; beyond this
    /// the oldest are dropped and counted (ERROR log).
    #[serde(default = "default_sink_queue")]
    pub queue: usize,
    /// `kafka`: the topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// `kafka`: bootstrap servers; by default those of the Kafka sources.
    #[serde(default)]
    pub brokers: Option<String>,
    /// `kafka`: extra librdkafka producer properties (security, acks, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// A secret from the config: shown as `***` by `Debug`, so it never reaches a log.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Kinds of alert sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSinkKind {
    Stdout,
    File,
    Webhook,
    Kafka,
}

impl AlertSinkKind {
    /// The kind as written in the config, also an unnamed sink's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSinkKind::Stdout => "stdout",
            AlertSinkKind::File => "file",
            AlertSinkKind::Webhook => "webhook",
            AlertSinkKind::Kafka => "kafka",
        }
    }
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_webhook_attempts() -> u32 {
    8
}
fn default_sink_queue() -> usize {
    10_000
}

/// How one attribute is found and typed.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AttributeSpec {
    /// Just the pointer; the type follows the name (`amount` is float).
    Pointer(String),
    /// Pointer and explicit type.
    Typed(TypedAttribute),
}

/// `{ pointer = "/p", type = "float" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedAttribute {
    /// Where the value is found.
    pub pointer: String,
    /// Its column type.
    #[serde(rename = "type", default)]
    pub kind: AttributeType,
}

/// Column type of an attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttributeType {
    #[default]
    String,
    Float,
    Bool,
}

impl AttributeSpec {
    /// The pointer text and the column type.
    pub fn resolve(&self, name: &str) -> (&str, AttributeType) {
        match self {
            AttributeSpec::Pointer(p) if name == "amount" => (p, AttributeType::Float),
            AttributeSpec::Pointer(p) => (p, AttributeType::String),
            AttributeSpec::Typed(t) => (&t.pointer, t.kind),
        }
    }
}

impl Config {
    /// Reads and parses `path`; the catalog does the cross-field checks. The
    /// config's relative paths (tables, file sinks, the state folder) are
    /// made absolute against the file's folder, so they mean the same from
    /// any working folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        let folder = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        Self::parse(&text, path, Some(folder))
    }

    /// Parses TOML text that has no file; `origin` names it in errors. Its
    /// relative paths stay as written (relative to the working folder).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        Self::parse(text, origin, None)
    }

    fn parse(text: &str, origin: &Path, folder: Option<PathBuf>) -> Result<Self> {
        let mut config: Config = toml::from_str(text).map_err(|cause| ConfigError::Parse {
            path: origin.to_owned(),
            cause: Box::new(cause),
        })?;
        config.origin = origin.to_owned();
        config.folder = folder;
        config.name_unnamed()?;
        config.validate_scalars()?;
        config.resolve_paths();
        Ok(config)
    }

    /// Gives each unnamed source and sink its kind's name, refusing two
    /// unnamed ones of one kind (nothing could tell them apart in counters,
    /// logs and `--source`).
    fn name_unnamed(&mut self) -> Result<()> {
        let origin = self.origin.clone();
        let sources = self.sources.iter_mut().map(|s| {
            let kind = if s.kind == Some(SourceKind::Kafka) {
                "kafka"
            } else {
                "events"
            };
            (&mut s.name, kind)
        });
        name_by_kind(&origin, "source", sources)?;
        let sinks = self.alert_sinks.iter_mut().map(|s| (&mut s.name, s.kind.as_str()));
        name_by_kind(&origin, "alert_sink", sinks)
    }

    /// Makes the config's relative paths absolute against its folder.
    fn resolve_paths(&mut self) {
        let Some(folder) = self.folder.clone() else {
            return;
        };
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = folder.join(&*p);
            }
        };
        self.tables.iter_mut().for_each(|t| resolve(&mut t.path));
        self.alert_sinks
            .iter_mut()
            .filter_map(|s| s.path.as_mut())
            .for_each(resolve);
        self.checkpoint.state_dir.iter_mut().for_each(resolve);
        self.sql.tls_cert.iter_mut().for_each(resolve);
        self.sql.tls_key.iter_mut().for_each(resolve);
    }

    /// The embedded default (`config/tacet.toml`).
    pub fn embedded_default() -> Self {
        Self::from_toml(EMBEDDED_DEFAULT, Path::new("<embedded config/tacet.toml>"))
            .expect("the embedded default config is valid (tested)")
    }

    /// The field mapping `tacet replay` uses: the only `[[source]]`, the one
    /// named `wanted`, or the reference defaults when there is none.
    pub fn replay_mapping(&self, wanted: Option<&str>) -> Result<(String, ParsedMapping)> {
        let source = match (wanted, self.sources.as_slice()) {
            (Some(name), sources) => sources.iter().find(|s| s.name == name).ok_or_else(|| {
                let known: Vec<_> = sources.iter().map(|s| s.name.as_str()).collect();
                ConfigError::Invalid {
                    path: self.origin.clone(),
                    key: "source".into(),
                    message: format!("no [[source]] named {name:?} (defined: {known:?})"),
                }
            })?,
            (None, []) => {
                let mapping = FieldMapping::default();
                return Ok(("events".into(), mapping.parsed(&self.origin, "events")?));
            }
            (None, [only]) => only,
            (None, sources) => {
                let known: Vec<_> = sources.iter().map(|s| s.name.as_str()).collect();
                return Err(ConfigError::Invalid {
                    path: self.origin.clone(),
                    key: "source".into(),
                    message: format!("several [[source]] tables {known:?}: pick one with --source"),
                });
            }
        };
        Ok((source.name.clone(), source.fields.parsed(&self.origin, &source.name)?))
    }

    /// The Kafka sources `tacet run` consumes, checked as one consumer:
    /// every Kafka source names brokers, topics and the same group id and
    /// brokers, and no topic belongs to two sources.
    pub fn kafka_plan(&self) -> Result<KafkaPlan> {
        if self.engine.decoders != 0 {
            // Every other [engine] and [output] setting means the same in
            // both modes; this one has nothing to set in `tacet run`.
            return Err(self.invalid(
                "engine.decoders".to_owned(),
                "applies to `tacet replay` only: `tacet run` decodes each record on the correlator thread \
                 that applies it (engine.shards); remove it or set it to 0",
            ));
        }
        let mut plan: Option<KafkaPlan> = None;
        for (i, source) in self.sources.iter().enumerate() {
            if source.kind != Some(SourceKind::Kafka) {
                continue;
            }
            let key = |field: &str| format!("source[{i}] ({}).{field}", source.name);
            let brokers = source
                .brokers
                .clone()
                .ok_or_else(|| self.invalid(key("brokers"), "a Kafka source needs brokers, e.g. \"127.0.0.1:9092\""))?;
            let group_id = source
                .group_id
                .clone()
                .ok_or_else(|| self.invalid(key("group_id"), "a Kafka source needs a consumer group id"))?;
            if source.topics.is_empty() {
                return Err(self.invalid(key("topics"), "a Kafka source needs at least one topic"));
            }
            let plan = plan.get_or_insert_with(|| KafkaPlan {
                brokers: brokers.clone(),
                group_id: group_id.clone(),
                properties: BTreeMap::new(),
                partitioning: source.partitioning,
                topics: Vec::new(),
            });
            if plan.brokers != brokers || plan.group_id != group_id {
                return Err(self.invalid(
                    key("brokers"),
                    "every Kafka source must use the same brokers and group_id (one consumer group correlates them all)",
                ));
            }
            if plan.partitioning != source.partitioning {
                return Err(self.invalid(key("partitioning"), "every Kafka source must use the same partitioning"));
            }
            for (k, v) in &source.properties {
                if k == "partition.assignment.strategy" && v.contains("cooperative") {
                    // Cooperative rebalancing hands over single partitions
                    // incrementally; tacet moves whole partition groups (partition
                    // p of every topic) on eager revoke-then-assign rebalances.
                    return Err(self.invalid(
                        key(&format!("properties.{k}")),
                        "cooperative rebalancing is not supported: tacet run moves partition p of every topic \
                         together, on eager (range) rebalances; remove this property",
                    ));
                }
                if plan
                    .properties
                    .insert(k.clone(), v.clone())
                    .is_some_and(|old| &old != v)
                {
                    return Err(self.invalid(
                        key(&format!("properties.{k}")),
                        "set differently by another Kafka source",
                    ));
                }
            }
            let mapping = source.fields.parsed(&self.origin, &source.name)?;
            for topic in &source.topics {
                if plan.topics.iter().any(|t| &t.topic == topic) {
                    return Err(self.invalid(key("topics"), format!("topic {topic:?} belongs to two sources")));
                }
                plan.topics.push(KafkaTopic {
                    topic: topic.clone(),
                    source: source.name.clone(),
                    mapping: mapping.clone(),
                });
            }
        }
        plan.ok_or_else(|| {
            self.invalid(
                "source",
                "no [[source]] with kind = \"kafka\": `tacet run` consumes Kafka (use `tacet replay` for files)",
            )
        })
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Checks that need no cross-referencing between journeys.
    fn validate_scalars(&self) -> Result<()> {
        if self.journeys.is_empty() {
            return Err(self.invalid("journey", "the config defines no [[journey]]"));
        }
        self.validate_durations()?;
        if self.engine.max_open_journeys == 0 {
            return Err(self.invalid("engine.max_open_journeys", "must be at least 1"));
        }
        if self.engine.max_decided_state_bytes < 1 << 20 {
            return Err(self.invalid("engine.max_decided_state_bytes", "must be at least 1 MiB (1048576)"));
        }
        if self.engine.max_events_per_journey == 0 {
            return Err(self.invalid("engine.max_events_per_journey", "must be at least 1"));
        }
        if self.engine.max_line_bytes < 64 {
            return Err(self.invalid("engine.max_line_bytes", "must be at least 64"));
        }
        if self.engine.max_line_bytes > MAX_LINE_BYTES_LIMIT {
            return Err(self.invalid(
                "engine.max_line_bytes",
                format!("must be at most {MAX_LINE_BYTES_LIMIT} (256 MiB)"),
            ));
        }
        if self.output.flush_rows == 0 {
            return Err(self.invalid("output.flush_rows", "must be at least 1"));
        }
        if self.output.dead_letter_max_bytes < 64 << 10 {
            return Err(self.invalid("output.dead_letter_max_bytes", "must be at least 65536"));
        }
        for (key, value) in [
            ("sql.max_connections", self.sql.max_connections),
            ("sql.max_concurrent_queries", self.sql.max_concurrent_queries),
        ] {
            if value == 0 {
                return Err(self.invalid(key, "must be at least 1"));
            }
        }
        if self.sql.query_memory_bytes < 1 << 20 {
            return Err(self.invalid("sql.query_memory_bytes", "must be at least 1 MiB (1048576)"));
        }
        if self.sql.tls_cert.is_some() != self.sql.tls_key.is_some() {
            return Err(self.invalid("sql.tls_cert", "TLS needs both `tls_cert` and `tls_key`"));
        }
        if self.sql.statement_timeout.is_zero() || self.sql.idle_timeout.is_zero() {
            return Err(self.invalid("sql", "statement_timeout and idle_timeout must be longer than 0s"));
        }
        let mut names = std::collections::HashSet::new();
        for source in &self.sources {
            if !names.insert(source.name.as_str()) {
                return Err(self.invalid("source.name", format!("{:?} is defined twice", source.name)));
            }
            source.fields.parsed(&self.origin, &source.name)?;
        }
        let mut sink_names = std::collections::HashSet::new();
        for sink in &self.alert_sinks {
            let key = |field: &str| format!("alert_sink.{}.{field}", sink.name);
            if !sink_names.insert(sink.name.as_str()) {
                return Err(self.invalid("alert_sink.name", format!("{:?} is defined twice", sink.name)));
            }
            match sink.kind {
                AlertSinkKind::File if sink.path.is_none() => {
                    return Err(self.invalid(key("path"), "a file sink needs `path`"));
                }
                AlertSinkKind::Webhook => {
                    let url = sink.url.as_deref().unwrap_or("");
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(self.invalid(key("url"), "a webhook sink needs an http:// or https:// `url`"));
                    }
                    if sink.max_attempts == 0 {
                        return Err(self.invalid(key("max_attempts"), "must be at least 1"));
                    }
                }
                AlertSinkKind::Kafka => {
                    if sink.topic.as_deref().is_none_or(str::is_empty) {
                        return Err(self.invalid(key("topic"), "a kafka sink needs `topic`"));
                    }
                    let sources_have_brokers = self
                        .sources
                        .iter()
                        .any(|s| s.kind == Some(SourceKind::Kafka) && s.brokers.is_some());
                    if sink.brokers.is_none() && !sources_have_brokers {
                        return Err(self.invalid(
                            key("brokers"),
                            "a kafka sink needs `brokers` (or a Kafka [[source]] whose brokers it can use)",
                        ));
                    }
                    if sink.max_attempts == 0 {
                        return Err(self.invalid(key("max_attempts"), "must be at least 1"));
                    }
                }
                _ => {}
            }
            if sink.queue == 0 {
                return Err(self.invalid(key("queue"), "must be at least 1"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for j in &self.journeys {
            let key = |field: &str| format!("journey.{}.{field}", j.name);
            if j.name.is_empty()
                || !j
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(self.invalid(
                    "journey.name",
                    format!(
                        "{:?}: use letters, digits, '_' or '-' (it names a partition folder)",
                        j.name
                    ),
                ));
            }
            if !names.insert(j.name.as_str()) {
                return Err(self.invalid("journey.name", format!("{:?} is defined twice", j.name)));
            }
            if j.ack_ok.is_empty() {
                return Err(self.invalid(key("ack_ok"), "needs at least one event"));
            }
            if j.complete.is_empty() {
                return Err(self.invalid(key("complete"), "needs at least one step"));
            }
            if j.complete.len() > 32 {
                return Err(self.invalid(key("complete"), "at most 32 required steps"));
            }
            if j.deadline.is_zero() {
                return Err(self.invalid(key("deadline"), "must be longer than 0s"));
            }
            if j.ack_timeout.is_zero() {
                return Err(self.invalid(key("ack_timeout"), "must be longer than 0s"));
            }
            if !(j.slo > 0.0 && j.slo < 1.0) {
                return Err(self.invalid(key("slo"), format!("{} is not between 0 and 1 (exclusive)", j.slo)));
            }
            for (attr, spec) in &j.attributes {
                let (pointer, _) = spec.resolve(attr);
                JsonPointer::parse(pointer).map_err(|cause| ConfigError::Pointer {
                    path: self.origin.clone(),
                    key: key(&format!("attributes.{attr}")),
                    cause,
                })?;
            }
        }
        Ok(())
    }

    /// Every duration at most [`MAX_CONFIG_DURATION`], so that sums of them
    /// and event times cannot overflow.
    fn validate_durations(&self) -> Result<()> {
        let e = &self.engine;
        let mut durations = vec![
            ("engine.allowed_lateness".to_owned(), e.allowed_lateness),
            ("engine.idle_timeout".to_owned(), e.idle_timeout),
            ("engine.late_horizon".to_owned(), e.late_horizon),
            ("engine.max_future_skew".to_owned(), e.max_future_skew),
            ("output.flush_interval".to_owned(), self.output.flush_interval),
            ("checkpoint.interval".to_owned(), self.checkpoint.interval),
            ("alerts.budget_period".to_owned(), self.alerts.budget_period),
            ("sql.statement_timeout".to_owned(), self.sql.statement_timeout),
            ("sql.idle_timeout".to_owned(), self.sql.idle_timeout),
        ];
        durations.extend(e.orphan_timeout.map(|d| ("engine.orphan_timeout".to_owned(), d)));
        for j in &self.journeys {
            durations.push((format!("journey.{}.deadline", j.name), j.deadline));
            durations.push((format!("journey.{}.ack_timeout", j.name), j.ack_timeout));
        }
        match durations.into_iter().find(|(_, d)| *d > MAX_CONFIG_DURATION) {
            Some((key, d)) => Err(self.invalid(
                key,
                format!(
                    "{} is longer than the longest allowed, 10 years",
                    humantime::format_duration(d)
                ),
            )),
            None => Ok(()),
        }
    }

    /// The orphan timeout in force (explicit, or the largest ack_timeout + deadline).
    pub fn orphan_timeout(&self) -> Duration {
        self.engine.orphan_timeout.unwrap_or_else(|| {
            self.journeys
                .iter()
                .map(|j| j.ack_timeout + j.deadline)
                .max()
                .unwrap_or_default()
        })
    }
}

/// Names each unnamed entry of one array of tables (`[[source]]`,
/// `[[alert_sink]]`) after its kind; two unnamed of one kind are an error
/// that names both.
fn name_by_kind<'a>(
    origin: &Path,
    table: &str,
    entries: impl Iterator<Item = (&'a mut String, &'static str)>,
) -> Result<()> {
    let mut unnamed: Vec<(usize, &'static str)> = Vec::new();
    for (i, (name, kind)) in entries.enumerate() {
        if !name.is_empty() {
            continue;
        }
        if let Some((first, _)) = unnamed.iter().find(|(_, k)| *k == kind) {
            return Err(ConfigError::Invalid {
                path: origin.to_owned(),
                key: format!("{table}.name"),
                message: format!(
                    "[[{table}]] number {} and number {} are both unnamed {kind} {table}s: give each a `name = \"...\"`",
                    first + 1,
                    i + 1
                ),
            });
        }
        unnamed.push((i, kind));
        *name = kind.to_owned();
    }
    Ok(())
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Durations written as `"2m"`, `"30s"`, `"1h 30m"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like \"30s\" or \"2m\": {e}")))
    }
}

/// Optional durations.
pub mod opt_duration {
    use std::time::Duration;

    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    const MINIMAL: &str = r#"
[[journey]]
name = "t"
start = "a"
ack_ok = ["b"]
complete = ["c"]
deadline = "2m"
ack_timeout = "30s"
slo = 0.99
"#;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default();
        assert_eq!(c.journeys.len(), 6);
        assert_eq!(c.engine.allowed_lateness, Duration::from_secs(30));
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.engine.late_horizon, Duration::from_secs(86_400));
        assert_eq!(c.orphan_timeout(), Duration::from_secs(150));
        let (name, mapping) = c.replay_mapping(None).unwrap();
        assert_eq!(name, "events");
        assert_eq!(mapping.time.tokens(), ["ts"]);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = parse(&format!("{MINIMAL}\ndeadlin = \"3m\"")).unwrap_err().to_string();
        assert!(err.contains("test.toml"), "{err}");
        assert!(err.contains("deadlin"), "{err}");
        let err = parse(&format!("[engine]\nshard = 3\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shard"), "{err}");
    }

    #[test]
    fn bad_duration_is_an_error() {
        let err = parse(&MINIMAL.replace("\"2m\"", "\"2 parsecs\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 parsecs"), "{err}");
    }

    #[test]
    fn bad_pointer_names_the_key() {
        let text = format!("{MINIMAL}\n[[source]]\nname = \"s\"\n[source.fields]\ntime = \"ts\"\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("source.s.fields.time"), "{err}");
        let text = MINIMAL.replace("slo = 0.99", "slo = 0.99\nattributes = { amount = \"/a~2\" }");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("journey.t.attributes.amount"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_errors() {
        assert!(parse(&MINIMAL.replace("0.99", "1.5")).is_err());
        assert!(parse(&MINIMAL.replace("\"2m\"", "\"0s\"")).is_err());
        assert!(parse(&MINIMAL.replace("complete = [\"c\"]", "complete = []")).is_err());
        assert!(parse("[engine]\n").is_err(), "no journeys");
    }

    #[test]
    fn durations_are_bounded_so_their_sums_cannot_overflow() {
        let err = parse(&MINIMAL.replace("\"2m\"", "\"500000000years\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("journey.t.deadline") && err.contains("10 years"), "{err}");
        let err = parse(&format!("[engine]\nmax_future_skew = \"20000years\"\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("engine.max_future_skew"), "{err}");
        let c = parse(
            &MINIMAL
                .replace("\"2m\"", "\"3650days\"")
                .replace("\"30s\"", "\"3650days\""),
        )
        .unwrap();
        assert_eq!(c.orphan_timeout(), Duration::from_secs(2 * 3650 * 86_400));
        assert_eq!(parse(MINIMAL).unwrap().engine.max_future_skew, Duration::from_secs(900));
    }

    #[test]
    fn line_limit_is_bounded_both_ways() {
        let with_limit = |bytes: usize| parse(&format!("[engine]\nmax_line_bytes = {bytes}\n{MINIMAL}"));
        assert!(with_limit(64).is_ok());
        assert!(with_limit(MAX_LINE_BYTES_LIMIT).is_ok());
        let err = with_limit(MAX_LINE_BYTES_LIMIT + 1).unwrap_err().to_string();
        assert!(
            err.contains("engine.max_line_bytes") && err.contains("at most"),
            "{err}"
        );
        assert!(with_limit(63).is_err());
    }

    #[test]
    fn event_cap_defaults_to_a_thousand_and_is_at_least_one() {
        assert_eq!(parse(MINIMAL).unwrap().engine.max_events_per_journey, 1_000);
        let with_cap = |n: usize| parse(&format!("[engine]\nmax_events_per_journey = {n}\n{MINIMAL}"));
        assert_eq!(with_cap(1).unwrap().engine.max_events_per_journey, 1);
        let err = with_cap(0).unwrap_err().to_string();
        assert!(err.contains("engine.max_events_per_journey"), "{err}");
    }

    #[test]
    fn alert_sinks_are_validated() {
        let sink = |body: &str| parse(&format!("{MINIMAL}\n[[alert_sink]]\nname = \"s\"\n{body}\n"));
        let err = sink("kind = \"kafka\"\ntopic = \"alerts\"").unwrap_err().to_string();
        assert!(err.contains("alert_sink.s.brokers"), "{err}");
        let err = sink("kind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("alert_sink.s.topic"), "{err}");
        assert!(sink("kind = \"kafka\"\ntopic = \"alerts\"\nbrokers = \"127.0.0.1:9092\"").is_ok());
        assert!(sink("kind = \"webhook\"").is_err(), "a webhook needs a url");
        assert!(sink("kind = \"file\"").is_err(), "a file sink needs a path");
        assert!(sink("kind = \"pager\"").is_err());
        let ok = sink("kind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nsecret = \"hunter2\"").unwrap();
        assert!(
            !format!("{ok:?}").contains("hunter2"),
            "secrets never reach Debug output"
        );
        let rules =
            parse(&MINIMAL.replace("slo = 0.99", "slo = 0.99\nalerts = { page_fast = { burn = 10.0 } }")).unwrap();
        assert_eq!(rules.journeys[0].alerts.page_fast.as_ref().unwrap().burn, Some(10.0));
        assert!(parse(&MINIMAL.replace("slo = 0.99", "slo = 0.99\nalerts = { page_fast = { burm = 10.0 } }")).is_err());
    }

    #[test]
    fn replay_mapping_picks_sources() {
        let text =
            format!("{MINIMAL}\n[[source]]\nname = \"a\"\n[[source]]\nname = \"b\"\n[source.fields]\ntime = \"/t\"\n");
        let c = parse(&text).unwrap();
        assert!(c.replay_mapping(None).is_err(), "ambiguous");
        assert_eq!(c.replay_mapping(Some("b")).unwrap().1.time.tokens(), ["t"]);
        assert!(c.replay_mapping(Some("zz")).is_err());
    }

    #[test]
    fn kafka_plan_joins_sources_into_one_consumer() {
        let kafka = |name: &str, topics: &str, group: &str, extra: &str| {
            format!(
                "[[source]]\nname = \"{name}\"\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ngroup_id = \"{group}\"\ntopics = {topics}\n{extra}"
            )
        };
        let text = format!(
            "{MINIMAL}\n{}\n{}",
            kafka("payments", "[\"a\", \"b\"]", "g", ""),
            kafka(
                "notify",
                "[\"c\"]",
                "g",
                "[source.fields]\ntrace_id = \"header:traceparent\"\n"
            )
        );
        let plan = parse(&text).unwrap().kafka_plan().unwrap();
        assert_eq!(plan.topics.len(), 3);
        assert_eq!(
            plan.topics[2].mapping.trace_id,
            TraceIdSource::Header("traceparent".into())
        );

        let split = format!(
            "{MINIMAL}\n{}\n{}",
            kafka("x", "[\"a\"]", "g1", ""),
            kafka("y", "[\"b\"]", "g2", "")
        );
        let err = parse(&split).unwrap().kafka_plan().unwrap_err().to_string();
        assert!(
            err.contains("source[1] (y)") && err.contains("same brokers and group_id"),
            "{err}"
        );
        let twice = format!(
            "{MINIMAL}\n{}\n{}",
            kafka("x", "[\"a\"]", "g", ""),
            kafka("y", "[\"a\"]", "g", "")
        );
        assert!(
            parse(&twice)
                .unwrap()
                .kafka_plan()
                .unwrap_err()
                .to_string()
                .contains("two sources")
        );
        assert!(
            parse(MINIMAL)
                .unwrap()
                .kafka_plan()
                .unwrap_err()
                .to_string()
                .contains("kind = \"kafka\"")
        );
        let bad_kind = format!("{MINIMAL}\n[[source]]\nname = \"z\"\nkind = \"kafak\"\n");
        assert!(parse(&bad_kind).is_err());
    }
}
