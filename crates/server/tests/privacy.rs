//! Personal data: sealed everywhere it is stored, erasable, and opened only for whom may
//! see it.
//!
//! The same tests run on the embedded default (the raw bytes of the SQLite files are
//! searched) and, with `CORNERSHOP_TEST_BACKEND=production`, on PostgreSQL + Kafka (a
//! `pg_dump` of the database, read models included, and every topic read with kcat).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{spawn_app, spawn_embedded_with, Role, TestApp};
use cornershop_domain::{AggregateType, EventEnvelope};
use cornershop_server::config::ServeArgs;
use cornershop_server::startup::Application;
use cornershop_store::{AppendRequest, EventLog, NewEvent, SqliteEventStore};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// What the customer typed at checkout, each value distinctive enough to be found in raw
/// bytes. (`tok_visa` is the payment token: never kept either.)
const EMAIL: &str = "grace.hopper.7731@navy.example";
const PHONE: &str = "+1 202 555 0147";
const NAME: &str = "Grace Brewster Hopper";
const LINE1: &str = "17 Cobol Lane";
const LINE2: &str = "Apartment 1906";
const CITY: &str = "Arlingtonville";
const POSTAL: &str = "22209-1906";
const TOKEN: &str = "tok_visa";

fn personal_values() -> [&'static str; 8] {
    [EMAIL, PHONE, NAME, LINE1, LINE2, CITY, POSTAL, TOKEN]
}

fn checkout_body() -> Value {
    json!({
        "paymentToken": TOKEN,
        "shippingAddress": {"name": NAME, "line1": LINE1, "line2": LINE2, "city": CITY,
                            "postalCode": POSTAL, "country": "US"},
        "email": EMAIL,
        "phone": PHONE,
    })
}

