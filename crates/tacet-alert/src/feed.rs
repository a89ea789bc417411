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
    pub fn take(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
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
            .and_then(|c| match r.attributes.get(c).copied().flatten() {
                Some(AttrValue::Num(n)) => Some(n),
                Some(AttrValue::Str(s)) => s.trim().parse().ok(),
                _ => None,
            })
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
