//! The command bus over a real SQLite store: retries under contention, idempotency keys,
//! refusals, and replay as of an earlier instant.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use cornershop_app::clock::ManualClock;
use cornershop_app::{
    AppError, Clock, CommandBus, CommandContext, Executed, IdempotencyKey, Reply, SystemClock,
};
use cornershop_domain::{
    AggregateType, Cart, CartCommand, CartStatus, DomainError, DomainEvent, ShippingAddress,
};
use cornershop_store::{EventStore, SqliteEventStore, TimeRange};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn EventStore>,
    bus: CommandBus,
}

async fn harness(clock: Arc<dyn Clock>) -> Harness {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(dir.path())
            .await
            .expect("open store"),
    );
    let keyring = Arc::new(cornershop_app::Keyring::ephemeral(store.clone()));
    let bus = CommandBus::new(store.clone(), clock, keyring);
    Harness {
        _dir: dir,
        store,
        bus,
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 9, 30, 0).unwrap() + chrono::Duration::microseconds(250_001)
}

fn create(cart_id: &str) -> CartCommand {
    CartCommand::Create {
        cart_id: cart_id.into(),
        customer_id: "cust-1".into(),
    }
}

fn add(sku: &str, quantity: u32, unit_price: Decimal) -> CartCommand {
    CartCommand::AddItem {
        sku: sku.into(),
        name: format!("name of {sku}"),
        unit_price: unit_price.into(),
        currency: cornershop_domain::money::SHOP_CURRENCY,
        quantity: quantity.into(),
    }
}

fn checkout() -> CartCommand {
    CartCommand::Checkout {
        order_id: "order-1".into(),
        payment_method: "pm_visa_test".into(),
        shipping_address: ShippingAddress {
            name: "Ada Lovelace".into(),
            line1: "1 Analytical Way".into(),
            line2: None,
            city: "London".into(),
            postal_code: "N1 1AA".into(),
            country_code: "GB".into(),
        },
        email: "ada@example.com".into(),
        phone: None,
    }
}

fn ctx() -> CommandContext {
    CommandContext::new_root()
}

fn ctx_with_key(key: &IdempotencyKey) -> CommandContext {
    CommandContext {
        idempotency_key: Some(key.clone()),
        ..CommandContext::new_root()
    }
}

async fn versions(store: &dyn EventStore, id: &str) -> Vec<u64> {
    store
        .load_aggregate(AggregateType::Cart, id, TimeRange::default())
        .await
        .unwrap()
        .iter()
        .map(|e| e.envelope.version)
        .collect()
}

async fn total_events(store: &dyn EventStore) -> u64 {
    store.stats().await.unwrap().total_events
}

/// The reply an API handler would build from the outcome.
fn cart_reply(e: &Executed<Cart>) -> Reply {
    Reply {
        status: 201,
        body: json!({
            "cartId": e.state.cart_id,
            "version": e.version,
            "lines": e.state.items.len(),
            "total": e.state.total_amount.to_string(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_cart_all_succeed_with_contiguous_versions() {
    const N: usize = 32;
    let h = harness(Arc::new(SystemClock)).await;
    h.bus
        .execute::<Cart>("cart-hot", &create("cart-hot"), &ctx())
        .await
        .unwrap();

    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let bus = h.bus.clone();
            tokio::spawn(async move {
                let ctx = ctx();
                let result = bus
                    .execute::<Cart>(
                        "cart-hot",
                        &add(&format!("SKU-{i}"), i as u32 + 1, dec!(1.25)),
                        &ctx,
                    )
                    .await;
                (ctx, result)
            })
        })
        .collect();

    let mut reported_versions = Vec::new();
    for task in futures_join(tasks).await {
        let (ctx, result) = task;
        let executed = result.unwrap_or_else(|e| panic!("a concurrent add failed: {e}"));
        assert_eq!(executed.events.len(), 1);
        let event = &executed.events[0];
        assert_eq!(event.envelope.version, executed.version);
        assert_eq!(event.envelope.metadata.correlation_id, ctx.correlation_id);
        assert_eq!(event.envelope.metadata.causation_id, ctx.causation_id);
        assert_eq!(event.envelope.metadata.source, "CartService");
        // The state returned is the state right after this command, no later.
        assert_eq!(executed.state.items.len() as u64, executed.version - 1);
        reported_versions.push(executed.version);
    }
    reported_versions.sort_unstable();
    assert_eq!(reported_versions, (2..=N as u64 + 1).collect::<Vec<_>>());

    assert_eq!(
        versions(&*h.store, "cart-hot").await,
        (1..=N as u64 + 1).collect::<Vec<_>>()
    );
    let (cart, version) = h.bus.load::<Cart>("cart-hot").await.unwrap();
    assert_eq!(version, N as u64 + 1);
    assert_eq!(cart.items.len(), N);
    let skus: HashSet<&str> = cart.items.iter().map(|l| l.sku.as_str()).collect();
    assert_eq!(skus.len(), N);
    for line in &cart.items {
        let i: i64 = line.sku.trim_start_matches("SKU-").parse().unwrap();
        assert_eq!(line.quantity as i64, i + 1, "{}", line.sku);
    }
    // 1.25 * (1 + 2 + ... + 32)
    assert_eq!(
        cart.total_amount,
        dec!(1.25) * Decimal::from(N * (N + 1) / 2)
    );
}

/// Awaits spawned tasks, propagating panics.
async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("task panicked"));
    }
    out
}

