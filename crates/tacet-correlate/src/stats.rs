//! Counters kept by each shard and merged for the run summary. Counted per
//! decision and per event on the owning thread: no atomics on the hot path.

use tacet_core::Outcome;

/// Counters of one journey.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JourneyStats {
    /// Decisions by outcome, indexed by [`Outcome::index`].
    pub outcomes: [u64; 6],
    /// Sum of the money attribute over silent failures.
    pub silent_amount: f64,
    /// Sum of the money attribute over late completions.
    pub late_amount: f64,
    /// Per required-step group: how often it was missing in a silent failure.
    pub missing: Vec<u64>,
    /// Per last service: how often it was the last one seen in a silent failure.
    pub last_services: std::collections::HashMap<String, u64>,
    /// Journeys still open at the end of a finite input.
    pub in_flight: u64,
}

impl JourneyStats {
    fn merge(&mut self, other: &JourneyStats) {
        for (a, b) in self.outcomes.iter_mut().zip(other.outcomes) {
            *a += b;
        }
        self.silent_amount += other.silent_amount;
        self.late_amount += other.late_amount;
        if self.missing.len() < other.missing.len() {
            self.missing.resize(other.missing.len(), 0);
        }
        for (a, b) in self.missing.iter_mut().zip(&other.missing) {
            *a += b;
        }
        for (k, v) in &other.last_services {
            *self.last_services.entry(k.clone()).or_default() += v;
        }
        self.in_flight += other.in_flight;
    }

    /// Decisions of one outcome.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()]
    }
}

/// Counters of one shard (or, merged, of a run).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStats {
    /// Events applied (after routing; unmatched events never reach a shard).
    pub events: u64,
    /// Events ignored as duplicates of one already seen in their trace.
    pub duplicates: u64,
    /// Events that arrived for an already decided trace.
    pub late_events: u64,
    /// Events naming an opener of another journey than their trace's.
    pub conflicting_openers: u64,
    /// Journeys evicted to the dead-letter sink by `max_open_journeys` or
    /// `max_events_per_journey`.
    pub evicted: u64,
    /// Distinct services beyond the interner's cap, reported as `(other)`.
    pub services_overflow: u64,
    /// Traces open now.
    pub open: u64,
    /// Highest number of traces open at once.
    pub peak_open: u64,
    /// Tombstones held now.
    pub tombstones: u64,
    /// Tombstones forgotten before they expired, to keep decided state
    /// within `max_decided_state_bytes`.
    pub tombstones_evicted: u64,
    /// Traces with steps but neither start nor ack, open at the end.
    pub pending_in_flight: u64,
    /// Per journey, in catalog order.
    pub journeys: Vec<JourneyStats>,
}

impl ShardStats {
    pub(crate) fn new(journeys: usize, groups: impl Iterator<Item = usize>) -> Self {
        Self {
            journeys: groups
                .map(|n| JourneyStats {
                    missing: vec![0; n],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
        .with_len(journeys)
    }

    fn with_len(mut self, n: usize) -> Self {
        self.journeys.resize(n, JourneyStats::default());
        self
    }

    /// Adds `other` into `self` (gauges add too: shards are disjoint).
    pub fn merge(&mut self, other: &ShardStats) {
        self.events += other.events;
        self.duplicates += other.duplicates;
        self.late_events += other.late_events;
        self.conflicting_openers += other.conflicting_openers;
        self.evicted += other.evicted;
        self.services_overflow += other.services_overflow;
        self.open += other.open;
        self.peak_open += other.peak_open;
        self.tombstones += other.tombstones;
        self.tombstones_evicted += other.tombstones_evicted;
        self.pending_in_flight += other.pending_in_flight;
        if self.journeys.len() < other.journeys.len() {
            self.journeys.resize(other.journeys.len(), JourneyStats::default());
        }
        for (a, b) in self.journeys.iter_mut().zip(&other.journeys) {
            a.merge(b);
        }
    }

    /// Decisions of one outcome over all journeys.
    pub fn total(&self, outcome: Outcome) -> u64 {
        self.journeys.iter().map(|j| j.count(outcome)).sum()
    }
}
