//! The simulator's command line (`cornershop simulate`'s flags and `CORNERSHOP_SIMULATE_*`
//! variables), which the server's CLI embeds as its `simulate` subcommand.

use std::path::PathBuf;

use clap::{Args, Parser};

/// The load simulator's settings (`cornershop simulate`). The seed fixes every order's
/// outcome, customer, items and quantities, so two runs with the same settings send the
/// same orders.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Base URL of the shop (a process with the api role).
    #[arg(
        long,
        env = "CORNERSHOP_SIMULATE_TARGET",
        default_value = "http://127.0.0.1:8080"
    )]
    pub target: String,

    /// How many orders to run. Without --orders and --duration: 100. With both, the run
    /// stops at whichever comes first.
    #[arg(long, env = "CORNERSHOP_SIMULATE_ORDERS", value_parser = clap::value_parser!(u64).range(1..))]
    pub orders: Option<u64>,

    /// Start orders for this long (e.g. "30s", "2m"); orders in flight then finish.
    #[arg(long, env = "CORNERSHOP_SIMULATE_DURATION")]
    pub duration: Option<humantime::Duration>,

    /// Orders in flight at once (each one a simulated shopper going through its order).
    #[arg(long, env = "CORNERSHOP_SIMULATE_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,

    /// Cap on orders started per second, paced on a fixed schedule (open loop: order n is
    /// due at n/rate seconds, whether or not earlier ones have finished; --concurrency
    /// still bounds how many are in flight). Unset: as fast as --concurrency allows.
    #[arg(long, env = "CORNERSHOP_SIMULATE_RATE")]
    pub rate: Option<f64>,

    /// Distinct customers (ids, emails, phones) the orders are spread over.
    #[arg(long, env = "CORNERSHOP_SIMULATE_CUSTOMERS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub customers: u64,

    /// Outcome mix as relative weights: happy (paid, confirmed, shipped, delivered),
    /// declined (the card is declined), outOfStock (a line asks for more than is left).
    #[arg(
        long,
        env = "CORNERSHOP_SIMULATE_MIX",
        default_value = "happy=90,declined=5,outOfStock=5"
    )]
    pub mix: crate::Mix,

    /// Seed of the random choices (outcome, customer, items, quantities).
    #[arg(long, env = "CORNERSHOP_SIMULATE_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Products (SKUs SIM-0001, ...) the orders choose from; each is stocked with plenty
    /// at the start. A separate SKU, SIM-SCARCE, holds 1 unit for the out-of-stock orders.
    #[arg(long, env = "CORNERSHOP_SIMULATE_SKUS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub skus: u64,

    /// Stop a confirmed order there: neither ship nor deliver it.
    #[arg(long, env = "CORNERSHOP_SIMULATE_NO_SHIP")]
    pub no_ship: bool,

    /// Ship confirmed orders but do not deliver them.
    #[arg(long, env = "CORNERSHOP_SIMULATE_NO_DELIVER")]
    pub no_deliver: bool,

    /// How often an order is polled while the workflow runs. It bounds the resolution of
    /// the checkout-to-confirmed latency; shorter polls add read load on the shop.
    #[arg(
        long,
        env = "CORNERSHOP_SIMULATE_POLL_INTERVAL",
        default_value = "10ms"
    )]
    pub poll_interval: humantime::Duration,

    /// How often the projections' lag is sampled (GET /api/projections).
    #[arg(
        long,
        env = "CORNERSHOP_SIMULATE_LAG_INTERVAL",
        default_value = "100ms"
    )]
    pub lag_interval: humantime::Duration,

    /// Longest wait for one HTTP request.
    #[arg(
        long,
        env = "CORNERSHOP_SIMULATE_REQUEST_TIMEOUT",
        default_value = "10s"
    )]
    pub request_timeout: humantime::Duration,

    /// Longest wait for an order to reach the state it is heading for (Confirmed or
    /// Cancelled after checkout, Delivered after delivery).
    #[arg(long, env = "CORNERSHOP_SIMULATE_ORDER_TIMEOUT", default_value = "30s")]
    pub order_timeout: humantime::Duration,

    /// Print one JSON object (camelCase) on stdout instead of the table; no progress bar.
    #[arg(long, env = "CORNERSHOP_SIMULATE_JSON")]
    pub json: bool,

    /// No progress bar (it is drawn on stderr, and only on a terminal).
    #[arg(long, env = "CORNERSHOP_SIMULATE_NO_PROGRESS")]
    pub no_progress: bool,

    /// The bearer token sent with every request; it needs the admin role (the simulator
    /// stocks, ships and reads the store's statistics). Without --token or --token-file,
    /// the simulator signs its own with the embedded shop's key in --data-dir.
    #[arg(long, env = "CORNERSHOP_SIMULATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A file holding the bearer token (safer than --token: not in the process list).
    #[arg(long, env = "CORNERSHOP_SIMULATE_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// The embedded shop's data directory, whose signing key the simulator mints its
    /// token with when none is given (a shop without one gets no token).
    #[arg(long, env = "CORNERSHOP_SIMULATE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// The signing key file, when not the data directory's.
    #[arg(long, env = "CORNERSHOP_SIMULATE_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
}

impl SimulateArgs {
    /// The defaults of the command line, against `target`.
    pub fn for_target(target: &str) -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: SimulateArgs,
        }
        Wrapper::parse_from(["simulate", "--target", target]).args
    }
}
