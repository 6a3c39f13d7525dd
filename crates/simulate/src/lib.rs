//! The load simulator behind `cornershop simulate`: it drives real HTTP traffic through
//! whole order lives against a running shop and summarizes what it saw. It offers the
//! command line ([`SimulateArgs`], embedded by the server's CLI), the seeded plans
//! ([`plan`]), a run ([`run`]) and its [`Report`]. A client of the shop's HTTP API only: it
//! must not depend on the server, the store or any other workspace crate but
//! `cornershop-domain` (the server depends on it, and hands it the token its embedded
//! issuer signs).
//!
//! Each simulated shopper (a worker; `--concurrency` of them) takes the next order number,
//! and for it:
//!
//! 1. opens a cart (`POST /api/carts`) for one of `--customers` customers,
//! 2. adds one to three lines (`POST /api/carts/{id}/items`),
//! 3. checks out (`POST /api/carts/{id}/checkout`) with `tok_visa`, or `tok_chargeDeclined`
//!    for a declined order,
//! 4. polls the order (`GET /api/orders/{id}`, the read model) until it is Confirmed or
//!    Cancelled, first after `--poll-interval` (10 ms), then backing off to 20 times that
//!    (so that 64 shoppers polling do not become the load). The checkout-to-confirmed
//!    latency is the server's own: from the CartCheckedOut event's timestamp to the
//!    OrderConfirmed one's, read from the order's timeline (`GET
//!    /api/orders/{id}/timeline`) once it is confirmed,
//! 5. ships and delivers a confirmed order (`POST .../ship`, `POST .../deliver`) and polls
//!    until the read model shows it Delivered.
//!
//! The seed fixes each order's plan (its outcome, customer, items and quantities) from its
//! number alone, so the plans do not depend on which worker runs them or when. An
//! out-of-stock order adds a line of `SIM-SCARCE`, which holds 1 unit and is only ever
//! asked for 2 or more, so its outcome is certain whatever the interleaving; the other
//! SKUs are stocked with far more than a run can use.
//!
//! Measured: the latency of every write request ("commands": stock, cart, item, checkout,
//! ship, deliver), the time from the checkout to the order's confirmation (by the events'
//! timestamps), the events the store gained per second (`GET /api/eventstore/stats` before
//! and after), and the projections' lag (`GET /api/projections`, sampled during the run).
//!
//! `plan` holds the seeded plans, `client` the HTTP side (requests, the token), `run` the
//! shoppers and the sampler, `report` the tallies, figures and output.

mod args;
mod client;
mod plan;
mod report;
mod run;

pub use args::SimulateArgs;
pub use plan::{plan, Kind, Mix, Plan, SCARCE_SKU};
pub use report::{Latency, Outcomes, Planned, Report};
pub use run::{run, DEFAULT_ORDERS};

/// Why a run could not take place at all.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("'{0}' is not an http:// URL of a shop (e.g. http://127.0.0.1:8080)")]
    BadTarget(String),
    #[error("cannot reach the shop at {target}: {cause} (is `cornershop serve` running there?)")]
    Unreachable { target: String, cause: String },
    #[error("{target} does not look like a CornerShop with the api role: {detail}")]
    NotAShop { target: String, detail: String },
    #[error("invalid settings: {0}")]
    Invalid(String),
}
