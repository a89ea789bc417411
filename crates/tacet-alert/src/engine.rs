//! Evaluates the rules at every minute boundary the watermark passes, and
//! keeps one incident per journey and rule.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use tacet_core::config::AlertsConfig;
use tacet_core::{Catalog, Config, EventTime, JourneyId};

use crate::rules::{JourneyRules, RuleKind, Severity, budget_left, burn_rate};
use crate::window::{Note, WindowSum, Windows};

const MINUTE: i64 = 60_000;

/// Counts of a window, as an incident reports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counts {
    pub decided: u64,
    pub completed: u64,
    pub silent_failure: u64,
    pub stalled: u64,
}

/// Burn rates of a rule's windows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Burn {
    pub long: f64,
    pub short: f64,
}

/// One incident notification: opened, updated or resolved. One JSON object
/// per line in the file sink; the body of a webhook POST.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Stable over restarts and replays: journey, rule and first-seen time.
    pub incident_id: String,
    /// `opened`, `updated` or `resolved`.
    pub event: &'static str,
    /// 0 for `opened`, then one more per notification of the incident.
    pub seq: u32,
    /// `<incident_id>-<seq>`: receivers drop what they have seen.
    pub idempotency_key: String,
    pub journey: String,
    pub severity: Severity,
    pub rule: RuleKind,
    /// The rule's windows, e.g. `1h/5m`.
    pub window: String,
    /// Event time of this notification (RFC 3339) and in epoch ms.
    pub at: String,
    pub at_ms: EventTime,
    pub first_seen: String,
    /// Counts over the rule's long window.
    pub counts: Counts,
    pub silent_rate: f64,
    pub burn_rate: Burn,
    /// Share of the error budget left over the budget period (negative: overspent).
    pub error_budget_left: f64,
    pub money_at_risk: f64,
    pub top_missing_step: Option<String>,
    pub top_last_service: Option<String>,
    pub sample_trace_ids: Vec<String>,
}

/// Counters of the alert engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AlertStats {
    pub opened: u64,
    pub updated: u64,
    pub resolved: u64,
    /// Incidents still open at the end.
    pub open: u64,
    /// Decisions older than every SLI bucket kept (not counted in any window).
    pub too_old: u64,
}

#[derive(Debug, Clone)]
struct Open {
    id: String,
    first_seen: EventTime,
    seq: u32,
    last_sent: EventTime,
}

/// Live gauges of one journey, for /metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JourneyGauges {
    pub error_budget_left: f64,
    /// (window in ms, burn rate), longest first.
    pub burn: Vec<(i64, f64)>,
}

/// The alert engine of a run.
pub struct AlertEngine {
    catalog: Arc<Catalog>,
    rules: Vec<JourneyRules>,
    windows: Vec<Windows>,
    open: BTreeMap<(JourneyId, RuleKind), Open>,
    /// Every minute boundary up to here has been evaluated.
    evaluated: Option<EventTime>,
    /// The earliest decision seen before the first evaluation: evaluations
    /// start at the minute boundary after it, whatever watermark the caller
    /// first passes, so a replay and a live run evaluate the same minutes.
    earliest: Option<EventTime>,
    /// Minute boundaries holding a decision that some window not yet
    /// evaluated past may read: where evaluating can change anything.
    note_minutes: BTreeSet<i64>,
    /// The longest window any rule reads.
    lookback: i64,
    /// Off in tests only: evaluate every minute, quiet or not.
    skip_quiet: bool,
    update_interval_ms: i64,
    ticket_update_interval_ms: i64,
    gauges: Vec<JourneyGauges>,
    stats: AlertStats,
}

/// The minute boundary at or before `t`.
fn minute_of(t: EventTime) -> EventTime {
    t.saturating_sub(t.rem_euclid(MINUTE))
}

fn rfc3339(ms: EventTime) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn human(ms: i64) -> String {
    match ms {
        m if m % (24 * 60 * MINUTE) == 0 => format!("{}d", m / (24 * 60 * MINUTE)),
        m if m % (60 * MINUTE) == 0 => format!("{}h", m / (60 * MINUTE)),
        m if m % MINUTE == 0 => format!("{}m", m / MINUTE),
        m => format!("{}s", m / 1000),
    }
}

