//! The reporting service (CQRS read side) end to end: queries on a known data set, verify
//! after the workflow's scenarios, a rebuild from 100,000 events while queries answer, and
//! a consumer killed between its read-model write and its checkpoint.
//!
//! Runs in-process on the embedded default; with `CORNERSHOP_TEST_BACKEND=production`, on
//! PostgreSQL + Kafka with the services (the reporting service included) in separate
//! processes (`common::cluster`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use common::{assert_problem, cluster, spawn_app, spawn_app_with, TestApp};
use cornershop_messaging::{Handler, HandlerError};
use cornershop_readmodels::testkit::{Generator, Line, OrderPlan, Outcome};
use cornershop_readmodels::{is_projected, ReportingProjection, REPORTING};
use cornershop_server::config::Role;
use cornershop_store::{EventStore, PgEventStore, SqliteEventStore, StoredEvent};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Helpers

/// A shop whose events a test writes itself: the API and the reporting service only (no
/// workflow services to react), in-process on SQLite or as one process on PostgreSQL +
/// Kafka. `write` fills the event store before (SQLite) or after (PostgreSQL) the start.
struct ReportingShop {
    app: TestApp,
    /// Where the embedded shop keeps its files.
    data_dir: Option<tempfile::TempDir>,
    cluster: Option<cluster::Cluster>,
}

impl ReportingShop {
    async fn start(write: impl AsyncFnOnce(Arc<dyn EventStore>)) -> Self {
        if cluster::production() {
            let (app, cluster) = cluster::start_shop(&[&["api", "relay", "reporting"]], &[]).await;
            let store: Arc<dyn EventStore> = Arc::new(
                PgEventStore::connect(&cluster.database_url)
                    .await
                    .expect("connect the cluster's event store"),
            );
            write(store.clone()).await;
            store.close().await;
            return Self {
                app,
                data_dir: None,
                cluster: Some(cluster),
            };
        }
        // On tmpfs when there is one: the event store syncs every append.
        let data_dir = if Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").expect("temp dir")
        } else {
            tempfile::tempdir().expect("temp dir")
        };
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteEventStore::open(data_dir.path())
                .await
                .expect("open the event store"),
        );
        write(store.clone()).await;
        store.close().await;
        let path = data_dir.path().to_path_buf();
        let app = spawn_app_with(
            move |args| {
                args.data_dir = path;
                args.roles = vec![Role::Api, Role::Reporting];
            },
            Vec::new(),
        )
        .await;
        Self {
            app,
            data_dir: Some(data_dir),
            cluster: None,
        }
    }

    fn store_flags(&self) -> Vec<String> {
        store_flags(
            self.data_dir.as_ref().map(|d| d.path()),
            self.cluster.as_ref(),
        )
    }
}

fn store_flags(data_dir: Option<&Path>, cluster: Option<&cluster::Cluster>) -> Vec<String> {
    match (cluster, data_dir) {
        (Some(c), _) => vec![format!("--database-url={}", c.database_url)],
        (None, Some(dir)) => vec![format!("--data-dir={}", dir.display())],
        (None, None) => panic!("no store to point the command at"),
    }
}

/// How many events of the log the reporting projection uses (from the store's statistics).
async fn projected_events(app: &TestApp) -> u64 {
    let stats = app.json("/api/eventstore/stats").await;
    stats["byEventType"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(t, _)| is_projected(t))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum()
}

fn reporting(projections: &Value) -> Value {
    projections
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == REPORTING)
        .cloned()
        .unwrap_or_else(|| panic!("no reporting-service in {projections}"))
}

