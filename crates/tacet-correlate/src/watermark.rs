//! The watermark of SPEC §4: the minimum, over input partitions that are not
//! idle, of (largest event time seen − allowed_lateness).
//!
//! Wall-clock time enters only through idleness, and only as an argument
//! (`now`), so the rules are tested without sleeping. A replay of finite
//! files never goes idle and is therefore fully deterministic.

use std::time::{Duration, Instant};

use tacet_core::EventTime;

#[derive(Debug, Clone)]
struct Partition {
    max_seen: Option<EventTime>,
    last_data: Instant,
    finished: bool,
    /// Known to be behind (records at the broker not read yet): never idle.
    lagging: bool,
}

/// Per-partition event-time progress and the watermark derived from it.
#[derive(Debug, Clone)]
pub struct Watermarks {
    lateness_ms: i64,
    idle_timeout: Option<Duration>,
    partitions: Vec<Partition>,
    last_any: Instant,
    current: Option<EventTime>,
    /// Set while every partition is idle: (when that began, watermark then).
    idle_anchor: Option<(Instant, EventTime)>,
    /// The `now` of the last [`Watermarks::watermark`] call while nothing
    /// that call read has changed since: a call at the same `now` returns
    /// `current` as it is. A batch of records shares one `now`, and most
    /// records raise no partition's maximum, so most calls end here.
    unchanged_since: Option<Instant>,
}

impl Watermarks {
    /// `partitions` inputs, none seen yet. `idle_timeout: None` disables
    /// idleness (deterministic replay).
    pub fn new(partitions: usize, lateness: Duration, idle_timeout: Option<Duration>, now: Instant) -> Self {
        Self {
            lateness_ms: lateness.as_millis().min(i64::MAX as u128) as i64,
            idle_timeout,
            partitions: vec![
                Partition {
                    max_seen: None,
                    last_data: now,
                    finished: false,
                    lagging: false,
                };
                partitions
            ],
            last_any: now,
            current: None,
            idle_anchor: None,
            unchanged_since: None,
        }
    }

    /// Adds a partition (a Kafka assignment grew); returns its index.
    pub fn add_partition(&mut self, now: Instant) -> usize {
        self.partitions.push(Partition {
            max_seen: None,
            last_data: now,
            finished: false,
            lagging: false,
        });
        self.unchanged_since = None;
        self.partitions.len() - 1
    }

    /// Records data on partition `p` up to event time `time`.
    pub fn observe(&mut self, p: usize, time: EventTime, now: Instant) {
        let part = &mut self.partitions[p];
        let max_seen = Some(part.max_seen.map_or(time, |m| m.max(time)));
        // The watermark reads each partition's maximum and whether it is
        // idle. Data at the `now` it was last computed for changes neither
        // when the maximum stands and this partition already had data at
        // that `now` (so was not idle then either).
        if max_seen != part.max_seen || part.last_data != now || self.idle_anchor.is_some() {
            self.unchanged_since = None;
        }
        part.max_seen = max_seen;
        part.last_data = now;
        self.last_any = now;
        self.idle_anchor = None;
    }

    /// Whether partition `p` is known to be behind its source (a Kafka
    /// partition with records at the broker not read yet). A lagging
    /// partition is never idle, however long since its last data: it is
    /// slow, not quiet, and its late records must not find their journeys
    /// decided already.
    pub fn set_lagging(&mut self, p: usize, lagging: bool) {
        if self.partitions[p].lagging != lagging {
            self.partitions[p].lagging = lagging;
            self.unchanged_since = None;
        }
    }

    /// Partition `p` has ended (end of file); it no longer holds the watermark back.
    pub fn finish(&mut self, p: usize) {
        self.partitions[p].finished = true;
        self.unchanged_since = None;
    }

    /// The largest event time seen on partition `p`.
    pub fn max_seen_of(&self, p: usize) -> Option<EventTime> {
        self.partitions[p].max_seen
    }