#[tokio::test]
async fn an_idempotent_repeat_returns_the_same_reply_and_appends_nothing() {
    let h = harness(Arc::new(SystemClock)).await;
    h.bus
        .execute::<Cart>("c1", &create("c1"), &ctx())
        .await
        .unwrap();

    let body = br#"{"sku":"MUG","quantity":2}"#;
    let key = IdempotencyKey::new("key-1".into(), "POST", "/carts/c1/items", body);
    let calls = AtomicUsize::new(0);
    let reply = |e: &Executed<Cart>| {
        calls.fetch_add(1, Ordering::SeqCst);
        cart_reply(e)
    };
    let command = add("MUG", 2, dec!(3.10));

    let first = h
        .bus
        .execute_idempotent::<Cart>("c1", &command, &ctx_with_key(&key), reply)
        .await
        .unwrap();
    assert_eq!(first.status, 201);
    assert_eq!(first.body["version"], 2);
    assert_eq!(first.body["total"], "6.20");
    let stats_after_first = h.store.stats().await.unwrap();
    assert_eq!(stats_after_first.total_events, 2);
    let stored = h
        .store
        .find_idempotent_response("key-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.fingerprint, key.fingerprint);
    assert_eq!(stored.status, 201);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stored.body).unwrap(),
        first.body
    );

    // The same request again (a new context, as a client retry would have).
    let calls_before = calls.load(Ordering::SeqCst);
    let second = h
        .bus
        .execute_idempotent::<Cart>("c1", &command, &ctx_with_key(&key), reply)
        .await
        .unwrap();
    assert_eq!(second, first);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        calls_before,
        "the command is not run again"
    );
    assert_eq!(
        h.store.stats().await.unwrap(),
        stats_after_first,
        "nothing appended"
    );

    // Even after the cart moves on, the repeat answers as the first time did.
    h.bus
        .execute::<Cart>("c1", &add("TEE", 1, dec!(10)), &ctx())
        .await
        .unwrap();
    let third = h
        .bus
        .execute_idempotent::<Cart>("c1", &command, &ctx_with_key(&key), reply)
        .await
        .unwrap();
    assert_eq!(third, first);
    assert_eq!(total_events(&*h.store).await, 3);

    // The same key for a different request is refused, and appends nothing.
    let other = IdempotencyKey::new(
        "key-1".into(),
        "POST",
        "/carts/c1/items",
        br#"{"sku":"MUG","quantity":3}"#,
    );
    assert_ne!(other.fingerprint, key.fingerprint);
    let err = h
        .bus
        .execute_idempotent::<Cart>(
            "c1",
            &add("MUG", 3, dec!(3.10)),
            &ctx_with_key(&other),
            reply,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AppError::IdempotencyKeyReused(k) if k == "key-1"),
        "{err:?}"
    );
    let other_path = IdempotencyKey::new("key-1".into(), "POST", "/carts/c2/items", body);
    let err = h
        .bus
        .execute_idempotent::<Cart>("c1", &command, &ctx_with_key(&other_path), reply)
        .await
        .unwrap_err();
    assert!(matches!(err, AppError::IdempotencyKeyReused(_)), "{err:?}");
    assert_eq!(total_events(&*h.store).await, 3);
    assert_eq!(versions(&*h.store, "c1").await, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_repeats_of_one_idempotent_request_all_get_the_first_reply() {
    const N: usize = 8;
    let h = harness(Arc::new(SystemClock)).await;
    let body = br#"{"customerId":"cust-1"}"#;
    let key = IdempotencyKey::new("create-once".into(), "POST", "/carts/c9", body);

    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let bus = h.bus.clone();
            let key = key.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                bus.execute_idempotent::<Cart>("c9", &create("c9"), &ctx_with_key(&key), cart_reply)
                    .await
            })
        })
        .collect();
    let replies: Vec<Reply> = futures_join(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("a repeat of the request failed: {e}")))
        .collect();
    for r in &replies {
        assert_eq!(r, &replies[0], "every repeat gets the same reply");
    }
    assert_eq!(replies[0].body["version"], 1);
    assert_eq!(total_events(&*h.store).await, 1, "the cart is created once");
}

