//! The operator's console on a large store (issue 18: "with 1,000,000 events in the store,
//! every page answers in under a second"): a fresh store filled with `--events` events of
//! order histories, its read models rebuilt, then the real application started in this
//! process on it (authentication on, the embedded issuer) and every console page timed
//! over HTTP with the session cookie, beside two baselines of the same run under the same
//! HTTP stack: `GET /health/live` (the server's floor) and the API's
//! `GET /api/eventstore/events?limit=50` (the store's read of a page).
//!
//! The store: the read models' test generator (`cornershop_readmodels::testkit`, the
//! events the aggregates' own `decide` gives, as the rebuild benchmark writes them), run
//! by `--writers` tasks at once, each with its own 50 SKUs, so that the store's group
//! commit takes their appends together. An order has one to three lines; each line's SKU
//! is drawn with a skew (the first SKU of a writer is on about three orders in ten), so
//! the busiest SKU's stream is long; outcomes as in the rebuild benchmark, with
//! cancellations after payment too. One order every 30 s of simulated time, so the log
//! spans weeks, and each order's events 7 ms apart.
//!
//! The shop runs with every role, its consumers' checkpoints set at the head before it
//! starts (a shop that is caught up): nothing reacts while the pages are timed, which the
//! end checks (the head did not move). `--dead-letters` events spread over the log are
//! recorded as dead letters of the payment service, pending.
//!
//! Every case is requested once to warm up (its time is reported as `firstMs`), then
//! `--requests` rounds request every case once in turn, one request at a time, so that
//! load from elsewhere on the machine falls on all cases alike. A case's time runs from
//! sending the request to the last byte of its body; its percentiles are nearest-rank.
//! A page that does not answer 200 with its content is an error of the benchmark.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use cornershop_domain::AggregateType;
use cornershop_readmodels::testkit::{Generator, Line, OrderPlan, Outcome};
use cornershop_readmodels::{ReadModelStore, PROJECTIONS};
use cornershop_server::auth::issuer::LocalIssuer;
use cornershop_server::auth::Role;
use cornershop_server::config::ServeArgs;
use cornershop_server::startup::Application;
use cornershop_store::{EventStore, PgEventStore, SqliteEventStore, TimeRange};
use rust_decimal::Decimal;
use serde_json::json;

use crate::cli::{Backend, ConsoleArgs};
use crate::{emit, round1, round3, Rng};

/// SKUs of each writer's catalogue.
const SKUS: usize = 50;
/// Simulated time between two orders, and between two events of one order.
const ORDER_EVERY: chrono::Duration = chrono::Duration::seconds(30);
const STEP: chrono::Duration = chrono::Duration::milliseconds(7);
/// A writer's stock moves are appended per SKU in batches of this many (the generator's
/// default is 500): the last ones are flushed after the target is reached, so a smaller
/// batch overshoots it less.
const STOCK_BATCH: usize = 50;
/// Customers the orders are spread over.
const CUSTOMERS: u64 = 10_000;
/// The consumers of `serve --roles all` on the embedded transport, whose checkpoints are
/// set at the head before the shop starts.
const CONSUMERS: [&str; 6] = [
    "order-saga",
    "cart-expiry",
    "inventory-service",
    "payment-service",
    "notification-service",
    "reporting-service",
];

