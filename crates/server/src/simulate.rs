//! `cornershop simulate`: a load simulator that drives real HTTP traffic through whole
//! order lives against a running shop and summarizes what it saw.
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
//! timestamps),
//! the events the store gained per second (`GET /api/eventstore/stats` before and after),
//! and the projections' lag (`GET /api/projections`, sampled during the run).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::SimulateArgs;

/// Orders when neither `--orders` nor `--duration` is given.
pub const DEFAULT_ORDERS: u64 = 100;
/// The SKU that out-of-stock orders ask too much of.
pub const SCARCE_SKU: &str = "SIM-SCARCE";
/// Units of each ordinary SKU set at the start: more than any run can sell.
const PLENTY: u64 = 100_000_000;

/// The outcome mix: relative weights of the three kinds of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub happy: u32,
    pub declined: u32,
    pub out_of_stock: u32,
}

impl FromStr for Mix {
    type Err = String;

    /// `happy=90,declined=5,outOfStock=5`; a kind left out weighs 0.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mix = Mix {
            happy: 0,
            declined: 0,
            out_of_stock: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not kind=weight (e.g. happy=90)"))?;
            let weight: u32 = weight.trim().parse().map_err(|_| {
                format!("the weight of '{key}' must be a whole number, got '{weight}'")
            })?;
            let slot = match key
                .trim()
                .to_ascii_lowercase()
                .replace(['-', '_'], "")
                .as_str()
            {
                "happy" => &mut mix.happy,
                "declined" => &mut mix.declined,
                "outofstock" => &mut mix.out_of_stock,
                other => {
                    return Err(format!(
                        "'{other}' is not an outcome; use happy, declined or outOfStock"
                    ))
                }
            };
            *slot = weight;
        }
        if mix.total() == 0 {
            return Err("the weights add up to 0; give at least one kind a weight".into());
        }
        Ok(mix)
    }
}

impl Mix {
    fn total(&self) -> u64 {
        self.happy as u64 + self.declined as u64 + self.out_of_stock as u64
    }
}

/// The outcome an order is planned to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Happy,
    Declined,
    OutOfStock,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Happy => "happy",
            Kind::Declined => "declined",
            Kind::OutOfStock => "outOfStock",
        }
    }
}

/// One order's plan, fixed by the seed and the order's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub kind: Kind,
    pub customer: u64,
    /// (SKU, quantity), distinct SKUs.
    pub lines: Vec<(String, u32)>,
}

/// The plan of order number `n`: its own random stream, derived from the seed and `n`.
pub fn plan(seed: u64, n: u64, mix: Mix, customers: u64, skus: u64) -> Plan {
    let mut rng = StdRng::seed_from_u64(splitmix64(
        seed ^ splitmix64(n.wrapping_add(0x9E37_79B9_7F4A_7C15)),
    ));
    let pick = rng.random_range(0..mix.total());
    let kind = if pick < mix.happy as u64 {
        Kind::Happy
    } else if pick < mix.happy as u64 + mix.declined as u64 {
        Kind::Declined
    } else {
        Kind::OutOfStock
    };
    let customer = rng.random_range(0..customers);
    let wanted = rng.random_range(1..=3u64).min(skus);
    let mut lines: Vec<(String, u32)> = Vec::new();
    while (lines.len() as u64) < wanted {
        let sku = sku_name(rng.random_range(0..skus));
        if lines.iter().all(|(s, _)| *s != sku) {
            lines.push((sku, rng.random_range(1..=3)));
        }
    }
    if kind == Kind::OutOfStock {
        lines.push((SCARCE_SKU.to_string(), rng.random_range(2..=5)));
    }
    Plan {
        kind,
        customer,
        lines,
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn sku_name(i: u64) -> String {
    format!("SIM-{:04}", i + 1)
}

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

/// The token to send: --token, else --token-file's, else one signed with the embedded
/// shop's key (admin, `sub` simulator, valid an hour) when that key exists.
fn bearer_token(args: &SimulateArgs) -> Result<Option<String>, SimulateError> {
    if let Some(token) = &args.token {
        return Ok(Some(token.trim().to_string()));
    }
    if let Some(file) = &args.token_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            SimulateError::Invalid(format!("cannot read --token-file {}: {e}", file.display()))
        })?;
        return Ok(Some(text.trim().to_string()));
    }
    let key = args
        .signing_key_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join(crate::config::SIGNING_KEY_FILE));
    if !key.exists() {
        return Ok(None);
    }
    let issuer = crate::auth::issuer::LocalIssuer::open_or_create(&key)
        .map_err(|e| SimulateError::Invalid(format!("{e:#}")))?;
    issuer
        .mint(
            "simulator",
            &[crate::auth::Role::Admin],
            Duration::from_secs(3600),
            "cornershop",
        )
        .map(Some)
        .map_err(|e| SimulateError::Invalid(format!("{e:#}")))
}

