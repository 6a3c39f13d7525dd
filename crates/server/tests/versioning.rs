//! Stored events of older schema versions load as today's shapes, everywhere: the
//! committed fixture streams (`crates/domain/tests/fixtures`, each written by the release
//! that wrote its schema) are put into a SQLite and a PostgreSQL store exactly as they were
//! stored, and a shop on that store shows them as the current shape in replay, in its read
//! models, in a customer's export, and carries on with their orders; through the relay and
//! Kafka too. A writer told to write the previous schema (a rolling upgrade) writes what the
//! previous release reads.
//!
//! `write_the_fixtures` (ignored; run by hand) wrote the committed fixtures of the schema
//! this build writes: a whole shop's day, exactly as the store holds it. See
//! `crates/domain/tests/fixtures/README.md`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use common::cluster;
use common::{address, spawn_embedded_with, TestApp};
use cornershop_domain::fixtures::{self, envelopes, STREAMS};
use cornershop_domain::{DomainEvent, EventEnvelope};
use cornershop_store::{
    AppendRequest, DataKeyRecord, EventLog as _, EventStore, NewEvent, PgEventStore,
    SqliteEventStore,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

impl TestApp {
    /// A cart of `customer` with these lines, checked out to `country` with `token`.
    async fn order_to(
        &self,
        customer: &str,
        lines: &[(&str, i64)],
        token: &str,
        country: &str,
    ) -> String {
        let cart = self.new_cart(customer).await;
        for (sku, quantity) in lines {
            let r = self.add(&cart, sku, *quantity).await;
            assert_eq!(r.status(), StatusCode::OK, "adding {sku}");
        }
        let mut shipping = address();
        shipping["country"] = json!(country);
        let response = self
            .post(
                &format!("/api/carts/{cart}/checkout"),
                &json!({"paymentToken": token, "shippingAddress": shipping,
                        "email": format!("{customer}@example.com"), "phone": "+44 20 7946 0000"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "checkout");
        let body: Value = response.json().await.unwrap();
        body["orderId"].as_str().unwrap().to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The consumers of the workflow: the store they were taken from had every one of them
/// caught up, so a shop on the loaded store starts them at the head (the backup of issue
/// 17 carries checkpoints the same way). The reporting projection is left at the start, so
/// that it projects the whole old log.
const WORKFLOW_CONSUMERS: [&str; 5] = [
    "order-saga",
    "inventory-service",
    "payment-service",
    "cart-expiry",
    "notification-service",
];

/// What the day left behind, per customer: the order's status and its country code
/// (`None`: the old text named no country).
const ORDERS: [(&str, &str, Option<&str>, &str); 5] = [
    ("cust-ada", "Delivered", Some("GB"), "GB"),
    ("cust-bob", "Cancelled", Some("GB"), "gb"),
    ("cust-cy", "Confirmed", None, "XX"),
    ("cust-dee", "Cancelled", Some("GB"), "UK"),
    ("cust-eve", "Cancelled", Some("US"), "US"),
];

/// A fixture stream's envelopes with, per customer, the id of their order and cart.
struct Day {
    version: u32,
    envelopes: Vec<EventEnvelope>,
    orders: BTreeMap<String, String>,
    open_cart: String,
}

impl Day {
    fn of(version: u32) -> Self {
        let (_, stream) = STREAMS
            .iter()
            .find(|(v, _)| *v == version)
            .expect("a fixture of that schema");
        let envelopes = envelopes(stream);
        let mut orders = BTreeMap::new();
        let mut carts = BTreeMap::new();
        for e in &envelopes {
            match e.decode().expect("a fixture event decodes") {
                DomainEvent::OrderCreated(o) => {
                    orders.insert(o.customer_id.to_string(), o.order_id.to_string());
                }
                DomainEvent::CartCreated(c) => {
                    carts.insert(c.customer_id.to_string(), c.cart_id.to_string());
                }
                _ => {}
            }
        }
        Self {
            version,
            envelopes,
            orders,
            open_cart: carts["cust-fay"].clone(),
        }
    }

    fn order_of(&self, customer: &str) -> &str {
        &self.orders[customer]
    }
}

/// The stream appended to `store` exactly as it was stored (its ids, times, schema
/// versions, data and metadata), in its log order; for schema 2, with the data keys and
/// the master key (written into `data_dir`) that open its sealed values.
async fn load(store: &dyn EventStore, day: &Day, data_dir: &std::path::Path) {
    if day.version == 2 {
        let key_file = data_dir.join("master.key");
        std::fs::write(&key_file, fixtures::SCHEMA_2_MASTER_KEY).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let master = cornershop_app::MasterKey::read(&key_file).unwrap();
        store.claim_master_key(master.id()).await.unwrap();
        for key in fixtures::data_keys() {
            let record = DataKeyRecord {
                key_id: key.key_id,
                customer_id: key.customer_id,
                wrapped: Some(key.wrapped),
                created_at: chrono::DateTime::from_timestamp_micros(key.created_us).unwrap(),
                erased_at: None,
            };
            let stored = store.insert_data_key(&record, master.id()).await.unwrap();
            assert_eq!(stored.as_ref().map(|r| &r.key_id), Some(&record.key_id));
        }
    }
    for e in &day.envelopes {
        let event = NewEvent {
            event_id: e.event_id,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            timestamp: e.timestamp,
            data: e.data.clone(),
            metadata: e.metadata.clone(),
            trace_id: None,
        };
        store
            .append(AppendRequest::new(
                e.aggregate_type,
                e.aggregate_id.clone(),
                e.version - 1,
                vec![event],
            ))
            .await
            .unwrap_or_else(|err| panic!("append {} as stored: {err}", e.event_id));
    }
    let head = store.head_position().await.unwrap();
    assert_eq!(head, day.envelopes.len() as u64);
    for consumer in WORKFLOW_CONSUMERS {
        store.save_checkpoint(consumer, head).await.unwrap();
    }
}

/// The stored text of every event's data and metadata, and its schema version, by id.
async fn stored_rows(
    backend: Backend,
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) -> BTreeMap<String, (String, String, i64)> {
    let sql = |cast: &str| {
        format!("SELECT event_id{cast}, data{cast}, metadata{cast}, schema_version FROM events")
    };
    let rows: Vec<(String, String, String, i64)> = match backend {
        Backend::Sqlite => {
            let url = format!(
                "sqlite://{}?mode=ro",
                data_dir.join("cornershop.db").display()
            );
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            sqlx::query_as(&sql("")).fetch_all(&mut conn).await.unwrap()
        }
        Backend::Postgres => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(database_url.unwrap())
                .await
                .unwrap();
            sqlx::query_as(&sql("::text"))
                .fetch_all(&mut conn)
                .await
                .unwrap()
        }
    };
    rows.into_iter()
        .map(|(id, data, metadata, version)| (id, (data, metadata, version)))
        .collect()
}

/// Every fixture event is in the store byte for byte as the fixture has it, with its old
/// schema version.
async fn assert_stored_as_written(
    day: &Day,
    backend: Backend,
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) {
    let rows = stored_rows(backend, data_dir, database_url).await;
    for e in &day.envelopes {
        let (data, metadata, version) = &rows[&e.event_id.to_string()];
        assert_eq!(*data, e.data.to_string(), "{} data", e.event_id);
        assert_eq!(*metadata, serde_json::to_string(&e.metadata).unwrap());
        assert_eq!(*version, i64::from(day.version));
    }
}

/// Waits (at most 60 s) until `check` passes on the answer of GET `path`.
async fn eventually(app: &TestApp, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let response = app.get(path).await;
        if response.status() == StatusCode::OK {
            let body: Value = response.json().await.unwrap();
            if check(&body) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "GET {path} never passed its check; last: {body}"
            );
        } else {
            assert!(
                std::time::Instant::now() < deadline,
                "GET {path} answers {}",
                response.status()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The day's orders in the read models, as the current shape: every status, the currency
/// every old price was in; and the day's stock.
async fn assert_read_models(app: &TestApp, day: &Day) {
    for (customer, status, ..) in ORDERS {
        let order = eventually(
            app,
            &format!("/api/orders/{}", day.order_of(customer)),
            |o| o["status"] == status,
        )
        .await;
        assert_eq!(order["currency"], "GBP", "{customer}: {order}");
        assert_eq!(order["customerId"], customer);
    }
    let stock = eventually(app, "/api/inventory", |s| {
        s.as_array().is_some_and(|a| a.len() == 3)
    })
    .await;
    let levels: Vec<(String, i64, i64, String)> = stock
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["sku"].as_str().unwrap().to_string(),
                s["available"].as_i64().unwrap(),
                s["reserved"].as_i64().unwrap(),
                s["currency"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let gbp = || "GBP".to_string();
    assert_eq!(
        levels,
        [
            ("KETTLE".to_string(), 0, 1, gbp()),
            ("MUG".to_string(), 8, 0, gbp()),
            ("TEA".to_string(), 4, 0, gbp())
        ]
    );
}

/// Replay shows the current shape for the state, and the events as they are stored.
async fn assert_replay(app: &TestApp, day: &Day) {
    for (customer, status, code, written) in ORDERS {
        let order_id = day.order_of(customer);
        let replay = app
            .json(&format!("/api/eventstore/replay/Order/{order_id}"))
            .await;
        let state = &replay["state"];
        assert_eq!(state["status"], status, "{customer}");
        assert_eq!(state["currency"], "GBP");
        let address = &state["shippingAddress"];
        assert_eq!(address["countryCode"], json!(code), "{customer}: {address}");
        assert!(address.get("country").is_none(), "{address}");
        match code {
            Some(_) => assert!(address.get("unrecognisedCountry").is_none()),
            None => assert_eq!(address["unrecognisedCountry"], written),
        }
        // The events as stored: their schema version, their data untouched.
        for event in replay["events"].as_array().unwrap() {
            let id: uuid::Uuid = event["eventId"].as_str().unwrap().parse().unwrap();
            let fixture = day.envelopes.iter().find(|e| e.event_id == id).unwrap();
            assert_eq!(event["schemaVersion"], day.version);
            if day.version == 1 {
                assert_eq!(event["data"], fixture.data);
            }
            if event["eventType"] == "OrderCreated" {
                assert_eq!(event["data"]["shippingAddress"]["country"], written);
                assert!(event["data"].get("currency").is_none());
            }
        }
    }
    let stock = app.json("/api/eventstore/replay/Inventory/MUG").await;
    assert_eq!(stock["state"]["currency"], "GBP");
    let open = app
        .json(&format!("/api/eventstore/replay/Cart/{}", day.open_cart))
        .await;
    assert_eq!(open["state"]["currency"], "GBP");
    assert_eq!(open["state"]["status"], "Open");
}

/// A customer's export: the old address's country as a code, or as written when it named
/// none; the personal values opened (schema 1: clear; schema 2: with the fixture's keys).
async fn assert_exports(app: &TestApp) {
    for (customer, _, code, written) in ORDERS {
        let export = app
            .json(&format!("/api/customers/{customer}/personal-data"))
            .await;
        let order = &export["orders"][0];
        assert_eq!(order["currency"], "GBP", "{customer}: {export}");
        let address = &order["shippingAddress"];
        assert_eq!(address["name"], "Ada Lovelace", "{customer}: {address}");
        assert_eq!(address["countryCode"], json!(code));
        assert_eq!(address["country"], code.unwrap_or(written));
        assert_eq!(order["email"], format!("{customer}@example.com"));
    }
}

/// The old orders and carts carry on: the one in flight ships and is delivered, and the
/// open cart takes a line and checks out; what is written now is the current schema.
async fn carry_on(app: &TestApp, day: &Day) {
    let in_flight = day.order_of("cust-cy");
    let shipped = app
        .post(
            &format!("/api/orders/{in_flight}/ship"),
            &json!({"carrier": "DHL"}),
        )
        .await;
    assert_eq!(shipped.status(), StatusCode::OK, "ship the old order");
    let delivered = app
        .post(&format!("/api/orders/{in_flight}/deliver"), &json!({}))
        .await;
    assert_eq!(delivered.status(), StatusCode::OK);
    // The inventory-service takes the kettle the old reservation held out of the warehouse.
    eventually(app, "/api/inventory/KETTLE", |k| k["reserved"] == 0).await;

    let cart = &day.open_cart;
    assert_eq!(app.add(cart, "MUG", 1).await.status(), StatusCode::OK);
    let view = app.json(&format!("/api/carts/{cart}")).await;
    assert_eq!(view["currency"], "GBP");
    assert_eq!(
        view["totalAmount"], "14.49",
        "TEA 4.50 (old line) + MUG 9.99: {view}"
    );
    let mut shipping = address();
    shipping.as_object_mut().unwrap().remove("country");
    shipping["countryCode"] = json!("fr");
    let checkout = app
        .post(
            &format!("/api/carts/{cart}/checkout"),
            &json!({"paymentToken": "tok_visa", "shippingAddress": shipping,
                    "email": "cust-fay@example.com"}),
        )
        .await;
    assert_eq!(checkout.status(), StatusCode::ACCEPTED);
    let order_id = checkout.json::<Value>().await.unwrap()["orderId"]
        .as_str()
        .unwrap()
        .to_string();
    let order = app.wait_for_order(&order_id, &["Confirmed"]).await;
    assert_eq!(order["currency"], "GBP");
    // The cart's stream: its old events as they were, the new ones in the current schema.
    let replay = app
        .json(&format!("/api/eventstore/replay/Cart/{cart}"))
        .await;
    let versions: Vec<(String, u64)> = replay["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["eventType"].as_str().unwrap().to_string(),
                e["schemaVersion"].as_u64().unwrap(),
            )
        })
        .collect();
    let old = u64::from(day.version);
    let current = u64::from(cornershop_domain::CURRENT_SCHEMA_VERSION);
    assert_eq!(
        versions,
        [
            ("CartCreated".to_string(), old),
            ("ItemAddedToCart".to_string(), old),
            ("ItemAddedToCart".to_string(), old),
            ("ItemRemovedFromCart".to_string(), old),
            ("ItemAddedToCart".to_string(), current),
            ("CartCheckedOut".to_string(), current),
        ]
    );
    let checked_out = &replay["events"][5]["data"];
    assert_eq!(checked_out["currency"], "GBP");
    assert_eq!(checked_out["shippingAddress"]["countryCode"], "FR");
}

/// A shop on a store that holds the day of `version` as it was stored, on `backend`:
/// every check above, then `projections verify` on the stopped shop's store.
async fn an_old_day_loads_and_carries_on(backend: Backend, version: u32) {
    let day = Day::of(version);
    let data_dir = tempfile::tempdir().unwrap();
    let database_url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(cluster::fresh_database().await),
    };
    {
        let store: Box<dyn EventStore> = match &database_url {
            None => Box::new(SqliteEventStore::open(data_dir.path()).await.unwrap()),
            Some(url) => Box::new(PgEventStore::connect(url).await.unwrap()),
        };
        load(store.as_ref(), &day, data_dir.path()).await;
        store.close().await;
    }
    assert_stored_as_written(&day, backend, data_dir.path(), database_url.as_deref()).await;

    let dir = data_dir.path().to_path_buf();
    let url = database_url.clone();
    let app = spawn_embedded_with(move |args| {
        args.data_dir = dir;
        args.database_url = url;
    })
    .await;
    assert_replay(&app, &day).await;
    assert_read_models(&app, &day).await;
    assert_exports(&app).await;
    carry_on(&app, &day).await;
    app.settle().await;
    app.stop_and_wait().await;

    // Nothing the shop did rewrote an old event.
    assert_stored_as_written(&day, backend, data_dir.path(), database_url.as_deref()).await;
    let store = match &database_url {
        None => format!("--data-dir={}", data_dir.path().display()),
        Some(url) => format!("--database-url={url}"),
    };
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_cornershop"))
        .args(["projections", "verify", &store])
        .output()
        .expect("cornershop runs");
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && out.contains(": 0 mismatches"),
        "verify: {out} {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // A backup holds the old events as they were written, `backup verify` reads them as
    // today's shape, and a restore (into SQLite) stores them byte for byte again.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("old-day.backup");
    let restored = work.path().join("restored");
    let master_key = format!(
        "--master-key-file={}",
        data_dir.path().join("master.key").display()
    );
    for args in [
        vec![
            "backup".to_string(),
            "create".into(),
            format!("--out={}", file.display()),
            store.clone(),
        ],
        vec!["backup".into(), "verify".into(), file.display().to_string()],
        vec![
            "backup".into(),
            "restore".into(),
            file.display().to_string(),
            format!("--data-dir={}", restored.display()),
            master_key.clone(),
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cornershop"))
            .args(&args)
            .env_remove("CORNERSHOP_DATABASE_URL")
            .output()
            .expect("cornershop runs");
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_stored_as_written(&day, Backend::Sqlite, &restored, None).await;

    if let Some(url) = database_url {
        cluster::drop_database(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_schema_1_day_loads_as_the_current_shape_and_carries_on() {
    an_old_day_loads_and_carries_on(Backend::Sqlite, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_schema_2_day_loads_as_the_current_shape_and_carries_on() {
    an_old_day_loads_and_carries_on(Backend::Sqlite, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_schema_1_day_loads_as_the_current_shape_and_carries_on() {
    an_old_day_loads_and_carries_on(Backend::Postgres, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_schema_2_day_loads_as_the_current_shape_and_carries_on() {
    an_old_day_loads_and_carries_on(Backend::Postgres, 2).await;
}

/// The schema-1 day in a PostgreSQL store, published by the relay from the outbox as it is
/// stored, and read off Kafka by the reporting service's consumer as the current shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_relay_and_kafka_old_events_reach_the_read_models_as_the_current_shape() {
    let day = Day::of(1);
    let logs = tempfile::tempdir().unwrap();
    let database_url = cluster::fresh_database().await;
    {
        let store = PgEventStore::connect(&database_url).await.unwrap();
        load(&store, &day, logs.path()).await;
        store.close().await;
    }
    // The relay and the read models only: the workflow's consumers would react to the old
    // events again (on Kafka their progress is the broker's, which a new namespace lacks).
    let mut flags = cluster::workflow_flags(&cornershop_server::config::ServeArgs::for_data_dir(
        logs.path(),
    ));
    flags.push(format!(
        "--master-key-file={}",
        logs.path().join("master.key").display()
    ));
    let cluster = cluster::Cluster::start_on(
        &database_url,
        &[&["api", "relay", "reporting"]],
        &flags,
        logs.path(),
    )
    .await;
    let app = cluster.app(tempfile::tempdir().unwrap());
    assert_read_models(&app, &day).await;
    // On the topics: every old event, its value the stored envelope (schema 1, as it was).
    let published = cluster.read_event_topics().await;
    let by_id: BTreeMap<String, Value> = published
        .iter()
        .filter_map(|m| Some((m.event_id()?, m.json()?)))
        .collect();
    for e in &day.envelopes {
        let value = &by_id[&e.event_id.to_string()];
        assert_eq!(value["schemaVersion"], 1);
        assert_eq!(value["data"], e.data);
    }
    cluster.dispose().await;
}

/// A process told to write schema 2 (the rolling upgrade's first step) writes events that
/// the previous release reads: the fields of each type are the schema-2 fixture's, the
/// country a code in `country`, no currency; and it and every other process read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_told_to_write_schema_2_writes_what_the_previous_release_wrote() {
    let app = spawn_embedded_with(|args| args.write_schema_version = 2).await;
    app.stock("MUG", "9.99", 10).await;
    let order = app.order(&[("MUG", 2)], "tok_visa").await;
    let confirmed = app.wait_for_order(&order, &["Confirmed"]).await;
    assert_eq!(confirmed["currency"], "GBP");
    app.settle().await;

    // The fields each event type had in schema 2, from the fixture that release wrote.
    let mut fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    for e in envelopes(fixtures::SCHEMA_2_EVENTS) {
        fields.insert(e.event_type.clone(), keys(&e.data));
        if let Some(address) = e.data.get("shippingAddress") {
            fields.insert("shippingAddress".into(), keys(address));
        }
    }
    let log = app.json("/api/eventstore/events?limit=1000").await;
    let events = log["events"].as_array().unwrap();
    assert!(events.len() > 10);
    for event in events {
        let event_type = event["eventType"].as_str().unwrap();
        assert_eq!(event["schemaVersion"], 2, "{event_type}");
        let data = &event["data"];
        assert_eq!(keys(data), fields[event_type], "{event_type}: {data}");
        if let Some(address) = data.get("shippingAddress") {
            assert_eq!(keys(address), fields["shippingAddress"]);
            assert_eq!(address["country"], "GB");
        }
    }
    let dead = app.json("/api/deadletters").await;
    assert_eq!(dead, json!([]), "every consumer read what was written");
}

/// Runs a small shop's day on the embedded default and writes its log, byte for byte as
/// the store holds it, to `$CORNERSHOP_WRITE_FIXTURES/events.ndjson` (one envelope a
/// line, in log order), with the data keys (`data-keys.ndjson`) and the master key
/// (`master.key`) that open its sealed values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixtures; run by hand with CORNERSHOP_WRITE_FIXTURES=dir"]
async fn write_the_fixtures() {
    let out = std::path::PathBuf::from(
        std::env::var("CORNERSHOP_WRITE_FIXTURES").expect("CORNERSHOP_WRITE_FIXTURES=dir"),
    );
    std::fs::create_dir_all(&out).unwrap();
    let app = spawn_embedded_with(|_| {}).await;
    app.stock("MUG", "9.99", 10).await;
    app.stock("TEA", "4.50", 5).await;
    app.stock("KETTLE", "25.00", 1).await;

    // Delivered.
    let delivered = app
        .order_to("cust-ada", &[("MUG", 2), ("TEA", 1)], "tok_visa", "GB")
        .await;
    app.wait_for_order(&delivered, &["Confirmed"]).await;
    let r = app
        .post(
            &format!("/api/orders/{delivered}/ship"),
            &json!({"carrier": "Royal Mail", "trackingNumber": "RM123456789GB"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "ship");
    let r = app
        .post(&format!("/api/orders/{delivered}/deliver"), &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "deliver");

    // Declined by the gateway: cancelled, its stock released. (A lower-case country code:
    // the checkout took any two letters.)
    let declined = app
        .order_to("cust-bob", &[("MUG", 1)], "tok_chargeDeclined", "gb")
        .await;
    app.wait_for_order(&declined, &["Cancelled"]).await;

    // Confirmed and not shipped yet: in flight. Its country is two letters that name no
    // country, which the checkout took as well.
    let in_flight = app
        .order_to("cust-cy", &[("KETTLE", 1)], "tok_mastercard", "XX")
        .await;
    app.wait_for_order(&in_flight, &["Confirmed"]).await;

    // Out of stock (the one kettle is reserved): cancelled. "UK", not ISO's "GB".
    let short = app
        .order_to("cust-dee", &[("KETTLE", 1), ("TEA", 1)], "tok_visa", "UK")
        .await;
    app.wait_for_order(&short, &["Cancelled"]).await;

    // Cancelled by the customer after payment: refunded.
    let regretted = app
        .order_to("cust-eve", &[("TEA", 2)], "tok_visa", "US")
        .await;
    app.wait_for_order(&regretted, &["Confirmed"]).await;
    let r = app
        .post(
            &format!("/api/orders/{regretted}/cancel"),
            &json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "cancel");

    // An open cart: a line added, another added and removed.
    let open = app.new_cart("cust-fay").await;
    assert_eq!(app.add(&open, "TEA", 1).await.status(), StatusCode::OK);
    assert_eq!(app.add(&open, "MUG", 3).await.status(), StatusCode::OK);
    let r = app
        .client
        .delete(app.url(&format!("/api/carts/{open}/items/MUG")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "remove");

    app.settle().await;
    // The refund comes after the cancellation's StockReleased; wait for the whole log.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.settle().await;
    let data_dir = app.stop_and_wait().await;

    // The rows as stored.
    let url = format!(
        "sqlite://{}?mode=ro",
        data_dir.path().join("cornershop.db").display()
    );
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let store = cornershop_store::SqliteEventStore::open(data_dir.path())
        .await
        .unwrap();
    let events = cornershop_store::EventLog::read_log(&store, 0, 10_000)
        .await
        .unwrap();
    let mut lines = std::fs::File::create(out.join("events.ndjson")).unwrap();
    for event in &events {
        let (data, metadata): (String, String) =
            sqlx::query_as("SELECT data, metadata FROM events WHERE position = ?")
                .bind(event.position as i64)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let line = serde_json::to_string(&event.envelope).unwrap();
        // The envelope's JSON holds the stored text of both columns unchanged.
        assert_eq!(event.envelope.data.to_string(), data, "data as stored");
        assert_eq!(
            serde_json::to_string(&event.envelope.metadata).unwrap(),
            metadata,
            "metadata as stored"
        );
        assert!(line.contains(&data) && line.contains(&metadata));
        writeln!(lines, "{line}").unwrap();
    }
    let keys: Vec<(String, String, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT key_id, customer_id, wrapped_key, created_us FROM data_keys ORDER BY created_us",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut key_lines = std::fs::File::create(out.join("data-keys.ndjson")).unwrap();
    for (key_id, customer_id, wrapped, created_us) in keys {
        let hex: String = wrapped.iter().map(|b| format!("{b:02x}")).collect();
        let line = json!({"keyId": key_id, "customerId": customer_id, "wrappedKey": hex,
                          "createdUs": created_us});
        writeln!(key_lines, "{line}").unwrap();
    }
    std::fs::copy(data_dir.path().join("master.key"), out.join("master.key")).unwrap();
    eprintln!("{} events written to {}", events.len(), out.display());
}