/// `console --backend sqlite|postgres [--database-url URL] --events N`.
pub(crate) async fn console(args: &ConsoleArgs) -> anyhow::Result<()> {
    let backend = args.store.backend;
    let name = backend.name();
    let work = args.store.temp_dir()?;
    let dir = work.path();
    let url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(args.store.database_url("console")?.to_string()),
    };
    ensure!(args.writers > 0, "--writers must be at least 1");
    ensure!(args.requests > 0, "--requests must be at least 1");

    // 1. The store, filled, and its read models rebuilt.
    let store: Arc<dyn EventStore> = match &url {
        Some(url) => Arc::new(PgEventStore::connect(url).await?),
        None => Arc::new(SqliteEventStore::open(dir).await?),
    };
    let before = store.stats().await?.total_events;
    ensure!(
        before == 0,
        "console needs an empty store: this one holds {before} events"
    );
    let started = Instant::now();
    let fill = fill(store.clone(), args.events, args.writers).await?;
    let head = store.head_position().await?;
    let total = store.stats().await?.total_events;
    emit(json!({
        "kind": "console-fill", "backend": name, "events": total, "orders": fill.orders,
        "writers": args.writers, "seconds": round3(started.elapsed().as_secs_f64()),
    }));

    let read_models: Arc<dyn ReadModelStore> = match &url {
        Some(url) => Arc::new(cornershop_readmodels::connect_postgres(url).await?),
        None => Arc::new(cornershop_readmodels::open_sqlite(dir).await?),
    };
    let started = Instant::now();
    for projection in PROJECTIONS {
        let report = read_models
            .rebuild(projection, store.as_ref(), &|_| {})
            .await?;
        ensure!(
            report.position == head,
            "the rebuild of {projection} stopped at {} of {head}",
            report.position
        );
    }
    emit(json!({
        "kind": "console-rebuild", "backend": name, "events": total,
        "seconds": round3(started.elapsed().as_secs_f64()),
    }));
    read_models.close().await;
    if let Some(url) = &url {
        // The store grew in minutes, faster than autovacuum's look, and the rebuild has just
        // swapped in new tables: fresh statistics and visibility maps, as a store that grew
        // at a shop's pace has them (see the scaling benchmark). Without the VACUUM, the
        // overview's count by status reads the whole of `rm_orders` (its index-only scan
        // needs the visibility map) until autovacuum has been by.
        let pool = sqlx::PgPool::connect(url).await?;
        sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
        pool.close().await;
    }

    // What the pages are asked for: the middle order, its events, the busiest SKU.
    let targets = Targets::find(store.as_ref(), &fill, head).await?;
    // Some events a consumer gave up on, spread over the log: the dead letters' page
    // loads every pending one.
    let now = Utc::now();
    for i in 0..args.dead_letters {
        let after = head * i / args.dead_letters.max(1);
        if let Some(event) = store.read_log(after, 1).await?.first() {
            store
                .record_dead_letter(
                    "payment-service",
                    event,
                    "the payment gateway timed out after 5 attempts",
                    5,
                    now,
                )
                .await?;
        }
    }
    // A shop that is caught up: every consumer's checkpoint at the head.
    for consumer in CONSUMERS {
        store.save_checkpoint(consumer, head).await?;
    }
    store.close().await;

    // 2. The real application on that store, authentication on, an admin's token.
    let mut serve = ServeArgs::for_data_dir(dir);
    serve.database_url = url.clone();
    let key_file = serve.auth.signing_key_path(&serve.data_dir);
    let token = LocalIssuer::open_or_create(&key_file)?.mint(
        "bench-console",
        &[Role::Admin],
        Duration::from_secs(3600),
        &serve.auth.oidc_audience,
    )?;
    let app = Application::build(serve).await?;
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    // 3. Every case timed.
    let cases = targets.cases();
    let measured = measure_cases(&base, &token, &cases, args.requests).await;
    let _ = stop.send(());
    running.await.context("the shop's task")??;
    let measured = measured?;
    let api = measured
        .iter()
        .find(|m| m.case.path.starts_with("/api/"))
        .map_or(f64::NAN, |m| m.p50);
    for m in &measured {
        emit(json!({
            "kind": "console", "backend": name, "events": total, "case": m.case.name,
            "path": m.case.path, "baseline": m.case.baseline, "requests": args.requests,
            "bytes": m.bytes, "firstMs": round3(m.first), "p50Ms": round3(m.p50),
            "p95Ms": round3(m.p95), "maxMs": round3(m.max),
        }));
    }
    print_table(name, total, args.requests, &measured, api);

    // Nothing reacted while the pages were timed: the log and the checkpoints are where
    // they were.
    let store: Arc<dyn EventStore> = match &url {
        Some(url) => Arc::new(PgEventStore::connect(url).await?),
        None => Arc::new(SqliteEventStore::open(dir).await?),
    };
    let after = store.head_position().await?;
    let behind: Vec<String> = store
        .checkpoints()
        .await?
        .into_iter()
        .filter(|c| c.position != head)
        .map(|c| format!("{} at {}", c.consumer, c.position))
        .collect();
    store.close().await;
    ensure!(
        after == head,
        "the shop wrote {} events while the pages were timed",
        after - head
    );
    ensure!(
        behind.is_empty(),
        "consumers not at the head ({head}): {}",
        behind.join(", ")
    );
    Ok(())
}

// ---------------------------------------------------------------- the store

