//! Errors `tacet run` survives by retrying: each one is counted (in the run
//! report and `tacet_kafka_errors{reason}`), and logged at most every 10 s
//! per kind, so a broker outage does not flood the log.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tacet_engine::Metrics;

/// The kinds counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// librdkafka's client error callback (connection, broker down).
    Client,
    /// An error returned by a consumer poll.
    Poll,
    /// An offset commit that failed (the next checkpoint commits again).
    Commit,
    /// An outcome file that could not be written on a tick (kept, retried).
    OutcomeWrite,
    /// An error returned by the repartitioner's poll.
    RepartitionPoll,
    /// A record that reached the consumer queue instead of tacet's fetch
    /// queue (its partition was fetched before it was routed): still
    /// applied, in order, but a sign that batch polling was bypassed.
    Unrouted,
    /// A checkpoint refused because another instance took the partition
    /// over meanwhile (this one was paused or cut off past its session
    /// timeout): its state is dropped without a write.
    Fenced,
}

const KINDS: [ErrorKind; 7] = [
    ErrorKind::Client,
    ErrorKind::Poll,
    ErrorKind::Commit,
    ErrorKind::OutcomeWrite,
    ErrorKind::RepartitionPoll,
    ErrorKind::Unrouted,
    ErrorKind::Fenced,
];

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Client => "client",
            ErrorKind::Poll => "poll",
            ErrorKind::Commit => "commit",
            ErrorKind::OutcomeWrite => "outcome_write",
            ErrorKind::RepartitionPoll => "repartition_poll",
            ErrorKind::Unrouted => "unrouted",
            ErrorKind::Fenced => "fenced",
        }
    }
}

/// Counts of each kind, shared by the consumer loop, its callbacks and the
/// repartitioner.
#[derive(Debug, Default)]
pub struct RunErrors {
    counts: [AtomicU64; KINDS.len()],
    last_log: [Mutex<Option<Instant>>; KINDS.len()],
    metrics: Option<Arc<Metrics>>,
}

impl RunErrors {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            metrics,
            ..Default::default()
        }
    }

    /// Counts one error of `kind`; true when it should be logged (the first,
    /// then at most one every 10 s).
    pub fn note(&self, kind: ErrorKind) -> bool {
        let i = kind as usize;
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.kafka_errors
                .get_or_create(&tacet_engine::metrics::ReasonLabels {
                    reason: kind.as_str().to_owned(),
                })
                .inc();
        }
        let mut last = self.last_log[i].lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// (kind, count) of every kind seen.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        KINDS
            .iter()
            .map(|k| (k.as_str(), self.counts[*k as usize].load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_counted_and_logging_is_throttled() {
        let errors = RunErrors::new(Some(Metrics::new()));
        assert!(errors.note(ErrorKind::Poll), "the first is logged");
        assert!(!errors.note(ErrorKind::Poll), "the next within 10 s is not");
        assert!(errors.note(ErrorKind::Commit), "kinds are throttled apart");
        assert_eq!(errors.counts(), vec![("poll", 2), ("commit", 1)]);
        let text = errors.metrics.as_ref().unwrap().encode();
        assert!(text.contains("tacet_kafka_errors_total{reason=\"poll\"} 2"), "{text}");
    }
}
