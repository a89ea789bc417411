//! `max_decided_state_bytes`: what decided journeys leave behind (tombstones,
//! silent failures kept for their correction) stays within its byte budget;
//! past it the earliest to expire are forgotten and counted, and the silent
//! failures among them dead-lettered, never dropped silently.

mod support;

use std::sync::{Arc, Mutex};

use support::*;
use tacet_core::Outcome;
use tacet_correlate::{EvictReason, Shard};

/// `n` transfers from second `from` on, each acked; every third is a silent
/// failure (its ledger step never comes), the others complete.
fn transfers(from: f64, n: usize) -> Vec<TestEvent> {
    let mut events = Vec::new();
    for i in 0..n {
        let t = from + i as f64 * 0.1;
        let id = format!("tr-{i:06}-{}", "x".repeat(40));
        events.push(ev(&id, "t.req", t));
        events.push(ev(&id, "t.ok", t + 1.0));
        if i % 3 != 0 {
            events.push(ev(&id, "ledger", t + 2.0));
        }
        events.push(ev(&id, "sms", t + 2.5));
    }
    events
}

fn shard(budget: usize) -> (Shard<Collect>, Arc<Mutex<Vec<tacet_core::OutcomeRow>>>) {
    let catalog = catalog();
    let rows = Arc::new(Mutex::new(Vec::new()));
    let sink = Collect {
        rows: rows.clone(),
        catalog: catalog.clone(),
    };
    (Shard::new(catalog, usize::MAX, sink).with_decided_budget(budget), rows)
}

fn apply_all(shard: &mut Shard<Collect>, events: &[TestEvent]) {
    let catalog = shard.catalog().clone();
    for e in events {
        shard.advance(e.time - 10_000);
        with_event(&catalog, e, |event| shard.apply(event));
    }
}

#[test]
fn decided_state_stays_within_its_budget_and_every_eviction_is_counted() {
    let budget = 256 << 10;
    let (mut s, rows) = shard(budget);
    let events = transfers(0.0, 6000);
    apply_all(&mut s, &events);
    // Decide everything still open: 30 minutes on, within the 1h late horizon.
    s.advance(events.last().unwrap().time + 30 * 60_000);
    assert!(
        s.decided_state_bytes() <= budget,
        "{} bytes over a budget of {budget}",
        s.decided_state_bytes()
    );
    let stats = s.stats();
    let rows = rows.lock().unwrap();
    let silent = rows.iter().filter(|r| r.outcome == Outcome::SilentFailure).count();
    assert_eq!(rows.len(), 6000, "every journey is still decided");
    assert_eq!(silent, 2000);
    assert!(stats.tombstones_evicted > 3000, "{stats:?}");
    assert_eq!(stats.tombstones as usize + stats.tombstones_evicted as usize, 6000);
    let evicted = s.take_evicted();
    assert!(!evicted.is_empty());
    assert!(evicted.iter().all(|e| e.reason == EvictReason::DecidedStateLimit));
    assert_eq!(
        stats.evicted,
        evicted.len() as u64,
        "each dead-lettered silent failure is counted"
    );
    // The earliest to expire went first: the newest silent failures are kept.
    let last_silent = format!("tr-{:06}-{}", 5997, "x".repeat(40));
    assert!(evicted.iter().all(|e| e.trace_id != last_silent));
}

#[test]
fn a_kept_silent_failure_is_still_corrected_and_an_unbounded_budget_forgets_nothing() {
    let (mut s, rows) = shard(usize::MAX);
    let events = transfers(0.0, 300);
    apply_all(&mut s, &events);
    let later = events.last().unwrap().time + 10 * 60_000;
    s.advance(later);
    // The ledger step of the last silent failure (index 297) arrives late.
    let id = format!("tr-{:06}-{}", 297, "x".repeat(40));
    let late = ev(&id, "ledger", later as f64 / 1000.0 + 1.0);
    let catalog = s.catalog().clone();
    with_event(&catalog, &late, |event| s.apply(event));
    let rows = rows.lock().unwrap();
    assert!(
        rows.iter()
            .any(|r| r.trace_id == id && r.outcome == Outcome::LateCompletion)
    );
    let stats = s.stats();
    assert_eq!((stats.tombstones_evicted, stats.evicted), (0, 0));
    assert_eq!(stats.tombstones, 300);
}
