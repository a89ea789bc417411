//! # tacet-gen
//!
//! Synthetic bank traffic for the configured journeys, with the failures that
//! hurt banks injected at known rates, and the ground truth beside it.
//!
//! ## Layout
//! - [`scenario`]: per-journey failure rates and the services behind each step
//!   (the seed scenarios: ~8% of transfers acked but never posted to the
//!   ledger, ~5.3% of bill payments silent, check deposits over 5,000 failing
//!   image validation without an error, ~14% of trade confirmations never
//!   delivered, …). Journeys the generator does not know get generic rates.
//! - [`generate`]: plans each journey, renders its events in the reference or
//!   an alternative field shape, delivers them in arrival order (bounded
//!   disorder, clock skew per service, duplicates, unmatched noise, malformed
//!   lines) and writes the truth.
//! - [`truth`]: the truth file format and [`truth::compare`], which scores
//!   decided outcomes against it (precision and recall per outcome).
//!
//! The truth follows SPEC's event-time rules: a journey whose decision time is
//! not before the last event time of the stream is expected `in_flight`.

pub mod generate;
pub mod scenario;
pub mod truth;

pub use generate::{Burst, GenOptions, GenReport, Shape, generate, generate_with_progress, write_business_metrics};
pub use truth::{TruthRow, VerifyReport, compare};
