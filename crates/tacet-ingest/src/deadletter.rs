//! Bad input: why it was refused and where it came from.

use serde::Serialize;

/// Why an input record could not become an event. Each is counted by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum DecodeError {
    #[error("not a JSON object")]
    NotJson,
    #[error("not valid UTF-8")]
    InvalidUtf8,
    #[error("no trace id")]
    MissingTraceId,
    #[error("no event time")]
    MissingTime,
    #[error("no event name")]
    MissingEvent,
    #[error("event time is neither RFC 3339 nor epoch milliseconds")]
    BadTime,
    #[error("status is not ok/error/success/failure or an HTTP-like code")]
    BadStatus,
    #[error("line longer than engine.max_line_bytes")]
    OversizedLine,
    #[error("event time later than the wall clock + engine.max_future_skew")]
    TimeInFuture,
    #[error("trace id longer than 256 bytes")]
    TraceIdTooLong,
}

impl DecodeError {
    /// Every reason, in report order.
    pub const ALL: [DecodeError; 10] = [
        DecodeError::NotJson,
        DecodeError::InvalidUtf8,
        DecodeError::MissingTraceId,
        DecodeError::MissingTime,
        DecodeError::MissingEvent,
        DecodeError::BadTime,
        DecodeError::BadStatus,
        DecodeError::OversizedLine,
        DecodeError::TimeInFuture,
        DecodeError::TraceIdTooLong,
    ];

    /// The counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::NotJson => "not_json",
            DecodeError::InvalidUtf8 => "invalid_utf8",
            DecodeError::MissingTraceId => "missing_trace_id",
            DecodeError::MissingTime => "missing_time",
            DecodeError::MissingEvent => "missing_event",
            DecodeError::BadTime => "bad_time",
            DecodeError::BadStatus => "bad_status",
            DecodeError::OversizedLine => "oversized_line",
            DecodeError::TimeInFuture => "time_in_future",
            DecodeError::TraceIdTooLong => "trace_id_too_long",
        }
    }

    /// Index into counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Longest excerpt of a bad record kept in the dead-letter file.
pub const MAX_EXCERPT: usize = 4096;

/// One refused record, as written (one JSON object per line) to the
/// dead-letter file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Source name (file path, or Kafka topic).
    pub source: String,
    /// `file:line` or `topic/partition/offset`.
    pub position: String,
    /// Why it was refused.
    pub reason: DecodeError,
    /// The record, lossily decoded and cut at [`MAX_EXCERPT`] bytes.
    pub record: String,
    /// Whether `record` was cut.
    pub truncated: bool,
}

impl DeadLetter {
    /// A dead letter for `bytes` at `position`.
    pub fn new(source: &str, position: String, reason: DecodeError, bytes: &[u8]) -> Self {
        let cut = bytes.len().min(MAX_EXCERPT);
        Self {
            source: source.to_owned(),
            position,
            reason,
            record: String::from_utf8_lossy(&bytes[..cut]).into_owned(),
            truncated: cut < bytes.len(),
        }
    }
}