#[tokio::test]
async fn a_refused_command_appends_nothing() {
    let h = harness(Arc::new(SystemClock)).await;
    h.bus
        .execute::<Cart>("c1", &create("c1"), &ctx())
        .await
        .unwrap();
    h.bus
        .execute::<Cart>("c1", &add("MUG", 1, dec!(2)), &ctx())
        .await
        .unwrap();
    let before = h.store.stats().await.unwrap();

    let err = h
        .bus
        .execute::<Cart>("c1", &add("MUG", 999, dec!(2)), &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppError::Domain(DomainError::LineFull { .. })),
        "{err:?}"
    );
    let err = h
        .bus
        .execute::<Cart>(
            "c1",
            &CartCommand::RemoveItem { sku: "NOPE".into() },
            &ctx(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppError::Domain(DomainError::ItemNotInCart { .. })),
        "{err:?}"
    );
    let err = h
        .bus
        .execute::<Cart>("missing", &add("MUG", 1, dec!(2)), &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppError::Domain(DomainError::NotFound { .. })),
        "{err:?}"
    );

    // A refusal under an idempotency key stores no reply either.
    let key = IdempotencyKey::new("k-refused".into(), "POST", "/carts/c1/items", b"q=0");
    let err = h
        .bus
        .execute_idempotent::<Cart>(
            "c1",
            &add("MUG", 999, dec!(2)),
            &ctx_with_key(&key),
            cart_reply,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppError::Domain(DomainError::LineFull { .. })),
        "{err:?}"
    );
    assert_eq!(
        h.store.find_idempotent_response("k-refused").await.unwrap(),
        None
    );

    assert_eq!(h.store.stats().await.unwrap(), before);
    assert_eq!(versions(&*h.store, "c1").await, vec![1, 2]);
    let (cart, version) = h.bus.load::<Cart>("c1").await.unwrap();
    assert_eq!((cart.items[0].quantity, version), (1, 2));

    // A command that changes nothing (expiring a checked-out cart) appends nothing and
    // reports the current version.
    h.bus
        .execute::<Cart>("c1", &checkout(), &ctx())
        .await
        .unwrap();
    let executed = h
        .bus
        .execute::<Cart>("c1", &CartCommand::Expire, &ctx())
        .await
        .unwrap();
    assert!(executed.events.is_empty());
    assert_eq!(executed.version, 3);
    assert_eq!(executed.state.status, CartStatus::CheckedOut);
    assert_eq!(total_events(&*h.store).await, 3);
}

