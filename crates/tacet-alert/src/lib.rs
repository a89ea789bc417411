//! # tacet-alert
//!
//! Error budgets and pages, in event time (SPEC §6).
//!
//! ## Layout
//! - [`rules`]: the multiwindow, multi-burn-rate rules of the SRE Workbook
//!   (page 14.4× over 1h and 5m, 6× over 6h and 30m; ticket 3× over 1d and 2h,
//!   1× over 3d and 6h) and the fast silent-failure-rate rule, resolved per
//!   journey from `[alerts.rules]` and `[[journey]] alerts`; the burn-rate math.
//! - [`window`]: per-journey SLI counters in one-minute buckets (a ring as long
//!   as the longest rule window) and hourly budget buckets: fixed-size state,
//!   whatever the traffic.
//! - [`engine::AlertEngine`]: takes decided journeys ([`window::Note`]), and at
//!   every minute the watermark passes evaluates every rule, keeping one open
//!   incident per journey and rule: opened, updated at a bounded rate,
//!   resolved when the condition clears ([`engine::Notification`]).
//! - [`feed::AlertFeed`]: the outcome sink inside each shard that turns
//!   decisions into notes for the engine.
//! - [`sink`]: stdout, NDJSON file and HTTP webhook (timeouts, retries with
//!   backoff, idempotency key, HMAC signature); other kinds (the Kafka topic
//!   sink of `tacet-kafka`) are registered through [`sink::SinkKinds`]. Each
//!   sink runs on its own thread behind a bounded queue, so a sink that is
//!   down delays only itself.
//! - [`service`]: the alert thread both `tacet replay` and `tacet run` start:
//!   decisions and watermarks in from every unit of correlation state,
//!   rules evaluated as the slowest watermark passes each minute.
//!
//! SLI = completed ÷ (completed + silent_failure + stalled): of the journeys a
//! customer started and waited on, the share that did what it said. Loud
//! failures (`failed`) and `orphan`s are outside it; `late_completion` is a
//! correction that does not repair a missed deadline. Synthetic journeys are
//! counted apart and never burn the budget.

pub mod engine;
pub mod feed;
pub mod rules;
pub mod service;
pub mod sink;
pub mod window;

pub use engine::{AlertEngine, AlertStats, JourneyGauges, Notification};
pub use feed::AlertFeed;
pub use rules::{JourneyRules, RuleKind, Severity, budget_left, burn_rate};
pub use window::Note;
