//! Random event streams for the model-based tests: random journeys and
//! failures, disorder within and beyond the lateness bound, duplicates,
//! clock skew and unmatched events, with a shard count to run them on.
//! Shared by `tacet-correlate`'s model check (the shard driven directly) and
//! `tacet-kafka`'s (replay and the Kafka source, end to end).

use proptest::prelude::*;

use super::{CONFIG, TestEvent, catalog_from, ev};

pub const NAMES: [&str; 11] = [
    "t.req",
    "t.ok",
    "t.no",
    "ledger",
    "sms",
    "push",
    "b.req",
    "b.ok",
    "biller",
    "heartbeat",
    "ledger",
];

/// One trace's events: a random subset of a journey's steps, random status,
/// times spread over a few minutes (so deadlines, stalls and orphans all happen).
pub fn trace_events() -> impl Strategy<Value = Vec<(usize, u32, bool, u8, bool)>> {
    // (name index, offset in 100ms, ok, service, has id)
    prop::collection::vec(
        (
            0..NAMES.len(),
            0u32..4000,
            prop::bool::weighted(0.85),
            0u8..3,
            any::<bool>(),
        ),
        1..7,
    )
}

pub fn stream() -> impl Strategy<Value = (Vec<TestEvent>, usize)> {
    (
        prop::collection::vec((trace_events(), 0u32..20_000, 0u8..4), 1..40),
        // arrival jitter (100ms units) and duplicate picks
        prop::collection::vec((0u32..250, 0usize..1000), 0..8),
        1usize..6,
    )
        .prop_map(|(traces, dups, shards)| {
            let mut events = Vec::new();
            for (i, (steps, base, variant)) in traces.into_iter().enumerate() {
                let trace = if variant == 0 {
                    format!("order-{i}")
                } else {
                    format!("{:032x}", i as u128 * 7919 + 1)
                };
                for (n, off, ok, service, has_id) in steps {
                    let time = (base as i64 + off as i64) * 100;
                    let mut e = ev(&trace, NAMES[n], 0.0);
                    e.time = time;
                    e.ok = ok;
                    e.service = ["gw", "core", ""][service as usize].to_string();
                    if has_id {
                        e.event_id = Some(format!("{trace}/{n}/{off}"));
                    }
                    if NAMES[n].ends_with(".req") || off % 3 == 0 {
                        e.amount = Some(off as f64 / 4.0);
                    }
                    events.push(e);
                }
            }
            // Arrival order: by event time plus a jitter of up to 25s, which is
            // beyond the 10s lateness for some events (they arrive late).
            let mut keyed: Vec<_> = events
                .into_iter()
                .enumerate()
                .map(|(i, e)| ((e.time + ((i as i64 * 7_919) % 25_000)), i, e))
                .collect();
            keyed.sort_by_key(|(k, i, _)| (*k, *i));
            let mut arrival: Vec<TestEvent> = keyed.into_iter().map(|(_, _, e)| e).collect();
            for (jitter, pick) in dups {
                if arrival.is_empty() {
                    break;
                }
                let dup = arrival[pick % arrival.len()].clone();
                let at = (pick % arrival.len() + jitter as usize).min(arrival.len());
                arrival.insert(at, dup);
            }
            (arrival, shards)
        })
}

/// The test catalog. A short horizon makes tombstones expire inside the
/// stream, so that re-opened traces and expired corrections are exercised
/// too. A small event cap (traces have up to 6 events and duplicates)
/// evicts open journeys and stops corrections of silent failures.
pub fn catalog_with(short_horizon: bool, event_cap: Option<usize>) -> std::sync::Arc<tacet_core::Catalog> {
    let c = catalog_from(&config_with(short_horizon, event_cap));
    if let Some(cap) = event_cap {
        assert_eq!(c.max_events_per_journey, cap, "the cap reached the catalog");
    }
    c
}

/// The text of the test config ([`CONFIG`]) with a 3-minute late horizon
/// (`short_horizon`) and an `event_cap`, as [`catalog_with`] compiles it.
pub fn config_with(short_horizon: bool, event_cap: Option<usize>) -> String {
    let mut text = if short_horizon {
        CONFIG.replace("\"1h\"", "\"3m\"")
    } else {
        CONFIG.to_owned()
    };
    if let Some(cap) = event_cap {
        text = text.replace("[engine]\n", &format!("[engine]\nmax_events_per_journey = {cap}\n"));
    }
    text
}