#[tokio::test]
async fn replay_to_an_earlier_instant_returns_the_older_state_and_version() {
    let clock = Arc::new(ManualClock::new(t0()));
    let h = harness(clock.clone()).await;
    let second = chrono::Duration::seconds(1);

    // v1 at t0, v2 at t0+1s, v3 at t0+2s, v4 at t0+3s.
    let mut states = Vec::new();
    for (i, command) in [
        create("c1"),
        add("MUG", 2, dec!(4.00)),
        add("TEE", 1, dec!(15.50)),
        CartCommand::RemoveItem { sku: "MUG".into() },
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            clock.advance(second);
        }
        let executed = h.bus.execute::<Cart>("c1", command, &ctx()).await.unwrap();
        assert_eq!(executed.version, i as u64 + 1);
        assert_eq!(
            executed.events[0].envelope.timestamp,
            t0() + second * i as i32
        );
        states.push(executed.state);
    }
    let state_json = |i: usize| serde_json::to_value(&states[i]).unwrap();
    let at = |s: i32| t0() + second * s;

    for (to, version) in [(at(0), 1), (at(1), 2), (at(2), 3), (at(3), 4), (at(100), 4)] {
        let r = h
            .bus
            .replay(AggregateType::Cart, "c1", None, Some(to))
            .await
            .unwrap();
        assert_eq!(r.version, version, "replay to {to}");
        assert_eq!(
            r.state,
            state_json(version as usize - 1),
            "state as of {to}"
        );
        let listed: Vec<u64> = r.events.iter().map(|e| e.envelope.version).collect();
        assert_eq!(listed, (1..=version).collect::<Vec<_>>());
    }
    // Concretely, as of t0+1s the cart held the two mugs, and later it does not.
    let r = h
        .bus
        .replay(AggregateType::Cart, "c1", None, Some(at(1)))
        .await
        .unwrap();
    assert_eq!(r.state["items"][0]["sku"], "MUG");
    assert_eq!(r.state["totalAmount"], "8.00");
    let now = h
        .bus
        .replay(AggregateType::Cart, "c1", None, None)
        .await
        .unwrap();
    assert_eq!(now.version, 4);
    assert_eq!(now.state["items"].as_array().unwrap().len(), 1);
    assert_eq!(now.state["items"][0]["sku"], "TEE");

    // One microsecond before an event excludes it.
    let r = h
        .bus
        .replay(
            AggregateType::Cart,
            "c1",
            None,
            Some(at(2) - chrono::Duration::microseconds(1)),
        )
        .await
        .unwrap();
    assert_eq!(r.version, 2);

    // A window lists only its events but folds everything up to its end.
    let r = h
        .bus
        .replay(AggregateType::Cart, "c1", Some(at(1)), Some(at(2)))
        .await
        .unwrap();
    assert_eq!(r.version, 3);
    assert_eq!(r.state, state_json(2));
    let listed: Vec<u64> = r.events.iter().map(|e| e.envelope.version).collect();
    assert_eq!(listed, vec![2, 3]);

    // Before the cart existed: the initial state, version 0, no events.
    let r = h
        .bus
        .replay(AggregateType::Cart, "c1", None, Some(at(-1)))
        .await
        .unwrap();
    assert_eq!(r.version, 0);
    assert_eq!(r.state, serde_json::to_value(Cart::default()).unwrap());
    assert!(r.events.is_empty());

    // Replay folds with the same evolve as the write side: the decoded events agree.
    let decoded: Vec<DomainEvent> = now
        .events
        .iter()
        .map(|e| e.envelope.decode().unwrap())
        .collect();
    assert_eq!(
        serde_json::to_value(cornershop_domain::fold::<Cart>(&decoded)).unwrap(),
        state_json(3)
    );

    let err = h
        .bus
        .replay(AggregateType::Cart, "nope", None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppError::Domain(DomainError::NotFound { .. })),
        "{err:?}"
    );
    let err = h
        .bus
        .replay(AggregateType::Cart, "c1", Some(at(2)), Some(at(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, AppError::Invalid(_)), "{err:?}");
}

/// A bus keeps the states it has seen, but never answers from them alone: what another
/// process (another bus on the same store) appended meanwhile is read and applied.
#[tokio::test]
async fn a_cached_state_catches_up_with_appends_from_elsewhere() {
    let h = harness(Arc::new(SystemClock)).await;
    let elsewhere = CommandBus::new(
        h.store.clone(),
        Arc::new(SystemClock),
        h.bus.keyring().clone(),
    );
    let ctx = ctx();
    h.bus
        .execute::<Cart>("c1", &create("c1"), &ctx)
        .await
        .unwrap();
    h.bus
        .execute::<Cart>("c1", &add("A", 1, dec!(2.00)), &ctx)
        .await
        .unwrap();
    // Cached by `h.bus` at version 2; another process adds two lines.
    elsewhere
        .execute::<Cart>("c1", &add("B", 2, dec!(3.00)), &ctx)
        .await
        .unwrap();
    elsewhere
        .execute::<Cart>("c1", &add("C", 1, dec!(1.50)), &ctx)
        .await
        .unwrap();
    let (cart, version) = h.bus.load::<Cart>("c1").await.unwrap();
    assert_eq!(version, 4);
    let skus: Vec<&str> = cart.items.iter().map(|i| i.sku.as_str()).collect();
    assert_eq!(skus, ["A", "B", "C"]);
    // And a command decided on it appends at the right version.
    let executed = h
        .bus
        .execute::<Cart>("c1", &add("D", 1, dec!(1.00)), &ctx)
        .await
        .unwrap();
    assert_eq!(executed.version, 5);
    assert_eq!(versions(&*h.store, "c1").await, [1, 2, 3, 4, 5]);
    let (fresh, _) = elsewhere.load::<Cart>("c1").await.unwrap();
    assert_eq!(fresh, executed.state);
}