impl AlertEngine {
    /// The rules of every journey in `config`.
    pub fn new(catalog: Arc<Catalog>, config: &Config) -> Self {
        let alerts: &AlertsConfig = &config.alerts;
        let rules: Vec<JourneyRules> = config
            .journeys
            .iter()
            .map(|j| JourneyRules::resolve(j.slo, &alerts.rules, &j.alerts))
            .collect();
        let period = alerts.budget_period.as_millis().min(i64::MAX as u128) as i64;
        let windows = rules
            .iter()
            .zip(catalog.journeys())
            .map(|(r, spec)| {
                Windows::new(
                    spec.groups.len(),
                    r.windows().first().copied().unwrap_or(MINUTE),
                    period,
                )
            })
            .collect();
        let gauges = vec![JourneyGauges::default(); rules.len()];
        let lookback = rules.iter().flat_map(JourneyRules::windows).max().unwrap_or(MINUTE);
        Self {
            catalog,
            rules,
            windows,
            open: BTreeMap::new(),
            evaluated: None,
            earliest: None,
            note_minutes: BTreeSet::new(),
            lookback,
            skip_quiet: true,
            update_interval_ms: alerts.update_interval.as_millis().min(i64::MAX as u128) as i64,
            ticket_update_interval_ms: alerts.ticket_update_interval.as_millis().min(i64::MAX as u128) as i64,
            gauges,
            stats: AlertStats::default(),
        }
    }

