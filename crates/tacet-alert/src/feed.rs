//! Turns outcome records into alert notes, inside each shard.

use std::sync::Arc;

use tacet_core::outcome::OutcomeSink;
use tacet_core::{AttrValue, Catalog, Outcome, OutcomeRecord};

use crate::window::Note;

/// An [`OutcomeSink`] that keeps a compact [`Note`] per decision, to be handed
/// to the alert engine with the shard's watermark after each batch.
pub struct AlertFeed {
    notes: Vec<Note>,
    /// Catalog column of the synthetic marker attribute, if any journey maps it.
    synthetic_column: Option<usize>,
    catalog: Arc<Catalog>,
}

impl AlertFeed {
    /// A feed for `catalog`; `synthetic_attribute` names the marker attribute.
    pub fn new(catalog: Arc<Catalog>, synthetic_attribute: &str) -> Self {
        let synthetic_column = catalog.columns().iter().position(|c| c.name == synthetic_attribute);
        Self {
            notes: Vec::new(),
            synthetic_column,
            catalog,
        }
    }

    /// The notes since the last call.
    ///
    /// The notes after them get room for as many at once: grown by
    /// doubling, each batch was copied and faulted in at every step.
    pub fn take(&mut self) -> Vec<Note> {
        let room = self.notes.len();
        std::mem::replace(&mut self.notes, Vec::with_capacity(room))
    }
}

fn truthy(v: Option<AttrValue<'_>>) -> bool {
    match v {
        Some(AttrValue::Bool(b)) => b,
        Some(AttrValue::Str(s)) => s.eq_ignore_ascii_case("true") || s == "1",
        Some(AttrValue::Num(n)) => n != 0.0,
        None => false,
    }
}

impl OutcomeSink for AlertFeed {
    fn emit(&mut self, r: &OutcomeRecord<'_>) {
        let spec = self.catalog.journey(r.journey);
        let amount = spec
            .money_column
            .and_then(|c| r.attributes.get(c).copied().flatten()?.as_number())
            .unwrap_or(0.0);
        let bad = matches!(r.outcome, Outcome::SilentFailure | Outcome::Stalled);
        self.notes.push(Note {
            journey: r.journey,
            outcome: r.outcome,
            decided_at: r.decided_at,
            amount,
            missing: r.missing_groups,
            last_service: r.last_service.filter(|_| bad).map(Into::into),
            trace_id: bad.then(|| r.trace_id.into()),
            synthetic: self
                .synthetic_column
                .is_some_and(|c| truthy(r.attributes.get(c).copied().flatten())),
        });
    }
}

#[cfg(test)]
mod tests {
    use tacet_core::config::Config;

    use super::*;

    /// The notes after a take get room for as many as it took.
    #[test]
    fn notes_after_a_take_have_room_for_as_many() {
        let catalog = Arc::new(Catalog::new(&Config::embedded_default()).unwrap());
        let mut feed = AlertFeed::new(catalog, "synthetic");
        let record = OutcomeRecord {
            trace_id: "0af7651916cd43dd8448eb211c80319c",
            journey: 0,
            outcome: Outcome::SilentFailure,
            started_at: None,
            acked_at: None,
            completed_at: None,
            deadline_at: None,
            decided_at: 1_795_342_503_000,
            latency_ms: None,
            missing_steps: &[],
            missing_groups: 1,
            failed_steps: &[],
            last_step: None,
            last_service: Some("gw"),
            services: &["gw"],
            n_events: 1,
            n_duplicates: 0,
            attributes: &[],
        };
        for _ in 0..100 {
            feed.emit(&record);
        }
        let notes = feed.take();
        assert_eq!(notes.len(), 100);
        assert_eq!(notes[0].trace_id.as_deref(), Some(record.trace_id));
        assert!(feed.notes.is_empty() && feed.notes.capacity() >= 100);
    }
}