    /// The largest event time seen on any partition.
    pub fn max_seen(&self) -> Option<EventTime> {
        self.partitions.iter().filter_map(|p| p.max_seen).max()
    }

    /// The watermark at wall-clock `now`; `None` before the first event. It
    /// never moves backwards and never jumps to the current time.
    pub fn watermark(&mut self, now: Instant) -> Option<EventTime> {
        if self.unchanged_since == Some(now) {
            return self.current;
        }
        self.unchanged_since = Some(now);
        // Idle: `now - last_data >= timeout`, i.e. `last_data <= now - timeout`.
        // One clock subtraction per call instead of one per partition: this
        // runs for every event.
        let idle_since = match self.idle_timeout {
            None => None,
            // Nothing is idle before `timeout` has passed since the clock's origin.
            Some(t) => now.checked_sub(t).map(|at| (at, t.is_zero())),
        };
        let idle = |p: &Partition| !p.lagging && idle_since.is_some_and(|(at, zero)| zero || p.last_data <= at);
        let mut candidate: Option<Option<EventTime>> = None;
        for p in self.partitions.iter().filter(|p| !p.finished && !idle(p)) {
            let w = p.max_seen.map(|m| m.saturating_sub(self.lateness_ms));
            candidate = Some(match (candidate, w) {
                (None, w) => w,
                (Some(None), _) | (Some(_), None) => None,
                (Some(Some(a)), Some(b)) => Some(a.min(b)),
            });
        }
        let next = match candidate {
            Some(w) => w,
            None if self.partitions.iter().all(|p| p.finished) => self.max_seen(),
            None => {
                // Every open partition is idle: move at wall-clock speed from
                // where the watermark stands.
                let stand = self.current?;
                let timeout = self.idle_timeout.unwrap_or_default();
                let (since, from) = *self.idle_anchor.get_or_insert((self.last_any + timeout, stand));
                Some(from.saturating_add(now.saturating_duration_since(since).as_millis() as i64))
            }
        };
        if let Some(w) = next {
            self.current = Some(self.current.map_or(w, |c| c.max(w)));
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn no_watermark_before_first_event() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(1, 10 * S, Some(30 * S), t0);
        assert_eq!(w.watermark(t0), None);
        assert_eq!(w.watermark(t0 + 3600 * S), None, "idleness never invents a start");
    }

    /// A partition behind its source is slow, not quiet: it holds the
    /// watermark however long since its last data, and goes idle as usual
    /// once it has caught up.
    #[test]
    fn a_lagging_partition_is_never_idle() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(2, 10 * S, Some(30 * S), t0);
        w.observe(0, 100_000, t0);
        w.observe(1, 500_000, t0);
        w.set_lagging(0, true);
        let later = t0 + 120 * S;
        w.observe(1, 600_000, later);
        assert_eq!(w.watermark(later), Some(90_000), "partition 0 holds it back");
        w.set_lagging(0, false);
        assert_eq!(w.watermark(later), Some(590_000), "caught up and quiet: idle");
    }