/// What the writers wrote: how many orders, the middle order and its instant, and how
/// many lines (stock moves come per line) each SKU had.
struct Filled {
    orders: u64,
    middle_order: String,
    middle_at: DateTime<Utc>,
    lines_per_sku: HashMap<String, u64>,
}

/// Writes order histories with `writers` generators at once until `events` events are
/// in the store (a little more: each writer's last stock moves are flushed after it).
async fn fill(store: Arc<dyn EventStore>, events: u64, writers: usize) -> anyhow::Result<Filled> {
    let writers_u64 = writers as u64;
    // One order every ORDER_EVERY, the last about now: about 12 events an order.
    let start = Utc::now() - ORDER_EVERY * (events / 12 + 100) as i32;
    let written = Arc::new(AtomicU64::new(0));
    let ticker = {
        let written = written.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let n = written.load(Ordering::Relaxed);
                eprintln!(
                    "console: {n} of {events} events written in {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let store = store.clone();
        let written = written.clone();
        let share = events / writers_u64 + u64::from((writer as u64) < events % writers_u64);
        tasks.spawn(async move {
            write_orders(store, writer, writers_u64, share, start, &written).await
        });
    }
    let mut shards = Vec::new();
    while let Some(done) = tasks.join_next().await {
        shards.push(done??);
    }
    ticker.abort();
    shards.sort_by_key(|s| s.writer);
    let orders = shards.iter().map(|s| s.orders).sum();
    // The middle order of the first writer: the middle of the log's time span.
    let first = &shards[0];
    let n = (first.orders / 2) * writers_u64;
    let mut lines_per_sku = HashMap::new();
    for shard in &shards {
        for (sku, lines) in &shard.lines_per_sku {
            *lines_per_sku.entry(sku.clone()).or_insert(0) += lines;
        }
    }
    Ok(Filled {
        orders,
        middle_order: order_id(n),
        middle_at: start + ORDER_EVERY * n as i32,
        lines_per_sku,
    })
}

struct Shard {
    writer: usize,
    orders: u64,
    lines_per_sku: HashMap<String, u64>,
}

fn order_id(n: u64) -> String {
    format!("console-order-{n:07}")
}

fn sku(writer: usize, i: usize) -> String {
    format!("CONSOLE-{writer}-{i:02}")
}

fn price(i: usize) -> Decimal {
    Decimal::new(299 + 150 * i as i64, 2)
}

/// One writer: its catalogue stocked, then orders n = writer, writer + writers, ... until
/// it has written `share` events.
async fn write_orders(
    store: Arc<dyn EventStore>,
    writer: usize,
    writers: u64,
    share: u64,
    start: DateTime<Utc>,
    written: &AtomicU64,
) -> anyhow::Result<Shard> {
    let mut generator = Generator::new(store);
    generator.stock_batch = STOCK_BATCH;
    let stocked = start - chrono::Duration::hours(1);
    for i in 0..SKUS {
        generator
            .stock(
                &sku(writer, i),
                &format!("Product {i} of shelf {writer}"),
                price(i),
                1_000_000_000,
                10,
                stocked,
            )
            .await?;
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (writer as u64 + 1).wrapping_mul(0xBF58_476D));
    let mut lines_per_sku: HashMap<String, u64> = HashMap::new();
    let mut orders = 0u64;
    let mut reported = generator.events_written;
    written.fetch_add(reported, Ordering::Relaxed);
    // The events written and held back (stock moves wait for their batch), so that the
    // writer stops at its share, not a batch of stock moves per SKU after it.
    let mut planned = generator.events_written;
    while planned < share {
        let n = writer as u64 + orders * writers;
        // One to three distinct products, one to three of each; a product's popularity
        // falls with its index (r² / SKUS for r uniform in 0..SKUS).
        let mut lines: Vec<Line> = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let r = rng.below(SKUS);
            let i = r * r / SKUS;
            let sku = sku(writer, i);
            if lines.iter().any(|l| l.sku == sku) {
                continue;
            }
            lines.push(Line {
                sku,
                name: format!("Product {i} of shelf {writer}"),
                quantity: 1 + rng.below(3) as u32,
                unit_price: price(i),
            });
        }
        let outcome = match rng.below(20) {
            0 => Outcome::Declined,
            1 => Outcome::OutOfStock,
            2 => Outcome::Confirmed,
            3 => Outcome::Shipped,
            4 => Outcome::CancelledAfterPayment,
            _ => Outcome::Delivered,
        };
        planned += events_of(outcome, lines.len() as u64);
        if outcome != Outcome::OutOfStock {
            for line in &lines {
                *lines_per_sku.entry(line.sku.clone()).or_insert(0) += 1;
            }
        }
        generator
            .order(&OrderPlan {
                order_id: order_id(n),
                customer_id: format!("console-customer-{:05}", n % CUSTOMERS),
                lines,
                outcome,
                at: start + ORDER_EVERY * n as i32,
                step: STEP,
            })
            .await?;
        orders += 1;
        written.fetch_add(generator.events_written - reported, Ordering::Relaxed);
        reported = generator.events_written;
    }
    generator.flush().await?;
    written.fetch_add(generator.events_written - reported, Ordering::Relaxed);
    ensure!(
        generator.events_written == planned,
        "writer {writer} wrote {} events, {planned} planned",
        generator.events_written
    );
    Ok(Shard {
        writer,
        orders,
        lines_per_sku,
    })
}

