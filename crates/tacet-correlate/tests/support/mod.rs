//! Test harness: owned test events, a collecting sink, the sharded engine
//! driven the way the pipeline drives it, and (in `model`) the reference model.

#![allow(dead_code)]

pub mod model;
pub mod streams;

use std::path::Path;
use std::sync::{Arc, Mutex};

use tacet_core::event::{fingerprint_by_fields, fingerprint_by_id};
use tacet_core::outcome::OutcomeSink;
use tacet_core::{AttrCow, Catalog, Config, Event, EventTime, OutcomeRecord, OutcomeRow, TraceKey};
use tacet_correlate::{InFlight, Shard};

/// Two journeys sharing the `ledger` step, an any-of group, and an attribute.
pub const CONFIG: &str = r#"
[engine]
allowed_lateness = "10s"
late_horizon = "1h"

[[journey]]
name = "transfer"
start = "t.req"
ack_ok = ["t.ok"]
ack_error = ["t.no"]
complete = ["ledger", "sms|push"]
deadline = "2m"
ack_timeout = "30s"
slo = 0.999
attributes = { amount = "/amount" }

[[journey]]
name = "bill"
start = "b.req"
ack_ok = "b.ok"
complete = ["ledger", "biller"]
deadline = "5m"
ack_timeout = "1m"
slo = 0.99
attributes = { amount = "/amount" }
"#;

pub fn catalog() -> Arc<Catalog> {
    catalog_from(CONFIG)
}

pub fn catalog_from(text: &str) -> Arc<Catalog> {
    Arc::new(Catalog::new(&Config::from_toml(text, Path::new("test.toml")).unwrap()).unwrap())
}

/// An input event as a producer would write it (times in ms).
#[derive(Debug, Clone, PartialEq)]
pub struct TestEvent {
    pub trace: String,
    pub name: String,
    pub time: EventTime,
    pub ok: bool,
    pub service: String,
    pub event_id: Option<String>,
    pub amount: Option<f64>,
}

/// `ev("t1", "t.req", 0)`: ok, service `svc`, time in seconds.
pub fn ev(trace: &str, name: &str, secs: f64) -> TestEvent {
    TestEvent {
        trace: trace.into(),
        name: name.into(),
        time: (secs * 1000.0).round() as EventTime,
        ok: true,
        service: "svc".into(),
        event_id: None,
        amount: None,
    }
}

impl TestEvent {
    pub fn error(mut self) -> Self {
        self.ok = false;
        self
    }
    pub fn service(mut self, s: &str) -> Self {
        self.service = s.into();
        self
    }
    pub fn amount(mut self, a: f64) -> Self {
        self.amount = Some(a);
        self
    }
    pub fn id(mut self, id: &str) -> Self {
        self.event_id = Some(id.into());
        self
    }
}

