//! One focused test per rule of SPEC §3 and §4. Times are in seconds; the test
//! config has lateness 10s, transfer deadline 2m / ack_timeout 30s, bill
//! deadline 5m / ack_timeout 1m, late_horizon 1h, so orphan_timeout = 6m.

mod support;

use support::*;
use tacet_core::Outcome;

fn pairs(run: &Run) -> Vec<(&str, Outcome)> {
    run.rows.iter().map(|r| (r.trace_id.as_str(), r.outcome)).collect()
}

/// A trailing event on another trace that moves event time far ahead.
fn tick(secs: f64) -> TestEvent {
    ev("clock", "t.req", secs).service("clock")
}

fn only(run: &Run, trace: &str) -> tacet_core::OutcomeRow {
    let rows: Vec<_> = run.rows.iter().filter(|r| r.trace_id == trace).collect();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    rows[0].clone()
}

#[test]
fn completed_when_every_step_is_in_by_the_deadline() {
    let c = catalog();
    let run = run_engine(
        &c,
        &[
            ev("a", "t.req", 0.0).amount(250.0),
            ev("a", "t.ok", 1.0).service("gw"),
            ev("a", "ledger", 5.0).service("core"),
            ev("a", "sms", 7.0).service("notify"),
        ],
        1,
    );
    let r = only(&run, "a");
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(
        (r.started_at, r.acked_at, r.completed_at),
        (Some(0), Some(1000), Some(7000))
    );
    assert_eq!(
        (r.deadline_at, r.decided_at, r.latency_ms),
        (Some(121_000), 7000, Some(7000))
    );
    assert_eq!(r.services, ["core", "gw", "notify", "svc"]);
    assert_eq!(
        (r.last_step.as_deref(), r.last_service.as_deref()),
        (Some("sms"), Some("notify"))
    );
    assert_eq!(r.n_events, 4);
    assert_eq!(r.attributes, [("amount".to_string(), "250".to_string())]);
    assert!(
        run.in_flight.is_empty(),
        "completed is decided without waiting for the deadline"
    );
}

#[test]
fn deadline_boundary_is_inclusive_to_the_millisecond() {
    let c = catalog();
    let on_time = [
        ev("a", "t.req", 0.0),
        ev("a", "t.ok", 1.0),
        ev("a", "sms", 2.0),
        ev("a", "ledger", 121.0),
    ];
    let run = run_engine(&c, &on_time, 1);
    assert_eq!(pairs(&run), [("a", Outcome::Completed)]);

    let mut late = on_time.to_vec();
    late[3].time += 1; // 121.001s: one millisecond past ack + deadline
    late.push(tick(1000.0));
    let run = run_engine(&c, &late, 1);
    let a: Vec<_> = pairs(&run).into_iter().filter(|p| p.0 == "a").collect();
    assert_eq!(a, [("a", Outcome::SilentFailure), ("a", Outcome::LateCompletion)]);
    let silent = &run.rows.iter().find(|r| r.outcome == Outcome::SilentFailure).unwrap();
    assert_eq!(silent.missing_steps, ["ledger"]);
    assert_eq!(silent.decided_at, 121_000);
}

#[test]
fn silent_failure_waits_for_the_watermark_to_pass_the_deadline() {
    let c = catalog();
    let sink = Collect {
        rows: Default::default(),
        catalog: c.clone(),
    };
    let mut shard = tacet_correlate::Shard::new(c.clone(), usize::MAX, sink.clone());
    for e in [ev("a", "t.req", 0.0), ev("a", "t.ok", 1.0), ev("a", "ledger", 2.0)] {
        with_event(&c, &e, |event| shard.apply(event));
    }
    shard.advance(121_000); // watermark at the deadline: not passed
    assert!(sink.rows.lock().unwrap().is_empty());
    shard.advance(121_001);
    let rows = sink.rows.lock().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, Outcome::SilentFailure);
    assert_eq!(rows[0].missing_steps, ["sms|push"]);
    assert_eq!((rows[0].deadline_at, rows[0].decided_at), (Some(121_000), 121_000));

    // At the end of input the watermark is the largest event time: a deadline
    // still ahead is in flight, not a failure.
    let run = run_engine(&c, &[ev("a", "t.req", 0.0), ev("a", "t.ok", 1.0), tick(121.0)], 1);
    assert!(run.rows.iter().all(|r| r.trace_id != "a"));
    assert!(
        run.in_flight
            .iter()
            .any(|f| f.trace_id == "a" && f.decides_at == 121_000)
    );
    let run = run_engine(&c, &[ev("a", "t.req", 0.0), ev("a", "t.ok", 1.0), tick(121.001)], 1);
    assert_eq!(only(&run, "a").outcome, Outcome::SilentFailure);
}

