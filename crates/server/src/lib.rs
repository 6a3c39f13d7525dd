//! The HTTP API and the `cornershop` binary's building blocks.
//!
//! `config` owns the settings, `telemetry` the logs, `startup` wiring and the server's
//! life cycle, `serve` the HTTP connections (their timeouts and cap), and `api` the
//! routes: thin handlers over the command bus. `simulate` is the load simulator, a
//! client of that API.

pub mod api;
pub mod auth;
pub mod config;
pub mod metrics;
pub mod projections;
pub mod roles;
pub mod serve;
pub mod shutdown;
pub mod simulate;
pub mod startup;
pub mod telemetry;
