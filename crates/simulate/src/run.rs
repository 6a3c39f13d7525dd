//! A run: the settings checked once, the shoppers (workers) taking order numbers until
//! the run is over, each order's life through the API, and the projection-lag sampler.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::Shop;
use crate::plan::{plan, Kind, Mix, Plan};
use crate::report::{progress_bar, report, tick, Report, Tally};
use crate::{SimulateArgs, SimulateError};

/// Orders when neither `--orders` nor `--duration` is given.
pub const DEFAULT_ORDERS: u64 = 100;

/// Runs the simulation described by `args` and returns its report. Without --token or
/// --token-file, `own_token` gives the token to send (or none): the server signs one with
/// the embedded shop's key; an error is an invalid setting.
pub async fn run<F>(args: SimulateArgs, own_token: F) -> Result<Report, SimulateError>
where
    F: FnOnce(&SimulateArgs) -> Result<Option<String>, String>,
{
    let settings = Settings::from_args(&args)?;
    let shop = crate::client::connect(&args, &settings, own_token)?;

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

/// What the workers need to know, checked once.
pub(crate) struct Settings {
    pub(crate) base: String,
    pub(crate) orders: Option<u64>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) rate: Option<f64>,
    pub(crate) mix: Mix,
    pub(crate) seed: u64,
    pub(crate) customers: u64,
    pub(crate) skus: u64,
    pub(crate) ship: bool,
    pub(crate) deliver: bool,
    pub(crate) poll_interval: Duration,
    pub(crate) lag_interval: Duration,
    pub(crate) order_timeout: Duration,
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

pub(crate) struct Shared {
    pub(crate) shop: Shop,
    pub(crate) settings: Settings,
    /// The next order number to start.
    pub(crate) next: AtomicU64,
    /// Orders started, and finished (whatever their end).
    pub(crate) begun: AtomicU64,
    pub(crate) finished: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) progress: ProgressBar,
    pub(crate) started: Instant,
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