#[test]
fn a_step_with_status_error_counts_as_missing_and_is_listed() {
    let c = catalog();
    let run = run_engine(
        &c,
        &[
            ev("a", "t.req", 0.0),
            ev("a", "t.ok", 1.0),
            ev("a", "ledger", 2.0).error(),
            ev("a", "sms", 3.0),
            tick(500.0),
        ],
        1,
    );
    let r = only(&run, "a");
    assert_eq!(r.outcome, Outcome::SilentFailure);
    assert_eq!(r.missing_steps, ["ledger"]);
    assert_eq!(r.failed_steps, ["ledger"]);
}

#[test]
fn a_retry_that_succeeds_satisfies_the_step() {
    let c = catalog();
    let run = run_engine(
        &c,
        &[
            ev("a", "t.req", 0.0),
            ev("a", "t.ok", 1.0),
            ev("a", "ledger", 2.0).error(),
            ev("a", "ledger", 4.0),
            ev("a", "push", 5.0),
        ],
        1,
    );
    let r = only(&run, "a");
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(r.failed_steps, ["ledger"]);
    assert_eq!(r.completed_at, Some(5000));
}

#[test]
fn either_alternative_satisfies_an_any_of_step() {
    let c = catalog();
    for alt in ["sms", "push"] {
        let run = run_engine(
            &c,
            &[
                ev("a", "t.req", 0.0),
                ev("a", "t.ok", 1.0),
                ev("a", "ledger", 2.0),
                ev("a", alt, 3.0),
            ],
            1,
        );
        assert_eq!(pairs(&run), [("a", Outcome::Completed)], "{alt}");
    }
}

#[test]
fn failed_at_an_ack_error_or_an_ack_ok_with_error_status() {
    let c = catalog();
    let run = run_engine(
        &c,
        &[
            ev("a", "t.req", 0.0),
            ev("a", "t.no", 2.0),
            ev("b", "t.req", 0.0),
            ev("b", "t.ok", 3.0).error(),
        ],
        1,
    );
    assert_eq!(pairs(&run), [("a", Outcome::Failed), ("b", Outcome::Failed)]);
    let a = only(&run, "a");
    assert_eq!((a.acked_at, a.decided_at, a.latency_ms), (Some(2000), 2000, Some(2000)));
    assert_eq!(only(&run, "b").failed_steps, ["t.ok"]);
}

#[test]
fn stalled_when_no_ack_by_start_plus_ack_timeout_inclusive() {
    let c = catalog();
    let run = run_engine(&c, &[ev("a", "t.req", 0.0), tick(45.0)], 1);
    let r = only(&run, "a");
    assert_eq!(r.outcome, Outcome::Stalled);
    assert_eq!((r.decided_at, r.deadline_at, r.acked_at), (30_000, Some(30_000), None));

    // An ack at exactly start + ack_timeout counts.
    let run = run_engine(
        &c,
        &[
            ev("a", "t.req", 0.0),
            ev("a", "t.ok", 30.0),
            ev("a", "ledger", 31.0),
            ev("a", "sms", 31.0),
        ],
        1,
    );
    assert_eq!(pairs(&run), [("a", Outcome::Completed)]);
    // One millisecond later it does not.
    let run = run_engine(
        &c,
        &[
            ev("a", "t.req", 0.0),
            ev("a", "t.ok", 30.001),
            ev("a", "ledger", 31.0),
            ev("a", "sms", 31.0),
            tick(45.0),
        ],
        1,
    );
    assert_eq!(only(&run, "a").outcome, Outcome::Stalled);
}

