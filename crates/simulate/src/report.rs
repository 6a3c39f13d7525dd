//! What a run saw: the workers' tallies, the figures made of them (latency percentiles,
//! rates), the report (`--json`'s object, or the table for a person) and the progress bar.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::run::{Settings, Shared};
use crate::SimulateArgs;

/// Latency percentiles in milliseconds (nearest rank); absent without samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub count: u64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Latency {
    fn of(mut micros: Vec<u64>) -> Self {
        micros.sort_unstable();
        let ms = |p: f64| percentile(&micros, p).map(|us| us as f64 / 1000.0);
        Self {
            count: micros.len() as u64,
            p50: ms(50.0),
            p95: ms(95.0),
            p99: ms(99.0),
            max: ms(100.0),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// How the orders ended, as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcomes {
    /// Paid and confirmed.
    pub confirmed: u64,
    /// Cancelled because the payment failed.
    pub declined: u64,
    /// Cancelled because a line was out of stock.
    pub out_of_stock: u64,
    /// Never resolved: a request failed, the order timed out, or it was cancelled for
    /// another reason.
    pub failed: u64,
}

/// How many orders of each kind the seed planned (of the orders started).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Planned {
    pub happy: u64,
    pub declined: u64,
    pub out_of_stock: u64,
}

/// The summary of a run. Serialized (camelCase) it is the `--json` output.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub target: String,
    pub seed: u64,
    pub concurrency: u64,
    /// The `--rate` cap, orders started per second.
    pub rate: Option<f64>,
    /// Orders started.
    pub orders: u64,
    /// Happy orders whose whole life ran: confirmed, and shipped and delivered unless
    /// turned off.
    pub completed_orders: u64,
    /// From the first order's start until the last one finished.
    pub duration_seconds: f64,
    /// `completedOrders / durationSeconds`.
    pub orders_per_second: f64,
    /// Events the store gained during the run (all of the shop's, not only ours).
    pub events: u64,
    pub events_per_second: f64,
    /// Every write request: stock, cart, item, checkout, ship, deliver.
    pub command_latency_ms: Latency,
    /// From the order's CartCheckedOut to its OrderConfirmed, by the events' timestamps.
    pub checkout_to_confirmed_ms: Latency,
    pub command_latency_p50_ms: Option<f64>,
    pub command_latency_p95_ms: Option<f64>,
    pub command_latency_p99_ms: Option<f64>,
    pub checkout_to_confirmed_p50_ms: Option<f64>,
    pub checkout_to_confirmed_p99_ms: Option<f64>,
    /// The 99th percentile of the sampled projection lag, in events behind the log's
    /// head (the largest over the projections at each sample); null when no projection
    /// reports on the target.
    pub projection_lag_p99: Option<u64>,
    pub projection_lag_max: Option<u64>,
    pub projection_lag_samples: u64,
    pub outcomes: Outcomes,
    pub planned: Planned,
    /// Errors by kind: `http<status>:<problem type>`, `timeout`, `connect`, `transport`,
    /// `badResponse`, `orderTimeout:<last status>`, `unexpected:<planned>-><seen>`.
    pub errors: BTreeMap<String, u64>,
}

/// What one worker saw; merged at the end (no locks while running).
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) orders: u64,
    pub(crate) completed: u64,
    pub(crate) command_us: Vec<u64>,
    pub(crate) confirm_us: Vec<u64>,
    pub(crate) outcomes: Outcomes,
    pub(crate) planned: Planned,
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Tally {
    pub(crate) fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.orders += other.orders;
        self.completed += other.completed;
        self.command_us.extend(other.command_us);
        self.confirm_us.extend(other.confirm_us);
        self.outcomes.confirmed += other.outcomes.confirmed;
        self.outcomes.declined += other.outcomes.declined;
        self.outcomes.out_of_stock += other.outcomes.out_of_stock;
        self.outcomes.failed += other.outcomes.failed;
        self.planned.happy += other.planned.happy;
        self.planned.declined += other.planned.declined;
        self.planned.out_of_stock += other.planned.out_of_stock;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }
}

