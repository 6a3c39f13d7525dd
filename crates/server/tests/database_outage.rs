//! Stops PostgreSQL (`scripts/postgres.sh stop`) for a few seconds while shoppers place
//! whole orders against the production path, then starts it again. A test binary of its
//! own, with one test, so that it never runs beside the other production-path tests (it
//! takes their database away for a while).
//!
//! Needs `CORNERSHOP_TEST_DATABASE_URL` and `CORNERSHOP_TEST_KAFKA_BROKERS` (see
//! `scripts/stack.sh`) and `kcat` on the PATH. The cluster stopped is the one that
//! `scripts/postgres.sh` finds for the port of `CORNERSHOP_TEST_DATABASE_URL` (and
//! `PG_RUN_DIR`, when set).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// How long PostgreSQL stays down.
const OUTAGE: Duration = Duration::from_secs(5);
const SHOPPERS: usize = 6;

fn postgres_script(command: &str) -> Command {
    let mut script =
        Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh"));
    script.arg(command);
    // The cluster the tests use, whatever port the caller's environment says.
    let url = cluster::required_env(cluster::DATABASE_ENV);
    if let Some(port) = url
        .rsplit_once('@')
        .and_then(|(_, host)| host.split('/').next())
        .and_then(|host| host.rsplit_once(':'))
        .map(|(_, port)| port.to_string())
    {
        script.env("PGPORT", port);
    }
    script
}

fn run_postgres_script(command: &str) -> Result<(), String> {
    match postgres_script(command).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "postgres.sh {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("cannot run postgres.sh {command}: {e}")),
    }
}

/// Leaves PostgreSQL running whatever happens to the test: `postgres.sh start` is a no-op
/// when it runs already, and starts it when a failure stopped the test midway.
struct PostgresRunning;

impl Drop for PostgresRunning {
    fn drop(&mut self) {
        if let Err(e) = run_postgres_script("start") {
            eprintln!("after the test: {e}");
        }
    }
}

/// One answer that was not a success.
#[derive(Debug, Clone)]
struct Failure {
    step: &'static str,
    status: Option<u16>,
    content_type: String,
    retry_after: Option<String>,
    body: String,
}

#[derive(Default)]
struct Seen {
    failures: Vec<Failure>,
    /// (cart, order) of every acknowledged checkout.
    checkouts: Vec<(String, String)>,
    /// Requests answered with success, all steps.
    successes: usize,
}

/// Sends one command until it is answered with `expected`, repeating it (with the same
/// Idempotency-Key, as a client told `Retry-After` would) after a failure; every failure
/// is recorded. Gives up after a minute.
async fn command(
    client: &reqwest::Client,
    seen: &Mutex<Seen>,
    step: &'static str,
    url: String,
    body: Value,
    expected: StatusCode,
) -> Option<Value> {
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let sent = client
            .post(&url)
            .header("idempotency-key", &key)
            .json(&body)
            .send()
            .await;
        let failure = match sent {
            Ok(response) if response.status() == expected => match response.json().await {
                Ok(value) => {
                    seen.lock().unwrap().successes += 1;
                    return Some(value);
                }
                Err(e) => Failure {
                    step,
                    status: Some(expected.as_u16()),
                    content_type: String::new(),
                    retry_after: None,
                    body: format!("the body was cut off: {e}"),
                },
            },
            Ok(response) => {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let (content_type, retry_after) = (header("content-type"), header("retry-after"));
                let status = response.status().as_u16();
                Failure {
                    step,
                    status: Some(status),
                    content_type: content_type.unwrap_or_default(),
                    retry_after,
                    body: response.text().await.unwrap_or_default(),
                }
            }
            Err(e) => Failure {
                step,
                status: None,
                content_type: String::new(),
                retry_after: None,
                body: format!("no answer: {e}"),
            },
        };
        let wait = failure
            .retry_after
            .as_deref()
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(Duration::from_millis(500), Duration::from_secs);
        seen.lock().unwrap().failures.push(failure);
        tokio::time::sleep(wait).await;
    }
    None
}

