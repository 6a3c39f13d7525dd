//! Restarts the Kafka broker (`scripts/kafka.sh restart`) while the production path is
//! under load. A test binary of its own, so that it never runs beside the other
//! production-path tests (it takes their broker away for a while).
//!
//! Needs `CORNERSHOP_TEST_DATABASE_URL` and `CORNERSHOP_TEST_KAFKA_BROKERS` (see
//! `scripts/stack.sh`) and `kcat` on the PATH.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster;
use common::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn kafka_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka.sh")
}

/// Leaves the broker running whatever happens to the test: `kafka.sh start` is a no-op
/// when it runs already, and starts it when a failure stopped the test midway.
struct BrokerRunning;

impl Drop for BrokerRunning {
    fn drop(&mut self) {
        match Command::new(kafka_script()).arg("start").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "kafka.sh start failed after the test: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run kafka.sh start after the test: {e}"),
        }
    }
}

/// One order, without panicking: the load must keep going whatever one request meets.
async fn try_order(app: &TestApp, n: usize) -> Result<String, String> {
    let response = app
        .post("/api/carts", &json!({ "customerId": format!("load-{n}") }))
        .await;
    if response.status() != StatusCode::CREATED {
        return Err(format!("create cart: {}", response.status()));
    }
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    let cart = body["cartId"].as_str().ok_or("no cartId")?.to_string();
    let response = app.add(&cart, "MUG", 1 + (n % 3) as i64).await;
    if response.status() != StatusCode::OK {
        return Err(format!("add: {}", response.status()));
    }
    let token = if n % 5 == 4 {
        "tok_chargeDeclined"
    } else {
        "tok_visa"
    };
    let response = app
        .post(
            &format!("/api/carts/{cart}/checkout"),
            &json!({"paymentToken": token, "shippingAddress": common::address(),
                    "email": "ada@example.com", "phone": "+44 20 7946 0000"}),
        )
        .await;
    if response.status() != StatusCode::ACCEPTED {
        return Err(format!("checkout: {}", response.status()));
    }
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    Ok(body["orderId"].as_str().ok_or("no orderId")?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_under_load_loses_nothing_and_orders_complete() {
    let _broker = BrokerRunning;
    let started = Instant::now();
    let (app, cluster) = cluster::start_shop(cluster::DEFAULT_LAYOUT, &[]).await;
    let db = cluster.db().await;
    app.stock("MUG", "5.00", 100_000).await;
    let app = Arc::new(app);

    // A client placing orders one after another for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    const CLIENTS: usize = 1;
    let load: Vec<_> = (0..CLIENTS)
        .map(|worker| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut placed, mut failed) = (Vec::new(), Vec::new());
                let mut n = worker;
                while !stop.load(Ordering::SeqCst) {
                    match try_order(&app, n).await {
                        Ok(id) => placed.push((Instant::now(), id)),
                        Err(e) => failed.push(e),
                    }
                    n += CLIENTS;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                (placed, failed)
            })
        })
        .collect();

    // Orders flow through Kafka before the restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM events WHERE event_type = 'OrderConfirmed'",
    )
    .fetch_one(&db)
    .await
    .unwrap()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "no order completed before the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let restart_began = Instant::now();
    let out = tokio::task::spawn_blocking(|| Command::new(kafka_script()).arg("restart").output())
        .await
        .expect("the restart task")
        .expect("kafka.sh runs");
    let restart_took = restart_began.elapsed();
    assert!(
        out.status.success(),
        "kafka.sh restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Keep ordering after the broker is back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);

    let (mut orders, mut failures) = (Vec::new(), Vec::new());
    let (mut during, mut after) = (0, 0);
    for task in load {
        let (placed, failed) = task.await.expect("a load task");
        for (at, id) in placed {
            if at > restart_began && at < restart_began + restart_took {
                during += 1;
            } else if at >= restart_began + restart_took {
                after += 1;
            }
            orders.push(id);
        }
        failures.extend(failed);
    }
    // The API writes to PostgreSQL only: the broker being away does not fail a request.
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    assert!(after > 0, "no order placed after the restart");

    let outcomes =
        cluster::wait_final_and_published(&cluster, &db, &orders, Duration::from_secs(120)).await;
    let confirmed = outcomes.values().filter(|o| **o == "Confirmed").count();
    let stored = cluster::stored_events(&db).await;
    cluster::assert_no_effect_twice(&stored);
    let messages = cluster.read_event_topics().await;
    cluster::assert_every_event_published(&stored, &messages);
    let repeats = cluster::assert_per_aggregate_order(&stored, &messages);
    eprintln!(
        "{} orders ({during} placed while the broker restarted, {after} after; {confirmed} \
         confirmed), broker restart {restart_took:?}, {} events, {repeats} published twice; \
         {:?} in all",
        orders.len(),
        stored.len(),
        started.elapsed()
    );
    db.close().await;
    cluster.dispose().await;
}
