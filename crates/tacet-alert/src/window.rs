//! SLI counters in fixed-size time buckets: one-minute buckets in a ring as
//! long as the longest rule window, and hourly buckets for the budget period.
//! Memory is set by the windows, never by the traffic.

use smallvec::SmallVec;
use tacet_core::{EventTime, JourneyId, Outcome};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// Distinct last-service names remembered per journey; beyond, `(other)`.
const MAX_SERVICES: usize = 1024;
/// Sample trace ids kept per minute bucket.
const SAMPLES_PER_BUCKET: usize = 3;

/// One decided journey, as the alert engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub journey: JourneyId,
    pub outcome: Outcome,
    pub decided_at: EventTime,
    /// The money attribute (0 when the journey has none).
    pub amount: f64,
    /// Missing required-step groups (bitmask over the journey's `complete`).
    pub missing: u32,
    /// For bad outcomes: the last service seen, and the trace id (samples).
    pub last_service: Option<Box<str>>,
    pub trace_id: Option<Box<str>>,
    /// A synthetic (probe) journey: counted apart.
    pub synthetic: bool,
}

impl Note {
    /// Good for the SLI (completed in time).
    pub fn is_good(&self) -> bool {
        self.outcome == Outcome::Completed
    }

    /// Bad for the SLI (the customer waited on something that did not happen).
    pub fn is_bad(&self) -> bool {
        matches!(self.outcome, Outcome::SilentFailure | Outcome::Stalled)
    }
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    minute: i64,
    good: u64,
    bad: u64,
    silent: u64,
    stalled: u64,
    synthetic_good: u64,
    synthetic_bad: u64,
    money: f64,
    missing: SmallVec<[u32; 8]>,
    services: SmallVec<[(u16, u32); 4]>,
    samples: SmallVec<[Box<str>; SAMPLES_PER_BUCKET]>,
}

#[derive(Debug, Clone, Copy, Default)]
struct HourBucket {
    hour: i64,
    good: u64,
    bad: u64,
}

/// Sums over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowSum {
    pub good: u64,
    pub bad: u64,
    pub silent: u64,
    pub stalled: u64,
    pub synthetic_good: u64,
    pub synthetic_bad: u64,
    pub money_at_risk: f64,
    /// Per required-step group: how often it was missing.
    pub missing: Vec<u64>,
    /// The last service most often seen in bad journeys.
    pub top_service: Option<String>,
    /// Some trace ids of bad journeys, newest first.
    pub samples: Vec<String>,
}

impl WindowSum {
    /// Decided journeys inside the SLI (good + bad).
    pub fn decided(&self) -> u64 {
        self.good + self.bad
    }
}

/// Totals of minute buckets added newest first (see [`Windows::sums`]).
struct Running {
    sum: WindowSum,
    /// (service id, bad journeys) in the order first seen.
    services: SmallVec<[(u16, u64); 16]>,
}

impl Running {
    fn new(groups: usize) -> Self {
        Self {
            sum: WindowSum {
                missing: vec![0; groups],
                ..Default::default()
            },
            services: SmallVec::new(),
        }
    }

    fn add(&mut self, b: &Bucket) {
        let s = &mut self.sum;
        s.good += b.good;
        s.bad += b.bad;
        s.silent += b.silent;
        s.stalled += b.stalled;
        s.synthetic_good += b.synthetic_good;
        s.synthetic_bad += b.synthetic_bad;
        s.money_at_risk += b.money;
        for (t, c) in s.missing.iter_mut().zip(&b.missing) {
            *t += *c as u64;
        }
        for &(id, c) in &b.services {
            match self.services.iter_mut().find(|(s, _)| *s == id) {
                Some((_, t)) => *t += c as u64,
                None => self.services.push((id, c as u64)),
            }
        }
        for t in &b.samples {
            if s.samples.len() < 5 {
                s.samples.push(t.to_string());
            }
        }
    }

    /// The totals so far; `names` are the journey's service names by id.
    fn total(&self, names: &[Box<str>]) -> WindowSum {
        let mut s = self.sum.clone();
        s.top_service = self
            .services
            .iter()
            .max_by(|a, b| {
                a.1.cmp(&b.1)
                    .then_with(|| names[b.0 as usize].cmp(&names[a.0 as usize]))
            })
            .map(|(id, _)| names[*id as usize].to_string());
        s
    }
}

