//! The measuring half of `bench/run.sh`: event-store appends and their raw-insert
//! baselines, scans of the log (the rebuild's baseline), loading events for the relay
//! benchmark and timing the relay, and the cost of a token check with its baselines. Each
//! measurement prints one JSON line on stdout; `bench/run.py` gathers them into the table.
//! Figures are reported, never asserted.
//!
//! Run through cargo (release profile):
//!
//! ```sh
//! cargo bench -p cornershop-bench -- append --backend sqlite --seconds 5
//! cargo bench -p cornershop-bench -- append --backend postgres --database-url postgres://... --seconds 5
//! cargo bench -p cornershop-bench -- scan --data-dir ./data
//! cargo bench -p cornershop-bench -- rebuild --orders 20000
//! cargo bench -p cornershop-bench -- load --database-url postgres://... --events 100000
//! cargo bench -p cornershop-bench -- relay-wait --database-url postgres://... --events 100000
//! cargo bench -p cornershop-bench -- scaling --backend sqlite --sizes 10000,100000,1000000
//! cargo bench -p cornershop-bench -- auth --seconds 3
//! cargo bench -p cornershop-bench -- backup --backend sqlite --events 100000
//! cargo bench -p cornershop-bench -- snapshot --backend sqlite --events 10000
//! cargo bench -p cornershop-bench -- console --backend sqlite --events 1000000
//! ```
//!
//! `cli` holds the command line; `append`, `scan`, `rebuild`, `relay` (load and
//! relay-wait), `scaling` (each operation as the log grows), `auth`, `seal` and `snapshot`
//! (a long stream's cold load from its snapshot against the full fold) and `console` (the
//! operator's console's pages on a large store, over HTTP) the measurements. A leaf of the workspace: it may depend on
//! every other crate, and none depends on it.

mod append;
mod auth;
mod backup;
mod cli;
mod console;
mod rebuild;
mod relay;
mod scaling;
mod scan;
mod seal;
mod snapshot;

use std::time::{Duration, Instant};

use chrono::Utc;
use cornershop_domain::{Metadata, CURRENT_SCHEMA_VERSION};
use cornershop_store::NewEvent;
use serde_json::{json, Value};
use uuid::Uuid;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};

/// Entry point of the bench binary: parses the command line (`--bench`, added by `cargo
/// bench`, is ignored) and runs its command; without one, prints the help.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        Cli::command().print_help()?;
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            Command::Append(args) => append::append(&args).await,
            Command::Scan(args) => scan::scan(&args).await,
            Command::Load(args) => relay::load(&args).await,
            Command::RelayWait(args) => relay::relay_wait(&args).await,
            Command::Rebuild(args) => rebuild::rebuild(&args).await,
            Command::Scaling(args) => scaling::scaling(&args).await,
            Command::Auth(args) => auth::auth(&args).await,
            Command::Seal(args) => seal::seal(&args).await,
            Command::Backup(args) => backup::backup(&args).await,
            Command::Snapshot(args) => snapshot::snapshot(&args).await,
            Command::Console(args) => console::console(&args).await,
        }
    })
}

pub(crate) fn emit(line: Value) {
    println!("{line}");
}

// ---------------------------------------------------------------- events

/// A realistic event: an ItemAddedToCart with its metadata, as the API would append it.
pub(crate) fn new_event(cart_id: &str, n: u64) -> NewEvent {
    let correlation = Uuid::new_v4().to_string();
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "ItemAddedToCart".to_string(),
        schema_version: CURRENT_SCHEMA_VERSION,
        timestamp: Utc::now(),
        data: json!({
            "cartId": cart_id,
            "sku": format!("SKU-{:04}", n % 1000),
            "name": "Enamel mug, 350 ml",
            "quantity": 1 + n % 3,
            "unitPrice": "9.99",
        }),
        metadata: Metadata {
            correlation_id: correlation.clone(),
            causation_id: correlation,
            user_id: None,
            source: "CartService".to_string(),
        },
        // Derived from the correlation id by the store, as for a request without a
        // traceparent.
        trace_id: None,
    }
}

/// Operations between two looks at the clock.
const CHUNK: u64 = 16;

/// What one case did: operations and the time they took, summed over its rounds.
#[derive(Default, Clone, Copy)]
pub(crate) struct Count {
    pub(crate) ops: u64,
    pub(crate) seconds: f64,
}

/// Runs `op` (which must return true) for `duration` on this task; adds to `count`.
pub(crate) async fn measure<F, Fut>(
    count: &mut Count,
    duration: Duration,
    mut op: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let mut ops = 0u64;
    loop {
        for _ in 0..CHUNK {
            if !op().await {
                anyhow::bail!("a check that should pass failed");
            }
        }
        ops += CHUNK;
        if started.elapsed() >= duration {
            break;
        }
    }
    count.ops += ops;
    count.seconds += started.elapsed().as_secs_f64();
    Ok(())
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A small, fast, deterministic generator (xorshift64*), one per client task.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}