pub(crate) fn report(
    args: &SimulateArgs,
    shared: &Shared,
    tally: Tally,
    elapsed: Duration,
    events: u64,
    mut lag: Vec<u64>,
) -> Report {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let command = Latency::of(tally.command_us);
    let confirmed = Latency::of(tally.confirm_us);
    lag.sort_unstable();
    Report {
        target: shared.settings.base.clone(),
        seed: args.seed,
        concurrency: args.concurrency,
        rate: args.rate,
        orders: tally.orders,
        completed_orders: tally.completed,
        duration_seconds: round3(seconds),
        orders_per_second: round3(tally.completed as f64 / seconds),
        events,
        events_per_second: round3(events as f64 / seconds),
        command_latency_p50_ms: command.p50,
        command_latency_p95_ms: command.p95,
        command_latency_p99_ms: command.p99,
        checkout_to_confirmed_p50_ms: confirmed.p50,
        checkout_to_confirmed_p99_ms: confirmed.p99,
        command_latency_ms: command,
        checkout_to_confirmed_ms: confirmed,
        projection_lag_p99: percentile(&lag, 99.0),
        projection_lag_max: lag.last().copied(),
        projection_lag_samples: lag.len() as u64,
        outcomes: tally.outcomes,
        planned: tally.planned,
        errors: tally.errors,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    /// The summary table for a person.
    pub fn summary(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Simulated {} orders against {} (seed {}, concurrency {}{})",
            self.orders,
            self.target,
            self.seed,
            self.concurrency,
            self.rate
                .map_or(String::new(), |r| format!(", rate cap {r}/s")),
        );
        let rows: Vec<(&str, String)> = vec![
            (
                "outcomes",
                format!(
                    "{} confirmed, {} declined, {} out of stock, {} failed (planned: {} happy, {} declined, {} out of stock)",
                    self.outcomes.confirmed,
                    self.outcomes.declined,
                    self.outcomes.out_of_stock,
                    self.outcomes.failed,
                    self.planned.happy,
                    self.planned.declined,
                    self.planned.out_of_stock
                ),
            ),
            ("completed orders", self.completed_orders.to_string()),
            ("duration", format!("{:.2} s", self.duration_seconds)),
            ("completed orders/s", format!("{:.1}", self.orders_per_second)),
            (
                "events/s",
                format!("{:.1} ({} events)", self.events_per_second, self.events),
            ),
            (
                "command latency",
                format!(
                    "p50 {}  p95 {}  p99 {}  max {}  ({} requests)",
                    ms(self.command_latency_ms.p50),
                    ms(self.command_latency_ms.p95),
                    ms(self.command_latency_ms.p99),
                    ms(self.command_latency_ms.max),
                    self.command_latency_ms.count
                ),
            ),
            (
                "checkout->confirmed",
                format!(
                    "p50 {}  p95 {}  p99 {}  max {}  ({} orders)",
                    ms(self.checkout_to_confirmed_ms.p50),
                    ms(self.checkout_to_confirmed_ms.p95),
                    ms(self.checkout_to_confirmed_ms.p99),
                    ms(self.checkout_to_confirmed_ms.max),
                    self.checkout_to_confirmed_ms.count
                ),
            ),
            (
                "projection lag p99",
                match self.projection_lag_p99 {
                    Some(lag) => format!(
                        "{lag} events (max {}, {} samples)",
                        self.projection_lag_max.unwrap_or(lag),
                        self.projection_lag_samples
                    ),
                    None => "- (no projection reports on the target)".to_string(),
                },
            ),
            (
                "errors",
                if self.errors.is_empty() {
                    "none".to_string()
                } else {
                    self.errors
                        .iter()
                        .map(|(kind, n)| format!("{kind}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "  {name:<20} {value}");
        }
        out
    }
}

/// The progress bar on stderr: orders done of the total, or time of the duration.
/// Hidden with --json, --no-progress, or when stderr is not a terminal.
pub(crate) fn progress_bar(args: &SimulateArgs, s: &Settings) -> ProgressBar {
    if args.json || args.no_progress || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let (length, template) = match (s.orders, s.deadline) {
        (Some(orders), None) => (
            orders,
            "{spinner} [{elapsed_precise}] [{bar:40}] {pos}/{len} orders  {msg}",
        ),
        (_, Some(deadline)) => (
            deadline.as_millis() as u64,
            "{spinner} [{elapsed_precise}] [{bar:40}] {msg}",
        ),
        (None, None) => (0, "{spinner} [{elapsed_precise}] {msg}"),
    };
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Keeps the progress bar's message (and, for a duration, its position) current.
pub(crate) async fn tick(shared: Arc<Shared>, done: Arc<AtomicBool>) {
    let s = &shared.settings;
    while !done.load(Ordering::Relaxed) {
        let finished = shared.finished.load(Ordering::Relaxed);
        let errors = shared.errors.load(Ordering::Relaxed);
        let elapsed = shared.started.elapsed();
        match s.deadline {
            Some(deadline) => {
                let started = shared.begun.load(Ordering::Relaxed);
                shared
                    .progress
                    .set_position(elapsed.min(deadline).as_millis() as u64);
                let draining = if elapsed >= deadline {
                    format!(", finishing {} in flight", started.saturating_sub(finished))
                } else {
                    String::new()
                };
                shared
                    .progress
                    .set_message(format!("{finished} orders done, {errors} errors{draining}"));
            }
            None => shared.progress.set_message(format!("{errors} errors")),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
