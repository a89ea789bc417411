//! Model-based property test: random event streams (random journeys and
//! failures, disorder within and beyond the lateness bound, duplicates, clock
//! skew, unmatched events) through the sharded engine with any shard count,
//! compared row for row with the reference model in `support/model.rs`.

mod support;

use proptest::prelude::*;
use support::model::run_model;
use support::streams::{catalog_with, stream};
use support::*;

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
