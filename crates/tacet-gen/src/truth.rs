//! The ground-truth file and the comparison of outcomes against it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use tacet_core::{Outcome, OutcomeRow};

/// The outcome label for a journey still open at the end of input.
pub const IN_FLIGHT: &str = "in_flight";

/// One line of `truth.ndjson`: a row the engine must write (or `in_flight`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TruthRow {
    pub trace_id: String,
    pub journey: String,
    /// One of the six outcomes, or `in_flight`.
    pub outcome: String,
}

/// Precision and recall of one outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutcomeScore {
    pub expected: u64,
    pub actual: u64,
    pub true_positives: u64,
    pub precision: f64,
    pub recall: f64,
}

/// Scores per outcome (and `in_flight`), plus the rows that disagree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub outcomes: BTreeMap<String, OutcomeScore>,
    /// Up to 20 expected rows that were not produced.
    pub missing_examples: Vec<TruthRow>,
    /// Up to 20 produced rows that were not expected.
    pub unexpected_examples: Vec<TruthRow>,
    /// Rows produced more than once (a journey decided twice).
    pub duplicated_rows: u64,
}

impl VerifyReport {
    /// Precision and recall are 1.0 for every outcome and nothing is duplicated.
    pub fn is_exact(&self) -> bool {
        self.duplicated_rows == 0
            && self
                .outcomes
                .values()
                .all(|s| s.expected == s.true_positives && s.actual == s.true_positives)
    }
}

/// Compares the engine's rows and in-flight traces with the truth.
pub fn compare(truth: &[TruthRow], rows: &[OutcomeRow], in_flight: &[(String, String)]) -> VerifyReport {
    let mut actual: Vec<TruthRow> = rows
        .iter()
        .map(|r| TruthRow {
            trace_id: r.trace_id.clone(),
            journey: r.journey.clone(),
            outcome: r.outcome.as_str().to_owned(),
        })
        .collect();
    actual.extend(in_flight.iter().map(|(t, j)| TruthRow {
        trace_id: t.clone(),
        journey: j.clone(),
        outcome: IN_FLIGHT.to_owned(),
    }));
    let mut counts: HashMap<&TruthRow, u64> = HashMap::new();
    for a in &actual {
        *counts.entry(a).or_default() += 1;
    }
    let duplicated_rows = counts.values().map(|c| c - 1).sum();
    let expected: HashSet<&TruthRow> = truth.iter().collect();
    let produced: HashSet<&TruthRow> = actual.iter().collect();
    let mut report = VerifyReport {
        duplicated_rows,
        ..Default::default()
    };
    let labels = Outcome::ALL.iter().map(|o| o.as_str()).chain([IN_FLIGHT]);
    for label in labels {
        let e: HashSet<_> = expected.iter().filter(|r| r.outcome == label).collect();
        let a: HashSet<_> = produced.iter().filter(|r| r.outcome == label).collect();
        let tp = e.intersection(&a).count() as u64;
        let ratio = |n: u64, d: usize| if d == 0 { 1.0 } else { n as f64 / d as f64 };
        report.outcomes.insert(
            label.to_owned(),
            OutcomeScore {
                expected: e.len() as u64,
                actual: a.len() as u64,
                true_positives: tp,
                precision: ratio(tp, a.len()),
                recall: ratio(tp, e.len()),
            },
        );
    }
    let mut missing: Vec<_> = expected.difference(&produced).map(|r| (*r).clone()).collect();
    let mut unexpected: Vec<_> = produced.difference(&expected).map(|r| (*r).clone()).collect();
    missing.sort();
    unexpected.sort();
    missing.truncate(20);
    unexpected.truncate(20);
    report.missing_examples = missing;
    report.unexpected_examples = unexpected;
    report
}