#[tokio::test]
async fn a_continuing_command_joins_the_aggregates_business_transaction() {
    let h = harness(Arc::new(SystemClock)).await;
    let opened = CommandContext {
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        ..ctx()
    };
    h.bus
        .execute::<Cart>("cart-c", &create("cart-c"), &opened)
        .await
        .unwrap();
    // A request of its own (another correlation id and trace) that continues the cart's
    // transaction, once from the bus's cached state and once from a cold bus (another
    // process) that reads the stream.
    let cold = CommandBus::new(
        h.store.clone(),
        Arc::new(SystemClock),
        h.bus.keyring().clone(),
    );
    for (bus, sku) in [(&h.bus, "A"), (&cold, "B")] {
        let later = ctx();
        assert_ne!(later.correlation_id, opened.correlation_id);
        let done = bus
            .execute::<Cart>(
                "cart-c",
                &add(sku, 1, dec!(1.00)),
                &later.clone().continuing(),
            )
            .await
            .unwrap();
        let event = &done.events[0];
        assert_eq!(
            event.envelope.metadata.correlation_id,
            opened.correlation_id
        );
        assert_eq!(event.envelope.metadata.causation_id, later.causation_id);
        assert_eq!(event.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    // Without `continuing`, a command keeps its own.
    let own = ctx();
    let done = h
        .bus
        .execute::<Cart>("cart-c", &add("C", 1, dec!(1.00)), &own)
        .await
        .unwrap();
    assert_eq!(
        done.events[0].envelope.metadata.correlation_id,
        own.correlation_id
    );
}

#[tokio::test]
async fn a_customer_acting_for_itself_finds_another_customers_cart_missing() {
    let h = harness(Arc::new(SystemClock)).await;
    h.bus
        .execute::<Cart>("cart-o", &create("cart-o"), &ctx())
        .await
        .unwrap();
    let as_customer = |who: &str| CommandContext {
        acting_for: Some(who.to_string()),
        ..ctx()
    };
    let before = total_events(h.store.as_ref()).await;
    let refused = h
        .bus
        .execute::<Cart>("cart-o", &add("A", 1, dec!(1.00)), &as_customer("cust-2"))
        .await
        .unwrap_err();
    let missing = h
        .bus
        .execute::<Cart>(
            "cart-none",
            &add("A", 1, dec!(1.00)),
            &as_customer("cust-2"),
        )
        .await
        .unwrap_err();
    // Exactly the refusal of a cart that does not exist.
    assert!(
        matches!(&refused, AppError::Domain(DomainError::NotFound { .. })),
        "{refused:?}"
    );
    assert_eq!(refused.to_string(), missing.to_string());
    assert_eq!(total_events(h.store.as_ref()).await, before);
    // Its owner, and anyone not restricted to one customer, may.
    for allowed in [as_customer("cust-1"), ctx()] {
        h.bus
            .execute::<Cart>("cart-o", &add("A", 1, dec!(1.00)), &allowed)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_streamed_command_hands_back_the_whole_stream_read_once() {
    let h = harness(Arc::new(SystemClock)).await;
    for command in [create("cart-s"), add("A", 1, dec!(1.00))] {
        h.bus
            .execute::<Cart>("cart-s", &command, &ctx())
            .await
            .unwrap();
    }
    let (done, reply) = h
        .bus
        .execute_streamed::<Cart>("cart-s", &add("B", 2, dec!(2.00)), &ctx(), cart_reply)
        .await
        .unwrap();
    let done = done.expect("not a repeat");
    assert_eq!(reply.status, cart_reply(&done).status);
    let versions: Vec<u64> = done.stream.iter().map(|e| e.envelope.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(
        done.stream[2].envelope.event_id,
        done.events[0].envelope.event_id
    );
    assert_eq!(done.state.items.len(), 2);
    // A plain command leaves the stream out.
    let plain = h
        .bus
        .execute::<Cart>("cart-s", &add("C", 1, dec!(1.00)), &ctx())
        .await
        .unwrap();
    assert!(plain.stream.is_empty());
}