/// The buckets of one journey.
#[derive(Debug, Clone)]
pub struct Windows {
    groups: usize,
    minutes: Vec<Bucket>,
    /// The newest and oldest minute any bucket was filled for: no bucket
    /// outside them holds anything, so [`Windows::sums`] reads only between.
    newest: i64,
    oldest: i64,
    hours: Vec<HourBucket>,
    services: Vec<Box<str>>,
}

impl Windows {
    /// Buckets for windows up to `longest_ms` and a budget period of `period_ms`.
    pub fn new(groups: usize, longest_ms: i64, period_ms: i64) -> Self {
        let minutes = (longest_ms.div_euclid(MINUTE) + 1).max(1) as usize;
        let hours = (period_ms.div_euclid(HOUR) + 1).max(1) as usize;
        Self {
            groups,
            minutes: vec![
                Bucket {
                    minute: i64::MIN,
                    ..Default::default()
                };
                minutes
            ],
            newest: i64::MIN,
            oldest: i64::MAX,
            hours: vec![
                HourBucket {
                    hour: i64::MIN,
                    ..Default::default()
                };
                hours
            ],
            services: Vec::new(),
        }
    }

    /// Counts one decision; `false` when it is older than every bucket kept.
    pub fn add(&mut self, n: &Note) -> bool {
        if !n.is_good() && !n.is_bad() {
            return true; // outside the SLI
        }
        let minute = n.decided_at.div_euclid(MINUTE);
        let len = self.minutes.len() as i64;
        let b = &mut self.minutes[minute.rem_euclid(len) as usize];
        if b.minute != minute {
            if b.minute > minute {
                return false; // older than the ring
            }
            *b = Bucket {
                minute,
                missing: SmallVec::from_elem(0, self.groups),
                ..Default::default()
            };
            self.newest = self.newest.max(minute);
            self.oldest = self.oldest.min(minute);
        }
        match (n.synthetic, n.is_good()) {
            (true, true) => b.synthetic_good += 1,
            (true, false) => b.synthetic_bad += 1,
            (false, true) => b.good += 1,
            (false, false) => {
                b.bad += 1;
                if n.outcome == Outcome::SilentFailure {
                    b.silent += 1;
                    b.money += n.amount;
                } else {
                    b.stalled += 1;
                }
                for (g, count) in b.missing.iter_mut().enumerate() {
                    if n.missing & (1 << g) != 0 {
                        *count += 1;
                    }
                }
                if let Some(service) = &n.last_service {
                    let id = match self.services.iter().position(|s| s == service) {
                        Some(i) => i,
                        None if self.services.len() < MAX_SERVICES => {
                            self.services.push(service.clone());
                            self.services.len() - 1
                        }
                        None => usize::MAX,
                    };
                    if id != usize::MAX {
                        match b.services.iter_mut().find(|(s, _)| *s as usize == id) {
                            Some((_, c)) => *c += 1,
                            None => b.services.push((id as u16, 1)),
                        }
                    }
                }
                if let Some(trace) = &n.trace_id
                    && b.samples.len() < SAMPLES_PER_BUCKET
                {
                    b.samples.push(trace.clone());
                }
            }
        }
        if !n.synthetic {
            let hour = n.decided_at.div_euclid(HOUR);
            let hlen = self.hours.len() as i64;
            let h = &mut self.hours[hour.rem_euclid(hlen) as usize];
            if h.hour != hour {
                if h.hour > hour {
                    return true;
                }
                *h = HourBucket { hour, good: 0, bad: 0 };
            }
            if n.is_good() {
                h.good += 1;
            } else {
                h.bad += 1;
            }
        }
        true
    }

    /// Sums of the minute buckets in `[end - window, end)`.
    pub fn sum(&self, end: EventTime, window_ms: i64) -> WindowSum {
        self.sums(end, &[window_ms]).pop().expect("one sum per window")
    }

