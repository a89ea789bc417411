//! The six outcomes of SPEC §3 and the row each decision produces.

use serde::Serialize;

use crate::catalog::{Catalog, JourneyId};
use crate::event::{AttrValue, EventTime};

/// How a journey ended (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    SilentFailure,
    Failed,
    Stalled,
    LateCompletion,
    Orphan,
}

impl Outcome {
    /// Every outcome, in the order reports list them.
    pub const ALL: [Outcome; 6] = [
        Outcome::Completed,
        Outcome::SilentFailure,
        Outcome::Failed,
        Outcome::Stalled,
        Outcome::LateCompletion,
        Outcome::Orphan,
    ];

    /// The name used in Parquet, SQL and truth files.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::SilentFailure => "silent_failure",
            Outcome::Failed => "failed",
            Outcome::Stalled => "stalled",
            Outcome::LateCompletion => "late_completion",
            Outcome::Orphan => "orphan",
        }
    }

    /// Parses [`Outcome::as_str`].
    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// Position in [`Outcome::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most bytes of distinct service names a correlator shard keeps (64
/// MiB); a new name past it reads `(other)`, counted as a services
/// overflow. Service names are input: this bounds the shard's memory and
/// the `services` list of any one [`OutcomeRecord`].
pub const SERVICE_NAME_BYTES_CAP: usize = 64 << 20;

/// One decision, borrowed from the shard that made it. Sinks copy what they keep.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeRecord<'a> {
    pub trace_id: &'a str,
    pub journey: JourneyId,
    pub outcome: Outcome,
    pub started_at: Option<EventTime>,
    pub acked_at: Option<EventTime>,
    pub completed_at: Option<EventTime>,
    pub deadline_at: Option<EventTime>,
    pub decided_at: EventTime,
    pub latency_ms: Option<i64>,
    /// Required steps not satisfied (for `late_completion`: the steps that were
    /// missing at the original decision and arrived late).
    pub missing_steps: &'a [&'a str],
    /// The same as a bitmask over the journey's required-step groups.
    pub missing_groups: u32,
    /// Steps seen with status error (even if a retry later succeeded).
    pub failed_steps: &'a [&'a str],
    pub last_step: Option<&'a str>,
    pub last_service: Option<&'a str>,
    pub services: &'a [&'a str],
    pub n_events: u32,
    pub n_duplicates: u32,
    /// One entry per catalog attribute column ([`Catalog::columns`]).
    pub attributes: &'a [Option<AttrValue<'a>>],
}

/// Receives decisions. Each shard owns one, so implementations need no locking.
pub trait OutcomeSink: Send {
    /// Takes one decided row.
    fn emit(&mut self, record: &OutcomeRecord<'_>);
}

/// Hands every record to two sinks (e.g. the Parquet writer and the alerts).
pub struct Tee<A, B>(pub A, pub B);

impl<A: OutcomeSink, B: OutcomeSink> OutcomeSink for Tee<A, B> {
    fn emit(&mut self, record: &OutcomeRecord<'_>) {
        self.0.emit(record);
        self.1.emit(record);
    }
}

/// An owned, comparable outcome row: for tests, truth files and summaries.
#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize)]
pub struct OutcomeRow {
    pub trace_id: String,
    pub journey: String,
    pub outcome: Outcome,
    pub started_at: Option<EventTime>,
    pub acked_at: Option<EventTime>,
    pub completed_at: Option<EventTime>,
    pub deadline_at: Option<EventTime>,
    pub decided_at: EventTime,
    pub latency_ms: Option<i64>,
    pub missing_steps: Vec<String>,
    pub failed_steps: Vec<String>,
    pub last_step: Option<String>,
    pub last_service: Option<String>,
    pub services: Vec<String>,
    pub n_events: u32,
    pub n_duplicates: u32,
    pub attributes: Vec<(String, String)>,
}

impl OutcomeRecord<'_> {
    /// Copies the record into an owned row.
    pub fn to_row(&self, catalog: &Catalog) -> OutcomeRow {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        OutcomeRow {
            trace_id: self.trace_id.to_owned(),
            journey: catalog.journey(self.journey).name.clone(),
            outcome: self.outcome,
            started_at: self.started_at,
            acked_at: self.acked_at,
            completed_at: self.completed_at,
            deadline_at: self.deadline_at,
            decided_at: self.decided_at,
            latency_ms: self.latency_ms,
            missing_steps: strings(self.missing_steps),
            failed_steps: strings(self.failed_steps),
            last_step: self.last_step.map(str::to_owned),
            last_service: self.last_service.map(str::to_owned),
            services: strings(self.services),
            n_events: self.n_events,
            n_duplicates: self.n_duplicates,
            attributes: catalog
                .columns()
                .iter()
                .zip(self.attributes)
                .filter_map(|(col, v)| {
                    v.map(|v| {
                        let text = match v {
                            AttrValue::Str(s) => s.to_owned(),
                            AttrValue::Num(n) => n.to_string(),
                            AttrValue::Bool(b) => b.to_string(),
                        };
                        (col.name.clone(), text)
                    })
                })
                .collect(),
        }
    }
}
