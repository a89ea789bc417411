//! What a run did: counters, per-journey figures, and the summary JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tacet_core::{Catalog, EventTime, Outcome};
use tacet_correlate::{InFlight, ShardStats};
use tacet_ingest::{DecodeError, DecodeStats};
use tacet_store::WriterStats;

/// What only a source that checkpoints (`tacet run`) counts; zero for a replay.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SourceFigures {
    /// Checkpoint rounds completed.
    pub checkpoints: u64,
    /// Outcome files of unfinished checkpoints that recovery discarded.
    pub discarded_files: u64,
    /// Records the repartitioner wrote twice (it crashed between writing
    /// them and committing its source offsets), recognised and skipped.
    pub repartition_duplicates: u64,
    /// Errors retried, by kind (Kafka client, poll, commit, outcome write).
    pub retried_errors: BTreeMap<String, u64>,
    /// Co-partitioned Kafka: sampled trace ids seen on two partitions.
    pub misrouted_traces: u64,
}

/// Everything a finished run counted: `tacet replay` and `tacet run` alike.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub decode: DecodeStats,
    pub correlate: ShardStats,
    pub writer: WriterStats,
    /// Journeys still open at the end of input (their deadline is ahead).
    pub in_flight: Vec<InFlight>,
    /// Records written to the dead-letter file.
    pub dead_letters: u64,
    /// The dead-letter file's rotations and pauses on a full disk.
    pub dead_letter_file: tacet_ingest::deadletter::DeadLetterStats,
    /// The final watermark: the largest event time seen.
    pub max_event_time: Option<EventTime>,
    pub elapsed: Duration,
    /// The time spent on input: a replay's whole run; for `tacet run`, from
    /// the first record polled until the last one was applied (without
    /// group joins and idle waits). Rates are over this.
    pub active: Duration,
    /// Correlator threads (replay shards; `tacet run`'s threads that own
    /// partition groups).
    pub shards: usize,
    pub decoders: usize,
    /// Incidents opened, updated and resolved.
    pub alerts: tacet_alert::AlertStats,
    /// Per alert sink: delivered, retried, failed, dropped.
    pub sinks: Vec<tacet_alert::sink::SinkStats>,
    /// Error budget left and burn rates per journey at the end.
    pub gauges: Vec<tacet_alert::JourneyGauges>,
    pub source: SourceFigures,
}

/// Figures for one journey.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JourneySummary {
    pub journey: String,
    /// Journeys decided (late_completion corrections are not counted again).
    pub decided: u64,
    pub completed: u64,
    pub silent_failure: u64,
    pub failed: u64,
    pub stalled: u64,
    pub orphan: u64,
    pub late_completion: u64,
    /// silent_failure ÷ (completed + silent_failure): of the customers told
    /// "success", the share for whom it did not happen in time.
    pub silent_rate: f64,
    /// Money in silent failures not (yet) completed late.
    pub money_at_risk: f64,
    pub top_missing_step: Option<String>,
    pub top_missing_count: u64,
    pub top_last_service: Option<String>,
    pub in_flight: u64,
    /// Share of the error budget left at the end (negative: overspent).
    pub error_budget_left: f64,
}

/// The run summary, printed as a table and written as JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    pub records: u64,
    pub bytes: u64,
    pub events: u64,
    pub unmatched: u64,
    pub duplicates: u64,
    pub late_events: u64,
    pub decode_errors: BTreeMap<String, u64>,
    pub dead_letters: u64,
    /// Rotations at `[output] dead_letter_max_bytes`, rotated files
    /// deleted, and pauses on a full disk.
    pub dead_letter_file: tacet_ingest::deadletter::DeadLetterStats,
    pub evicted: u64,
    /// Tombstones forgotten early to keep decided state within
    /// `engine.max_decided_state_bytes` (the silent failures among them are
    /// in `evicted`, dead-lettered).
    pub tombstones_evicted: u64,
    /// Service names past a shard's cap, reported as `(other)`.
    pub services_overflow: u64,
    pub outcome_rows: u64,
    pub outcome_files: u64,
    pub write_errors: u64,
    pub in_flight: u64,
    pub pending_in_flight: u64,
    pub peak_open_journeys: u64,
    pub final_watermark: Option<String>,
    pub shards: usize,
    pub decoders: usize,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub mb_per_s: f64,
    pub journeys: Vec<JourneySummary>,
    pub incidents: tacet_alert::AlertStats,
    pub alert_sinks: Vec<tacet_alert::sink::SinkStats>,
    /// Checkpoints, recovery and retries (`tacet run`; zero for a replay).
    #[serde(flatten)]
    pub source: SourceFigures,
}

