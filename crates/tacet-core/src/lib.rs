//! # tacet-core
//!
//! The vocabulary every other tacet crate speaks: the configuration file
//! ([`config`]), the compiled journey catalog the hot path consults
//! ([`catalog::Catalog`]), decoded events ([`event`]) and decided outcomes
//! ([`outcome`]).
//!
//! ## Layout
//! - [`config`]: TOML + serde, `deny_unknown_fields`, durations such as `"2m"`.
//!   [`config::Config::from_file`] and [`config::Config::embedded_default`] are
//!   the entry points.
//! - [`catalog`]: turns a [`config::Config`] into dense ids and per-journey role
//!   tables, rejecting step names whose meaning would be ambiguous.
//! - [`pointer`]: RFC 6901 JSON pointers, parsed once at config time.
//! - [`event`]: trace keys, event times and the borrowed [`event::Event`] view.
//! - [`outcome`]: the six outcomes and the row each decision produces.
//!
//! Nothing here allocates per event; the types are shaped for the correlator.

pub mod catalog;
pub mod config;
pub mod event;
pub mod hint;
pub mod outcome;
pub mod pointer;

pub use catalog::{AttrSlot, Catalog, JourneyId, NameId, Role};
pub use config::{Config, ConfigError};
pub use event::{AttrCow, AttrValue, Event, EventTime, TraceKey};
pub use outcome::{Outcome, OutcomeRecord, OutcomeRow};
