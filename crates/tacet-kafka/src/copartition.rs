//! Co-partitioned mode assumes what tacet cannot see: that every producer
//! keyed every topic by the trace id as tacet reads it, so that partition
//! `p` of every topic holds whole traces. A producer that keys by the
//! field as its service logs it (a full W3C `traceparent` where the others
//! log the bare id) breaks that, and each half of a trace is then decided
//! alone: wrong outcomes, and nothing else would say so.
//!
//! So the assumption is checked while the run goes: a fixed sample of trace
//! ids (one in [`SAMPLE`], chosen by a hash of the id, so every partition
//! samples the same traces) is remembered with the partition it was seen
//! on. A sampled trace seen on a second partition is *misrouted*: counted
//! once, on `/metrics` (`tacet_misrouted_traces`) and in the summary; past
//! `engine.max_misrouted_traces` the poll loop stops the run with a message
//! that says to repartition. The check sees the partitions this instance
//! owns, so it needs an instance with at least two; the memory is bounded
//! ([`CAPACITY`] traces, forgotten all at once when full, which only
//! shortens how far apart two halves of a trace may arrive).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tacet_core::TraceKey;
use tacet_core::event::mix;

/// One trace in this many is watched.
pub const SAMPLE: u64 = 16;
/// Sampled traces remembered at most.
pub const CAPACITY: usize = 1 << 16;
/// Seeds the sampling hash (fixed: every thread and instance samples alike).
const SAMPLE_SEED: u64 = 0x5eed_c0fa_7e11_0001;
/// Marks a trace already counted as misrouted.
const COUNTED: i32 = i32::MIN;

/// Which partition each sampled trace was seen on, and how many were seen on two.
#[derive(Debug, Default)]
pub struct CopartitionCheck {
    seen: Mutex<HashMap<TraceKey, i32>>,
    misrouted: AtomicU64,
}

impl CopartitionCheck {
    /// Whether `key` is one of the watched traces.
    #[inline]
    pub fn sampled(key: &TraceKey) -> bool {
        mix(key.hi ^ mix(key.lo ^ SAMPLE_SEED)).is_multiple_of(SAMPLE)
    }

    /// A sampled trace seen on `partition`. Returns whether this made it
    /// misrouted (seen on two partitions, counted once).
    pub fn observe(&self, key: TraceKey, partition: i32) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(&key) {
            Some(p) if *p == partition || *p == COUNTED => false,
            Some(p) => {
                *p = COUNTED;
                self.misrouted.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => {
                if seen.len() >= CAPACITY {
                    seen.clear();
                }
                seen.insert(key, partition);
                false
            }
        }
    }

    /// Sampled traces seen on two partitions so far.
    pub fn misrouted(&self) -> u64 {
        self.misrouted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled_keys(n: usize) -> Vec<TraceKey> {
        (0u64..)
            .map(|i| TraceKey::from_text(&format!("trace-{i}")).0)
            .filter(CopartitionCheck::sampled)
            .take(n)
            .collect()
    }

    #[test]
    fn a_trace_on_two_partitions_is_counted_once() {
        let check = CopartitionCheck::default();
        let [a, b] = sampled_keys(2)[..] else { unreachable!() };
        assert!(!check.observe(a, 0));
        assert!(!check.observe(a, 0), "same partition again");
        assert!(check.observe(a, 1), "a second partition");
        assert!(!check.observe(a, 2), "counted once");
        assert!(!check.observe(b, 3));
        assert_eq!(check.misrouted(), 1);
    }

    #[test]
    fn about_one_trace_in_sample_is_watched_and_memory_is_bounded() {
        let watched = (0..16_000)
            .filter(|i| CopartitionCheck::sampled(&TraceKey::from_text(&format!("t{i}")).0))
            .count();
        assert!((700..1300).contains(&watched), "{watched}");
        let check = CopartitionCheck::default();
        for key in sampled_keys(CAPACITY + 10) {
            check.observe(key, 0);
        }
        assert!(check.seen.lock().unwrap().len() <= CAPACITY);
    }
}