/// Waits until the read models reflect every projected event of the log, once each. (The
/// store's statistics are costly on a big log: they are read again only when the count of
/// applied events reaches the last one read.)
async fn caught_up(app: &TestApp, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    let mut expected = projected_events(app).await;
    loop {
        let status = reporting(&app.json("/api/projections").await);
        let applied = status["eventsApplied"].as_u64().unwrap();
        if applied >= expected {
            expected = projected_events(app).await;
            assert!(
                applied <= expected,
                "the read models applied {applied} events, but the log has only {expected}: {status}"
            );
            if applied == expected && expected > 0 {
                return status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the read models did not catch up within {limit:?}: {applied} of {expected} ({status})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `cornershop projections <args>`: (success, stdout).
async fn projections_command(args: &[&str], flags: &[String]) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cornershop"))
        .arg("projections")
        .args(args)
        .args(flags)
        .env("CORNERSHOP_LOG", "warn")
        .env("CORNERSHOP_LOG_FORMAT", "text")
        .env_remove("CORNERSHOP_DATA_DIR")
        .env_remove("CORNERSHOP_DATABASE_URL")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the cornershop binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    eprintln!("projections {args:?}: {}\n{stdout}{stderr}", output.status);
    (output.status.success(), stdout)
}

async fn assert_verified(flags: &[String]) {
    let (ok, stdout) = projections_command(&["verify"], flags).await;
    assert!(ok, "verify reported mismatches:\n{stdout}");
    assert!(stdout.contains(": 0 mismatches"), "{stdout}");
}

/// Every order (all pages), the stock and the hourly sales report.
async fn everything(app: &TestApp) -> (Vec<Value>, Value, Value) {
    let mut orders = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/orders?limit=500&cursor={c}"),
            None => "/api/orders?limit=500".to_string(),
        };
        let page = app.json(&path).await;
        orders.extend(page["orders"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let inventory = app.json("/api/inventory").await;
    let report = app.json("/api/reports/sales?groupBy=hour&top=100").await;
    (orders, inventory, report)
}

fn ids(page: &Value) -> Vec<String> {
    page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["orderId"].as_str().unwrap().to_string())
        .collect()
}

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 3, day, hour, minute, 0).unwrap()
}

fn line(sku: &str, quantity: u32, price: &str) -> Line {
    Line {
        sku: sku.into(),
        name: format!("Product {sku}"),
        quantity,
        unit_price: price.parse::<Decimal>().unwrap(),
    }
}

// ---------------------------------------------------------------------------------------
// Queries on a known data set

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pagination_and_the_sales_report_give_the_right_figures_on_a_known_data_set() {
    let shop = ReportingShop::start(async |store| {
        let mut g = Generator::new(store);
        let stocked = at(1, 8, 0);
        for (sku, price, quantity, threshold) in [
            ("MUG", "5.00", 100, 10),
            ("TEE", "15.00", 50, 48),
            ("CAP", "8.00", 20, 2),
        ] {
            g.stock(
                sku,
                &format!("Product {sku}"),
                price.parse().unwrap(),
                quantity,
                threshold,
                stocked,
            )
            .await
            .unwrap();
        }
        let plans = [
            (
                "o1",
                "ada",
                at(1, 9, 10),
                vec![line("MUG", 2, "5.00")],
                Outcome::Delivered,
            ),
            (
                "o2",
                "ada",
                at(1, 9, 40),
                vec![line("TEE", 1, "15.00")],
                Outcome::Declined,
            ),
            (
                "o3",
                "bob",
                at(1, 10, 5),
                vec![line("MUG", 1, "5.00"), line("TEE", 2, "15.00")],
                Outcome::Confirmed,
            ),
            (
                "o4",
                "bob",
                at(1, 10, 30),
                vec![line("CAP", 3, "8.00")],
                Outcome::CancelledAfterPayment,
            ),
            (
                "o5",
                "cy",
                at(1, 10, 50),
                vec![line("TEE", 1, "15.00")],
                Outcome::OutOfStock,
            ),
            (
                "o6",
                "cy",
                at(2, 8, 0),
                vec![line("MUG", 4, "5.00")],
                Outcome::Shipped,
            ),
            (
                "o7",
                "dee",
                at(2, 9, 30),
                vec![line("CAP", 1, "8.00")],
                Outcome::Created,
            ),
        ];
        for (id, customer, when, lines, outcome) in plans {
            g.order(&OrderPlan {
                order_id: id.into(),
                customer_id: customer.into(),
                lines,
                outcome,
                at: when,
                step: chrono::Duration::seconds(1),
            })
            .await
            .unwrap();
        }
        g.flush().await.unwrap();
    })
    .await;
    let app = &shop.app;
    caught_up(app, Duration::from_secs(60)).await;

    // One order, with every field the events gave it.
    let o4 = app.json("/api/orders/o4").await;
    assert_eq!(o4["status"], "Cancelled");
    assert_eq!(o4["paymentStatus"], "Refunded");
    assert_eq!(o4["cancelReason"], "changed my mind");
    assert_eq!(o4["totalAmount"], "24.00");
    assert_eq!(o4["customerId"], "bob");
    assert_eq!(o4["createdAt"], "2030-03-01T10:30:00Z");
    assert!(o4["confirmedAt"].is_string() && o4["cancelledAt"].is_string());
    assert_eq!(
        o4["items"],
        json!([{"sku": "CAP", "name": "Product CAP", "quantity": 3, "unitPrice": "8.00", "lineTotal": "24.00"}])
    );
    let o6 = app.json("/api/orders/o6").await;
    assert_eq!(o6["status"], "Shipped");
    assert_eq!(o6["trackingNumber"], "TRK-o6");
    assert!(o6["shippedAt"].is_string() && o6["deliveredAt"].is_null());
    assert!(o6["paymentId"].is_string());
    assert_eq!(
        app.json("/api/orders/o7").await["paymentStatus"],
        Value::Null
    );
    assert_problem(app.get("/api/orders/nope").await, StatusCode::NOT_FOUND).await;

    // Filters, newest first.
    let cases: &[(&str, &[&str])] = &[
        ("/api/orders", &["o7", "o6", "o5", "o4", "o3", "o2", "o1"]),
        ("/api/orders?status=Cancelled", &["o5", "o4", "o2"]),
        ("/api/orders?status=Confirmed,shipped", &["o6", "o3"]),
        ("/api/orders?customerId=bob", &["o4", "o3"]),
        ("/api/customers/ada/orders", &["o2", "o1"]),
        ("/api/orders?from=2030-03-02T00:00:00Z", &["o7", "o6"]),
        (
            "/api/orders?from=2030-03-01T09:40:00Z&to=2030-03-01T10:30:00Z",
            &["o4", "o3", "o2"],
        ),
        ("/api/orders?minTotal=20", &["o6", "o4", "o3"]),
        ("/api/orders?minTotal=20.01", &["o4", "o3"]),
        (
            "/api/orders?minTotal=24&customerId=bob&status=Cancelled",
            &["o4"],
        ),
    ];
    for (path, expected) in cases {
        assert_eq!(ids(&app.json(path).await), *expected, "{path}");
    }

    // Keyset pagination: every order once, newest first, then no cursor.
    let mut seen = Vec::new();
    let mut path = "/api/orders?limit=2".to_string();
    let mut pages = 0;
    loop {
        let page = app.json(&path).await;
        pages += 1;
        seen.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/orders?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["o7", "o6", "o5", "o4", "o3", "o2", "o1"]);
    assert_eq!(pages, 4);
    let first = app.json("/api/orders?status=Cancelled&limit=2").await;
    assert_eq!(ids(&first), ["o5", "o4"]);
    let cursor = first["nextCursor"].as_str().unwrap();
    let rest = app
        .json(&format!(
            "/api/orders?status=Cancelled&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&rest), ["o2"]);
    assert!(rest["nextCursor"].is_null());

    // Stock: TEE holds 2 for o3 (o2's unit came back), and is at its threshold of 48;
    // MUG holds 1 for o3 (o1's and o6's units left with their shipments).
    let low = app.json("/api/inventory?lowStock=true").await;
    assert_eq!(
        low,
        json!([{"sku": "TEE", "name": "Product TEE", "unitPrice": "15.00", "currency": "GBP",
                "available": 48, "reserved": 2, "lowStockThreshold": 48, "lowStock": true}])
    );
    let all = app.json("/api/inventory").await;
    let stock: BTreeMap<&str, (i64, i64)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["sku"].as_str().unwrap(),
                (
                    s["available"].as_i64().unwrap(),
                    s["reserved"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        stock,
        BTreeMap::from([("CAP", (20, 0)), ("MUG", (93, 1)), ("TEE", (48, 2))])
    );

    // The sales report. Sold: o1 10.00, o3 35.00, o6 20.00. Cancelled: o2, o4, o5.
    // Payments: o1, o2, o3, o4, o6 attempted; o2 failed.
    let report = app.json("/api/reports/sales?groupBy=hour").await;
    assert_eq!(
        report["totals"],
        json!({"orders": 7, "soldOrders": 3, "revenue": "65.00", "averageOrderValue": "21.67",
               "cancelledOrders": 3, "cancellationRate": 0.4286, "paymentsAttempted": 5,
               "paymentsFailed": 1, "paymentFailureRate": 0.2})
    );
    let buckets: Vec<(String, u64, String)> = report["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap().to_string(),
                b["orders"].as_u64().unwrap(),
                b["revenue"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        buckets,
        [
            ("2030-03-01T09:00:00Z".to_string(), 2, "10.00".to_string()),
            ("2030-03-01T10:00:00Z".to_string(), 3, "35.00".to_string()),
            ("2030-03-02T08:00:00Z".to_string(), 1, "20.00".to_string()),
            ("2030-03-02T09:00:00Z".to_string(), 1, "0.00".to_string()),
        ]
    );
    assert_eq!(
        report["buckets"][0]["paymentFailureRate"], 0.5,
        "{}",
        report["buckets"][0]
    );
    assert_eq!(
        report["topProducts"],
        json!([{"sku": "MUG", "name": "Product MUG", "quantity": 7, "revenue": "35.00"},
               {"sku": "TEE", "name": "Product TEE", "quantity": 2, "revenue": "30.00"}])
    );
    let daily = app.json("/api/reports/sales").await;
    assert_eq!(daily["groupBy"], "day");
    assert_eq!(
        daily["buckets"][0],
        json!({"start": "2030-03-01T00:00:00Z", "orders": 5, "soldOrders": 2, "revenue": "45.00",
               "averageOrderValue": "22.50", "cancelledOrders": 3, "cancellationRate": 0.6,
               "paymentsAttempted": 4, "paymentsFailed": 1, "paymentFailureRate": 0.25})
    );
    let window = app
        .json("/api/reports/sales?from=2030-03-01T10:00:00Z&to=2030-03-01T23:59:59Z&top=1")
        .await;
    assert_eq!(window["totals"]["orders"], 3);
    assert_eq!(window["totals"]["revenue"], "35.00");
    assert_eq!(
        window["topProducts"],
        json!([{"sku": "TEE", "name": "Product TEE", "quantity": 2, "revenue": "30.00"}])
    );

    // Bad parameters are problems, not empty answers.
    for path in [
        "/api/orders?status=Lost",
        "/api/customers/cy/orders?status=OutOfStock,Shipped",
        "/api/orders?limit=0",
        "/api/orders?limit=501",
        "/api/orders?cursor=zz",
        "/api/orders?cursor=abcd",
        "/api/orders?from=2030-03-02T00:00:00Z&to=2030-03-01T00:00:00Z",
        "/api/orders?from=yesterday",
        "/api/orders?minTotal=-1",
        "/api/orders?minTotal=lots",
        "/api/orders?sort=asc",
        "/api/inventory?lowStock=maybe",
        "/api/reports/sales?groupBy=week",
        "/api/reports/sales?top=0",
        "/api/reports/sales?from=2030-03-02T00:00:00Z&to=2030-03-01T00:00:00Z",
    ] {
        let detail = assert_problem(app.get(path).await, StatusCode::BAD_REQUEST).await;
        eprintln!("{path}: {detail}");
    }
    assert_problem(
        app.post("/api/projections/nope/rebuild", &json!({})).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // What the API shows is what the events say.
    assert_verified(&shop.store_flags()).await;
}

// ---------------------------------------------------------------------------------------
// Verify after the end-to-end scenarios

/// An event the read models cannot take (a price of 10^27, as an older writer without
/// bounds could have stored; its cents overflow) costs that event only: the
/// reporting-service dead-letters it with its reason and the orders after it still appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_the_read_models_cannot_take_is_dead_lettered_and_the_next_orders_appear() {
    let shop = ReportingShop::start(async |store| {
        let mut g = Generator::new(store);
        let now = Utc::now();
        g.stock("MUG", "Mug", "5.00".parse().unwrap(), 100, 0, now)
            .await
            .unwrap();
        let huge: Decimal = "1000000000000000000000000000".parse().unwrap();
        g.raw(
            cornershop_domain::StockUpdated {
                sku: "P27".into(),
                name: "p".into(),
                unit_price: huge,
                currency: cornershop_domain::money::SHOP_CURRENCY,
                quantity: 1,
                low_stock_threshold: 0,
            }
            .into(),
            now,
        )
        .await
        .unwrap();
        for id in ["after-1", "after-2"] {
            g.order(&OrderPlan {
                order_id: id.into(),
                customer_id: "ada".into(),
                lines: vec![line("MUG", 1, "5.00")],
                outcome: Outcome::Confirmed,
                at: now,
                step: chrono::Duration::milliseconds(10),
            })
            .await
            .unwrap();
        }
        g.flush().await.unwrap();
    })
    .await;
    let app = &shop.app;
    let deadline = Instant::now() + Duration::from_secs(60);
    let letter = loop {
        let letters = app.json("/api/deadletters").await;
        let found = letters
            .as_array()
            .expect("dead letters")
            .iter()
            .find(|l| l["consumer"] == REPORTING && l["eventType"] == "StockUpdated")
            .cloned();
        let after = app.get("/api/orders/after-2").await;
        if let (Some(letter), StatusCode::OK) = (found, after.status()) {
            let order: Value = after.json().await.unwrap();
            if order["status"] == "Confirmed" {
                break letter;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter for the bad StockUpdated, or order after-2 not projected as Confirmed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(letter["aggregateId"], "P27", "{letter}");
    assert!(
        letter["error"]
            .as_str()
            .is_some_and(|e| e.contains("unitPrice")),
        "the dead letter says why: {letter}"
    );
    assert_eq!(app.json("/api/orders/after-1").await["status"], "Confirmed");
    // The stock that could be projected is there; the bad one is not.
    let inventory = app.json("/api/inventory").await;
    let skus: Vec<&str> = inventory
        .as_array()
        .expect("inventory rows")
        .iter()
        .filter_map(|i| i["sku"].as_str())
        .collect();
    assert!(
        skus.contains(&"MUG") && !skus.contains(&"P27"),
        "{inventory}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_no_mismatch_after_the_workflow_scenarios_and_names_a_tampered_order() {
    let app = spawn_app().await;
    for (sku, price, quantity) in [
        ("A", "1.00", 100),
        ("B", "2.50", 100),
        ("SCARCE", "3.00", 1),
    ] {
        app.stock(sku, price, quantity).await;
    }
    app.stock("HOT", "3.00", 5).await;
    // The workflow suite's kinds of orders: delivered, declined, insufficient funds, out of
    // stock, cancelled after payment (refund), confirmed, and contention for scarce stock.
    let delivered = app.order(&[("A", 1), ("B", 2)], "tok_visa").await;
    let declined = app.order(&[("A", 2), ("B", 1)], "tok_chargeDeclined").await;
    let insufficient = app.order(&[("A", 1)], "tok_insufficientFunds").await;
    let out_of_stock = app.order(&[("A", 1), ("SCARCE", 2)], "tok_visa").await;
    let refunded = app.order(&[("B", 3)], "tok_visa").await;
    let confirmed = app.order(&[("A", 5)], "tok_visa").await;
    let app = Arc::new(app);
    let contenders = futures::future::join_all((0..12).map(|_| {
        let app = app.clone();
        async move { app.order(&[("HOT", 1)], "tok_visa").await }
    }))
    .await;

    app.wait_for_order(&delivered, &["Confirmed"]).await;
    for (path, body) in [
        (
            format!("/api/orders/{delivered}/ship"),
            json!({"carrier": "DHL"}),
        ),
        (format!("/api/orders/{delivered}/deliver"), json!({})),
    ] {
        let response = app.post(&path, &body).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        // A command answers with the order as its events now say (not lagging).
        let body: Value = response.json().await.unwrap();
        assert!(matches!(
            body["status"].as_str(),
            Some("Shipped" | "Delivered")
        ));
    }
    app.wait_for_order(&refunded, &["Confirmed"]).await;
    let cancel = app
        .post(
            &format!("/api/orders/{refunded}/cancel"),
            &json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
    for id in [&declined, &insufficient, &out_of_stock, &confirmed]
        .into_iter()
        .chain(contenders.iter())
    {
        app.wait_for_order(id, &["Confirmed", "Cancelled"]).await;
    }
    app.wait_for_order(&delivered, &["Delivered"]).await;
    app.settle().await;
    let status = caught_up(&app, Duration::from_secs(60)).await;
    eprintln!("reporting-service: {status}");

    let order = app.wait_for_order(&refunded, &["Cancelled"]).await;
    assert_eq!(order["paymentStatus"], "Refunded");
    let page = app.json("/api/orders?status=Confirmed&limit=500").await;
    assert_eq!(ids(&page).len(), 1 + 5, "{page}");
    let hot = app.json("/api/inventory?lowStock=true").await;
    assert!(
        hot.as_array()
            .unwrap()
            .iter()
            .any(|s| s["sku"] == "HOT" && s["available"] == 0),
        "{hot}"
    );

    let flags = store_flags(Some(app.data_dir.path()), app.cluster.as_ref());
    assert_verified(&flags).await;

    // Tamper with one read model: verify names the order and the field, and fails.
    let tamper = format!("UPDATE rm_orders SET status = 'Delivered' WHERE order_id = '{declined}'");
    match &app.cluster {
        Some(cluster) => {
            let db = cluster.db().await;
            sqlx::query(&tamper.replace("rm_orders", "readmodels.rm_orders"))
                .execute(&db)
                .await
                .unwrap();
        }
        None => {
            use sqlx::Connection;
            let path = app.data_dir.path().join("readmodels.db");
            let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query(&tamper).execute(&mut db).await.unwrap();
        }
    }
    let (ok, stdout) = projections_command(&["verify"], &flags).await;
    assert!(!ok, "verify must fail on a tampered read model:\n{stdout}");
    assert!(
        stdout.contains(&format!("order {declined}"))
            && stdout.contains("status: read model \"Delivered\", events \"Cancelled\""),
        "{stdout}"
    );
    assert!(stdout.contains(": 1 mismatches"), "{stdout}");

    // A rebuild repairs it.
    let (ok, stdout) = projections_command(&["rebuild"], &flags).await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("reporting-service: rebuilt from"),
        "{stdout}"
    );
    assert_verified(&flags).await;
    assert_eq!(
        app.json(&format!("/api/orders/{declined}")).await["status"],
        "Cancelled"
    );
}

// ---------------------------------------------------------------------------------------
// Rebuild from 100,000 events while queries answer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_100000_events_matches_the_live_read_models_while_queries_answer() {
    let target: u64 = std::env::var("CORNERSHOP_TEST_REBUILD_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if cluster::production() {
            10_000
        } else {
            100_000
        });
    let started = Instant::now();
    // The shop runs while the events are written, so that its projection works meanwhile.
    // Embedded, they are written through a second handle on its event store, and a write
    // through the API now and then wakes its projection (a handle wakes only its own
    // consumers); on PostgreSQL every append notifies every process.
    let data_dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").expect("temp dir")
    } else {
        tempfile::tempdir().expect("temp dir")
    };
    let (app, _cluster, store): (TestApp, Option<cluster::Cluster>, Arc<dyn EventStore>) =
        if cluster::production() {
            let (app, cluster) = cluster::start_shop(&[&["api", "relay", "reporting"]], &[]).await;
            let store = Arc::new(
                PgEventStore::connect(&cluster.database_url)
                    .await
                    .expect("connect the cluster's event store"),
            );
            (app, Some(cluster), store)
        } else {
            let path = data_dir.path().to_path_buf();
            let app = spawn_app_with(
                move |args| {
                    args.data_dir = path;
                    args.roles = vec![Role::Api, Role::Reporting];
                },
                Vec::new(),
            )
            .await;
            let store = Arc::new(
                SqliteEventStore::open(data_dir.path())
                    .await
                    .expect("open the event store"),
            );
            (app, None, store)
        };
    let mut pokes = 0;
    let mut poke = async |app: &TestApp| {
        if !cluster::production() {
            pokes += 1;
            let response = app
                .put(
                    "/api/inventory/POKE",
                    &json!({"name": "Poke", "unitPrice": "1.00", "quantity": pokes}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    let mut g = Generator::new(store.clone());
    let skus: Vec<(String, Decimal)> = (0..20)
        .map(|i| (format!("SKU-{i:02}"), Decimal::new(199 + 250 * i, 2)))
        .collect();
    for (sku, price) in &skus {
        g.stock(
            sku,
            &format!("Product {sku}"),
            *price,
            1_000_000_000,
            100,
            at(1, 0, 0),
        )
        .await
        .unwrap();
    }
    let outcomes = [
        Outcome::Delivered,
        Outcome::Confirmed,
        Outcome::Shipped,
        Outcome::Declined,
        Outcome::CancelledAfterPayment,
        Outcome::Delivered,
        Outcome::OutOfStock,
        Outcome::Created,
    ];
    let mut n: i64 = 0;
    while g.events_written < target {
        let (sku, price) = &skus[(n % 20) as usize];
        let (other, other_price) = &skus[((n * 7 + 3) % 20) as usize];
        let mut lines = vec![Line {
            sku: sku.clone(),
            name: format!("Product {sku}"),
            quantity: 1 + (n % 3) as u32,
            unit_price: *price,
        }];
        if n % 2 == 0 && other != sku {
            lines.push(Line {
                sku: other.clone(),
                name: format!("Product {other}"),
                quantity: 1,
                unit_price: *other_price,
            });
        }
        g.order(&OrderPlan {
            order_id: format!("ord-{n:06}"),
            customer_id: format!("cust-{}", n % 97),
            lines,
            outcome: outcomes[(n % 8) as usize],
            // Spread over two days, so that the hourly report has many buckets.
            at: at(1, 0, 0) + chrono::Duration::seconds(n * 17),
            step: chrono::Duration::milliseconds(250),
        })
        .await
        .unwrap();
        n += 1;
        if n % 250 == 0 {
            poke(&app).await;
        }
    }
    g.flush().await.unwrap();
    poke(&app).await;
    store.close().await;
    let total = g.events_written;
    assert!(total >= target);
    let generated = started.elapsed();
    let app = Arc::new(app);
    let live_status = caught_up(&app, Duration::from_secs(600)).await;
    let projected = started.elapsed() - generated;
    let live = everything(&app).await;
    assert!(live.0.len() > 1000, "{} orders", live.0.len());

    // Rebuild through the API while readers keep asking.
    let rebuilding = Arc::new(AtomicBool::new(true));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let app = app.clone();
            let rebuilding = rebuilding.clone();
            let sample: Vec<Value> = live.0.iter().skip(r * 37).step_by(101).cloned().collect();
            tokio::spawn(async move {
                let (mut answered, mut slowest) = (0u64, Duration::ZERO);
                let mut i = 0;
                while rebuilding.load(Ordering::SeqCst) {
                    let expected = &sample[i % sample.len()];
                    let asked = Instant::now();
                    let id = expected["orderId"].as_str().unwrap();
                    let order = app.json(&format!("/api/orders/{id}")).await;
                    assert_eq!(&order, expected, "an order changed during the rebuild");
                    let page = app.json("/api/orders?limit=20&status=Delivered").await;
                    assert_eq!(page["orders"].as_array().unwrap().len(), 20);
                    if i % 10 == 0 {
                        let report = app.json("/api/reports/sales?groupBy=day").await;
                        assert!(report["totals"]["orders"].as_u64().unwrap() > 1000);
                    }
                    slowest = slowest.max(asked.elapsed());
                    answered += 1;
                    i += 1;
                    // A reader, not a load test: leave the cores to the rebuild.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                (answered, slowest)
            })
        })
        .collect();
    let rebuild_started = Instant::now();
    let response = app
        .client
        .post(app.url(&format!("/api/projections/{REPORTING}/rebuild")))
        .send()
        .await
        .unwrap();
    let rebuild_took = rebuild_started.elapsed();
    rebuilding.store(false, Ordering::SeqCst);
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    let mut answered = 0;
    for reader in readers {
        let (n, slowest) = reader.await.expect("the reader kept getting right answers");
        eprintln!("reader: {n} rounds during the rebuild, slowest {slowest:?}");
        answered += n;
    }
    assert!(answered > 0, "no query was answered during the rebuild");
    assert_eq!(report["generation"], 2, "{report}");
    let head = app.json("/api/eventstore/stats").await["headPosition"]
        .as_u64()
        .unwrap();
    assert_eq!(report["eventsRead"].as_u64().unwrap(), head);
    assert!(head >= total);
    assert_eq!(
        report["eventsApplied"].as_u64().unwrap(),
        live_status["eventsApplied"].as_u64().unwrap()
    );

    let rebuilt = everything(&app).await;
    assert_eq!(rebuilt.0.len(), live.0.len());
    assert!(
        rebuilt.0 == live.0,
        "the rebuilt orders differ from the live ones"
    );
    assert_eq!(rebuilt.1, live.1, "stock");
    assert_eq!(rebuilt.2, live.2, "sales report");
    let status = reporting(&app.json("/api/projections").await);
    assert_eq!(status["generation"], 2);
    assert_eq!(status["eventsApplied"], live_status["eventsApplied"]);
    eprintln!(
        "{total} events: generated in {generated:?}, projected live in {projected:?}, \
         rebuilt in {rebuild_took:?} ({report}); {answered} query rounds answered meanwhile; \
         {:?} in all",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// A consumer killed between its read-model write and its checkpoint

/// The reporting projection that dies (hangs forever, as a killed process does nothing
/// more) right after the read-model commit of the first PaymentCompleted, before the
/// transport can save its checkpoint.
struct DiesAfterWrite {
    inner: ReportingProjection,
    died: tokio::sync::Notify,
    dead: AtomicBool,
}

#[async_trait]
impl Handler for DiesAfterWrite {
    fn name(&self) -> &'static str {
        REPORTING
    }
    fn handles(&self, event_type: &str) -> bool {
        self.inner.handles(event_type)
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        if self.dead.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.handle(event).await?;
        if event.envelope.event_type == "PaymentCompleted" {
            self.dead.store(true, Ordering::SeqCst);
            self.died.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

async fn position_of(app: &TestApp, event_type: &str) -> u64 {
    app.json(&format!("/api/eventstore/events?eventType={event_type}"))
        .await["events"][0]["position"]
        .as_u64()
        .unwrap_or_else(|| panic!("no {event_type} yet"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_between_its_read_model_write_and_its_checkpoint_applies_nothing_twice() {
    if cluster::production() {
        return killed_reporting_process_applies_nothing_twice().await;
    }
    let data_dir = tempfile::tempdir().unwrap();
    let dir: PathBuf = data_dir.path().to_path_buf();
    let read_models = Arc::new(cornershop_readmodels::open_sqlite(&dir).await.unwrap());
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(&dir).await.unwrap());
    let dying = Arc::new(DiesAfterWrite {
        inner: ReportingProjection::new(read_models, store),
        died: Default::default(),
        dead: AtomicBool::new(false),
    });
    let first = {
        let dir = dir.clone();
        spawn_app_with(
            move |args| {
                args.data_dir = dir;
                args.roles = vec![Role::Api, Role::Order, Role::Payment, Role::Inventory];
            },
            vec![dying.clone()],
        )
        .await
    };
    first.stock("A", "4.00", 10).await;
    let order_id = first.order(&[("A", 3)], "tok_visa").await;
    tokio::time::timeout(Duration::from_secs(30), dying.died.notified())
        .await
        .expect("the projection reached PaymentCompleted");
    // The workflow goes on without the read models; the projection's transport has not
    // recorded any progress past the event it died on.
    let replayed = |app: &TestApp| {
        let path = format!("/api/eventstore/replay/Order/{order_id}");
        let app_url = app.url(&path);
        let client = app.client.clone();
        async move {
            client
                .get(app_url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["state"]["status"]
                .clone()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while replayed(&first).await != "Confirmed" {
        assert!(Instant::now() < deadline, "the order was never confirmed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let completed_at = position_of(&first, "PaymentCompleted").await;
    let checkpoints = first.json("/api/consumers").await;
    let checkpoint = checkpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["consumer"] == REPORTING)
        .map_or(0, |c| c["position"].as_u64().unwrap());
    assert!(
        checkpoint < completed_at,
        "the checkpoint ({checkpoint}) passed the event the consumer died on ({completed_at})"
    );
    let before = reporting(&first.json("/api/projections").await);
    drop(first);

    // Restarted, it gets every event after its checkpoint again, PaymentCompleted too.
    let second = {
        let dir = dir.clone();
        spawn_app_with(
            move |args| {
                args.data_dir = dir;
                args.roles = vec![Role::Api, Role::Reporting];
            },
            Vec::new(),
        )
        .await
    };
    let order = second.wait_for_order(&order_id, &["Confirmed"]).await;
    assert_eq!(order["paymentStatus"], "Completed");
    let after = caught_up(&second, Duration::from_secs(30)).await;
    assert!(
        after["eventsApplied"].as_u64() > before["eventsApplied"].as_u64(),
        "{before} -> {after}"
    );
    // Each event counted once: 3 units reserved once, not twice.
    let stock = second.json("/api/inventory").await;
    assert_eq!(
        (
            stock[0]["available"].as_i64(),
            stock[0]["reserved"].as_i64()
        ),
        (Some(7), Some(3)),
        "{stock}"
    );
    assert_verified(&store_flags(Some(&dir), None)).await;
}

/// On the production path: the reporting service's process is SIGKILLed while it projects
/// a stream of orders (Kafka offsets not yet committed for events whose read-model
/// transaction did commit), then restarted; Kafka delivers those events again.
async fn killed_reporting_process_applies_nothing_twice() {
    let (app, mut cluster) = cluster::start_shop(
        &[
            &["api", "relay"],
            &["order", "inventory", "payment"],
            &["reporting"],
        ],
        &[],
    )
    .await;
    app.stock("A", "2.00", 10_000).await;
    let app = Arc::new(app);
    let orders = futures::future::join_all((0..30).map(|_| {
        let app = app.clone();
        async move { app.order(&[("A", 2)], "tok_visa").await }
    }))
    .await;
    // Kill it mid-stream: once it has applied some events and not all.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = reporting(&app.json("/api/projections").await)["eventsApplied"]
            .as_u64()
            .unwrap();
        if applied > 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reporting service never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.process("reporting").restart().await;
    for id in &orders {
        app.wait_for_order(id, &["Confirmed"]).await;
    }
    app.settle().await;
    caught_up(&app, Duration::from_secs(60)).await;
    let stock = app.json("/api/inventory").await;
    assert_eq!(stock[0]["reserved"], 60, "{stock}");
    assert_verified(&store_flags(None, Some(&cluster))).await;
}
