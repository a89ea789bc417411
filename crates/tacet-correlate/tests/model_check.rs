//! Model-based property test: random event streams (random journeys and
//! failures, disorder within and beyond the lateness bound, duplicates, clock
//! skew, unmatched events) through the sharded engine with any shard count,
//! compared row for row with the reference model in `support/model.rs`.

mod support;

use proptest::prelude::*;
use support::model::run_model;
use support::*;

const NAMES: [&str; 11] = [
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
fn trace_events() -> impl Strategy<Value = Vec<(usize, u32, bool, u8, bool)>> {
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

fn stream() -> impl Strategy<Value = (Vec<TestEvent>, usize)> {
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
fn catalog_with(short_horizon: bool, event_cap: Option<usize>) -> std::sync::Arc<tacet_core::Catalog> {
    let mut text = if short_horizon {
        CONFIG.replace("\"1h\"", "\"3m\"")
    } else {
        CONFIG.to_owned()
    };
    if let Some(cap) = event_cap {
        text = text.replace("[engine]\n", &format!("[engine]\nmax_events_per_journey = {cap}\n"));
    }
    let c = catalog_from(&text);
    if let Some(cap) = event_cap {
        assert_eq!(c.max_events_per_journey, cap, "the cap reached the catalog");
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn sharded_engine_matches_the_model(
        (events, shards) in stream(),
        short_horizon in any::<bool>(),
        event_cap in prop::option::weighted(0.25, 2usize..6),
    ) {
        let c = catalog_with(short_horizon, event_cap);
        let engine = run_engine(&c, &events, shards);
        let model = run_model(&c, &events);
        prop_assert_eq!(&engine.rows, &model.rows);
        let in_flight: Vec<_> = engine.in_flight.iter().map(|f| f.trace_id.clone()).collect();
        prop_assert_eq!(in_flight, model.in_flight);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Slot hints taken ahead of time, stale or pointing at another journey,
    /// change nothing: `apply_hinted` checks them.
    #[test]
    fn stale_and_wrong_slot_hints_match_the_model(
        (events, shards) in stream(),
        lag in 0usize..6,
        wrong_every in 0usize..5,
        short_horizon in any::<bool>(),
        event_cap in prop::option::weighted(0.25, 2usize..6),
    ) {
        let c = catalog_with(short_horizon, event_cap);
        let engine = run_engine_hinted(&c, &events, shards, lag, wrong_every);
        let model = run_model(&c, &events);
        prop_assert_eq!(&engine.rows, &model.rows);
        let in_flight: Vec<_> = engine.in_flight.iter().map(|f| f.trace_id.clone()).collect();
        prop_assert_eq!(in_flight, model.in_flight);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Snapshot and restore at random points change nothing: the rows and the
    /// in-flight set equal the model's (no journey lost, none decided twice),
    /// also when the event cap evicts journeys and stops corrections across
    /// a restore.
    #[test]
    fn restoring_snapshots_mid_stream_matches_the_model(
        (events, shards) in stream(),
        cuts in prop::collection::vec(0usize..200, 1..4),
        short_horizon in any::<bool>(),
        event_cap in prop::option::weighted(0.25, 2usize..6),
    ) {
        let c = catalog_with(short_horizon, event_cap);
        let restarts: Vec<usize> = cuts.iter().map(|c| c % (events.len() + 1)).collect();
        let engine = run_engine_restarting(&c, &events, shards, usize::MAX, &restarts);
        let model = run_model(&c, &events);
        prop_assert_eq!(&engine.rows, &model.rows);
        let in_flight: Vec<_> = engine.in_flight.iter().map(|f| f.trace_id.clone()).collect();
        prop_assert_eq!(in_flight, model.in_flight);
    }
}

#[test]
fn a_foreign_or_truncated_snapshot_is_an_error_not_a_panic() {
    let c = catalog();
    let sink = Collect {
        rows: Default::default(),
        catalog: c.clone(),
    };
    let mut shard = tacet_correlate::Shard::new(c.clone(), usize::MAX, sink.clone());
    for e in [
        ev("a", "t.req", 1.0).amount(5.0),
        ev("a", "t.ok", 2.0),
        ev("order-9", "sms", 3.0),
    ] {
        with_event(&c, &e, |event| shard.apply(event));
    }
    let mut bytes = Vec::new();
    shard.write_snapshot(&mut bytes);
    for cut in 0..bytes.len() {
        assert!(tacet_correlate::Shard::restore(c.clone(), usize::MAX, sink.clone(), &bytes[..cut]).is_err());
    }
    assert!(tacet_correlate::Shard::restore(c.clone(), usize::MAX, sink.clone(), b"nonsense").is_err());
    let restored = tacet_correlate::Shard::restore(c.clone(), usize::MAX, sink, &bytes).unwrap();
    assert_eq!(restored.open_traces(), 2);
}

/// Service names are input: their bytes per shard are capped (beyond the
/// cap a new name reads `(other)` and is counted), and a restored shard
/// counts the names it restored against the cap.
#[test]
fn service_name_bytes_are_capped_across_a_restore() {
    let c = catalog();
    let sink = Collect {
        rows: Default::default(),
        catalog: c.clone(),
    };
    let mut shard = tacet_correlate::Shard::new(c.clone(), usize::MAX, sink.clone());
    let mib = tacet_correlate::SERVICE_BYTES_CAP >> 6;
    // 63 of the 64 MiB the cap allows.
    for i in 0..63 {
        let name = format!("{i:02}{}", "s".repeat(mib - 2));
        with_event(&c, &ev(&format!("t{i}"), "t.req", 1.0).service(&name), |event| {
            shard.apply(event)
        });
    }
    assert_eq!(shard.stats().services_overflow, 0);
    let mut bytes = Vec::new();
    shard.write_snapshot(&mut bytes);
    let mut restored = tacet_correlate::Shard::restore(c.clone(), usize::MAX, sink, &bytes).unwrap();
    // Two more MiB do not fit, before the restore or after it.
    let big = "b".repeat(2 * mib);
    for s in [&mut shard, &mut restored] {
        with_event(&c, &ev("late", "t.req", 2.0).service(&big), |event| s.apply(event));
        assert_eq!(s.stats().services_overflow, 1);
    }
}

#[test]
fn model_agrees_on_a_hand_written_stream() {
    let c = catalog();
    let events = vec![
        ev("a", "t.req", 0.0),
        ev("a", "t.ok", 1.0),
        ev("a", "ledger", 2.0),
        ev("b", "b.req", 3.0),
        ev("a", "push", 4.0),
        ev("c", "ledger", 5.0),
        ev("z", "t.req", 900.0),
    ];
    let engine = run_engine(&c, &events, 3);
    let model = run_model(&c, &events);
    assert_eq!(engine.rows, model.rows);
    assert_eq!(engine.rows.len(), 3, "{:#?}", engine.rows);
}