/// One whole order: a cart, an item, a checkout.
async fn shop_once(client: &reqwest::Client, base: &str, seen: &Mutex<Seen>, n: usize) {
    let Some(cart) = command(
        client,
        seen,
        "create cart",
        format!("{base}/api/carts"),
        json!({ "customerId": format!("shopper-{}", n % SHOPPERS) }),
        StatusCode::CREATED,
    )
    .await
    else {
        return;
    };
    let cart = cart["cartId"].as_str().expect("cartId").to_string();
    let added = command(
        client,
        seen,
        "add item",
        format!("{base}/api/carts/{cart}/items"),
        json!({ "sku": "MUG", "quantity": 1 + (n % 3) }),
        StatusCode::OK,
    )
    .await;
    if added.is_none() {
        return;
    }
    let accepted = command(
        client,
        seen,
        "checkout",
        format!("{base}/api/carts/{cart}/checkout"),
        json!({"paymentToken": "tok_visa", "shippingAddress": common::address(),
               "email": "ada@example.com", "phone": "+44 20 7946 0000"}),
        StatusCode::ACCEPTED,
    )
    .await;
    if let Some(accepted) = accepted {
        let order = accepted["orderId"].as_str().expect("orderId").to_string();
        seen.lock().unwrap().checkouts.push((cart, order));
    }
}

