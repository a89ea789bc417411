//! The reference model: SPEC §3 and §4 written as directly as possible. No
//! shards, timers, slabs, hash tables, generations or tombstone buckets: every
//! trace is re-judged from its full event list whenever anything changes. It
//! is slow and obviously right, which is what the engine is compared against.
//! `engine.max_events_per_journey` (a tacet setting, not in SPEC) is
//! modelled as `tacet-core`'s config documents it: a trace that passes it
//! gets no outcome and its later events are late; a silent failure that
//! would pass it is no longer corrected.

use std::collections::BTreeMap;

use tacet_core::{Catalog, EventTime, Outcome, OutcomeRow, Role};

use super::TestEvent;

#[derive(Clone)]
struct Kept {
    e: TestEvent,
    identity: String,
}

struct Trace {
    events: Vec<Kept>,
    duplicates: u32,
    decided: Option<Decided>,
}

/// A silent failure not yet corrected: journey, start, ack, deadline, missing labels.
type Silent = (usize, Option<EventTime>, EventTime, EventTime, Vec<String>);

struct Decided {
    expires: EventTime,
    silent: Option<Silent>,
}

pub struct ModelRun {
    pub rows: Vec<OutcomeRow>,
    pub in_flight: Vec<String>,
}

pub fn run_model(catalog: &Catalog, input: &[TestEvent]) -> ModelRun {
    let mut traces: BTreeMap<String, Trace> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut max_time = EventTime::MIN;
    for e in input {
        if catalog.lookup(&e.name).is_none() {
            continue; // unmatched: never creates or changes anything
        }
        max_time = max_time.max(e.time);
        let w = max_time.saturating_sub(catalog.allowed_lateness_ms);
        advance(catalog, &mut traces, &mut rows, w);
        let identity = match &e.event_id {
            Some(id) => format!("id:{id}"),
            None => format!("f:{}|{}|{}", e.name, e.service, e.time),
        };
        let trace = traces.entry(e.trace.clone()).or_insert_with(|| Trace {
            events: Vec::new(),
            duplicates: 0,
            decided: None,
        });
        if let Some(decided) = &mut trace.decided {
            // Late: only a silent failure can be corrected.
            if let Some((j, start, ack, deadline, missing)) = decided.silent.clone() {
                if trace.events.iter().any(|k| k.identity == identity) {
                    continue;
                }
                if trace.events.len() >= catalog.max_events_per_journey {
                    // One more event would pass the cap: the correction is
                    // no longer watched for (no row; the tombstone stays).
                    decided.silent = None;
                    continue;
                }
                trace.events.push(Kept { e: e.clone(), identity });
                let horizon = deadline + catalog.late_horizon_ms;
                if let Some(done) = all_satisfied_by(catalog, j, &trace.events, horizon) {
                    decided.silent = None;
                    rows.push(row(
                        catalog,
                        &e.trace,
                        trace,
                        j,
                        Outcome::LateCompletion,
                        start,
                        Some(ack),
                        Some(done),
                        Some(deadline),
                        done,
                        missing,
                    ));
                }
            }
            continue;
        }
        if trace.events.iter().any(|k| k.identity == identity) {
            trace.duplicates += 1;
            continue;
        }
        trace.events.push(Kept { e: e.clone(), identity });
        if trace.events.len() > catalog.max_events_per_journey {
            // Evicted (dead-lettered) with no outcome, and remembered until
            // the late horizon past its last event, so that what follows is
            // late rather than a new journey.
            let last = trace.events.iter().map(|k| k.e.time).max().unwrap();
            trace.decided = Some(Decided {
                expires: last + catalog.late_horizon_ms,
                silent: None,
            });
            continue;
        }
        judge(catalog, &e.trace, trace, &mut rows, w);
    }
    if max_time > EventTime::MIN {
        advance(catalog, &mut traces, &mut rows, max_time);
    }
    let in_flight = traces
        .iter()
        .filter(|(_, t)| t.decided.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    super::sort_rows(&mut rows);
    ModelRun { rows, in_flight }
}

fn advance(catalog: &Catalog, traces: &mut BTreeMap<String, Trace>, rows: &mut Vec<OutcomeRow>, w: EventTime) {
    for (id, t) in traces.iter_mut() {
        if t.decided.is_none() {
            judge(catalog, id, t, rows, w);
        }
    }
    // A trace is forgotten once the watermark passes its tombstone's expiry.
    traces.retain(|_, t| t.decided.as_ref().is_none_or(|d| d.expires >= w));
}

fn role(catalog: &Catalog, j: usize, name: &str) -> Role {
    catalog.journeys()[j].role(catalog.lookup(name).unwrap())
}

/// When every group had an ok step at or before `until`: the time the last group was first met.
fn all_satisfied_by(catalog: &Catalog, j: usize, events: &[Kept], until: EventTime) -> Option<EventTime> {
    let spec = &catalog.journeys()[j];
    let mut done = EventTime::MIN;
    for g in 0..spec.groups.len() {
        let first = events
            .iter()
            .filter(|k| k.e.ok && k.e.time <= until)
            .filter(|k| matches!(role(catalog, j, &k.e.name), Role::Step(m) if m & (1 << g) != 0))
            .map(|k| k.e.time)
            .min()?;
        done = done.max(first);
    }
    Some(done)
}

fn missing_by(catalog: &Catalog, j: usize, events: &[Kept], until: EventTime) -> Vec<String> {
    let spec = &catalog.journeys()[j];
    (0..spec.groups.len())
        .filter(|&g| {
            !events.iter().any(|k| {
                k.e.ok && k.e.time <= until && matches!(role(catalog, j, &k.e.name), Role::Step(m) if m & (1 << g) != 0)
            })
        })
        .map(|g| spec.groups[g].clone())
        .collect()
}

fn judge(catalog: &Catalog, id: &str, t: &mut Trace, rows: &mut Vec<OutcomeRow>, w: EventTime) {
    let first_opener = t
        .events
        .iter()
        .find_map(|k| catalog.opener(catalog.lookup(&k.e.name).unwrap()));
    let orphan_at = t.events.iter().map(|k| k.e.time).min().unwrap() + catalog.orphan_timeout_ms;
    let Some((j, _)) = first_opener else {
        if w > orphan_at {
            let earliest = t.events.iter().fold(None::<&Kept>, |b, k| match b {
                Some(b) if b.e.time <= k.e.time => Some(b),
                _ => Some(k),
            });
            let j = catalog
                .orphan_journey(catalog.lookup(&earliest.unwrap().e.name).unwrap())
                .unwrap() as usize;
            let missing = missing_by(catalog, j, &t.events, EventTime::MAX);
            let r = row(
                catalog,
                id,
                t,
                j,
                Outcome::Orphan,
                None,
                None,
                None,
                Some(orphan_at),
                orphan_at,
                missing,
            );
            decide(catalog, t, rows, r, None);
        }
        return;
    };
    let j = j as usize;
    let spec = &catalog.journeys()[j];
    let start = t
        .events
        .iter()
        .filter(|k| role(catalog, j, &k.e.name) == Role::Start)
        .map(|k| k.e.time)
        .min();
    let in_time = |time: EventTime| start.is_none_or(|s| time <= s + spec.ack_timeout_ms);
    let failing = t
        .events
        .iter()
        .filter(|k| match role(catalog, j, &k.e.name) {
            Role::AckError => true,
            Role::AckOk => !k.e.ok,
            _ => false,
        })
        .map(|k| k.e.time)
        .filter(|&time| in_time(time))
        .min();
    let ack = t
        .events
        .iter()
        .filter(|k| role(catalog, j, &k.e.name) == Role::AckOk && k.e.ok)
        .map(|k| k.e.time)
        .filter(|&time| in_time(time))
        .min();
    if let Some(f) = failing {
        let r = row(
            catalog,
            id,
            t,
            j,
            Outcome::Failed,
            start,
            Some(f),
            None,
            None,
            f,
            vec![],
        );
        decide(catalog, t, rows, r, None);
    } else if let Some(ack) = ack {
        let deadline = ack + spec.deadline_ms;
        if let Some(done) = all_satisfied_by(catalog, j, &t.events, deadline) {
            let r = row(
                catalog,
                id,
                t,
                j,
                Outcome::Completed,
                start,
                Some(ack),
                Some(done),
                Some(deadline),
                done.max(ack),
                vec![],
            );
            decide(catalog, t, rows, r, None);
        } else if w > deadline {
            let missing = missing_by(catalog, j, &t.events, deadline);
            let r = row(
                catalog,
                id,
                t,
                j,
                Outcome::SilentFailure,
                start,
                Some(ack),
                None,
                Some(deadline),
                deadline,
                missing.clone(),
            );
            decide(catalog, t, rows, r, Some((j, start, ack, deadline, missing)));
        }
    } else if let Some(s) = start {
        let at = s + spec.ack_timeout_ms;
        if w > at {
            let missing = missing_by(catalog, j, &t.events, at);
            let r = row(
                catalog,
                id,
                t,
                j,
                Outcome::Stalled,
                start,
                None,
                None,
                Some(at),
                at,
                missing,
            );
            decide(catalog, t, rows, r, None);
        }
    }
}

fn decide(catalog: &Catalog, t: &mut Trace, rows: &mut Vec<OutcomeRow>, r: OutcomeRow, silent: Option<Silent>) {
    let last = t.events.iter().map(|k| k.e.time).max().unwrap();
    let expires = r.decided_at.max(last) + catalog.late_horizon_ms;
    let id = r.trace_id.clone();
    rows.push(r);
    let mut decided = Decided { expires, silent };
    if let Some((j, start, ack, deadline, missing)) = decided.silent.clone() {
        let horizon = deadline + catalog.late_horizon_ms;
        if let Some(done) = all_satisfied_by(catalog, j, &t.events, horizon) {
            decided.silent = None;
            rows.push(row(
                catalog,
                &id,
                t,
                j,
                Outcome::LateCompletion,
                start,
                Some(ack),
                Some(done),
                Some(deadline),
                done,
                missing,
            ));
        }
    }
    t.decided = Some(decided);
}

#[allow(clippy::too_many_arguments)]
fn row(
    catalog: &Catalog,
    id: &str,
    t: &Trace,
    j: usize,
    outcome: Outcome,
    started_at: Option<EventTime>,
    acked_at: Option<EventTime>,
    completed_at: Option<EventTime>,
    deadline_at: Option<EventTime>,
    decided_at: EventTime,
    missing_steps: Vec<String>,
) -> OutcomeRow {
    let spec = &catalog.journeys()[j];
    let mut failed_steps: Vec<String> = t
        .events
        .iter()
        .filter(|k| !k.e.ok && role(catalog, j, &k.e.name) != Role::None)
        .map(|k| k.e.name.clone())
        .collect();
    failed_steps.sort();
    failed_steps.dedup();
    let mut services: Vec<String> = t
        .events
        .iter()
        .filter(|k| !k.e.service.is_empty())
        .map(|k| k.e.service.clone())
        .collect();
    services.sort();
    services.dedup();
    let last = t
        .events
        .iter()
        .max_by(|a, b| (a.e.time, &a.e.name, &a.e.service).cmp(&(b.e.time, &b.e.name, &b.e.service)))
        .unwrap();
    let is_start = |k: &&Kept| {
        matches!(
            catalog.opener(catalog.lookup(&k.e.name).unwrap()),
            Some((_, Role::Start))
        )
    };
    let amount = t
        .events
        .iter()
        .filter(is_start)
        .find_map(|k| k.e.amount)
        .or_else(|| t.events.iter().find_map(|k| k.e.amount));
    let origin = started_at.or(acked_at);
    let latency_ms = match outcome {
        Outcome::Completed | Outcome::LateCompletion => Some(completed_at.unwrap() - origin.unwrap()),
        Outcome::Failed => started_at.map(|s| decided_at - s),
        _ => None,
    };
    let has_amount = spec
        .attributes
        .iter()
        .any(|(c, _)| catalog.columns()[*c].name == "amount");
    OutcomeRow {
        trace_id: id.to_owned(),
        journey: spec.name.clone(),
        outcome,
        started_at,
        acked_at,
        completed_at,
        deadline_at,
        decided_at,
        latency_ms,
        missing_steps,
        failed_steps,
        last_step: Some(last.e.name.clone()),
        last_service: (!last.e.service.is_empty()).then(|| last.e.service.clone()),
        services,
        n_events: t.events.len() as u32,
        n_duplicates: t.duplicates,
        attributes: amount
            .filter(|_| has_amount)
            .map(|a| vec![("amount".to_owned(), a.to_string())])
            .unwrap_or_default(),
    }
}