#[test]
fn late_completion_is_a_separate_correction_within_late_horizon() {
    let c = catalog();
    let events = [
        ev("a", "t.req", 0.0).amount(99.0),
        ev("a", "t.ok", 1.0),
        ev("a", "sms", 2.0),
        tick(200.0),
        ev("a", "ledger", 600.0).service("ledger-batch"),
        ev("b", "t.req", 0.0),
        ev("b", "t.ok", 1.0),
        ev("b", "sms", 2.0),
    ];
    let run = run_engine(&c, &events, 1);
    let a: Vec<_> = run.rows.iter().filter(|r| r.trace_id == "a").collect();
    assert_eq!(a.len(), 2, "the original row stays");
    assert_eq!(a[0].outcome, Outcome::SilentFailure);
    let late = a[1];
    assert_eq!(late.outcome, Outcome::LateCompletion);
    assert_eq!(late.missing_steps, ["ledger"], "the steps that came late");
    assert_eq!(
        (late.completed_at, late.decided_at, late.deadline_at),
        (Some(600_000), 600_000, Some(121_000))
    );
    assert_eq!(late.attributes, [("amount".to_string(), "99".to_string())]);

    // Beyond the horizon (deadline 121s + 1h): no correction, counted late.
    let beyond = [
        ev("a", "t.req", 0.0),
        ev("a", "t.ok", 1.0),
        ev("a", "sms", 2.0),
        tick(200.0),
        ev("a", "ledger", 121.0 + 3600.0 + 0.001),
    ];
    let run = run_engine(&c, &beyond, 1);
    assert_eq!(pairs(&run).iter().filter(|p| p.0 == "a").count(), 1);
    assert_eq!(run.late, 1);
}

#[test]
fn orphan_when_steps_come_without_start_or_ack() {
    let c = catalog();
    let run = run_engine(&c, &[ev("o", "biller", 10.0), ev("o", "ledger", 12.0), tick(400.0)], 1);
    let r = only(&run, "o");
    assert_eq!(r.outcome, Outcome::Orphan);
    assert_eq!(r.journey, "bill", "journey of its earliest step");
    assert_eq!((r.decided_at, r.started_at), (10_000 + 360_000, None));
    assert!(r.missing_steps.is_empty());

    // `ledger` is required by both journeys: the first in config order.
    let run = run_engine(&c, &[ev("o", "ledger", 10.0), tick(400.0)], 1);
    assert_eq!(only(&run, "o").journey, "transfer");
    // Not decided before first-seen + orphan_timeout.
    let run = run_engine(&c, &[ev("o", "ledger", 10.0), tick(370.0)], 1);
    assert!(run.rows.iter().all(|r| r.trace_id != "o"));
}

#[test]
fn steps_before_the_start_are_held_under_the_trace() {
    let c = catalog();
    let run = run_engine(
        &c,
        &[
            ev("a", "sms", 0.5),
            ev("a", "ledger", 0.7),
            ev("a", "t.req", 0.0),
            ev("a", "t.ok", 1.0),
        ],
        1,
    );
    let r = only(&run, "a");
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!((r.completed_at, r.decided_at), (Some(700), 1000));
}

#[test]
fn an_ack_without_start_is_decided_normally() {
    let c = catalog();
    let run = run_engine(&c, &[ev("a", "t.ok", 1.0), tick(200.0)], 1);
    let r = only(&run, "a");
    assert_eq!(r.outcome, Outcome::SilentFailure);
    assert_eq!((r.started_at, r.acked_at), (None, Some(1000)));
    assert_eq!(r.missing_steps, ["ledger", "sms|push"]);
}

#[test]
fn unmatched_events_never_create_or_change_a_journey() {
    let c = catalog();
    let run = run_engine(
        &c,
        &[ev("u", "heartbeat", 0.0), ev("u", "cache.miss", 1.0), tick(1000.0)],
        1,
    );
    assert!(run.rows.iter().all(|r| r.trace_id != "u"));
    assert!(run.in_flight.iter().all(|f| f.trace_id != "u"));
    let run = run_engine(
        &c,
        &[
            ev("a", "t.req", 0.0),
            ev("a", "t.ok", 1.0),
            ev("a", "heartbeat", 1.5),
            ev("a", "ledger", 2.0),
            ev("a", "push", 3.0),
        ],
        1,
    );
    let r = only(&run, "a");
    assert_eq!((r.outcome, r.n_events), (Outcome::Completed, 4));
}

#[test]
fn a_decided_trace_never_reopens_within_the_horizon() {
    let c = catalog();
    let run = run_engine(
        &c,
        &[
            ev("a", "t.req", 0.0),
            ev("a", "t.no", 1.0),
            ev("a", "t.req", 50.0), // same trace, after the decision
            ev("a", "ledger", 60.0),
            tick(2000.0),
        ],
        1,
    );
    assert_eq!(pairs(&run).iter().filter(|p| p.0 == "a").count(), 1);
    assert_eq!(run.late, 2);
    assert!(run.in_flight.iter().all(|f| f.trace_id != "a"));
}