/// A whole order life for `customer` with the personal values above: checked out, paid,
/// shipped and delivered, every consumer caught up. Returns the order id.
async fn delivered_order(app: &TestApp, customer: &str) -> String {
    app.stock("PRIV-MUG", "12.50", 100).await;
    let shopper = app.client_as(Role::Customer, customer);
    let cart: Value = json_of(shopper.post(app.url("/api/carts")).json(&json!({}))).await;
    let cart = cart["cartId"].as_str().unwrap().to_string();
    let added = shopper
        .post(app.url(&format!("/api/carts/{cart}/items")))
        .json(&json!({"sku": "PRIV-MUG", "quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
    let checked_out = shopper
        .post(app.url(&format!("/api/carts/{cart}/checkout")))
        .json(&checkout_body())
        .send()
        .await
        .unwrap();
    assert_eq!(checked_out.status(), StatusCode::ACCEPTED);
    let order: Value = checked_out.json().await.unwrap();
    let order = order["orderId"].as_str().unwrap().to_string();
    app.wait_for_order(&order, &["Confirmed"]).await;
    for step in ["ship", "deliver"] {
        let r = app
            .post(
                &format!("/api/orders/{order}/{step}"),
                &json!({"carrier": "UPS", "trackingNumber": "1Z999"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{step}");
    }
    app.wait_for_order(&order, &["Delivered"]).await;
    app.settle().await;
    order
}

/// Every place the shop keeps data, as raw bytes, by name: the SQLite files (with their
/// WAL) of the embedded default; on production a `pg_dump` of the database (events, keys,
/// notifications, read models) and each Kafka topic of the shop, read whole with kcat.
async fn raw_stores(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    match &app.cluster {
        None => {
            for entry in std::fs::read_dir(app.data_dir.path()).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if name.contains(".db") {
                    found.push((name, std::fs::read(&path).unwrap()));
                }
            }
            assert!(
                found.iter().any(|(n, _)| n == "cornershop.db")
                    && found.iter().any(|(n, _)| n == "readmodels.db"),
                "the data directory holds both stores: {:?}",
                found.iter().map(|(n, _)| n).collect::<Vec<_>>()
            );
        }
        Some(cluster) => {
            found.push(("pg_dump".into(), pg_dump(&cluster.database_url)));
            for aggregate in AggregateType::ALL {
                let topic = format!("{}{}", cluster.namespace, aggregate.topic());
                found.push((topic.clone(), kcat(&cluster.brokers, &topic)));
            }
        }
    }
    found
}

fn pg_dump(database_url: &str) -> Vec<u8> {
    let binary = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| {
            versions
                .filter_map(|v| v.ok())
                .map(|v| v.path().join("bin/pg_dump"))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| "pg_dump".into());
    let out = Command::new(binary)
        .args(["--no-owner", "--data-only", database_url])
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.len() > 1000, "pg_dump wrote almost nothing");
    out.stdout
}

fn kcat(brokers: &str, topic: &str) -> Vec<u8> {
    let out = Command::new("kcat")
        .args(common::cluster::kcat_endpoint(brokers))
        .args(["-C", "-t", topic, "-e", "-q", "-f", "%k %h %s\n"])
        .output()
        .expect("kcat runs");
    assert!(
        out.status.success(),
        "kcat {topic} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The JSON answer of a request.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Fails naming the store and the value if any personal value is found in clear.
fn assert_no_personal_value(stores: &[(String, Vec<u8>)], when: &str) {
    for (name, bytes) in stores {
        for value in personal_values() {
            assert!(
                !contains(bytes, value.as_bytes()),
                "{when}: '{value}' is stored in clear in {name}"
            );
        }
    }
}

/// The customer's data key as stored (wrapped), read from the store itself.
async fn wrapped_key(app: &TestApp, customer: &str) -> Vec<u8> {
    let wrapped: Option<Vec<u8>> = match &app.cluster {
        None => {
            let url = format!(
                "sqlite://{}?mode=ro",
                app.data_dir.path().join("cornershop.db").display()
            );
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            sqlx::query_scalar("SELECT wrapped_key FROM data_keys WHERE customer_id = ?")
                .bind(customer)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
        Some(cluster) => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&cluster.database_url)
                .await
                .unwrap();
            sqlx::query_scalar("SELECT wrapped_key FROM data_keys WHERE customer_id = $1")
                .bind(customer)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    };
    wrapped.expect("the customer has a live data key")
}

/// How the wrapped key would appear in each store's raw bytes: itself (SQLite), in hex
/// (`pg_dump` writes bytea as `\x...`).
fn key_forms(wrapped: &[u8]) -> Vec<Vec<u8>> {
    let hex: String = wrapped.iter().map(|b| format!("{b:02x}")).collect();
    vec![wrapped.to_vec(), hex.into_bytes()]
}

fn sales_figures(report: &Value) -> Value {
    // The report's own figures, without when it was read.
    let mut report = report.clone();
    if let Some(map) = report.as_object_mut() {
        map.retain(|k, _| !k.to_lowercase().contains("generated"));
    }
    report
}

fn cornershop(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cornershop"))
        .args(args)
        .output()
        .expect("cornershop runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_stored_sealed_and_an_erasure_shreds_it_for_good() {
    let app = spawn_app().await;
    let customer = "cust-grace";
    let order = delivered_order(&app, customer).await;

    // Nowhere in clear: events, keys, notifications, read models, topics.
    let before = raw_stores(&app).await;
    assert_no_personal_value(&before, "after a full order");

    // Yet it is all there, for the customer: the export opens it.
    let grace = app.client_as(Role::Customer, customer);
    let export: Value =
        json_of(grace.get(app.url(&format!("/api/customers/{customer}/personal-data")))).await;
    let exported = &export["orders"][0];
    assert_eq!(exported["orderId"], order.as_str(), "{export:#}");
    assert_eq!(exported["email"], EMAIL);
    assert_eq!(exported["phone"], PHONE);
    assert_eq!(exported["shippingAddress"]["name"], NAME);
    assert_eq!(exported["shippingAddress"]["line2"], LINE2);
    assert_eq!(exported["shippingAddress"]["postalCode"], POSTAL);
    assert!(
        exported["paymentMethod"]
            .as_str()
            .unwrap()
            .starts_with("pm_"),
        "{export:#}"
    );
    // (The production layout of the tests runs no notification role.)
    if app.cluster.is_none() {
        assert!(
            export["notifications"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["recipient"] == EMAIL),
            "the notifications sent to the customer are part of the export: {export:#}"
        );
    }
    // Staff run the shop without seeing it; another customer cannot tell it exists.
    let personal_data = app.url(&format!("/api/customers/{customer}/personal-data"));
    for (who, status) in [
        (app.client_as(Role::Staff, "staff-1"), StatusCode::FORBIDDEN),
        (
            app.client_as(Role::Customer, "cust-other"),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let r = who.get(&personal_data).send().await.unwrap();
        assert_eq!(r.status(), status);
    }
    // The admin's replay opens the sealed values of the order's state.
    let replay = app
        .json(&format!("/api/eventstore/replay/Order/{order}"))
        .await;
    assert_eq!(replay["state"]["email"], EMAIL, "{replay:#}");

    let sales_before = app.json("/api/reports/sales").await;
    let key = wrapped_key(&app, customer).await;
    let key_seen = before
        .iter()
        .any(|(_, bytes)| key_forms(&key).iter().any(|form| contains(bytes, form)));
    assert!(key_seen, "the wrapped key is found where the search looks");

    // The customer asks for erasure.
    let erased = grace
        .delete(app.url(&format!("/api/customers/{customer}/personal-data")))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), StatusCode::OK);
    let report: Value = erased.json().await.unwrap();
    assert_eq!(report["destroyedNow"], true, "{report:#}");
    assert_eq!(report["unshreddedEvents"], json!([]), "{report:#}");
    assert!(report["eventId"].is_string(), "{report:#}");
    app.settle().await;

    // Replay and the export answer with markers, not errors; the order itself stays.
    let replay = app
        .json(&format!("/api/eventstore/replay/Order/{order}"))
        .await;
    assert_eq!(
        replay["state"]["email"],
        json!({"erased": true}),
        "{replay:#}"
    );
    assert_eq!(
        replay["state"]["shippingAddress"]["name"],
        json!({"erased": true})
    );
    assert_eq!(replay["state"]["shippingAddress"]["countryCode"], "US");
    assert_eq!(replay["state"]["status"], "Delivered");
    let export: Value = app
        .json(&format!("/api/customers/{customer}/personal-data"))
        .await;
    assert_eq!(export["erased"], true, "{export:#}");
    assert_eq!(export["orders"][0]["email"], json!({"erased": true}));
    assert_eq!(export["orders"][0]["totalAmount"], "25.00");
    let events = app
        .json("/api/eventstore/events?eventType=OrderCreated&limit=1000")
        .await;
    let created = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["aggregateId"] == order.as_str())
        .expect("the OrderCreated event");
    assert_eq!(created["data"]["email"], json!({"erased": true}));
    // The figures do not move.
    assert_eq!(
        sales_figures(&app.json("/api/reports/sales").await),
        sales_figures(&sales_before)
    );
    // A repeat is harmless.
    let again: Value = json_of(
        app.client
            .delete(app.url(&format!("/api/customers/{customer}/personal-data"))),
    )
    .await;
    assert_eq!(again["destroyedNow"], false, "{again:#}");
    assert_eq!(again["eventId"], Value::Null);

    // The read models agree with the events, and a rebuild brings nothing back.
    let rebuilt = app
        .post("/api/projections/reporting-service/rebuild", &json!({}))
        .await;
    assert_eq!(rebuilt.status(), StatusCode::OK);
    app.settle().await;
    let verify = match &app.cluster {
        None => cornershop(&[
            "projections",
            "verify",
            "--data-dir",
            app.data_dir.path().to_str().unwrap(),
        ]),
        // (Verifying opens no personal value: it needs no master key.)
        Some(cluster) => cornershop(&[
            "projections",
            "verify",
            &format!("--database-url={}", cluster.database_url),
        ]),
    };
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && out.contains(": 0 mismatches"),
        "verify: {out} {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // And no copy of the key is left to open what the topics and the log still hold,
    // even for someone holding the master key.
    let after = raw_stores(&app).await;
    assert_no_personal_value(&after, "after the erasure and a rebuild");
    for (name, bytes) in &after {
        for form in key_forms(&key) {
            assert!(
                !contains(bytes, &form),
                "the erased data key is still in {name}"
            );
        }
    }
}

/// The settings of a shop in `dir`, for tests that stop and start it.
fn args_in(dir: &std::path::Path) -> ServeArgs {
    ServeArgs::for_data_dir(dir)
}

type Running = (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// Starts a shop in this process; its address, its stop, and its end.
async fn start(args: ServeArgs) -> anyhow::Result<Running> {
    let app = Application::build(args).await?;
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Ok((base, stop, running))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_with_the_wrong_master_key_is_refused_and_loses_nothing() {
    // First start: a shop with one order, then stopped.
    let first = spawn_embedded_with(|_| {}).await;
    let order = delivered_order(&first, "cust-keys").await;
    let events = first.total_events().await;
    let dir = first.stop_and_wait().await;
    let key_file = dir.path().join("master.key");
    let right_key = std::fs::read_to_string(&key_file).unwrap();

    // Another key in its place: the start is refused, with a message naming the file.
    std::fs::write(&key_file, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    let refused = start(args_in(dir.path()))
        .await
        .expect_err("the start is refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("is not the one this store's data keys are wrapped with")
            && message.contains("master.key"),
        "{message}"
    );
    // No file at all: refused too, and no key is made in its place.
    std::fs::remove_file(&key_file).unwrap();
    let refused = start(args_in(dir.path()))
        .await
        .expect_err("the start is refused");
    assert!(
        format!("{refused:#}").contains("does not exist"),
        "{refused:#}"
    );
    assert!(!key_file.exists(), "a refused start left a new key behind");

    // The right key again: everything is there and opens.
    std::fs::write(&key_file, &right_key).unwrap();
    assert_all_there_and_open(args_in(dir.path()), events, "cust-keys", &order).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_before_sealing_still_load_and_an_erasure_names_them() {
    // A store holding a cart checked out by the previous version: schema 1, the personal
    // fields and the payment token in clear.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path()).await.unwrap();
    let v1 = |event_type: &str, data: Value| NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: event_type.into(),
        schema_version: 1,
        timestamp: chrono::Utc::now(),
        data,
        metadata: cornershop_domain::Metadata {
            correlation_id: "legacy-order".into(),
            causation_id: "legacy-request".into(),
            user_id: Some("cust-legacy".into()),
            source: "CartService".into(),
        },
        trace_id: None,
    };
    let stock = v1(
        "StockUpdated",
        json!({"sku": "OLD-MUG", "name": "Old mug", "unitPrice": "8.00", "quantity": 10,
               "lowStockThreshold": 1}),
    );
    store
        .append(AppendRequest {
            aggregate_type: AggregateType::Inventory,
            aggregate_id: "OLD-MUG".into(),
            expected_version: 0,
            events: vec![stock],
            idempotency: None,
            dedupe_key: None,
        })
        .await
        .unwrap();
    let checked_out = v1(
        "CartCheckedOut",
        json!({"cartId": "cart-legacy", "orderId": "order-legacy", "customerId": "cust-legacy",
               "items": [{"sku": "OLD-MUG", "name": "Old mug", "quantity": 1, "unitPrice": "8.00"}],
               "totalAmount": "8.00", "paymentToken": "tok_visa",
               "shippingAddress": {"name": NAME, "line1": LINE1, "city": CITY,
                                   "postalCode": POSTAL, "country": "US"},
               "email": EMAIL, "phone": null}),
    );
    let legacy_event = checked_out.event_id;
    store
        .append(AppendRequest {
            aggregate_type: AggregateType::Cart,
            aggregate_id: "cart-legacy".into(),
            expected_version: 0,
            events: vec![
                v1(
                    "CartCreated",
                    json!({"cartId": "cart-legacy", "customerId": "cust-legacy"}),
                ),
                v1(
                    "ItemAddedToCart",
                    json!({"cartId": "cart-legacy", "sku": "OLD-MUG", "name": "Old mug",
                           "quantity": 1, "unitPrice": "8.00"}),
                ),
                checked_out,
            ],
            idempotency: None,
            dedupe_key: None,
        })
        .await
        .unwrap();
    store.close().await;

    // Today's shop on that store: the old checkout goes through the whole workflow (the
    // stored token is the payment method), and its order is sealed as it is written.
    let (base, stop, running) = start(args_in(dir.path())).await.expect("the shop starts");
    let admin = common::admin_client(&dir.path().join(cornershop_server::config::SIGNING_KEY_FILE));
    let get = |path: String| {
        let (admin, base) = (admin.clone(), base.clone());
        async move {
            admin
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let order = get("/api/orders/order-legacy".into()).await;
        if order["status"] == "Confirmed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "stuck: {order:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replay = get("/api/eventstore/replay/Cart/cart-legacy".into()).await;
    let old: &Value = replay["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["eventType"] == "CartCheckedOut")
        .unwrap();
    assert_eq!(old["schemaVersion"], 1);
    let envelope: EventEnvelope = serde_json::from_value(old.clone()).unwrap();
    assert!(envelope.decode().is_ok(), "a version-1 event decodes");
    let order = get("/api/eventstore/replay/Order/order-legacy".into()).await;
    let created = &order["events"][0];
    assert_eq!(
        created["schemaVersion"],
        cornershop_domain::CURRENT_SCHEMA_VERSION
    );
    assert_eq!(created["data"]["email"], EMAIL, "opened for the admin");

    // The erasure shreds what it can and says which stored event it could not.
    let report: Value =
        json_of(admin.delete(format!("{base}/api/customers/cust-legacy/personal-data"))).await;
    let unshredded = report["unshreddedEvents"].as_array().unwrap();
    assert_eq!(unshredded.len(), 1, "{report:#}");
    assert_eq!(unshredded[0]["eventId"], legacy_event.to_string());
    assert_eq!(unshredded[0]["schemaVersion"], 1);
    let order = get("/api/eventstore/replay/Order/order-legacy".into()).await;
    assert_eq!(order["state"]["email"], json!({"erased": true}));
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_rewraps_the_data_keys_and_touches_no_event() {
    let shop = spawn_embedded_with(|_| {}).await;
    let order = delivered_order(&shop, "cust-rotate").await;
    let events = shop.total_events().await;
    let dir = shop.stop_and_wait().await;
    let data = dir.path().to_str().unwrap().to_string();
    let (wrapped_before, log_before) = keys_and_log(dir.path(), "cust-rotate").await;

    let new_key = dir.path().join("master.key.new");
    let rotated = cornershop(&[
        "keys",
        "rotate",
        "--new-master-key-file",
        new_key.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    let out = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success() && out.contains("re-wrapped 1 data keys"),
        "{out} {}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    // Rotating to the key in use is refused, and changes nothing.
    let same = cornershop(&[
        "keys",
        "rotate",
        "--new-master-key-file",
        new_key.to_str().unwrap(),
        "--data-dir",
        &data,
        "--master-key-file",
        new_key.to_str().unwrap(),
    ]);
    assert!(!same.status.success());
    assert!(
        String::from_utf8_lossy(&same.stderr).contains("nothing to rotate"),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );

    // The old key no longer opens the store; the new one does, and everything opens.
    let refused = start(args_in(dir.path()))
        .await
        .expect_err("the old key is refused");
    assert!(
        format!("{refused:#}").contains("is not the one"),
        "{refused:#}"
    );
    let mut args = args_in(dir.path());
    args.master_key_file = Some(new_key.clone());
    assert_all_there_and_open(args, events, "cust-rotate", &order).await;

    // The wrapping changed; the events did not (the same sealed values, byte for byte).
    let (wrapped_after, log_after) = keys_and_log(dir.path(), "cust-rotate").await;
    assert_ne!(wrapped_after, wrapped_before);
    assert_eq!(log_after, log_before);
}

/// Starts the shop of `args`, checks that it holds `events` events and that the
/// customer's `order` opens (its email in clear for an admin), and stops it.
async fn assert_all_there_and_open(args: ServeArgs, events: u64, customer: &str, order: &str) {
    let key_file = args.auth.signing_key_path(&args.data_dir);
    let (base, stop, running) = start(args).await.expect("the shop starts");
    let admin = common::admin_client(&key_file);
    let get = |path: String| {
        let request = admin.get(format!("{base}{path}"));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let stats = get("/api/eventstore/stats".into()).await;
    assert_eq!(stats["totalEvents"].as_u64().unwrap(), events, "{stats:#}");
    let export = get(format!("/api/customers/{customer}/personal-data")).await;
    assert_eq!(export["orders"][0]["orderId"], order, "{export:#}");
    assert_eq!(export["orders"][0]["email"], EMAIL);
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// A customer's wrapped key, and every event's data and metadata as stored, from a
/// stopped shop's SQLite file.
async fn keys_and_log(dir: &std::path::Path, customer: &str) -> (Vec<u8>, Vec<(String, String)>) {
    let url = format!("sqlite://{}?mode=ro", dir.join("cornershop.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let wrapped: Vec<u8> =
        sqlx::query_scalar("SELECT wrapped_key FROM data_keys WHERE customer_id = ?")
            .bind(customer)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let log: Vec<(String, String)> =
        sqlx::query_as("SELECT data, metadata FROM events ORDER BY position")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(!log.is_empty());
    (wrapped, log)
}