/// Polls `/health/ready` until it answers `expected` (each request bounded by 5 s);
/// returns how long that took, or what it answered last.
async fn wait_ready_status(
    base: &str,
    expected: StatusCode,
    limit: Duration,
) -> Result<Duration, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < limit {
        match client.get(format!("{base}/health/ready")).send().await {
            Ok(r) if r.status() == expected => {
                if expected == StatusCode::SERVICE_UNAVAILABLE {
                    if !r.headers().contains_key("retry-after") {
                        return Err("503 without Retry-After".into());
                    }
                    common::assert_problem(r, expected).await;
                }
                return Ok(started.elapsed());
            }
            Ok(r) => last = format!("{}", r.status()),
            Err(e) => last = format!("no answer: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "/health/ready did not answer {expected} within {limit:?}; last: {last}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_under_load_answers_503_and_every_acknowledged_checkout_confirms() {
    let started = Instant::now();
    let (app, cluster) = cluster::start_shop(cluster::DEFAULT_LAYOUT, &[]).await;
    // Declared after the cluster, so dropped before it: PostgreSQL runs again before the
    // cluster's drop removes its database.
    let _postgres = PostgresRunning;
    let db = cluster.db().await;
    app.stock("MUG", "5.00", 1_000_000).await;
    let base = app.base.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = common::authorized(
        reqwest::Client::builder().timeout(Duration::from_secs(60)),
        &app.token(common::Role::Admin, common::TEST_ADMIN),
    );
    let shoppers: Vec<_> = (0..SHOPPERS)
        .map(|shopper| {
            let (client, base, seen, stop) =
                (client.clone(), base.clone(), seen.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = shopper;
                while !stop.load(Ordering::SeqCst) {
                    shop_once(&client, &base, &seen, n).await;
                    n += SHOPPERS;
                }
            })
        })
        .collect();

    // Orders flow through the whole workflow before the outage.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM events WHERE event_type = 'OrderConfirmed'",
    )
    .fetch_one(&db)
    .await
    .unwrap()
        < 5
    {
        assert!(
            Instant::now() < deadline,
            "no order completed before the outage\n{}",
            cluster.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.close().await;
    let before = seen.lock().unwrap().checkouts.len();

    tokio::task::spawn_blocking(|| run_postgres_script("stop"))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let stopped_at = Instant::now();
    let not_ready_after = wait_ready_status(&base, StatusCode::SERVICE_UNAVAILABLE, OUTAGE).await;
    tokio::time::sleep(OUTAGE.saturating_sub(stopped_at.elapsed())).await;
    tokio::task::spawn_blocking(|| run_postgres_script("start"))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let down_for = stopped_at.elapsed();
    let ready_again_after = wait_ready_status(&base, StatusCode::OK, Duration::from_secs(30)).await;
    let during = seen.lock().unwrap().checkouts.len() - before;

    // Keep shopping after the database is back.
    let back = seen.lock().unwrap().checkouts.len();
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::SeqCst);
    for shopper in shoppers {
        shopper.await.expect("a shopper");
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let after = seen.checkouts.len() - back;

    // No 500, no request left unanswered: every failure is a 503 problem+json with
    // Retry-After.
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for f in &seen.failures {
        let kind = serde_json::from_str::<Value>(&f.body)
            .ok()
            .and_then(|problem| problem["type"].as_str().map(str::to_string))
            .unwrap_or_default();
        *by_kind
            .entry(format!("{} {:?} {kind}", f.step, f.status))
            .or_default() += 1;
    }
    eprintln!(
        "while PostgreSQL was stopped: failures by step, status and problem type {by_kind:?}; \
         /health/ready while down: {not_ready_after:?}; after the start: {ready_again_after:?}"
    );
    let improper: Vec<&Failure> = seen
        .failures
        .iter()
        .filter(|f| {
            f.status != Some(503)
                || f.content_type != "application/problem+json"
                || f.retry_after.is_none()
        })
        .collect();
    assert!(
        improper.is_empty(),
        "{} of {} failed requests were not 503 problem+json with Retry-After (by step, \
         status and problem type: {by_kind:?}); e.g. {:#?}\n{}",
        improper.len(),
        seen.failures.len(),
        &improper[..improper.len().min(5)],
        cluster.log_tails(30)
    );
    for f in &seen.failures {
        let problem: Value = serde_json::from_str(&f.body).expect("a problem body");
        assert_eq!(problem["status"], 503, "{f:?}");
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    assert!(
        after > 0,
        "no checkout acknowledged after the database came back"
    );
    // Readiness said so while the database was away, promptly, and recovered by itself.
    let not_ready_after = not_ready_after.expect("/health/ready while the database is away");
    let ready_again_after = ready_again_after.expect("/health/ready once the database is back");

    // Every acknowledged checkout ends Confirmed, once.
    let db = cluster.db().await;
    let orders: Vec<String> = seen.checkouts.iter().map(|(_, o)| o.clone()).collect();
    let outcomes =
        cluster::wait_final_and_published(&cluster, &db, &orders, Duration::from_secs(180)).await;
    let not_confirmed: Vec<_> = outcomes
        .iter()
        .filter(|(_, outcome)| **outcome != "Confirmed")
        .collect();
    assert!(
        not_confirmed.is_empty(),
        "acknowledged checkouts that did not end Confirmed: {not_confirmed:?}"
    );

    // Nothing is duplicated: no effect twice, each acknowledged cart checked out once
    // with its one item added once (a repeated request found its Idempotency-Key), each
    // order created, paid and confirmed once.
    let stored = cluster::stored_events(&db).await;
    cluster::assert_no_effect_twice(&stored);
    let mut count: HashMap<(&str, &str), usize> = HashMap::new();
    for e in &stored {
        *count
            .entry((e.aggregate_id.as_str(), e.event_type.as_str()))
            .or_default() += 1;
    }
    let once = |id: &str, event_type: &str| count.get(&(id, event_type)).copied().unwrap_or(0);
    for (cart, order) in &seen.checkouts {
        assert_eq!(once(cart, "ItemAddedToCart"), 1, "cart {cart}: items added");
        assert_eq!(once(cart, "CartCheckedOut"), 1, "cart {cart}: checkouts");
        for event_type in ["OrderCreated", "OrderValidated", "OrderConfirmed"] {
            assert_eq!(once(order, event_type), 1, "order {order}: {event_type}");
        }
    }
    let confirmed_total = stored
        .iter()
        .filter(|e| e.event_type == "OrderConfirmed")
        .count();
    let checked_out_total = stored
        .iter()
        .filter(|e| e.event_type == "CartCheckedOut")
        .count();
    assert_eq!(
        confirmed_total, checked_out_total,
        "every checkout stored (acknowledged or not) ends confirmed"
    );
    let messages = cluster.read_event_topics().await;
    cluster::assert_every_event_published(&stored, &messages);

    eprintln!(
        "{} orders acknowledged ({during} while the database was down or starting, {after} \
         after), database down for {down_for:?}, /health/ready 503 after {not_ready_after:?} \
         and 200 again {ready_again_after:?} after the start; {} requests succeeded, \
         failures by step, status and problem type: {by_kind:?}; {} events; {:?} in all",
        seen.checkouts.len(),
        seen.successes,
        stored.len(),
        started.elapsed()
    );
    db.close().await;
    cluster.dispose().await;
}