impl RunReport {
    /// Per-journey figures and run totals.
    pub fn summary(&self, catalog: &Catalog) -> RunSummary {
        let secs = self.active.as_secs_f64().max(1e-9);
        let journeys = catalog
            .journeys()
            .iter()
            .zip(&self.correlate.journeys)
            .map(|(spec, js)| {
                let n = |o: Outcome| js.count(o);
                let decided = Outcome::ALL
                    .iter()
                    .filter(|&&o| o != Outcome::LateCompletion)
                    .map(|&o| n(o))
                    .sum();
                let told_success = n(Outcome::Completed) + n(Outcome::SilentFailure);
                let top_missing = js
                    .missing
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)));
                let top_service = js
                    .last_services
                    .iter()
                    .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                    .map(|(s, _)| s.clone());
                JourneySummary {
                    journey: spec.name.clone(),
                    decided,
                    completed: n(Outcome::Completed),
                    silent_failure: n(Outcome::SilentFailure),
                    failed: n(Outcome::Failed),
                    stalled: n(Outcome::Stalled),
                    orphan: n(Outcome::Orphan),
                    late_completion: n(Outcome::LateCompletion),
                    silent_rate: if told_success == 0 {
                        0.0
                    } else {
                        n(Outcome::SilentFailure) as f64 / told_success as f64
                    },
                    money_at_risk: (js.silent_amount - js.late_amount).max(0.0),
                    top_missing_step: top_missing.map(|(i, _)| spec.groups[i].clone()),
                    top_missing_count: top_missing.map_or(0, |(_, c)| *c),
                    top_last_service: top_service,
                    in_flight: js.in_flight,
                    error_budget_left: self.gauges.get(spec.id as usize).map_or(1.0, |g| g.error_budget_left),
                }
            })
            .collect();
        RunSummary {
            records: self.decode.records,
            bytes: self.decode.bytes,
            events: self.decode.events,
            unmatched: self.decode.unmatched,
            duplicates: self.correlate.duplicates,
            late_events: self.correlate.late_events,
            decode_errors: DecodeError::ALL
                .iter()
                .map(|e| (e.as_str().to_owned(), self.decode.errors[e.index()]))
                .filter(|(_, n)| *n > 0)
                .collect(),
            dead_letters: self.dead_letters,
            dead_letter_file: self.dead_letter_file,
            evicted: self.correlate.evicted,
            tombstones_evicted: self.correlate.tombstones_evicted,
            services_overflow: self.correlate.services_overflow,
            outcome_rows: self.writer.rows,
            outcome_files: self.writer.files,
            write_errors: self.writer.errors,
            in_flight: self.in_flight.len() as u64,
            pending_in_flight: self.correlate.pending_in_flight,
            peak_open_journeys: self.correlate.peak_open,
            final_watermark: self.max_event_time.and_then(rfc3339),
            shards: self.shards,
            decoders: self.decoders,
            elapsed_s: self.elapsed.as_secs_f64(),
            events_per_s: self.decode.records as f64 / secs,
            mb_per_s: self.decode.bytes as f64 / 1e6 / secs,
            journeys,
            incidents: self.alerts.clone(),
            alert_sinks: self.sinks.clone(),
            source: self.source.clone(),
        }
    }
}

/// Epoch milliseconds as RFC 3339 (UTC).
pub fn rfc3339(ms: EventTime) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_of_epoch_ms() {
        assert_eq!(super::rfc3339(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_795_342_503_123).unwrap(), "2026-11-22T10:15:03.123Z");
        assert_eq!(super::rfc3339(951_782_400_000).unwrap(), "2000-02-29T00:00:00.000Z");
    }
}