/// Runs the simulation described by `args` and returns its report.
pub async fn run(args: SimulateArgs) -> Result<Report, SimulateError> {
    let settings = Settings::from_args(&args)?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = bearer_token(&args)? {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| SimulateError::Invalid("the token is not ASCII text".into()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(*args.request_timeout)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency as usize + 4)
        .build()
        .map_err(|e| SimulateError::Invalid(cornershop_domain::causes::with_causes(&e)))?;
    let shop = Shop {
        http,
        base: settings.base.clone(),
    };

    // The first request tells whether there is a shop at all.
    shop.total_events().await?;
    let mut setup = Tally::default();
    shop.stock_up(args.skus, &mut setup).await?;
    let events_before = shop.total_events().await?;

    let progress = progress_bar(&args, &settings);
    let shared = Arc::new(Shared {
        shop,
        settings,
        next: AtomicU64::new(0),
        begun: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        progress: progress.clone(),
        started: Instant::now(),
    });

    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_lag(shared.clone(), done.clone()));
    let ticker = tokio::spawn(tick(shared.clone(), done.clone()));

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        workers.spawn(worker(shared.clone()));
    }
    let mut tally = setup;
    while let Some(result) = workers.join_next().await {
        match result {
            Ok(worker_tally) => tally.merge(worker_tally),
            Err(e) => tally.error(format!("worker panicked: {e}")),
        }
    }
    let elapsed = shared.started.elapsed();
    done.store(true, Ordering::Relaxed);
    let lag_samples = sampler.await.unwrap_or_default();
    let _ = ticker.await;
    progress.finish_and_clear();

    let events_after = shared.shop.total_events().await?;
    Ok(report(
        &args,
        &shared,
        tally,
        elapsed,
        events_after.saturating_sub(events_before),
        lag_samples,
    ))
}

fn report(
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

/// What the workers need to know, checked once.
struct Settings {
    base: String,
    orders: Option<u64>,
    deadline: Option<Duration>,
    rate: Option<f64>,
    mix: Mix,
    seed: u64,
    customers: u64,
    skus: u64,
    ship: bool,
    deliver: bool,
    poll_interval: Duration,
    lag_interval: Duration,
    order_timeout: Duration,
}

impl Settings {
    fn from_args(args: &SimulateArgs) -> Result<Self, SimulateError> {
        let base = args.target.trim().trim_end_matches('/').to_string();
        match reqwest::Url::parse(&base) {
            Ok(url) if url.scheme() == "http" && url.host().is_some() => {}
            _ => return Err(SimulateError::BadTarget(args.target.clone())),
        }
        if let Some(rate) = args.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(SimulateError::Invalid(format!(
                    "--rate must be a positive number of orders per second, got {rate}"
                )));
            }
        }
        let deadline = args.duration.map(|d| *d);
        if deadline == Some(Duration::ZERO) {
            return Err(SimulateError::Invalid(
                "--duration must be more than 0".into(),
            ));
        }
        let orders = match (args.orders, deadline) {
            (None, None) => Some(DEFAULT_ORDERS),
            (orders, _) => orders,
        };
        Ok(Self {
            base,
            orders,
            deadline,
            rate: args.rate,
            mix: args.mix,
            seed: args.seed,
            customers: args.customers,
            skus: args.skus,
            ship: !args.no_ship,
            deliver: !args.no_ship && !args.no_deliver,
            poll_interval: (*args.poll_interval).max(Duration::from_millis(1)),
            lag_interval: (*args.lag_interval).max(Duration::from_millis(10)),
            order_timeout: *args.order_timeout,
        })
    }
}

struct Shared {
    shop: Shop,
    settings: Settings,
    /// The next order number to start.
    next: AtomicU64,
    /// Orders started, and finished (whatever their end).
    begun: AtomicU64,
    finished: AtomicU64,
    errors: AtomicU64,
    progress: ProgressBar,
    started: Instant,
}

