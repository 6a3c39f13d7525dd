//! The HTTP API and the `cornershop` binary's building blocks.
//!
//! `config` owns the settings, `telemetry` the logs, `startup` the wiring (one function
//! per role) and the server's life cycle, `shutdown` the signals, `serve` the HTTP
//! connections (their timeouts and cap; TLS with `tls`), `auth` who a caller is, and `api` the routes:
//! thin handlers over the command bus. `simulate` hands the load simulator (the
//! `cornershop-simulate` crate) its token.
//!
//! The top of the layers: it may depend on every crate below it, and nothing depends on
//! it but the benchmarks.

pub mod api;
pub mod auth;
pub mod backup;
pub mod config;
pub mod console;
pub mod erasures;
pub mod keys;
pub mod metrics;
pub mod projections;
mod roles;
pub mod serve;
pub mod shutdown;
pub mod simulate;
pub mod startup;
pub mod telemetry;
mod tls;