#[test]
fn duplicates_are_counted_once() {
    let c = catalog();
    let run = run_engine(
        &c,
        &[
            ev("a", "t.req", 0.0).id("e1"),
            ev("a", "t.req", 0.0).id("e1"),
            ev("a", "t.ok", 1.0).id("e2"),
            ev("a", "t.ok", 1.2).id("e2"), // same id, other time: still a duplicate
            ev("a", "ledger", 2.0),
            ev("a", "ledger", 2.0),                  // no id: same event, service and time
            ev("a", "ledger", 2.0).service("other"), // not a duplicate
            ev("a", "sms", 3.0),
        ],
        1,
    );
    let r = only(&run, "a");
    assert_eq!((r.outcome, r.n_events, r.n_duplicates), (Outcome::Completed, 5, 3));
    assert_eq!(run.duplicates, 3);
}

#[test]
fn disorder_within_lateness_does_not_change_the_outcome() {
    let c = catalog();
    let ordered = vec![
        ev("a", "t.req", 0.0),
        ev("a", "t.ok", 1.0),
        ev("a", "ledger", 100.0),
        ev("b", "t.req", 95.0),
        ev("a", "sms", 119.0),
        ev("b", "t.ok", 96.0),
        tick(125.0),
    ];
    let mut reversed = ordered.clone();
    reversed.swap(4, 6); // sms arrives after event time reached 125s (watermark 115s)
    let (x, y) = (run_engine(&c, &ordered, 1), run_engine(&c, &reversed, 1));
    assert_eq!(only(&x, "a").outcome, Outcome::Completed);
    assert_eq!(x.rows, y.rows);
}

#[test]
fn the_start_event_attributes_win() {
    let c = catalog();
    let run = run_engine(
        &c,
        &[
            ev("a", "t.ok", 1.0).amount(1.0),
            ev("a", "t.req", 0.0).amount(2.0),
            ev("a", "ledger", 2.0),
            ev("a", "sms", 3.0),
        ],
        1,
    );
    assert_eq!(only(&run, "a").attributes, [("amount".to_string(), "2".to_string())]);
}

#[test]
fn open_journey_cap_evicts_instead_of_dropping_silently() {
    let c = catalog();
    let mut events: Vec<_> = (0..10).map(|i| ev(&format!("t{i}"), "t.req", i as f64)).collect();
    // A later event of an evicted trace is late, not a new journey or orphan.
    events.push(ev("t0", "ledger", 12.0));
    let run = run_engine_with_limit(&c, &events, 1, 4);
    // Six were evicted (counted, handed over for the dead-letter sink); four are in flight.
    assert_eq!(run.in_flight.len(), 4);
    assert_eq!(run.evicted_count, 6);
    let evicted: Vec<_> = run.evicted.iter().map(|e| e.trace_id.as_str()).collect();
    assert_eq!(
        evicted,
        ["t0", "t1", "t2", "t3", "t4", "t5"],
        "closest to their timers first"
    );
    assert_eq!(run.late, 1);
    assert!(run.rows.is_empty(), "eviction never invents an outcome");
}

#[test]
fn results_do_not_depend_on_the_shard_count() {
    let c = catalog();
    let mut events = Vec::new();
    for i in 0..200 {
        let t = format!("tr{i}");
        let base = i as f64;
        events.push(ev(&t, "t.req", base));
        if i % 7 != 0 {
            events.push(ev(&t, "t.ok", base + 1.0));
        }
        if i % 5 != 0 {
            events.push(ev(&t, "ledger", base + 2.0));
        }
        events.push(ev(&t, "push", base + 3.0));
    }
    events.push(tick(5000.0));
    let one = run_engine(&c, &events, 1);
    for shards in [2, 3, 8] {
        assert_eq!(one.rows, run_engine(&c, &events, shards).rows, "{shards} shards");
    }
}

/// SPEC §1: a trace id is any string, as long as a line. Attribute strings
/// are capped at 32 KiB; a non-canonical trace id must come out whole
/// however long it is (it was cut, or its row lost, past 32 KiB).
#[test]
fn a_trace_id_longer_than_an_attribute_string_is_kept_whole() {
    let c = catalog();
    for len in [127, 128, 32_767, 32_768, 40_000, 1 << 20] {
        // Multi-byte characters too: a cut anywhere but at a char boundary
        // would not be a string.
        let trace: String = "é".repeat(len / 2) + &"x".repeat(len % 2);
        let events = [
            ev(&trace, "t.req", 0.0).amount(250.0),
            ev(&trace, "t.ok", 1.0).service("gw"),
            ev(&trace, "ledger", 5.0).service("core"),
            ev(&trace, "sms", 7.0).service("notify"),
        ];
        // Straight through, and through a snapshot taken with it open.
        for run in [
            run_engine(&c, &events, 1),
            run_engine_restarting(&c, &events, 1, usize::MAX, &[2]),
        ] {
            let r = only(&run, &trace);
            assert_eq!(r.outcome, Outcome::Completed, "trace id of {len} bytes");
            assert_eq!(
                r.attributes[0],
                ("amount".to_string(), "250".to_string()),
                "trace id of {len} bytes"
            );
        }
    }
}