    /// [`Windows::sum`] of each of `windows_ms` (same order), all ending at
    /// `end`: one pass over the minutes of the longest, newest first, taking
    /// each window's totals as the pass leaves it. Windows nest, so summing
    /// each on its own would read the newest minutes once per window — the
    /// default rules ask for seven windows, up to three days (4,320
    /// buckets), every minute of event time.
    pub fn sums(&self, end: EventTime, windows_ms: &[i64]) -> Vec<WindowSum> {
        let last = end.div_euclid(MINUTE) - 1;
        let len = self.minutes.len() as i64;
        // Minutes in each window, newest first from `last`.
        let spans: Vec<i64> = windows_ms
            .iter()
            .map(|&w| {
                let first = (end - w).div_euclid(MINUTE);
                (last - first + 1).clamp(0, len)
            })
            .collect();
        let mut by_span: Vec<usize> = (0..spans.len()).collect();
        by_span.sort_by_key(|&i| spans[i]);
        let longest = by_span.last().map_or(0, |&i| spans[i]);
        let mut out: Vec<Option<WindowSum>> = vec![None; spans.len()];
        let mut due = by_span.into_iter().peekable();
        let mut running = Running::new(self.groups);
        // Only minutes between the oldest and newest ever filled can hold
        // anything: after a run's last decision the watermark keeps moving
        // (to the last deadline, or by wall clock while idle), and every
        // minute it passes is evaluated; reading all 4,320 buckets of the
        // longest window for each cost ~320K instructions per journey and
        // minute. Windows shorter than the first minute read sum nothing,
        // those longer than the last read sum everything read: the same
        // additions in the same order as a pass over every minute.
        let from = last.saturating_sub(self.newest).max(0);
        let to = last.saturating_sub(self.oldest).min(longest - 1);
        for taken in from..=to {
            while let Some(i) = due.next_if(|&i| spans[i] <= taken) {
                out[i] = Some(running.total(&self.services));
            }
            let minute = last - taken;
            let b = &self.minutes[minute.rem_euclid(len) as usize];
            if b.minute == minute {
                running.add(b);
            }
        }
        for i in due {
            out[i] = Some(running.total(&self.services));
        }
        out.into_iter()
            .map(|s| s.expect("every window is taken by the end of the pass"))
            .collect()
    }

    /// (good, bad) over the hourly buckets of the budget period ending at `end`.
    ///
    /// Whole hours before `end`'s hour come from the hourly buckets; the
    /// current hour only up to `end`, from the minute buckets, so decisions
    /// that sources running ahead have already reported do not leak into an
    /// evaluation at `end` (a replay and a Kafka run then agree exactly).
    pub fn budget(&self, end: EventTime) -> (u64, u64) {
        let now = end.div_euclid(HOUR);
        let len = self.hours.len() as i64;
        let minutes_kept = self.minutes.len() as i64;
        let hour_minutes = HOUR / MINUTE;
        let whole_hours = |h: &&HourBucket| h.hour > now - len && h.hour < now;
        let (mut good, mut bad) = self
            .hours
            .iter()
            .filter(whole_hours)
            .fold((0, 0), |(g, b), h| (g + h.good, b + h.bad));
        if minutes_kept < hour_minutes {
            // Too few minute buckets to rebuild the hour: count it whole.
            if let Some(h) = self.hours.iter().find(|h| h.hour == now) {
                good += h.good;
                bad += h.bad;
            }
            return (good, bad);
        }
        for minute in now * hour_minutes..end.div_euclid(MINUTE) {
            let b = &self.minutes[minute.rem_euclid(minutes_kept) as usize];
            if b.minute == minute {
                good += b.good;
                bad += b.bad;
            }
        }
        (good, bad)
    }