/// What one worker saw; merged at the end (no locks while running).
#[derive(Default)]
struct Tally {
    orders: u64,
    completed: u64,
    command_us: Vec<u64>,
    confirm_us: Vec<u64>,
    outcomes: Outcomes,
    planned: Planned,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
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

/// A shopper: takes order numbers until the run is over.
async fn worker(shared: Arc<Shared>) -> Tally {
    let s = &shared.settings;
    let mut tally = Tally::default();
    loop {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if s.orders.is_some_and(|orders| n >= orders) {
            break;
        }
        if let Some(rate) = s.rate {
            let due = Duration::from_secs_f64(n as f64 / rate);
            if s.deadline.is_some_and(|d| due >= d) {
                break;
            }
            tokio::time::sleep_until((shared.started + due).into()).await;
        }
        if s.deadline.is_some_and(|d| shared.started.elapsed() >= d) {
            break;
        }
        let plan = plan(s.seed, n, s.mix, s.customers, s.skus);
        tally.orders += 1;
        shared.begun.fetch_add(1, Ordering::Relaxed);
        match plan.kind {
            Kind::Happy => tally.planned.happy += 1,
            Kind::Declined => tally.planned.declined += 1,
            Kind::OutOfStock => tally.planned.out_of_stock += 1,
        }
        let errors_before: u64 = tally.errors.values().sum();
        run_order(&shared, &plan, &mut tally).await;
        let errors_after: u64 = tally.errors.values().sum();
        shared
            .errors
            .fetch_add(errors_after - errors_before, Ordering::Relaxed);
        shared.finished.fetch_add(1, Ordering::Relaxed);
        if s.orders.is_some() && s.deadline.is_none() {
            shared.progress.inc(1);
        }
    }
    tally
}

/// One order's life. Every failure is counted in the tally and ends the order.
async fn run_order(shared: &Shared, plan: &Plan, tally: &mut Tally) {
    match order_life(shared, plan, tally).await {
        Ok(()) => {}
        Err(kind) => {
            tally.outcomes.failed += 1;
            tally.error(kind);
        }
    }
}

async fn order_life(shared: &Shared, plan: &Plan, tally: &mut Tally) -> Result<(), String> {
    let shop = &shared.shop;
    let s = &shared.settings;
    let customer = plan.customer + 1;
    let cart = shop
        .command(
            Method::POST,
            "/api/carts",
            Some(json!({ "customerId": format!("sim-customer-{customer}") })),
            StatusCode::CREATED,
            tally,
        )
        .await?;
    let cart = field(&cart, "cartId")?;
    for (sku, quantity) in &plan.lines {
        shop.command(
            Method::POST,
            &format!("/api/carts/{cart}/items"),
            Some(json!({ "sku": sku, "quantity": quantity })),
            StatusCode::OK,
            tally,
        )
        .await?;
    }
    let token = match plan.kind {
        Kind::Declined => "tok_chargeDeclined",
        Kind::Happy | Kind::OutOfStock => "tok_visa",
    };
    let checkout = json!({
        "paymentToken": token,
        "email": format!("sim-customer-{customer}@example.com"),
        "phone": format!("+1 555 {customer:07}"),
        "shippingAddress": {
            "name": format!("Customer {customer}"),
            "line1": format!("{customer} Simulation Street"),
            "city": "London",
            "postalCode": "N1 9GU",
            "country": "GB"
        }
    });
    let accepted = shop
        .command(
            Method::POST,
            &format!("/api/carts/{cart}/checkout"),
            Some(checkout),
            StatusCode::ACCEPTED,
            tally,
        )
        .await?;
    let checked_out = Instant::now();
    let order = field(&accepted, "orderId")?;

    let resolved = shop
        .wait_for(
            &order,
            &["Confirmed", "Shipped", "Delivered", "Cancelled"],
            s,
        )
        .await?;
    let seen = if resolved.status == "Cancelled" {
        match resolved.cancel_reason.as_deref() {
            Some(r) if r.starts_with("payment failed") => Kind::Declined,
            Some(r) if r.starts_with("out of stock") => Kind::OutOfStock,
            other => {
                return Err(format!(
                    "unexpected:{}->cancelled({})",
                    plan.kind.name(),
                    other.unwrap_or("no reason")
                ))
            }
        }
    } else {
        // The server's own figure; the time until a poll saw it, if the timeline cannot
        // tell.
        let seen_after = checked_out.elapsed().as_micros() as u64;
        let confirmed_after = shop.checkout_to_confirmed_us(&order).await;
        tally.confirm_us.push(confirmed_after.unwrap_or(seen_after));
        Kind::Happy
    };
    match seen {
        Kind::Happy => tally.outcomes.confirmed += 1,
        Kind::Declined => tally.outcomes.declined += 1,
        Kind::OutOfStock => tally.outcomes.out_of_stock += 1,
    }
    if seen != plan.kind {
        let seen_name = if seen == Kind::Happy {
            "confirmed"
        } else {
            seen.name()
        };
        tally.error(format!("unexpected:{}->{seen_name}", plan.kind.name()));
        return Ok(());
    }
    if seen != Kind::Happy {
        return Ok(());
    }
    match fulfil(shared, &order, tally).await {
        Ok(()) => tally.completed += 1,
        // The order stays counted as confirmed; the failure is an error of its own.
        Err(kind) => tally.error(kind),
    }
    Ok(())
}

/// Ships and delivers a confirmed order (as far as the settings say), then waits until
/// the read model shows where it got to.
async fn fulfil(shared: &Shared, order: &str, tally: &mut Tally) -> Result<(), String> {
    let (shop, s) = (&shared.shop, &shared.settings);
    if !s.ship {
        return Ok(());
    }
    shop.command(
        Method::POST,
        &format!("/api/orders/{order}/ship"),
        Some(json!({ "carrier": "SIM" })),
        StatusCode::OK,
        tally,
    )
    .await?;
    if s.deliver {
        shop.command(
            Method::POST,
            &format!("/api/orders/{order}/deliver"),
            None,
            StatusCode::OK,
            tally,
        )
        .await?;
    }
    let last = if s.deliver { "Delivered" } else { "Shipped" };
    shop.wait_for(order, &[last], s).await?;
    Ok(())
}

fn field(body: &Value, name: &str) -> Result<String, String> {
    body[name]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "badResponse".to_string())
}

