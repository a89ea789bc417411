//! # tacet-sql
//!
//! SQL over journey outcomes next to business metrics, with DataFusion. This
//! is the only crate that depends on DataFusion, so the engine's hot path
//! never waits for it to compile.
//!
//! ## Layout
//! - [`session::open`]: a `SessionContext` with
//!   - `outcomes`: the hive-partitioned Parquet dataset (`journey`, `date` are
//!     partition columns, so a filter on them reads only those folders);
//!   - the `[[table]]`s of the config (CSV, Parquet or NDJSON);
//!   - views `journey_sli`, `outcomes_per_minute`, `journey_missing_steps`,
//!     `journey_last_services`;
//!   - scalar functions `burn_rate(bad, total, slo)` and
//!     `error_budget_left(bad, total, slo)`.
//! - [`format`]: results as a table, CSV or JSON.
//! - [`server`]: the same session over the PostgreSQL wire protocol
//!   (`pgwire`, simple and extended query protocols), read-only,
//!   password-checked, with bounded connections.
//! - [`encode`]: Arrow values as PostgreSQL text or binary fields.

pub mod encode;
pub mod format;
pub mod server;
pub mod session;
mod udf;

pub use session::{SqlError, open, run_query};
