//! Fault tests of the production path: the real `cornershop` binary as several processes
//! on PostgreSQL and Kafka (see `common/cluster.rs`). Each test starts its own cluster, on
//! its own database and Kafka namespace, with the layout it needs; they may run in
//! parallel, so none of them touches the broker itself (that is `tests/broker_restart.rs`).
//!
//! Needs `CORNERSHOP_TEST_DATABASE_URL` and `CORNERSHOP_TEST_KAFKA_BROKERS` (see
//! `scripts/stack.sh`) and `kcat` on the PATH.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{self, KafkaMessage};
use common::TestApp;
use serde_json::{json, Value};

/// Places one order per entry of `plan` (lines, payment token) from concurrent tasks,
/// task `i` starting `i * stagger` after the first; returns the order ids in plan order,
/// counting acknowledged checkouts in `acked` as they come.
fn place_orders(
    app: &Arc<TestApp>,
    plan: &[(Vec<(&'static str, i64)>, &'static str)],
    stagger: Duration,
    acked: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<String>> {
    plan.iter()
        .enumerate()
        .map(|(i, (lines, token))| {
            let app = app.clone();
            let acked = acked.clone();
            let lines = lines.clone();
            let token = *token;
            tokio::spawn(async move {
                tokio::time::sleep(stagger * i as u32).await;
                let id = app.order(&lines, token).await;
                acked.fetch_add(1, Ordering::SeqCst);
                id
            })
        })
        .collect()
}

/// Places one order and waits until it is Confirmed: every process and consumer group
/// of the cluster is then at work.
async fn warm_up(
    app: &TestApp,
    db: &sqlx::PgPool,
    (lines, token): &(Vec<(&'static str, i64)>, &'static str),
) -> String {
    assert_eq!(*token, "tok_visa");
    let id = app.order(lines, token).await;
    let outcome = cluster::wait_for_outcome(db, &id, Duration::from_secs(60)).await;
    assert_eq!(outcome, "Confirmed", "the warm-up order");
    id
}

async fn join_orders(tasks: Vec<tokio::task::JoinHandle<String>>) -> Vec<String> {
    let mut ids = Vec::with_capacity(tasks.len());
    for task in tasks {
        ids.push(task.await.expect("an order was placed"));
    }
    ids
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `limit`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count_events(db: &sqlx::PgPool, types: &[&str]) -> i64 {
    let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = ANY($1)")
        .bind(types)
        .fetch_one(db)
        .await
        .expect("count events")
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_carries_the_seed_envelope_key_and_headers() {
    let (app, cluster) = cluster::start_shop(cluster::DEFAULT_LAYOUT, &[]).await;
    let db = cluster.db().await;
    app.stock("MUG", "9.99", 10).await;
    app.stock("TEE", "15.00", 5).await;
    let order_id = app.order(&[("MUG", 2), ("TEE", 1)], "tok_visa").await;
    let outcomes = cluster::wait_final_and_published(
        &cluster,
        &db,
        std::slice::from_ref(&order_id),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(outcomes[&order_id], "Confirmed");

    // The store as written: each event's envelope fields, straight from PostgreSQL.
    type Row = (String, String, String, i64, i64, String, String, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT event_id::text, event_type, aggregate_id, version, schema_version, \
         to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
         data::text, metadata::text FROM events ORDER BY position",
    )
    .fetch_all(&db)
    .await
    .expect("read the events");
    let by_id: HashMap<&str, &Row> = rows.iter().map(|r| (r.0.as_str(), r)).collect();
    let stored = cluster::stored_events(&db).await;
    let messages = cluster.read_event_topics().await;

    // The order's own topic carries its lifecycle.
    let orders_topic = cluster.topic("orders.events");
    let order_types: Vec<String> = {
        let mut on_topic: Vec<&KafkaMessage> = messages
            .iter()
            .filter(|m| m.topic == orders_topic && m.key.as_deref() == Some(order_id.as_str()))
            .collect();
        on_topic.sort_by_key(|m| m.offset);
        // At least once: a repeat (a relay taking over) is allowed, so count first copies.
        let mut seen = HashSet::new();
        on_topic
            .iter()
            .filter(|m| seen.insert(m.event_id()))
            .map(|m| m.header("eventType").unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        order_types,
        ["OrderCreated", "OrderValidated", "OrderConfirmed"],
        "the order's events on {orders_topic}"
    );

    let seed_fields: BTreeSet<&str> = [
        "eventId",
        "eventType",
        "aggregateId",
        "aggregateType",
        "timestamp",
        "version",
        "schemaVersion",
        "data",
        "metadata",
    ]
    .into();
    let metadata_fields: BTreeSet<&str> =
        ["correlationId", "causationId", "userId", "source"].into();
    let topic_of = |aggregate_type: &str| {
        cluster.topic(match aggregate_type {
            "Cart" => "carts.events",
            "Order" => "orders.events",
            "Payment" => "payments.events",
            "Inventory" => "inventory.events",
            other => panic!("unknown aggregateType {other}"),
        })
    };
    let mut traces: HashMap<String, String> = HashMap::new();
    for m in &messages {
        let payload = m.payload.as_deref().expect("a payload");
        let envelope: Value = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("payload is not JSON ({e}): {payload}"));
        let fields: BTreeSet<&str> = envelope
            .as_object()
            .expect("the envelope is an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, seed_fields, "envelope fields of {payload}");
        let metadata = &envelope["metadata"];
        let fields: BTreeSet<&str> = metadata
            .as_object()
            .expect("metadata is an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, metadata_fields, "metadata fields of {payload}");
        // The payload is the typed envelope, exactly.
        let typed: cornershop_domain::EventEnvelope = serde_json::from_value(envelope.clone())
            .unwrap_or_else(|e| panic!("not an EventEnvelope ({e}): {payload}"));
        typed
            .decode()
            .unwrap_or_else(|e| panic!("does not decode ({e}): {payload}"));
        assert_eq!(
            envelope["schemaVersion"],
            cornershop_domain::CURRENT_SCHEMA_VERSION
        );

        // It is what the store holds.
        let event_id = envelope["eventId"].as_str().unwrap();
        let row = by_id
            .get(event_id)
            .unwrap_or_else(|| panic!("{event_id} is in Kafka but not in the store"));
        assert_eq!(envelope["eventType"], row.1.as_str());
        assert_eq!(envelope["aggregateId"], row.2.as_str());
        assert_eq!(envelope["version"], row.3);
        assert_eq!(envelope["schemaVersion"], row.4);
        let kafka_time: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(envelope["timestamp"].clone()).expect("RFC 3339 timestamp");
        let store_time: chrono::DateTime<chrono::Utc> = row.5.parse().expect("stored time");
        assert_eq!(kafka_time, store_time, "timestamp of {event_id}");
        let data: Value = serde_json::from_str(&row.6).unwrap();
        assert_eq!(envelope["data"], data, "data of {event_id}");
        let stored_metadata: Value = serde_json::from_str(&row.7).unwrap();
        assert_eq!(metadata, &stored_metadata, "metadata of {event_id}");
        assert_eq!(
            m.topic,
            topic_of(envelope["aggregateType"].as_str().unwrap()),
            "topic of {event_id}"
        );

        // Key and headers.
        assert_eq!(
            m.key.as_deref(),
            envelope["aggregateId"].as_str(),
            "key of {event_id}"
        );
        assert_eq!(m.header("eventType"), envelope["eventType"].as_str());
        assert_eq!(
            m.header("correlationId"),
            metadata["correlationId"].as_str()
        );
        assert_eq!(m.header("causationId"), metadata["causationId"].as_str());
        let traceparent = m
            .header("traceparent")
            .unwrap_or_else(|| panic!("no traceparent on {event_id}"));
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert!(
            parts.len() == 4
                && parts[0] == "00"
                && is_lower_hex(parts[1], 32)
                && parts[1] != "0".repeat(32)
                && is_lower_hex(parts[2], 16)
                && parts[2] != "0".repeat(16)
                && parts[3] == "01",
            "traceparent {traceparent:?} is not 00-<32 hex>-<16 hex>-01"
        );
        // One trace per business transaction; the span names the event.
        let correlation = metadata["correlationId"].as_str().unwrap().to_string();
        let trace = traces
            .entry(correlation.clone())
            .or_insert_with(|| parts[1].to_string());
        assert_eq!(trace, parts[1], "trace id of {event_id} ({correlation})");
        assert_eq!(
            parts[2],
            &event_id.replace('-', "")[..16],
            "span id of {event_id}"
        );
        // The store's global position, for the consumers' dead letters and checkpoints.
        let position = stored
            .iter()
            .find(|e| e.event_id == event_id)
            .map(|e| e.position.to_string());
        assert_eq!(
            m.header("position"),
            position.as_deref(),
            "position of {event_id}"
        );
    }
    // Different business transactions are different traces.
    let distinct: HashSet<&String> = traces.values().collect();
    assert_eq!(distinct.len(), traces.len(), "trace ids per correlation id");

    // Every stored event was published, and the store knows where.
    cluster::assert_every_event_published(&stored, &messages);
    assert_eq!(stored.len(), rows.len());
    let all_order_events: Vec<_> = stored
        .iter()
        .filter(|e| e.aggregate_id == order_id)
        .collect();
    assert!(all_order_events
        .iter()
        .all(|e| e.topic.as_deref() == Some(orders_topic.as_str())));
    db.close().await;
    cluster.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relay_is_replaced_and_every_event_reaches_kafka_in_order() {
    const LAYOUT: &[&[&str]] = &[
        &["api"],
        &["relay"],
        &["relay"],
        &["order", "inventory", "payment"],
    ];
    let started = Instant::now();
    let (app, mut cluster) = cluster::start_shop(LAYOUT, &[]).await;
    let db = cluster.db().await;
    app.stock("MUG", "5.00", 1000).await;
    app.stock("TEE", "12.00", 1000).await;
    let app = Arc::new(app);

    let plan: Vec<_> = (0..40)
        .map(|i| {
            let mut lines = vec![("MUG", 1 + i % 3)];
            if i % 2 == 0 {
                lines.push(("TEE", 1));
            }
            (
                lines,
                if i % 5 == 4 {
                    "tok_chargeDeclined"
                } else {
                    "tok_visa"
                },
            )
        })
        .collect();
    // The first order alone, until the whole pipeline (the relay, every consumer group)
    // is warm; then the rest as a stream over about three seconds.
    let first = warm_up(&app, &db, &plan[0]).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks = place_orders(&app, &plan[1..], Duration::from_millis(75), &acked);

    // Mid-stream: checkouts keep coming after the kill.
    wait_for(Duration::from_secs(60), "checkouts to be under way", || {
        let acked = &acked;
        async move { acked.load(Ordering::SeqCst) >= 12 }
    })
    .await;
    let active = cluster::relay_lease_pid(&db)
        .await
        .expect("a relay holds the lease");
    let unpublished_at_kill = cluster::unpublished_count(&db).await;
    let victim = cluster
        .process_with_pid(active)
        .unwrap_or_else(|| panic!("the lease holder pid {active} is none of ours"));
    assert!(
        victim.has_role("relay"),
        "{} holds the relay lease",
        victim.name
    );
    let victim_port = victim.port;
    victim.kill();
    eprintln!(
        "killed the active relay (pid {active}) after {} checkouts, {unpublished_at_kill} \
         events unpublished",
        acked.load(Ordering::SeqCst)
    );

    let mut orders = vec![first];
    orders.extend(join_orders(tasks).await);
    let outcomes =
        cluster::wait_final_and_published(&cluster, &db, &orders, Duration::from_secs(90)).await;
    let confirmed = outcomes.values().filter(|o| **o == "Confirmed").count();
    assert!(
        confirmed > 0 && confirmed < orders.len(),
        "{confirmed} confirmed"
    );

    // The standby took over.
    let successor = cluster::relay_lease_pid(&db)
        .await
        .expect("a relay holds the lease again");
    assert_ne!(successor, active, "the dead relay still holds the lease");
    let successor_process = cluster
        .process_with_pid(successor)
        .unwrap_or_else(|| panic!("the new lease holder pid {successor} is none of ours"));
    assert!(successor_process.has_role("relay"));

    // The killed relay restarts and stands by: the successor keeps the lease, and what is
    // appended now is still published exactly where the store says.
    let restarted = cluster
        .processes
        .iter_mut()
        .find(|p| p.port == victim_port)
        .expect("the killed relay's process");
    restarted.restart().await;
    let after_restart = app.order(&[("MUG", 1)], "tok_visa").await;
    let holder = cluster::relay_lease_pid(&db)
        .await
        .expect("a relay holds the lease after the restart");
    assert_eq!(
        holder, successor,
        "the restarted relay took the lease from a live one"
    );
    orders.push(after_restart);
    cluster::wait_final_and_published(&cluster, &db, &orders, Duration::from_secs(60)).await;

    let stored = cluster::stored_events(&db).await;
    let messages = cluster.read_event_topics().await;
    cluster::assert_every_event_published(&stored, &messages);
    let repeats = cluster::assert_per_aggregate_order(&stored, &messages);
    eprintln!(
        "{} events stored, {} messages in Kafka ({repeats} published again by the successor); \
         {:?} in all",
        stored.len(),
        messages.len(),
        started.elapsed()
    );
    db.close().await;
    cluster.dispose().await;
}

/// The stock each test order plan starts with.
const STOCK: &[(&str, &str, i64)] = &[
    ("MUG", "5.00", 1000),
    ("TEE", "12.00", 1000),
    ("RARE", "3.00", 6),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_process_loses_and_repeats_nothing() {
    const LAYOUT: &[&[&str]] = &[&["api", "relay"], &["order", "inventory"], &["payment"]];
    let started = Instant::now();
    let (app, mut cluster) = cluster::start_shop(LAYOUT, &[]).await;
    let db = cluster.db().await;
    for (sku, price, quantity) in STOCK {
        app.stock(sku, price, *quantity).await;
    }
    let app = Arc::new(app);

    // A mix: most pay, some are declined, some ask for more of RARE than is left.
    let plan: Vec<_> = (0..40)
        .map(|i| {
            let mut lines = vec![("MUG", 1 + i % 3)];
            if i % 2 == 0 {
                lines.push(("TEE", 1));
            }
            if i % 6 == 1 {
                lines.push(("RARE", 2));
            }
            (
                lines,
                if i % 5 == 4 {
                    "tok_chargeDeclined"
                } else {
                    "tok_visa"
                },
            )
        })
        .collect();
    let first = warm_up(&app, &db, &plan[0]).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks = place_orders(&app, &plan[1..], Duration::from_millis(75), &acked);

    // Kill the saga and the inventory service while orders are mid-workflow.
    wait_for(Duration::from_secs(60), "orders to be under way", || {
        let db = &db;
        async move { count_events(db, &["OrderCreated"]).await >= 10 }
    })
    .await;
    let created = count_events(&db, &["OrderCreated"]).await;
    let finished = count_events(&db, &["OrderConfirmed", "OrderCancelled"]).await;
    let victim = cluster.process("order+inventory");
    victim.kill();
    eprintln!(
        "killed order+inventory with {created} orders created, {finished} finished, {} \
         checkouts acknowledged",
        acked.load(Ordering::SeqCst)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    victim.restart().await;

    let mut orders = vec![first];
    orders.extend(join_orders(tasks).await);
    let outcomes =
        cluster::wait_final_and_published(&cluster, &db, &orders, Duration::from_secs(90)).await;
    let statuses: BTreeMap<&str, usize> = outcomes.values().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(*o).or_default() += 1;
        m
    });
    assert!(
        statuses.get("Confirmed").is_some_and(|n| *n > 0)
            && statuses.get("Cancelled").is_some_and(|n| *n > 0),
        "{statuses:?}"
    );

    // Nothing applied twice.
    let stored = cluster::stored_events(&db).await;
    cluster::assert_no_effect_twice(&stored);
    for order in &orders {
        let terminal = stored
            .iter()
            .filter(|e| {
                e.aggregate_id == *order
                    && matches!(e.event_type.as_str(), "OrderConfirmed" | "OrderCancelled")
            })
            .count();
        assert_eq!(terminal, 1, "order {order} has {terminal} terminal events");
    }

    // Stock is conserved: what is reserved is exactly what the confirmed orders hold.
    let mut held: HashMap<&str, i64> = HashMap::new();
    for (id, (lines, _)) in orders.iter().zip(&plan) {
        if outcomes[id] == "Confirmed" {
            for (sku, quantity) in lines {
                *held.entry(sku).or_default() += quantity;
            }
        }
    }
    let mut last = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        last.clear();
        for (sku, _, stocked) in STOCK {
            let (available, reserved) = app.inventory(sku).await;
            last.push((
                *sku,
                available as i64,
                reserved as i64,
                *stocked,
                held.get(sku).copied().unwrap_or(0),
            ));
        }
        if last
            .iter()
            .all(|(_, a, r, stocked, held)| a + r == *stocked && r == held)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stock not conserved, (sku, available, reserved, stocked, held by confirmed \
             orders): {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{statuses:?}, stock {last:?}; {:?} in all",
        started.elapsed()
    );
    db.close().await;
    cluster.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_goes_to_the_dead_letter_topic_and_the_rest_flows() {
    // The workflow's four consumer groups, each of which must park every poison.
    const LAYOUT: &[&[&str]] = &[
        &["api", "relay"],
        &["order", "inventory"],
        &["payment", "relay"],
    ];
    let (app, cluster) = cluster::start_shop(LAYOUT, &[]).await;
    let db = cluster.db().await;
    app.stock("MUG", "9.99", 10).await;
    let topic = cluster.topic("orders.events");
    let dlq = format!("{topic}.dlq");
    let partitions = cluster::kcat_partitions(&cluster.brokers, &topic).await;
    assert!(partitions >= 1);

    // A fake order that would reserve 3 MUGs if its newer-schema event were half-understood.
    let fake_order = uuid::Uuid::new_v4().to_string();
    let envelope = |event_type: &str, schema_version: u32, data: Value| {
        json!({
            "eventId": uuid::Uuid::new_v4(),
            "eventType": event_type,
            "aggregateId": fake_order,
            "aggregateType": "Order",
            "timestamp": "2026-01-01T00:00:00Z",
            "version": 1,
            "schemaVersion": schema_version,
            "data": data,
            "metadata": {"correlationId": "poison", "causationId": "poison",
                         "userId": null, "source": "OrderService"},
        })
        .to_string()
    };
    let order_created = json!({
        "orderId": fake_order, "cartId": uuid::Uuid::new_v4(), "customerId": "mallory",
        "totalAmount": "29.97",
        "items": [{"sku": "MUG", "name": "Product MUG", "quantity": 3, "unitPrice": "9.99"}],
        "paymentToken": "tok_visa", "shippingAddress": common::address(),
        "email": "m@example.com", "phone": "+44 20 7946 0000"
    });
    // (kind, eventType header, payload, what the error must say)
    let future_event = uuid::Uuid::new_v4();
    let mut from_the_future: Value =
        serde_json::from_str(&envelope("OrderCreated", 99, order_created)).unwrap();
    from_the_future["eventId"] = json!(future_event);
    let poisons = [
        (
            "not-json",
            "OrderCreated",
            "this is not JSON {".to_string(),
            "not an event envelope",
        ),
        (
            "unknown-type",
            "OrderTeleported",
            envelope("OrderTeleported", 1, json!({"orderId": fake_order})),
            "unknown event type 'OrderTeleported'",
        ),
        (
            "schema-99",
            "OrderCreated",
            from_the_future.to_string(),
            "schema version 99",
        ),
    ];
    // On every partition, so that whichever partition the next order lands on, its events
    // queue behind all three.
    for partition in 0..partitions {
        for (kind, event_type, payload, _) in &poisons {
            cluster::kcat_produce(
                &cluster.brokers,
                &topic,
                Some(partition),
                &format!("poison-{kind}-p{partition}"),
                &[("eventType", event_type)],
                payload,
            )
            .await;
        }
    }

    // The rest flows.
    let order_id = app.order(&[("MUG", 1)], "tok_visa").await;
    let outcome = cluster::wait_for_outcome(&db, &order_id, Duration::from_secs(60)).await;
    assert_eq!(outcome, "Confirmed", "an order behind the poison messages");

    // Where each poison landed.
    let origin: HashMap<String, (i32, i64)> = cluster
        .read_topic(&topic)
        .await
        .into_iter()
        .filter_map(|m| Some((m.key.clone()?, (m.partition, m.offset))))
        .filter(|(k, _)| k.starts_with("poison-"))
        .collect();
    assert_eq!(origin.len(), poisons.len() * partitions as usize);

    // Every consumer group parks every message that is no event this build understands on
    // the dead-letter topic, with why and where it came from. An event of a newer schema is
    // a real event of a newer release: it goes to the store's dead letters instead (below).
    let origin: HashMap<String, (i32, i64)> = origin
        .into_iter()
        .filter(|(key, _)| !key.starts_with("poison-schema-99-"))
        .collect();
    let groups: BTreeSet<String> = [
        "order-saga",
        "cart-expiry",
        "inventory-service",
        "payment-service",
    ]
    .iter()
    .map(|g| format!("{}{g}", cluster.namespace))
    .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let parked = loop {
        let parked = cluster.read_topic(&dlq).await;
        let incomplete: Vec<(&String, BTreeSet<String>)> = origin
            .keys()
            .map(|key| {
                let by: BTreeSet<String> = parked
                    .iter()
                    .filter(|m| m.key.as_deref() == Some(key.as_str()))
                    .filter_map(|m| m.header("consumerGroup").map(str::to_string))
                    .collect();
                (key, by)
            })
            .filter(|(_, by)| *by != groups)
            .collect();
        if incomplete.is_empty() {
            break parked;
        }
        assert!(
            Instant::now() < deadline,
            "not every group ({groups:?}) parked every poison in {dlq}; \
             (poison, parked by): {incomplete:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for m in &parked {
        let key = m.key.as_deref().expect("a parked message keeps its key");
        let (partition, offset) = origin[key];
        let (_, _, payload, reason) = poisons
            .iter()
            .find(|(kind, ..)| key.starts_with(&format!("poison-{kind}-")))
            .unwrap_or_else(|| panic!("an unexpected message in {dlq}: {m:?}"));
        let error = m
            .header("error")
            .unwrap_or_else(|| panic!("no error header: {m:?}"));
        assert!(
            error.contains(reason),
            "{key}: error {error:?} should say {reason:?}"
        );
        assert_eq!(m.header("originTopic"), Some(topic.as_str()), "{key}");
        assert_eq!(
            m.header("originPartition"),
            Some(partition.to_string().as_str()),
            "{key}"
        );
        assert_eq!(
            m.header("originOffset"),
            Some(offset.to_string().as_str()),
            "{key}"
        );
        assert_eq!(
            m.payload.as_deref(),
            Some(payload.as_str()),
            "{key}: payload kept"
        );
    }

    // The newer event is in the store's dead letters of the one group that wants
    // OrderCreated here (the inventory-service), with the reason, to be re-driven once that
    // consumer runs the newer release; it never reached a handler.
    let letters: Value = app.json("/api/deadletters").await;
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["consumer"], "inventory-service");
    assert_eq!(letters[0]["eventId"], json!(future_event));
    let error = letters[0]["error"].as_str().unwrap();
    assert!(
        error.contains("schema version 99, newer than this build knows")
            && error.contains("not guessed at"),
        "{error}"
    );

    // And none of them had an effect.
    let touched: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE aggregate_id = $1 OR correlation_id = 'poison'",
    )
    .bind(&fake_order)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(touched, 0, "a poison message changed the store");
    cluster::wait_final_and_published(
        &cluster,
        &db,
        std::slice::from_ref(&order_id),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(app.inventory("MUG").await, (9, 1));
    db.close().await;
    cluster.dispose().await;
}