/// What the polls read of an order.
struct OrderStatus {
    status: String,
    cancel_reason: Option<String>,
}

/// The shop's HTTP API.
struct Shop {
    http: reqwest::Client,
    base: String,
}

impl Shop {
    /// A write request; its latency (until the whole answer is read) is recorded whatever
    /// the answer. Returns the JSON body of an answer with the expected status, or the
    /// kind of error.
    async fn command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expect: StatusCode,
        tally: &mut Tally,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let start = Instant::now();
        let response = request.send().await.map_err(|e| transport_kind(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| transport_kind(&e))?;
        tally.command_us.push(start.elapsed().as_micros() as u64);
        if status != expect {
            return Err(status_kind(status, &bytes));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|_| "badResponse".to_string())
    }

    /// Polls the order's read model until its status is one of `statuses` (a 404 means
    /// it has not appeared yet), at most the order timeout.
    async fn wait_for(
        &self,
        order: &str,
        statuses: &[&str],
        s: &Settings,
    ) -> Result<OrderStatus, String> {
        let url = format!("{}/api/orders/{order}", self.base);
        let deadline = Instant::now() + s.order_timeout;
        let mut last = "absent".to_string();
        let mut pause = s.poll_interval;
        loop {
            let response = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| transport_kind(&e))?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| transport_kind(&e))?;
            if status == StatusCode::OK {
                let body: Value =
                    serde_json::from_slice(&bytes).map_err(|_| "badResponse".to_string())?;
                last = body["status"].as_str().unwrap_or("").to_string();
                if statuses.contains(&last.as_str()) {
                    return Ok(OrderStatus {
                        status: last,
                        cancel_reason: body["cancelReason"].as_str().map(str::to_string),
                    });
                }
            } else if status != StatusCode::NOT_FOUND {
                return Err(status_kind(status, &bytes));
            }
            if Instant::now() >= deadline {
                return Err(format!("orderTimeout:{last}"));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(s.poll_interval * 20);
        }
    }

    /// From the order's CartCheckedOut to its OrderConfirmed, in microseconds, by the
    /// events' timestamps (the store's clock), from the order's timeline.
    async fn checkout_to_confirmed_us(&self, order: &str) -> Option<u64> {
        let url = format!("{}/api/orders/{order}/timeline", self.base);
        let response = self.http.get(&url).send().await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        let timeline: Value = response.json().await.ok()?;
        let at = |event_type: &str| {
            timeline["events"]
                .as_array()?
                .iter()
                .find(|e| e["eventType"] == event_type)?["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        };
        let elapsed = at("OrderConfirmed")? - at("CartCheckedOut")?;
        elapsed
            .num_microseconds()
            .and_then(|us| u64::try_from(us).ok())
    }

    /// The store's event count; the first request, so it also tells whether the target
    /// is a shop at all.
    async fn total_events(&self) -> Result<u64, SimulateError> {
        let response = self
            .http
            .get(format!("{}/api/eventstore/stats", self.base))
            .send()
            .await
            .map_err(|e| SimulateError::Unreachable {
                target: self.base.clone(),
                cause: cornershop_domain::causes::with_causes(&e),
            })?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(SimulateError::NotAShop {
                target: self.base.clone(),
                detail: format!("GET /api/eventstore/stats answered {status}"),
            });
        }
        let body: Value = response.json().await.map_err(|e| SimulateError::NotAShop {
            target: self.base.clone(),
            detail: format!("GET /api/eventstore/stats did not answer JSON: {e}"),
        })?;
        body["totalEvents"]
            .as_u64()
            .ok_or_else(|| SimulateError::NotAShop {
                target: self.base.clone(),
                detail: "GET /api/eventstore/stats has no totalEvents".into(),
            })
    }

    /// Stocks every SKU of the run: plenty of the ordinary ones, 1 unit of the scarce one.
    async fn stock_up(&self, skus: u64, tally: &mut Tally) -> Result<(), SimulateError> {
        let products = (0..skus)
            .map(|i| {
                let price = format!("{}.{:02}", 2 + (i * 7) % 40, 49 + (i * 10) % 50);
                (
                    sku_name(i),
                    format!("Simulated product {}", i + 1),
                    price,
                    PLENTY,
                )
            })
            .chain(std::iter::once((
                SCARCE_SKU.to_string(),
                "Simulated scarce product".to_string(),
                "99.00".to_string(),
                1,
            )));
        for (sku, name, price, quantity) in products {
            let body = json!({ "name": name, "unitPrice": price, "quantity": quantity });
            self.command(
                Method::PUT,
                &format!("/api/inventory/{sku}"),
                Some(body),
                StatusCode::OK,
                tally,
            )
            .await
            .map_err(|kind| SimulateError::NotAShop {
                target: self.base.clone(),
                detail: format!("stocking {sku} failed ({kind})"),
            })?;
        }
        Ok(())
    }
}