/// The event as a decoder would hand it to a shard; `None` when unmatched.
pub fn with_event<R>(catalog: &Catalog, e: &TestEvent, f: impl FnOnce(&Event<'_>) -> R) -> Option<R> {
    let name = catalog.lookup(&e.name)?;
    let (trace, canonical) = TraceKey::from_text(&e.trace);
    let fingerprint = match &e.event_id {
        Some(id) => fingerprint_by_id(id.as_bytes()),
        None => fingerprint_by_fields(name, e.service.as_bytes(), e.time),
    };
    let attrs: Vec<_> = e.amount.map(|a| (0, AttrCow::Num(a))).into_iter().collect();
    let event = Event {
        trace,
        trace_text: (!canonical).then_some(e.trace.as_str()),
        time: e.time,
        name,
        ok: e.ok,
        fingerprint,
        service: &e.service,
        attrs: &attrs,
    };
    Some(f(&event))
}

/// Collects rows; shared so a test can look while the shard still owns it.
#[derive(Clone)]
pub struct Collect {
    pub rows: Arc<Mutex<Vec<OutcomeRow>>>,
    pub catalog: Arc<Catalog>,
}

impl OutcomeSink for Collect {
    fn emit(&mut self, record: &OutcomeRecord<'_>) {
        self.rows.lock().unwrap().push(record.to_row(&self.catalog));
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Run {
    pub rows: Vec<OutcomeRow>,
    pub in_flight: Vec<InFlight>,
    pub duplicates: u64,
    pub late: u64,
    pub evicted: Vec<tacet_correlate::Evicted>,
    pub evicted_count: u64,
}

/// Runs `events` in arrival order through `shards` shards, computing the
/// per-event watermark as the pipeline does (max event time so far − lateness,
/// including the event) and finishing at the largest event time.
pub fn run_engine(catalog: &Arc<Catalog>, events: &[TestEvent], shards: usize) -> Run {
    run_engine_with_limit(catalog, events, shards, usize::MAX)
}

pub fn run_engine_with_limit(catalog: &Arc<Catalog>, events: &[TestEvent], shards: usize, max_open: usize) -> Run {
    run_engine_restarting(catalog, events, shards, max_open, &[])
}

/// As [`run_engine_with_limit`], but before the event at each index of
/// `restarts` every shard is snapshotted, dropped, and restored from the bytes
/// (as a crash and recovery from a checkpoint taken there would do).
pub fn run_engine_restarting(
    catalog: &Arc<Catalog>,
    events: &[TestEvent],
    shards: usize,
    max_open: usize,
    restarts: &[usize],
) -> Run {
    run_engine_full(catalog, events, shards, max_open, restarts, None)
}

/// As [`run_engine`], but every event is applied with [`Shard::apply_hinted`]
/// and a hint taken `lag` events before it is applied, as the Kafka
/// correlators do (so it may be stale: the journey decided, its slot reused,
/// or opened since). Every `wrong_every`-th event (0: none) gets the hint of
/// the event `wrong_every` places after it instead: a hint to someone else's
/// journey.
pub fn run_engine_hinted(
    catalog: &Arc<Catalog>,
    events: &[TestEvent],
    shards: usize,
    lag: usize,
    wrong_every: usize,
) -> Run {
    run_engine_full(catalog, events, shards, usize::MAX, &[], Some((lag, wrong_every)))
}

fn run_engine_full(
    catalog: &Arc<Catalog>,
    events: &[TestEvent],
    shards: usize,
    max_open: usize,
    restarts: &[usize],
    hinted: Option<(usize, usize)>,
) -> Run {
    let sink = Collect {
        rows: Default::default(),
        catalog: catalog.clone(),
    };
    let mut shard_list: Vec<_> = (0..shards)
        .map(|_| Shard::new(catalog.clone(), max_open, sink.clone()))
        .collect();
    let mut max_time = EventTime::MIN;
    let mut evicted = Vec::new();
    // Hints by event index, taken `lag` events before each is applied.
    let mut hints: Vec<Option<tacet_correlate::SlotHint>> = vec![None; events.len()];
    let take_hint = |shard_list: &[Shard<Collect>], j: usize| {
        with_event(catalog, &events[j], |event| {
            shard_list[event.trace.shard(shards)].prefetch(&event.trace)
        })
        .flatten()
    };
    if let Some((lag, _)) = hinted {
        for (j, hint) in hints.iter_mut().enumerate().take(lag) {
            *hint = take_hint(&shard_list, j);
        }
    }
    for (i, e) in events.iter().enumerate() {
        if let Some((lag, wrong_every)) = hinted {
            let ahead = i + lag;
            if ahead < events.len() {
                let source = if wrong_every > 0 && ahead % wrong_every == 0 {
                    (ahead + wrong_every) % events.len()
                } else {
                    ahead
                };
                hints[ahead] = take_hint(&shard_list, source);
            }
        }
        if restarts.contains(&i) {
            for shard in &mut shard_list {
                let mut bytes = Vec::new();
                shard.write_snapshot(&mut bytes);
                *shard =
                    Shard::restore(catalog.clone(), max_open, sink.clone(), &bytes).expect("own snapshot restores");
            }
        }
        with_event(catalog, e, |event| {
            // Unmatched events are ignored entirely: they do not move event time.
            max_time = max_time.max(e.time);
            let watermark = max_time.saturating_sub(catalog.allowed_lateness_ms);
            let shard = &mut shard_list[event.trace.shard(shards)];
            shard.advance(watermark);
            // No hints (`None`) is what `Shard::apply` does.
            shard.apply_hinted(event, hints[i]);
            evicted.extend(shard.take_evicted());
        });
    }
    let mut in_flight = Vec::new();
    let (mut duplicates, mut late, mut evicted_count) = (0, 0, 0);
    for shard in &mut shard_list {
        if max_time > EventTime::MIN {
            in_flight.extend(shard.finish(max_time));
        }
        duplicates += shard.stats().duplicates;
        late += shard.stats().late_events;
        evicted_count += shard.stats().evicted;
    }
    let mut rows = std::mem::take(&mut *sink.rows.lock().unwrap());
    sort_rows(&mut rows);
    in_flight.sort_by(|a, b| a.trace_id.cmp(&b.trace_id));
    Run {
        rows,
        in_flight,
        duplicates,
        late,
        evicted,
        evicted_count,
    }
}

pub fn sort_rows(rows: &mut [OutcomeRow]) {
    rows.sort_by(|a, b| (&a.trace_id, a.outcome).cmp(&(&b.trace_id, b.outcome)));
}

/// (trace, outcome) pairs, for short assertions.
pub fn outcomes(run: &Run) -> Vec<(String, String)> {
    run.rows
        .iter()
        .map(|r| (r.trace_id.clone(), r.outcome.to_string()))
        .collect()
}