/// `engine.max_events_per_journey`: a journey that passes the cap is
/// evicted (a dead letter, counted), gets no outcome, and its later events
/// count as late; duplicates do not count toward the cap, other journeys
/// are untouched.
#[test]
fn a_journey_past_the_event_cap_is_evicted_not_decided() {
    let c = catalog_from(&CONFIG.replace("[engine]\n", "[engine]\nmax_events_per_journey = 4\n"));
    let events = [
        ev("a", "t.req", 0.0),
        ev("a", "t.ok", 1.0),
        ev("a", "t.ok", 1.0), // a duplicate
        ev("a", "sms", 2.0),
        ev("a", "sms", 3.0), // the fourth distinct event: at the cap
        ev("b", "t.req", 0.0),
        ev("b", "t.ok", 1.0),
        ev("a", "sms", 4.0), // the fifth: past it
        ev("a", "ledger", 5.0),
        ev("b", "ledger", 5.0),
        ev("b", "sms", 6.0),
        tick(1000.0),
    ];
    let run = run_engine(&c, &events, 1);
    assert_eq!(pairs(&run), [("b", Outcome::Completed)], "a is evicted, not decided");
    assert_eq!(run.evicted.len(), 1);
    let e = &run.evicted[0];
    assert_eq!(e.reason, tacet_correlate::EvictReason::EventLimit);
    assert_eq!(
        (e.trace_id.as_str(), e.journey.as_deref(), e.n_events),
        ("a", Some("transfer"), 5)
    );
    assert_eq!(run.evicted_count, 1);
    assert_eq!(run.duplicates, 1);
    assert_eq!(run.late, 1, "a's ledger came after its eviction");
}

/// A silent failure awaiting its correction is evicted too when its late
/// events reach the cap: no correction is watched for after that.
#[test]
fn a_silent_failure_past_the_event_cap_stops_waiting_for_its_correction() {
    let c = catalog_from(&CONFIG.replace("[engine]\n", "[engine]\nmax_events_per_journey = 4\n"));
    let mut events = vec![
        ev("a", "t.req", 0.0),
        ev("a", "t.ok", 1.0),
        ev("a", "sms", 2.0),
        tick(200.0),
        ev("a", "push", 300.0), // late, kept: four events
    ];
    let run = run_engine(&c, &events, 1);
    assert_eq!(pairs(&run).iter().filter(|p| p.0 == "a").count(), 1);
    assert!(run.evicted.is_empty());
    events.push(ev("a", "push", 301.0)); // a fifth: past the cap
    events.push(ev("a", "ledger", 400.0)); // would have corrected it
    let run = run_engine(&c, &events, 1);
    let a: Vec<_> = pairs(&run).into_iter().filter(|p| p.0 == "a").collect();
    assert_eq!(a, [("a", Outcome::SilentFailure)], "no correction after the eviction");
    assert_eq!(run.evicted.len(), 1);
    assert_eq!(run.evicted[0].reason, tacet_correlate::EvictReason::EventLimit);
    assert_eq!(run.evicted[0].n_events, 5);
    assert_eq!(run.late, 3);
}

/// One trace id on 20,000 events (an all-zero id from broken
/// instrumentation): the default cap evicts its journey at the 1,001st
/// event, the rest count as late. (Before the cap, every event re-read all
/// the events before it: 100,000 such events took 20 s of one core.)
#[test]
fn one_trace_id_on_every_event_is_evicted_at_the_default_cap() {
    let c = catalog();
    let mut events: Vec<TestEvent> = (0..20_000)
        .map(|i| ev("00000000000000000000000000000000", "sms", f64::from(i) * 0.001))
        .collect();
    events.insert(0, ev("00000000000000000000000000000000", "t.req", 0.0));
    let run = run_engine(&c, &events, 1);
    assert!(run.rows.is_empty());
    assert_eq!(run.evicted.len(), 1);
    assert_eq!(run.evicted[0].n_events, 1_001);
    assert_eq!(run.late, 20_001 - 1_001);
}