/// The kind of a request that got no answer.
fn transport_kind(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// The kind of an unexpected answer: `http<status>` and the problem's type.
fn status_kind(status: StatusCode, body: &[u8]) -> String {
    let problem = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b["type"].as_str().map(str::to_string));
    match problem {
        Some(kind) => format!(
            "http{}:{}",
            status.as_u16(),
            kind.trim_start_matches("/problems/")
        ),
        None => format!("http{}", status.as_u16()),
    }
}

/// Samples the projections' lag until the run is over: at each sample the largest lag
/// (events behind the log's head) over the projections reported. No samples when the
/// target reports no projection (or does not answer the route).
async fn sample_lag(shared: Arc<Shared>, done: Arc<AtomicBool>) -> Vec<u64> {
    let url = format!("{}/api/projections", shared.shop.base);
    let mut samples = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let request = shared.http().get(&url).timeout(Duration::from_secs(2));
        if let Ok(response) = request.send().await {
            if response.status() == StatusCode::OK {
                if let Ok(Value::Array(projections)) = response.json::<Value>().await {
                    if let Some(lag) = projections.iter().filter_map(|p| p["lag"].as_u64()).max() {
                        samples.push(lag);
                    }
                }
            }
        }
        tokio::time::sleep(shared.settings.lag_interval).await;
    }
    samples
}

impl Shared {
    fn http(&self) -> &reqwest::Client {
        &self.shop.http
    }
}

/// The progress bar on stderr: orders done of the total, or time of the duration.
/// Hidden with --json, --no-progress, or when stderr is not a terminal.
fn progress_bar(args: &SimulateArgs, s: &Settings) -> ProgressBar {
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
async fn tick(shared: Arc<Shared>, done: Arc<AtomicBool>) {
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