    /// Counts one decided journey.
    pub fn add(&mut self, note: &Note) {
        if self.evaluated.is_none() {
            self.earliest = Some(self.earliest.map_or(note.decided_at, |e| e.min(note.decided_at)));
        }
        self.note_minutes.insert(minute_of(note.decided_at));
        if let Some(w) = self.windows.get_mut(note.journey as usize)
            && !w.add(note)
        {
            self.stats.too_old += 1;
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> AlertStats {
        AlertStats {
            open: self.open.len() as u64,
            ..self.stats.clone()
        }
    }

    /// Gauges per journey (catalog order), as of the last evaluation.
    pub fn gauges(&self) -> &[JourneyGauges] {
        &self.gauges
    }

    /// Bytes of SLI state, for the bounded-state check.
    pub fn state_bytes(&self) -> usize {
        self.windows.iter().map(Windows::state_bytes).sum()
    }

    /// Evaluates every minute boundary at or before `watermark` not yet
    /// evaluated. Decisions for a minute are complete once every shard's
    /// watermark has passed it (a decision is never dated before the
    /// watermark that made it), so the caller passes the slowest shard's.
    pub fn advance(&mut self, watermark: EventTime) -> Vec<Notification> {
        let mut out = Vec::new();
        let last = minute_of(watermark);
        let mut t = match (self.evaluated, self.earliest) {
            (Some(e), _) => e.saturating_add(MINUTE),
            (None, Some(first)) => minute_of(first).saturating_add(MINUTE),
            // Nothing decided yet: nothing to evaluate.
            (None, None) => return out,
        };
        while t <= last {
            t = self.skip_quiet_minutes(t, last);
            self.evaluate(t, &mut out);
            self.evaluated = Some(t);
            t = t.saturating_add(MINUTE);
            if t == EventTime::MAX {
                break;
            }
        }
        // Decisions no window at or after `last` can read any more.
        let keep_from = last.saturating_sub(self.lookback.saturating_add(MINUTE));
        self.note_minutes = self.note_minutes.split_off(&keep_from);
        out
    }

    /// The minute to evaluate next, from `t`: past a stretch in which every
    /// window is empty and no incident is open, evaluating changes nothing
    /// (no rule can fire without decisions, none is open to update or
    /// resolve, and gauges are rewritten at the next evaluation), so it
    /// goes on at the minute before the next decision, or at `last`. One
    /// decision dated decades before the rest would otherwise cost an
    /// evaluation for every minute in between.
    fn skip_quiet_minutes(&self, t: EventTime, last: EventTime) -> EventTime {
        if !self.skip_quiet || !self.open.is_empty() {
            return t;
        }
        let quiet_since = t.saturating_sub(self.lookback.saturating_add(MINUTE));
        if self.note_minutes.range(quiet_since..=t).next().is_some() {
            return t;
        }
        let next = self.note_minutes.range(t.saturating_add(1)..).next();
        let resume = next.map_or(last, |&n| n.saturating_sub(MINUTE).min(last));
        resume.max(t)
    }

    fn evaluate(&mut self, t: EventTime, out: &mut Vec<Notification>) {
        for j in 0..self.rules.len() {
            let rules = &self.rules[j];
            let w = &self.windows[j];
            let slo = rules.slo;
            let (bg, bb) = w.budget(t);
            let budget = budget_left(bb, bg + bb, slo);
            // Every window any rule or gauge reads, summed in one pass.
            let windows = rules.windows();
            let sums = w.sums(t, &windows);
            let sum = |win: i64| {
                let i = windows
                    .iter()
                    .position(|&x| x == win)
                    .expect("rules.windows() has every rule's windows");
                &sums[i]
            };
            self.gauges[j] = JourneyGauges {
                error_budget_left: budget,
                burn: windows
                    .iter()
                    .zip(&sums)
                    .map(|(&win, s)| (win, burn_rate(s.bad, s.decided(), slo)))
                    .collect(),
            };
            let mut verdicts: Vec<(RuleKind, bool, WindowSum, Burn, String)> = Vec::new();
            for r in &rules.burn {
                let long = sum(r.long_ms).clone();
                let short = sum(r.short_ms);
                let burn = Burn {
                    long: burn_rate(long.bad, long.decided(), slo),
                    short: burn_rate(short.bad, short.decided(), slo),
                };
                let firing = long.decided() >= r.min_decided
                    && short.decided() >= r.min_decided
                    && burn.long >= r.burn
                    && burn.short >= r.burn;
                verdicts.push((
                    r.kind,
                    firing,
                    long,
                    burn,
                    format!("{}/{}", human(r.long_ms), human(r.short_ms)),
                ));
            }
            if let Some(r) = &rules.silent {
                let s = sum(r.window_ms).clone();
                let rate = if s.decided() == 0 {
                    0.0
                } else {
                    s.silent as f64 / s.decided() as f64
                };
                let firing = s.decided() >= r.min_decided && rate >= r.threshold;
                let b = burn_rate(s.bad, s.decided(), slo);
                verdicts.push((
                    RuleKind::SilentRate,
                    firing,
                    s,
                    Burn { long: b, short: b },
                    human(r.window_ms),
                ));
            }
            for (kind, firing, sum, burn, window) in verdicts {
                let key = (j as JourneyId, kind);
                let event = match (self.open.get_mut(&key), firing) {
                    (None, true) => {
                        let id = format!(
                            "{:016x}",
                            xxhash_rust::xxh3::xxh3_64(
                                format!("{}|{}|{t}", self.catalog.journey(j as JourneyId).name, kind.as_str())
                                    .as_bytes()
                            )
                        );
                        self.open.insert(
                            key,
                            Open {
                                id,
                                first_seen: t,
                                seq: 0,
                                last_sent: t,
                            },
                        );
                        self.stats.opened += 1;
                        "opened"
                    }
                    (Some(o), true)
                        if t - o.last_sent
                            >= match kind.severity() {
                                Severity::Page => self.update_interval_ms,
                                Severity::Ticket => self.ticket_update_interval_ms,
                            } =>
                    {
                        o.seq += 1;
                        o.last_sent = t;
                        self.stats.updated += 1;
                        "updated"
                    }
                    (Some(o), false) => {
                        o.seq += 1;
                        self.stats.resolved += 1;
                        "resolved"
                    }
                    _ => continue,
                };
                let o = if event == "resolved" {
                    self.open.remove(&key).expect("open")
                } else {
                    self.open[&key].clone()
                };
                let spec = self.catalog.journey(j as JourneyId);
                let top_missing = sum
                    .missing
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                    .map(|(i, _)| spec.groups[i].clone());
                out.push(Notification {
                    idempotency_key: format!("{}-{}", o.id, o.seq),
                    incident_id: o.id,
                    event,
                    seq: o.seq,
                    journey: spec.name.clone(),
                    severity: kind.severity(),
                    rule: kind,
                    window,
                    at: rfc3339(t),
                    at_ms: t,
                    first_seen: rfc3339(o.first_seen),
                    counts: Counts {
                        decided: sum.decided(),
                        completed: sum.good,
                        silent_failure: sum.silent,
                        stalled: sum.stalled,
                    },
                    silent_rate: if sum.decided() == 0 {
                        0.0
                    } else {
                        sum.silent as f64 / sum.decided() as f64
                    },
                    burn_rate: burn,
                    error_budget_left: budget,
                    money_at_risk: sum.money_at_risk,
                    top_missing_step: top_missing,
                    top_last_service: sum.top_service,
                    sample_trace_ids: sum.samples,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tacet_core::Outcome;

    use super::*;

    const T0: EventTime = 1_795_334_400_000;

    fn engine(extra: &str) -> AlertEngine {
        let text = format!("{extra}\n{}", tacet_core::config::EMBEDDED_DEFAULT);
        let config = Config::from_toml(&text, Path::new("t.toml")).unwrap();
        AlertEngine::new(Arc::new(Catalog::new(&config).unwrap()), &config)
    }

    fn note(journey: JourneyId, outcome: Outcome, at: EventTime) -> Note {
        Note {
            journey,
            outcome,
            decided_at: at,
            amount: 5.0,
            missing: 1,
            last_service: None,
            trace_id: Some("t".into()),
            synthetic: false,
        }
    }

    /// Feeds `per_minute` decisions a minute, every `bad_every`-th silent.
    fn feed(
        e: &mut AlertEngine,
        journey: JourneyId,
        from: EventTime,
        minutes: i64,
        per_minute: i64,
        bad_every: i64,
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        for m in 0..minutes {
            for i in 0..per_minute {
                let outcome = if bad_every > 0 && i % bad_every == 0 {
                    Outcome::SilentFailure
                } else {
                    Outcome::Completed
                };
                e.add(&note(journey, outcome, from + m * MINUTE + i));
            }
            out.extend(e.advance(from + (m + 1) * MINUTE));
        }
        out
    }

    #[test]
    fn silent_rate_rule_needs_rate_and_volume() {
        // Burn-rate rules off: only the silent-rate rule (10% over 5m, 20 decided).
        let off = "[alerts.rules]\npage_fast = { enabled = false }\npage_slow = { enabled = false }\nticket_fast = { enabled = false }\nticket_slow = { enabled = false }";
        let mut e = engine(off);
        let n = feed(&mut e, 0, T0, 10, 100, 5); // 20% silent, 500 per window
        assert_eq!(
            n.first().map(|n| (n.rule, n.event)),
            Some((RuleKind::SilentRate, "opened"))
        );
        let mut e = engine(off);
        assert!(feed(&mut e, 0, T0, 10, 100, 20).is_empty(), "5% is below the threshold");
        let mut e = engine(off);
        assert!(
            feed(&mut e, 0, T0, 10, 3, 1).is_empty(),
            "every journey failed, but 15 in 5m is below the minimum volume"
        );
    }

    /// A live run sees its first watermark late and in big steps; a replay
    /// in small ones. The notifications must not depend on that.
    #[test]
    fn notifications_do_not_depend_on_how_the_watermark_advances() {
        let mut stepwise = engine("");
        let mut at_once = engine("");
        let mut all = Vec::new();
        for m in 0..40 {
            for i in 0..50 {
                let bad = (10..25).contains(&m) && i % 5 == 0;
                let outcome = if bad {
                    Outcome::SilentFailure
                } else {
                    Outcome::Completed
                };
                all.push(note(0, outcome, T0 + m * MINUTE + i * 1000));
            }
        }
        let mut a = Vec::new();
        for m in 0..40 {
            for n in &all[(m * 50) as usize..((m + 1) * 50) as usize] {
                stepwise.add(n);
            }
            a.extend(stepwise.advance(T0 + (m + 1) * MINUTE));
        }
        // Everything reported before the first watermark, which is already 40 minutes in.
        for n in &all {
            at_once.add(n);
        }
        let b = at_once.advance(T0 + 40 * MINUTE);
        let key = |n: &Notification| serde_json::to_string(n).unwrap();
        assert!(a.iter().any(|n| n.event == "opened"), "the burst pages");
        assert_eq!(
            a.iter().map(key).collect::<Vec<_>>(),
            b.iter().map(key).collect::<Vec<_>>()
        );
    }

    #[test]
    fn one_incident_per_journey_and_rule_until_it_clears() {
        let mut e = engine(
            "[alerts.rules]\npage_slow = { enabled = false }\nticket_fast = { enabled = false }\nticket_slow = { enabled = false }\nsilent_rate = { enabled = false }",
        );
        // 60 minutes healthy, 30 minutes at 10% bad (burn 100), 20 healthy.
        let mut n = feed(&mut e, 0, T0, 60, 50, 0);
        n.extend(feed(&mut e, 0, T0 + 60 * MINUTE, 30, 50, 10));
        n.extend(feed(&mut e, 0, T0 + 90 * MINUTE, 20, 50, 0));
        let events: Vec<_> = n.iter().map(|n| n.event).collect();
        assert_eq!(events.first(), Some(&"opened"));
        assert_eq!(events.last(), Some(&"resolved"));
        assert_eq!(events.iter().filter(|e| **e == "opened").count(), 1);
        let ids: std::collections::BTreeSet<_> = n.iter().map(|n| n.incident_id.clone()).collect();
        assert_eq!(ids.len(), 1);
        let seqs: Vec<u32> = n.iter().map(|n| n.seq).collect();
        assert_eq!(seqs, (0..n.len() as u32).collect::<Vec<_>>());
        assert_eq!(e.stats().open, 0);
    }

    /// Skipping quiet stretches changes no notification: random traffic
    /// with bursts and gaps of up to days, evaluated with and without it.
    #[test]
    fn skipping_quiet_minutes_changes_nothing() {
        use proptest::prelude::*;
        let minutes = prop_oneof![3 => 0i64..200, 1 => 0i64..5_000];
        let traffic = prop::collection::vec((minutes, 0u64..60, 0u64..30), 1..40);
        proptest!(ProptestConfig::with_cases(24), |(stretches in traffic)| {
            let mut skipping = engine("");
            let mut walking = engine("");
            walking.skip_quiet = false;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let mut at = T0;
            for (gap, n, bad) in stretches {
                at += gap * MINUTE;
                for i in 0..n {
                    let outcome = if i < bad * n / 30 { Outcome::SilentFailure } else { Outcome::Completed };
                    let decided = note(0, outcome, at + (i as i64) * 500);
                    skipping.add(&decided);
                    walking.add(&decided);
                }
                at += MINUTE;
                a.extend(skipping.advance(at));
                b.extend(walking.advance(at));
            }
            let key = |n: &Notification| serde_json::to_string(n).unwrap();
            prop_assert_eq!(a.iter().map(key).collect::<Vec<_>>(), b.iter().map(key).collect::<Vec<_>>());
            prop_assert_eq!(skipping.stats().open, walking.stats().open);
        });
    }

    /// One decision dated near the start of time, then today's traffic:
    /// evaluation does not walk the minutes in between.
    #[test]
    fn a_decision_from_the_distant_past_costs_no_walk_through_time() {
        let mut e = engine("");
        e.add(&note(0, Outcome::Stalled, EventTime::MIN + 30_000));
        let started = std::time::Instant::now();
        e.advance(EventTime::MIN + 10 * MINUTE);
        let mut all = feed(&mut e, 0, T0, 30, 50, 10);
        all.extend(e.advance(EventTime::MAX - MINUTE));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(all.iter().any(|n| n.event == "opened"), "today's burst still pages");
    }
}