    /// Bytes held, for the bounded-state check.
    pub fn state_bytes(&self) -> usize {
        let per_bucket = std::mem::size_of::<Bucket>();
        let spilled: usize = self
            .minutes
            .iter()
            .map(|b| {
                b.samples.iter().map(|s| s.len()).sum::<usize>()
                    + if b.missing.spilled() {
                        b.missing.capacity() * 4
                    } else {
                        0
                    }
                    + if b.services.spilled() {
                        b.services.capacity() * 8
                    } else {
                        0
                    }
            })
            .sum();
        self.minutes.len() * per_bucket
            + spilled
            + self.hours.len() * std::mem::size_of::<HourBucket>()
            + self.services.iter().map(|s| s.len() + 16).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(outcome: Outcome, at: EventTime) -> Note {
        Note {
            journey: 0,
            outcome,
            decided_at: at,
            amount: 10.0,
            missing: 0b01,
            last_service: Some("core-ledger".into()),
            trace_id: Some(format!("t{at}").into()),
            synthetic: false,
        }
    }

    #[test]
    fn the_budget_at_a_time_ignores_decisions_after_it() {
        let mut w = Windows::new(1, 2 * HOUR, 24 * HOUR);
        w.add(&note(Outcome::Completed, HOUR / 2)); // an earlier hour
        w.add(&note(Outcome::SilentFailure, HOUR + 5 * MINUTE));
        // Already reported by a source running ahead, but after 01:10.
        w.add(&note(Outcome::SilentFailure, HOUR + 40 * MINUTE));
        assert_eq!(w.budget(HOUR + 10 * MINUTE), (1, 1));
        assert_eq!(w.budget(2 * HOUR), (1, 2));
        assert_eq!(w.budget(HOUR), (1, 0));
    }

    #[test]
    fn windows_sum_exactly_their_minutes() {
        let mut w = Windows::new(2, 60 * MINUTE, 24 * HOUR);
        for m in 0..30 {
            w.add(&note(Outcome::Completed, m * MINUTE + 5));
            w.add(&note(
                if m >= 25 {
                    Outcome::SilentFailure
                } else {
                    Outcome::Completed
                },
                m * MINUTE + 7,
            ));
        }
        let last5 = w.sum(30 * MINUTE, 5 * MINUTE);
        assert_eq!((last5.good, last5.bad, last5.silent), (5, 5, 5));
        assert_eq!(last5.missing, [5, 0]);
        assert_eq!(last5.money_at_risk, 50.0);
        assert_eq!(last5.top_service.as_deref(), Some("core-ledger"));
        assert_eq!(last5.samples.len(), 5);
        let all = w.sum(30 * MINUTE, 60 * MINUTE);
        assert_eq!(all.decided(), 60);
        assert_eq!(w.budget(30 * MINUTE), (55, 5));
        // A minute later the oldest minute of the 5m window leaves it.
        assert_eq!(w.sum(31 * MINUTE, 5 * MINUTE).bad, 4);
    }

    #[test]
    fn outside_the_sli_and_synthetic_are_apart() {
        let mut w = Windows::new(1, 10 * MINUTE, HOUR);
        w.add(&note(Outcome::Failed, 1000));
        w.add(&note(Outcome::Orphan, 1000));
        w.add(&note(Outcome::LateCompletion, 1000));
        let mut probe = note(Outcome::SilentFailure, 1000);
        probe.synthetic = true;
        w.add(&probe);
        let s = w.sum(MINUTE, MINUTE);
        assert_eq!((s.good, s.bad, s.synthetic_bad), (0, 0, 1));
        assert_eq!(w.budget(MINUTE), (0, 0), "synthetic journeys never burn the budget");
    }

    #[test]
    fn state_is_bounded_whatever_the_traffic() {
        let mut w = Windows::new(2, 6 * HOUR, 24 * HOUR);
        for i in 0..10_000 {
            w.add(&note(Outcome::SilentFailure, i * 600));
        }
        let normal = w.state_bytes();
        for i in 0..100_000 {
            w.add(&note(Outcome::SilentFailure, 6_000_000 + i * 60));
        }
        assert!(
            w.state_bytes() <= normal + normal / 10,
            "{} vs {normal}",
            w.state_bytes()
        );
    }

    /// One window summed on its own, bucket by bucket: the reference the
    /// one-pass [`Windows::sums`] is held to.
    fn sum_alone(w: &Windows, end: EventTime, window_ms: i64) -> WindowSum {
        let last = end.div_euclid(MINUTE) - 1;
        let first = (end - window_ms).div_euclid(MINUTE);
        let len = w.minutes.len() as i64;
        let mut running = Running::new(w.groups);
        for minute in (first.max(last - len + 1)..=last).rev() {
            let b = &w.minutes[minute.rem_euclid(len) as usize];
            if b.minute == minute {
                running.add(b);
            }
        }
        running.total(&w.services)
    }

    proptest::proptest! {
        #[test]
        fn one_pass_sums_equal_each_window_summed_alone(
            notes in proptest::collection::vec((0usize..6, 0i64..(8 * 60), 0usize..4, 0u32..4), 0..300),
            end_minute in 0i64..(10 * 60),
            windows in proptest::collection::vec(1i64..(5 * 60), 1..8),
        ) {
            let outcomes = [Outcome::Completed, Outcome::SilentFailure, Outcome::Stalled, Outcome::Failed, Outcome::Orphan, Outcome::LateCompletion];
            let mut w = Windows::new(2, 3 * HOUR, 24 * HOUR);
            for (i, (outcome, minute, service, missing)) in notes.into_iter().enumerate() {
                let mut n = note(outcomes[outcome], minute * MINUTE + i as i64 % MINUTE);
                n.last_service = Some(["a", "b", "c", "d"][service].into());
                n.missing = missing;
                n.synthetic = i % 7 == 0;
                w.add(&n);
            }
            let windows: Vec<i64> = windows.into_iter().map(|m| m * MINUTE + m % 3 * 1000).collect();
            let end = end_minute * MINUTE + 17;
            let together = w.sums(end, &windows);
            let alone: Vec<WindowSum> = windows.iter().map(|&win| sum_alone(&w, end, win)).collect();
            proptest::prop_assert_eq!(together, alone);
        }
    }
}