/// The events the generator writes for an order of `lines` lines with this outcome: the
/// order's, the payment's, and the stock moves (a reservation per line, then its release
/// or shipment).
fn events_of(outcome: Outcome, lines: u64) -> u64 {
    let (order, payment, moves) = match outcome {
        Outcome::Created => (1, 0, 0),
        Outcome::OutOfStock => (2, 0, 0),
        Outcome::Declined => (3, 2, 2),
        Outcome::Confirmed => (3, 3, 1),
        Outcome::Shipped => (4, 3, 2),
        Outcome::Delivered => (5, 3, 2),
        Outcome::CancelledAfterPayment => (4, 4, 2),
    };
    order + payment + moves * lines
}

// ---------------------------------------------------------------- the cases

/// The ids and positions the pages are asked about, found in the filled store.
struct Targets {
    head: u64,
    order_id: String,
    correlation_id: String,
    event_id: String,
    middle_at: DateTime<Utc>,
    busiest_sku: String,
}

impl Targets {
    async fn find(store: &dyn EventStore, fill: &Filled, head: u64) -> anyhow::Result<Self> {
        let order = store
            .load_aggregate(
                AggregateType::Order,
                &fill.middle_order,
                TimeRange::default(),
            )
            .await?;
        let Some(first) = order.first() else {
            bail!("the middle order {} has no events", fill.middle_order);
        };
        // The order's last event (delivered, cancelled, ...): one in the log's middle.
        let event = order.last().unwrap_or(first);
        let Some((busiest_sku, _)) = fill.lines_per_sku.iter().max_by_key(|(_, n)| **n) else {
            bail!("no stock moved");
        };
        let stream = store
            .load_aggregate(AggregateType::Inventory, busiest_sku, TimeRange::default())
            .await?
            .len();
        let orders = fill.orders;
        eprintln!(
            "console: {orders} orders; the middle order {} ({} events), its last event at position {}; the busiest SKU {busiest_sku}: {stream} events",
            fill.middle_order,
            order.len(),
            event.position
        );
        Ok(Self {
            head,
            order_id: fill.middle_order.clone(),
            correlation_id: first.envelope.metadata.correlation_id.clone(),
            event_id: event.envelope.event_id.to_string(),
            middle_at: fill.middle_at,
            busiest_sku: busiest_sku.clone(),
        })
    }

    fn cases(&self) -> Vec<Case> {
        let at = self.middle_at.to_rfc3339_opts(SecondsFormat::Secs, true);
        let page = |name: &'static str, path: String, expect: &str| Case {
            name,
            path,
            expect: expect.to_string(),
            baseline: false,
        };
        vec![
            Case {
                name: "baseline: health",
                path: "/health/live".into(),
                expect: String::new(),
                baseline: true,
            },
            Case {
                name: "baseline: API events?limit=50",
                path: "/api/eventstore/events?limit=50".into(),
                expect: "\"eventId\"".into(),
                baseline: true,
            },
            page("overview", "/console".into(), "data-order-status="),
            page(
                "log, first page",
                "/console/events".into(),
                "data-position=",
            ),
            page(
                "log, deep page (before=middle)",
                format!("/console/events?before={}", self.head / 2),
                "data-position=",
            ),
            page(
                "log, eventType=OrderDelivered",
                "/console/events?eventType=OrderDelivered".into(),
                "data-position=",
            ),
            page(
                "log, correlationId (one order)",
                format!("/console/events?correlationId={}", self.correlation_id),
                "data-position=",
            ),
            page(
                "log, aggregateType=Payment&from=middle",
                format!("/console/events?aggregateType=Payment&from={at}"),
                "data-position=",
            ),
            page(
                "an event",
                format!("/console/events/{}", self.event_id),
                "Envelope",
            ),
            page(
                "an order's aggregate",
                format!("/console/aggregates/Order/{}", self.order_id),
                "id=\"state\"",
            ),
            page(
                "the busiest SKU's aggregate",
                format!("/console/aggregates/Inventory/{}", self.busiest_sku),
                "id=\"state\"",
            ),
            page(
                "an order's causal graph",
                format!("/console/orders/{}", self.order_id),
                "id=\"causal-graph\"",
            ),
            page(
                "consumers",
                "/console/consumers".into(),
                "reporting-service",
            ),
            page(
                "dead letters",
                "/console/deadletters".into(),
                "dead-letters",
            ),
            page("kafka", "/console/kafka".into(), "Kafka"),
        ]
    }
}