    #[test]
    fn watermark_is_max_minus_lateness() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(1, 10 * S, None, t0);
        w.observe(0, 100_000, t0);
        w.observe(0, 90_000, t0);
        assert_eq!(w.watermark(t0), Some(90_000));
    }

    #[test]
    fn slowest_active_partition_holds_it_back() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(2, Duration::ZERO, Some(30 * S), t0);
        w.observe(0, 500_000, t0);
        assert_eq!(w.watermark(t0), None, "partition 1 has not started");
        w.observe(1, 200_000, t0);
        assert_eq!(w.watermark(t0), Some(200_000));
        // Partition 1 goes quiet; after idle_timeout it stops holding back.
        w.observe(0, 600_000, t0 + 20 * S);
        assert_eq!(w.watermark(t0 + 29 * S), Some(200_000));
        assert_eq!(w.watermark(t0 + 31 * S), Some(600_000));
    }

    #[test]
    fn all_idle_advances_at_wall_clock_speed() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(1, Duration::ZERO, Some(30 * S), t0);
        w.observe(0, 1_000_000, t0);
        assert_eq!(w.watermark(t0), Some(1_000_000));
        assert_eq!(w.watermark(t0 + 29 * S), Some(1_000_000));
        assert_eq!(w.watermark(t0 + 30 * S), Some(1_000_000), "idle from here");
        assert_eq!(w.watermark(t0 + 45 * S), Some(1_015_000));
        // Data again: back to event time, never backwards.
        w.observe(0, 1_005_000, t0 + 46 * S);
        assert_eq!(w.watermark(t0 + 46 * S), Some(1_015_000));
        w.observe(0, 1_100_000, t0 + 47 * S);
        assert_eq!(w.watermark(t0 + 47 * S), Some(1_100_000));
    }

    #[test]
    fn a_partition_is_idle_from_exactly_idle_timeout() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(2, Duration::ZERO, Some(30 * S), t0);
        w.observe(0, 500_000, t0);
        w.observe(1, 200_000, t0);
        let ns = Duration::from_nanos(1);
        // Partition 0 keeps talking; partition 1 went quiet at t0.
        w.observe(0, 600_000, t0 + 30 * S - ns);
        assert_eq!(
            w.watermark(t0 + 30 * S - ns),
            Some(200_000),
            "not idle a nanosecond before"
        );
        w.observe(0, 600_000, t0 + 30 * S);
        assert_eq!(w.watermark(t0 + 30 * S), Some(600_000), "idle at exactly the timeout");
    }

    #[test]
    fn finished_partitions_release_and_end_is_max_seen() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(2, 10 * S, None, t0);
        w.observe(0, 100_000, t0);
        w.observe(1, 50_000, t0);
        assert_eq!(w.watermark(t0), Some(40_000));
        w.finish(1);
        assert_eq!(w.watermark(t0), Some(90_000));
        w.finish(0);
        assert_eq!(w.watermark(t0), Some(100_000), "end of input: largest event time");
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Wall clock moves on by this many ms (often zero: one batch).
        Tick(u64),
        Observe(usize, EventTime),
        Finish(usize),
        AddPartition,
        Watermark,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => prop_oneof![Just(0u64), 0u64..50].prop_map(Op::Tick),
            6 => (0usize..4, 0i64..200).prop_map(|(p, t)| Op::Observe(p, t)),
            1 => (0usize..4).prop_map(Op::Finish),
            1 => Just(Op::AddPartition),
            6 => Just(Op::Watermark),
        ]
    }

    proptest! {
        /// The remembered watermark is what computing it afresh gives, for
        /// any sequence of data, idleness, ends and new partitions.
        #[test]
        fn a_remembered_watermark_equals_a_fresh_one(
            partitions in 1usize..4,
            lateness in 0u64..20,
            idle in prop_oneof![Just(None), (0u64..40).prop_map(Some)],
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let ms = Duration::from_millis;
            let t0 = Instant::now();
            let mut now = t0;
            let mut remembered = Watermarks::new(partitions, ms(lateness), idle.map(ms), t0);
            let mut fresh = remembered.clone();
            for op in ops {
                match op {
                    Op::Tick(d) => now += ms(d),
                    Op::Observe(p, t) => {
                        let p = p % remembered.partitions.len();
                        remembered.observe(p, t, now);
                        fresh.observe(p, t, now);
                    }
                    Op::Finish(p) => {
                        let p = p % remembered.partitions.len();
                        remembered.finish(p);
                        fresh.finish(p);
                    }
                    Op::AddPartition => {
                        remembered.add_partition(now);
                        fresh.add_partition(now);
                    }
                    Op::Watermark => {
                        fresh.unchanged_since = None;
                        prop_assert_eq!(remembered.watermark(now), fresh.watermark(now));
                    }
                }
            }
        }
    }
}
