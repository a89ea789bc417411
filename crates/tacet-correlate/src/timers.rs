//! A shard's timer queue: every open trace's one timer, handed back in
//! `(time, slot, generation)` order once the watermark passes it.
//!
//! One binary heap over all timers made each pop walk ~log2(n) levels of a
//! heap much larger than the cache: a cache miss per level, for every
//! decided journey. Timers are set a timeout or deadline after an event, so
//! they cluster just ahead of the watermark. They are kept in buckets of
//! [`BUCKET_MS`] of event time; only the earliest bucket in use is a heap,
//! small and warm, and later ones are plain vectors until the watermark
//! reaches them. The order handed back is exactly that of the one heap.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use tacet_core::EventTime;

/// `(at, slot, generation)`: fires once the watermark passes `at`.
pub(crate) type Timer = (EventTime, u32, u32);

/// Event time per bucket.
const BUCKET_MS: i64 = 1_000;

#[derive(Default)]
pub(crate) struct TimerQueue {
    /// Every timer of a bucket before `horizon`, as a min-heap.
    near: BinaryHeap<Reverse<Timer>>,
    /// The first bucket not in `near`. Kept as a bucket number, not a time,
    /// so that the last bucket (whose end is past `EventTime::MAX`) needs
    /// no saturating arithmetic.
    horizon: i64,
    /// Every timer of bucket `horizon` or later, by bucket.
    far: BTreeMap<i64, Vec<Reverse<Timer>>>,
    len: usize,
}

impl TimerQueue {
    pub(crate) fn new() -> Self {
        Self {
            horizon: i64::MIN,
            ..Self::default()
        }
    }

    /// Timers queued.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, timer: Timer) {
        self.len += 1;
        let bucket = bucket_of(timer.0);
        if bucket < self.horizon {
            self.near.push(Reverse(timer));
        } else {
            self.far.entry(bucket).or_default().push(Reverse(timer));
        }
    }

    /// Removes and returns the earliest timer if it is before `before`.
    pub(crate) fn pop_before(&mut self, before: EventTime) -> Option<Timer> {
        self.pop_if(|at| at < before)
    }

    /// Removes and returns the earliest timer.
    pub(crate) fn pop(&mut self) -> Option<Timer> {
        self.pop_if(|_| true)
    }

    fn pop_if(&mut self, due: impl Fn(EventTime) -> bool) -> Option<Timer> {
        loop {
            // Everything in `near` is before everything in `far`.
            if let Some(&Reverse(timer)) = self.near.peek() {
                if !due(timer.0) {
                    return None;
                }
                self.near.pop();
                self.len -= 1;
                return Some(timer);
            }
            let entry = self.far.first_entry()?;
            let bucket = *entry.key();
            // The earliest timer is in this bucket, at or after its start.
            if !due(bucket.saturating_mul(BUCKET_MS)) {
                return None;
            }
            self.near = BinaryHeap::from(entry.remove());
            // No overflow: `bucket_of(EventTime::MAX) < i64::MAX`.
            self.horizon = bucket + 1;
        }
    }
}

fn bucket_of(at: EventTime) -> i64 {
    at.div_euclid(BUCKET_MS)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(Timer),
        PopBefore(EventTime),
        Pop,
    }

    /// Times around bucket edges and at the ends of the range, where the
    /// bucket arithmetic saturates.
    fn time() -> impl Strategy<Value = EventTime> {
        prop_oneof![
            4 => -5_000i64..20_000,
            1 => Just(EventTime::MIN),
            1 => Just(EventTime::MAX),
            1 => (EventTime::MAX - 3_000)..=EventTime::MAX,
            1 => EventTime::MIN..=(EventTime::MIN + 3_000),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (time(), 0u32..8, 0u32..4).prop_map(Op::Push),
            3 => time().prop_map(Op::PopBefore),
            1 => Just(Op::Pop),
        ]
    }

    proptest! {
        /// The bucketed queue hands back exactly what one binary heap of
        /// every timer would, in the same order.
        #[test]
        fn pops_as_one_heap_does(ops in prop::collection::vec(op(), 0..200)) {
            let mut queue = TimerQueue::new();
            let mut model: BinaryHeap<Reverse<Timer>> = BinaryHeap::new();
            for op in ops {
                match op {
                    Op::Push(t) => {
                        queue.push(t);
                        model.push(Reverse(t));
                    }
                    Op::PopBefore(before) => {
                        let expected = match model.peek() {
                            Some(&Reverse(t)) if t.0 < before => model.pop().map(|Reverse(t)| t),
                            _ => None,
                        };
                        prop_assert_eq!(queue.pop_before(before), expected);
                    }
                    Op::Pop => prop_assert_eq!(queue.pop(), model.pop().map(|Reverse(t)| t)),
                }
                prop_assert_eq!(queue.len(), model.len());
            }
        }
    }
}