/// One page (or baseline) to time.
struct Case {
    name: &'static str,
    path: String,
    /// Text its body must hold (the page's content, not a sign-in form).
    expect: String,
    /// A baseline sends the bearer token; a console page the session cookie.
    baseline: bool,
}

struct Measured<'a> {
    case: &'a Case,
    bytes: usize,
    first: f64,
    p50: f64,
    p95: f64,
    max: f64,
}

/// One request: its time (ms, to the body's last byte) and the body's size; anything but
/// a 200 with the expected content is an error.
async fn request(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    case: &Case,
) -> anyhow::Result<(f64, usize)> {
    let mut request = client.get(format!("{base}{}", case.path));
    request = if case.baseline {
        request.bearer_auth(token)
    } else {
        request.header(
            reqwest::header::COOKIE,
            format!("cornershop_console={token}"),
        )
    };
    let started = Instant::now();
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status != reqwest::StatusCode::OK {
        bail!(
            "GET {} answered {status}: {}",
            case.path,
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
    }
    let text = String::from_utf8_lossy(&body);
    ensure!(
        text.contains(&case.expect),
        "GET {} answered 200 without {:?}",
        case.path,
        case.expect
    );
    Ok((ms, body.len()))
}

async fn measure_cases<'a>(
    base: &str,
    token: &str,
    cases: &'a [Case],
    requests: usize,
) -> anyhow::Result<Vec<Measured<'a>>> {
    // No redirects: a console page without a valid session redirects to the sign-in page,
    // which must fail the benchmark, not be timed.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut first = Vec::with_capacity(cases.len());
    for case in cases {
        first.push(request(&client, base, token, case).await?);
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(requests); cases.len()];
    let mut bytes = vec![0usize; cases.len()];
    for _ in 0..requests {
        for (i, case) in cases.iter().enumerate() {
            let (ms, size) = request(&client, base, token, case).await?;
            times[i].push(ms);
            bytes[i] = bytes[i].max(size);
        }
    }
    Ok(cases
        .iter()
        .zip(times)
        .zip(first)
        .zip(bytes)
        .map(|(((case, mut took), (first, _)), bytes)| {
            took.sort_by(f64::total_cmp);
            Measured {
                case,
                bytes,
                first,
                p50: rank(&took, 0.50),
                p95: rank(&took, 0.95),
                max: took[took.len() - 1],
            }
        })
        .collect())
}

/// The nearest-rank percentile of sorted samples.
fn rank(sorted: &[f64], p: f64) -> f64 {
    let k = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

/// The human-readable table, on stderr (stdout holds the JSON lines).
fn print_table(backend: &str, events: u64, requests: usize, measured: &[Measured<'_>], api: f64) {
    eprintln!();
    eprintln!(
        "console pages, {backend}, {events} events; {requests} requests each after a warm-up (ms):"
    );
    eprintln!(
        "{:<40} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "case", "bytes", "first", "p50", "p95", "max", "p50/API"
    );
    for m in measured {
        eprintln!(
            "{:<40} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.1}{}",
            m.case.name,
            m.bytes,
            m.first,
            m.p50,
            m.p95,
            m.max,
            round1(m.p50 / api),
            if m.p95 > 1000.0 { "  OVER 1 s" } else { "" }
        );
    }
    eprintln!(
        "first: the warm-up request; p50 and p95 nearest-rank; bytes: the largest body; \
         p50/API: the p50 over the API's events?limit=50"
    );
}
