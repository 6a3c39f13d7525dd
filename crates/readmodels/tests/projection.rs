//! The projection's rules on both backends: convergence whatever the order of delivery
//! (payment events first included), exactly-once effects under redelivery and after a
//! consumer is killed between its read-model write and its checkpoint, and a rebuild that
//! swaps in the same models while the live projection keeps writing.
//!
//! The PostgreSQL variants need `CORNERSHOP_TEST_DATABASE_URL` (a user allowed to
//! `CREATE DATABASE`); each test gets a database of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use cornershop_app::{CommandBus, SystemClock};
use cornershop_messaging::{run_embedded, Consumer, Handler, HandlerError, RetryPolicy};
use cornershop_readmodels::testkit::{Generator, Line, OrderPlan, Outcome};
use cornershop_readmodels::*;
use cornershop_store::{EventStore, SqliteEventStore, StoredEvent};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rust_decimal_macros::dec;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database on the test PostgreSQL server.
async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let admin = std::env::var("CORNERSHOP_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "CORNERSHOP_TEST_DATABASE_URL is not set, so the PostgreSQL read-model tests cannot \
             run. Start PostgreSQL with `./scripts/stack.sh start` and export \
             CORNERSHOP_TEST_DATABASE_URL=postgres://cornershop:cornershop@127.0.0.1:5433/cornershop \
             (or run ./scripts/test.sh)"
        )
    });
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to CORNERSHOP_TEST_DATABASE_URL: {e}"));
    let name = format!("cs_rm_{:x}", rand::random::<u64>());
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    // The server's URL with another database, its parameters (sslmode, ...) kept.
    let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
    match base.rsplit_once('/') {
        Some((server, _)) if query.is_empty() => format!("{server}/{name}"),
        Some((server, _)) => format!("{server}/{name}?{query}"),
        None => panic!("CORNERSHOP_TEST_DATABASE_URL must end with /<database>"),
    }
}

async fn read_models(backend: Backend, dir: &std::path::Path) -> Arc<SqlReadModels> {
    Arc::new(match backend {
        Backend::Sqlite => open_sqlite(dir).await.expect("open the SQLite read models"),
        Backend::Postgres => connect_postgres(&fresh_pg_database().await)
            .await
            .expect("connect the PostgreSQL read models"),
    })
}

struct World {
    _dir: tempfile::TempDir,
    store: Arc<dyn EventStore>,
    generator: Generator,
    next: u32,
}

fn line(sku: &str, quantity: u32, price: rust_decimal::Decimal) -> Line {
    Line {
        sku: sku.into(),
        name: format!("Product {sku}"),
        quantity,
        unit_price: price,
    }
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteEventStore::open(&dir.path().join("events"))
                .await
                .unwrap(),
        );
        let mut generator = Generator::new(store.clone());
        generator.stock_batch = 1;
        let at = Utc.with_ymd_and_hms(2030, 1, 1, 9, 0, 0).unwrap();
        generator
            .stock("A", "Product A", dec!(2.50), 1000, 995, at)
            .await
            .unwrap();
        generator
            .stock("B", "Product B", dec!(10.00), 1000, 5, at)
            .await
            .unwrap();
        Self {
            _dir: dir,
            store,
            generator,
            next: 0,
        }
    }

    async fn order(&mut self, customer: &str, lines: Vec<Line>, outcome: Outcome) -> String {
        self.next += 1;
        let order_id = format!("order-{:04}", self.next);
        let at = Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 0).unwrap()
            + chrono::Duration::minutes(i64::from(self.next));
        self.generator
            .order(&OrderPlan {
                order_id: order_id.clone(),
                customer_id: customer.into(),
                lines,
                outcome,
                at,
                step: chrono::Duration::milliseconds(7),
            })
            .await
            .unwrap();
        order_id
    }

    /// One order of every kind.
    async fn every_kind(&mut self) {
        self.order(
            "ada",
            vec![line("A", 2, dec!(2.50)), line("B", 1, dec!(10.00))],
            Outcome::Delivered,
        )
        .await;
        self.order("ada", vec![line("A", 1, dec!(2.50))], Outcome::Declined)
            .await;
        self.order(
            "bob",
            vec![line("B", 2, dec!(10.00))],
            Outcome::CancelledAfterPayment,
        )
        .await;
        self.order("bob", vec![line("A", 3, dec!(2.50))], Outcome::OutOfStock)
            .await;
        self.order("cy", vec![line("B", 1, dec!(10.00))], Outcome::Shipped)
            .await;
        self.order("cy", vec![line("A", 1, dec!(2.50))], Outcome::Confirmed)
            .await;
        self.order("dee", vec![line("A", 4, dec!(2.50))], Outcome::Created)
            .await;
        self.generator.flush().await.unwrap();
    }

    async fn log(&self) -> Vec<StoredEvent> {
        self.store.read_log(0, 1_000_000).await.unwrap()
    }

    async fn projected(&self) -> Vec<ProjectedEvent> {
        self.log()
            .await
            .iter()
            .filter(|e| is_projected(&e.envelope.event_type))
            .map(|e| ProjectedEvent::from_stored(e).unwrap())
            .collect()
    }

    /// [`projected`](Self::projected), without the events the read models cannot take.
    async fn projected_fit(&self) -> Vec<ProjectedEvent> {
        self.projected()
            .await
            .into_iter()
            .filter(|e| e.event.aggregate_id() != "order-unfit")
            .collect()
    }

    fn bus(&self) -> CommandBus {
        CommandBus::new(
            self.store.clone(),
            Arc::new(SystemClock),
            Arc::new(cornershop_app::Keyring::ephemeral(self.store.clone())),
        )
    }
}

/// Everything the read models show.
#[derive(Debug, PartialEq)]
struct Snapshot {
    orders: BTreeMap<String, OrderReadModel>,
    listed: Vec<String>,
    inventory: Vec<InventoryReadModel>,
    report: SalesReport,
}

async fn snapshot(rm: &dyn ReadModelStore) -> Snapshot {
    let page = rm
        .orders(&OrderQuery {
            limit: 100_000,
            ..OrderQuery::default()
        })
        .await
        .unwrap();
    let mut orders = BTreeMap::new();
    for id in rm.order_ids(None, 100_000).await.unwrap() {
        if let Some(order) = rm.order(&id).await.unwrap() {
            orders.insert(id, order);
        }
    }
    Snapshot {
        listed: page.orders.iter().map(|o| o.order_id.clone()).collect(),
        orders,
        inventory: rm.inventory(false).await.unwrap(),
        report: rm
            .sales_report(&SalesQuery {
                from: None,
                to: None,
                group_by: GroupBy::Hour,
                top: 10,
            })
            .await
            .unwrap(),
    }
}

async fn apply_one_by_one(rm: &dyn ReadModelStore, events: &[ProjectedEvent]) -> usize {
    let mut applied = 0;
    for event in events {
        if rm.apply(REPORTING, event).await.unwrap() {
            applied += 1;
        }
    }
    applied
}

async fn assert_verified(world: &World, rm: &dyn ReadModelStore) {
    let report = verify::verify(&world.bus(), rm, 0, Duration::ZERO)
        .await
        .unwrap();
    assert!(
        report.mismatches.is_empty(),
        "verify found mismatches: {:#?}",
        report.mismatches
    );
    assert_eq!(report.orders_checked, world.next as u64);
}

async fn converges_whatever_the_order(backend: Backend) {
    let mut world = World::new().await;
    world.every_kind().await;
    let events = world.projected().await;
    let dir = tempfile::tempdir().unwrap();

    let in_order = read_models(backend, &dir.path().join("in-order")).await;
    assert_eq!(
        apply_one_by_one(in_order.as_ref(), &events).await,
        events.len()
    );
    let expected = snapshot(in_order.as_ref()).await;
    assert_verified(&world, in_order.as_ref()).await;
    assert_eq!(expected.orders["order-0001"].status, "Delivered");
    assert_eq!(
        expected.orders["order-0001"].payment_status.as_deref(),
        Some("Completed")
    );

    // Payment events first (under Kafka they come on another topic), then every order
    // event newest first, then the stock events newest first.
    let rank = |e: &ProjectedEvent| match e.event.aggregate_type() {
        cornershop_domain::AggregateType::Payment => 0,
        cornershop_domain::AggregateType::Order => 1,
        _ => 2,
    };
    let mut payments_first = events.clone();
    payments_first.reverse();
    payments_first.sort_by_key(rank);
    let rm = read_models(backend, &dir.path().join("payments-first")).await;
    // The payment of order 1 completes before the order exists: not shown yet, but kept.
    let first_payments: Vec<_> = payments_first
        .iter()
        .filter(|e| {
            e.event.aggregate_id() == cornershop_domain::ids::payment_id_for(&"order-0001".into())
        })
        .cloned()
        .collect();
    assert_eq!(first_payments.len(), 3);
    apply_one_by_one(rm.as_ref(), &first_payments).await;
    assert_eq!(rm.order("order-0001").await.unwrap(), None);
    assert_eq!(rm.order_ids(None, 10).await.unwrap(), ["order-0001"]);
    apply_one_by_one(rm.as_ref(), &payments_first).await;
    assert_eq!(
        snapshot(rm.as_ref()).await,
        expected,
        "payment events first"
    );

    // Random interleavings.
    for seed in 1..=3u64 {
        let mut shuffled = events.clone();
        shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let rm = read_models(backend, &dir.path().join(format!("shuffled-{seed}"))).await;
        apply_one_by_one(rm.as_ref(), &shuffled).await;
        assert_eq!(snapshot(rm.as_ref()).await, expected, "shuffle {seed}");
    }
}

#[tokio::test]
async fn sqlite_events_converge_whatever_the_order_of_delivery() {
    converges_whatever_the_order(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_events_converge_whatever_the_order_of_delivery() {
    converges_whatever_the_order(Backend::Postgres).await;
}

async fn applying_twice_changes_nothing(backend: Backend) {
    let mut world = World::new().await;
    world.every_kind().await;
    let events = world.projected().await;
    let dir = tempfile::tempdir().unwrap();
    let rm = read_models(backend, dir.path()).await;
    apply_one_by_one(rm.as_ref(), &events).await;
    let before = snapshot(rm.as_ref()).await;
    let state = rm.projection_state(REPORTING).await.unwrap().unwrap();
    assert_eq!(state.events_applied, events.len() as u64);
    assert_eq!(state.position, world.log().await.last().unwrap().position);

    assert_eq!(
        apply_one_by_one(rm.as_ref(), &events).await,
        0,
        "every event is known"
    );
    assert_eq!(snapshot(rm.as_ref()).await, before);
    let again = rm.projection_state(REPORTING).await.unwrap().unwrap();
    assert_eq!(again.events_applied, state.events_applied);
    // Stock is counted once: B had 1 + 2 + 1 reserved; 2 of them released (back to
    // available), the 2 of the delivered and the shipped order gone with the shipments.
    let b = before.inventory.iter().find(|s| s.sku == "B").unwrap();
    assert_eq!((b.available, b.reserved), (998, 0));
    assert!(b.low_stock == (998 <= 5));
    assert_verified(&world, rm.as_ref()).await;
}

#[tokio::test]
async fn sqlite_an_event_applied_twice_changes_nothing() {
    applying_twice_changes_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_an_event_applied_twice_changes_nothing() {
    applying_twice_changes_nothing(Backend::Postgres).await;
}

/// The projection, killed on its `kill_at`-th event right after the read-model commit and
/// before the transport could save its checkpoint: it never returns.
struct KilledAfterWrite {
    inner: ReportingProjection,
    kill_at: usize,
    /// Whether it takes the consumer's batches in one transaction, as the projection does.
    batches: bool,
    seen: std::sync::atomic::AtomicUsize,
    killed: tokio::sync::Notify,
}

impl KilledAfterWrite {
    async fn handled(&self, events: usize) {
        let n = self
            .seen
            .fetch_add(events, std::sync::atomic::Ordering::SeqCst)
            + events;
        if n >= self.kill_at {
            self.killed.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl Handler for KilledAfterWrite {
    fn name(&self) -> &'static str {
        REPORTING
    }
    fn handles(&self, event_type: &str) -> bool {
        self.inner.handles(event_type)
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        self.inner.handle(event).await?;
        self.handled(1).await;
        Ok(())
    }
    fn batches(&self) -> bool {
        self.batches
    }
    async fn handle_batch(&self, events: &[&StoredEvent]) -> Result<(), HandlerError> {
        self.inner.handle_batch(events).await?;
        self.handled(events.len()).await;
        Ok(())
    }
}

/// Runs the projection as the embedded consumer until its checkpoint reaches the log's
/// head, then stops it.
async fn project_to_the_head(world: &World, rm: &Arc<SqlReadModels>) {
    let consumer = Consumer {
        handler: Arc::new(ReportingProjection::new(rm.clone(), world.store.clone())),
        store: world.store.clone(),
        policy: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
        },
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_embedded(consumer, stopped));
    let head = world.store.head_position().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while world.store.checkpoint(REPORTING).await.unwrap() < head {
        assert!(
            std::time::Instant::now() < deadline,
            "the consumer never caught up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    let _ = task.await;
}

async fn killed_between_write_and_checkpoint(backend: Backend, batches: bool) {
    let mut world = World::new().await;
    world.every_kind().await;
    let dir = tempfile::tempdir().unwrap();
    let rm = read_models(backend, dir.path()).await;
    let projected = world.projected().await;
    let kill_at = projected.len() - 3;
    let handler = Arc::new(KilledAfterWrite {
        inner: ReportingProjection::new(rm.clone(), world.store.clone()),
        kill_at,
        batches,
        seen: Default::default(),
        killed: Default::default(),
    });
    let consumer = Consumer {
        handler: handler.clone(),
        store: world.store.clone(),
        policy: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        },
    };
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_embedded(consumer, stopped));
    tokio::time::timeout(Duration::from_secs(30), handler.killed.notified())
        .await
        .expect("the projection reached the kill point");
    task.abort();
    let _ = task.await;
    let state = rm.projection_state(REPORTING).await.unwrap().unwrap();
    let handled = handler.seen.load(std::sync::atomic::Ordering::SeqCst) as u64;
    assert!(handled >= kill_at as u64);
    if batches {
        assert!(
            handled > 1,
            "the events came one by one ({handled}), not in a batch"
        );
    }
    assert_eq!(
        state.events_applied, handled,
        "the writes up to the kill are committed"
    );
    assert_eq!(
        world.store.checkpoint(REPORTING).await.unwrap(),
        0,
        "the transport never saved a checkpoint"
    );

    // Restarted: every event is delivered again, from the start.
    project_to_the_head(&world, &rm).await;
    let state = rm.projection_state(REPORTING).await.unwrap().unwrap();
    assert_eq!(
        state.events_applied,
        projected.len() as u64,
        "each event applied once"
    );
    assert_verified(&world, rm.as_ref()).await;
}

#[tokio::test]
async fn sqlite_a_consumer_killed_between_write_and_checkpoint_applies_nothing_twice() {
    killed_between_write_and_checkpoint(Backend::Sqlite, false).await;
}

#[tokio::test]
async fn postgres_a_consumer_killed_between_write_and_checkpoint_applies_nothing_twice() {
    killed_between_write_and_checkpoint(Backend::Postgres, false).await;
}

#[tokio::test]
async fn sqlite_a_consumer_killed_between_a_batch_and_its_checkpoint_applies_nothing_twice() {
    killed_between_write_and_checkpoint(Backend::Sqlite, true).await;
}

#[tokio::test]
async fn postgres_a_consumer_killed_between_a_batch_and_its_checkpoint_applies_nothing_twice() {
    killed_between_write_and_checkpoint(Backend::Postgres, true).await;
}

/// `apply_all` applies a batch in one transaction as one by one would: each event once
/// (a repeat inside a batch answers false and changes nothing), and a batch that fails
/// keeps nothing of itself.
async fn a_batch_applies_as_one_by_one(backend: Backend) {
    let mut world = World::new().await;
    world.every_kind().await;
    let events = world.projected().await;
    let dir = tempfile::tempdir().unwrap();
    let one_by_one = read_models(backend, &dir.path().join("one-by-one")).await;
    apply_one_by_one(one_by_one.as_ref(), &events).await;
    let expected = snapshot(one_by_one.as_ref()).await;

    let rm = read_models(backend, &dir.path().join("batches")).await;
    let half = events.len() / 2;
    let applied = rm.apply_all(REPORTING, &events[..half]).await.unwrap();
    assert_eq!(applied, vec![true; half]);

    // A batch with an event the read models cannot take, in its middle: nothing of it.
    let mut unfit = events
        .iter()
        .find(|e| matches!(e.event, cornershop_domain::DomainEvent::OrderCreated(_)))
        .unwrap()
        .clone();
    unfit.event_id = uuid::Uuid::new_v4();
    if let cornershop_domain::DomainEvent::OrderCreated(order) = &mut unfit.event {
        order.total_amount = dec!(0.001);
    }
    let mut failing = events[half..].to_vec();
    failing.insert(failing.len() / 2, unfit);
    let error = rm.apply_all(REPORTING, &failing).await.unwrap_err();
    assert!(matches!(error, ReadModelError::BadEvent { .. }), "{error}");
    let state = rm.projection_state(REPORTING).await.unwrap().unwrap();
    assert_eq!(
        state.events_applied, half as u64,
        "the failed batch left nothing"
    );

    // Every event again: the first half are repeats, the rest new.
    let applied = rm.apply_all(REPORTING, &events).await.unwrap();
    let mut wanted = vec![false; half];
    wanted.resize(events.len(), true);
    assert_eq!(applied, wanted);
    assert_eq!(snapshot(rm.as_ref()).await, expected);
    let state = rm.projection_state(REPORTING).await.unwrap().unwrap();
    assert_eq!(state.events_applied, events.len() as u64);
    assert_eq!(state.position, world.log().await.last().unwrap().position);
    assert_verified(&world, rm.as_ref()).await;
}

#[tokio::test]
async fn sqlite_a_batch_applies_as_one_by_one() {
    a_batch_applies_as_one_by_one(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_a_batch_applies_as_one_by_one() {
    a_batch_applies_as_one_by_one(Backend::Postgres).await;
}

async fn rebuild_while_live(backend: Backend) {
    let mut world = World::new().await;
    for i in 0..60 {
        let outcome = [
            Outcome::Delivered,
            Outcome::Declined,
            Outcome::Confirmed,
            Outcome::CancelledAfterPayment,
            Outcome::OutOfStock,
        ][i % 5];
        world
            .order(
                &format!("c{}", i % 7),
                vec![line("A", 1 + (i % 3) as u32, dec!(2.50))],
                outcome,
            )
            .await;
    }
    world.generator.flush().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rm = read_models(backend, &dir.path().join("live")).await;
    apply_one_by_one(rm.as_ref(), &world.projected().await).await;

    // More orders arrive and are projected live while the rebuild runs.
    let store = world.store.clone();
    let live = {
        let rm = rm.clone();
        let mut world = world;
        tokio::spawn(async move {
            let mut done = world.projected().await.len();
            for i in 0..30 {
                world
                    .order(
                        "late",
                        vec![line("B", 1, dec!(10.00))],
                        if i % 2 == 0 {
                            Outcome::Delivered
                        } else {
                            Outcome::Declined
                        },
                    )
                    .await;
                world.generator.flush().await.unwrap();
                let events = world.projected().await;
                apply_one_by_one(rm.as_ref(), &events[done..]).await;
                done = events.len();
            }
            world
        })
    };
    let first = rm
        .rebuild(REPORTING, store.as_ref(), &|_| {})
        .await
        .unwrap();
    let world = live.await.unwrap();
    // Whatever the live projection saw before the swap, it sees everything once more.
    apply_one_by_one(rm.as_ref(), &world.projected().await).await;
    let rebuilt = snapshot(rm.as_ref()).await;

    let reference = read_models(backend, &dir.path().join("reference")).await;
    apply_one_by_one(reference.as_ref(), &world.projected().await).await;
    assert_eq!(rebuilt, snapshot(reference.as_ref()).await);
    assert_eq!(first.generation, 2);
    assert_eq!(rebuilt.orders.len(), 90);

    // A second rebuild (names of the swapped tables and indexes are reusable).
    let second = rm
        .rebuild(REPORTING, world.store.as_ref(), &|_| {})
        .await
        .unwrap();
    assert_eq!(second.generation, 3);
    assert_eq!(second.position, world.store.head_position().await.unwrap());
    assert_eq!(snapshot(rm.as_ref()).await, rebuilt);
    let state = rm.projection_state(REPORTING).await.unwrap().unwrap();
    assert_eq!(
        state.events_applied,
        world.projected().await.len() as u64,
        "the rebuilt state counts each event once"
    );
    assert_verified(&world, rm.as_ref()).await;

    // A projection that does not exist.
    assert!(matches!(
        rm.rebuild("nope", world.store.as_ref(), &|_| {}).await,
        Err(ReadModelError::UnknownProjection(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_rebuild_swaps_in_the_same_models_while_the_live_projection_writes() {
    rebuild_while_live(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_rebuild_swaps_in_the_same_models_while_the_live_projection_writes() {
    rebuild_while_live(Backend::Postgres).await;
}

/// A rebuild sends a page's effects as multi-row statements, kind by kind (batch.rs); here
/// one page holds restocks between the reservations, releases and shipments of the same
/// SKUs, several moves of one SKU, and orders of every outcome: the rebuilt models must be
/// the ones the live projection builds event by event, and agree with the aggregates.
async fn rebuild_in_batches(backend: Backend) {
    let mut world = World::new().await;
    let at = Utc.with_ymd_and_hms(2030, 1, 1, 9, 30, 0).unwrap();
    let outcomes = [
        Outcome::Delivered,
        Outcome::Shipped,
        Outcome::Declined,
        Outcome::CancelledAfterPayment,
        Outcome::OutOfStock,
        Outcome::Confirmed,
    ];
    for i in 0..48 {
        if i % 8 == 4 {
            let quantity = 300 + i as i64;
            world
                .generator
                .stock("A", "Product A", dec!(2.50), quantity, 995, at)
                .await
                .unwrap();
            world
                .generator
                .stock("B", "Product B", dec!(10.00), quantity, 5, at)
                .await
                .unwrap();
        }
        world
            .order(
                &format!("c{}", i % 5),
                vec![
                    line("A", 1 + (i % 3) as u32, dec!(2.50)),
                    line("B", 1 + (i % 2) as u32, dec!(10.00)),
                ],
                outcomes[i % outcomes.len()],
            )
            .await;
    }
    world.generator.flush().await.unwrap();
    let events = world.projected().await;
    assert!(events.len() < 2000, "one page of the rebuild");
    let dir = tempfile::tempdir().unwrap();
    let reference = read_models(backend, &dir.path().join("reference")).await;
    apply_one_by_one(reference.as_ref(), &events).await;
    let rm = read_models(backend, &dir.path().join("rebuilt")).await;
    let report = rm
        .rebuild(REPORTING, world.store.as_ref(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.events_applied, events.len() as u64);
    assert_eq!(
        snapshot(rm.as_ref()).await,
        snapshot(reference.as_ref()).await
    );
    assert_verified(&world, rm.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_rebuild_in_multi_row_statements_builds_what_the_live_projection_builds() {
    rebuild_in_batches(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_rebuild_in_multi_row_statements_builds_what_the_live_projection_builds() {
    rebuild_in_batches(Backend::Postgres).await;
}

#[test]
fn cursors_are_opaque_and_round_trip() {
    let cursor = OrderCursor {
        created_us: 1_893_456_000_000_000,
        order_id: "order:with:colons".into(),
    };
    let token = cursor.encode();
    assert!(!token.contains("order"));
    assert_eq!(OrderCursor::decode(&token), Some(cursor));
    for bad in ["", "zz", "abc", "7631", &"00".repeat(600)] {
        assert_eq!(OrderCursor::decode(bad), None, "{bad}");
    }
}

/// A rebuild that fails partway (here the code it runs panics; a database error takes the
/// same way out) releases its lease and records why; the next rebuild runs and clears it.
async fn failed_rebuild_releases_its_lease(backend: Backend) {
    let mut world = World::new().await;
    for i in 0..5 {
        world
            .order(
                &format!("c{i}"),
                vec![line("A", 1, dec!(2.50))],
                Outcome::Delivered,
            )
            .await;
    }
    world.generator.flush().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rm = read_models(backend, dir.path()).await;
    apply_one_by_one(rm.as_ref(), &world.projected().await).await;

    let failed = rm
        .rebuild(REPORTING, world.store.as_ref(), &|progress| {
            if progress.events > 0 {
                panic!("the disk went away mid-rebuild");
            }
        })
        .await;
    match failed {
        Err(ReadModelError::RebuildFailed(why)) => {
            assert!(why.contains("the disk went away mid-rebuild"), "{why}")
        }
        other => panic!("expected a failed rebuild, got {other:?}"),
    }
    let state = rm.projection_state(REPORTING).await.unwrap().unwrap();
    let error = state.rebuild_error.expect("the failure is recorded");
    assert!(error.contains("the disk went away"), "{error}");
    assert_eq!(state.generation, 1, "nothing was swapped in");

    // The lease is free: the next rebuild runs (no "already running"), and clears the error.
    let report = rm
        .rebuild(REPORTING, world.store.as_ref(), &|_| {})
        .await
        .expect("the next rebuild runs");
    assert_eq!(report.generation, 2);
    let state = rm.projection_state(REPORTING).await.unwrap().unwrap();
    assert_eq!(state.rebuild_error, None);
    assert_verified(&world, rm.as_ref()).await;
}

#[tokio::test]
async fn sqlite_a_failed_rebuild_releases_its_lease_and_the_next_one_runs() {
    failed_rebuild_releases_its_lease(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_a_failed_rebuild_releases_its_lease_and_the_next_one_runs() {
    failed_rebuild_releases_its_lease(Backend::Postgres).await;
}

/// A batch with an event the read models cannot take: the batch's transaction keeps
/// nothing, the consumer delivers its events one by one, the unfit one is dead-lettered
/// and every other is applied once.
async fn an_unfit_event_in_a_batch(backend: Backend) {
    let mut world = World::new().await;
    world.every_kind().await;
    // An order whose total is not a whole number of cents, among the others.
    let created = world
        .log()
        .await
        .into_iter()
        .find(|e| e.envelope.event_type == "OrderCreated")
        .unwrap();
    let mut data = created.envelope.data.clone();
    data["orderId"] = serde_json::json!("order-unfit");
    data["totalAmount"] = serde_json::json!("0.001");
    world
        .store
        .append(cornershop_store::AppendRequest::new(
            cornershop_domain::AggregateType::Order,
            "order-unfit",
            0,
            vec![cornershop_store::NewEvent {
                event_id: uuid::Uuid::new_v4(),
                event_type: "OrderCreated".into(),
                schema_version: created.envelope.schema_version,
                timestamp: created.envelope.timestamp,
                data,
                metadata: created.envelope.metadata.clone(),
                trace_id: None,
            }],
        ))
        .await
        .unwrap();
    world
        .order("eve", vec![line("A", 1, dec!(2.50))], Outcome::Confirmed)
        .await;
    world.generator.flush().await.unwrap();
    let fit = world.projected_fit().await;

    let dir = tempfile::tempdir().unwrap();
    let rm = read_models(backend, dir.path()).await;
    project_to_the_head(&world, &rm).await;
    let letters = world.store.dead_letters(None).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].consumer, REPORTING);
    assert!(letters[0].error.contains("cents"), "{}", letters[0].error);
    let state = rm.projection_state(REPORTING).await.unwrap().unwrap();
    assert_eq!(
        state.events_applied,
        fit.len() as u64,
        "every other event, once"
    );
    assert_eq!(rm.order("order-unfit").await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_an_unfit_event_in_a_batch_is_dead_lettered_and_the_rest_applied() {
    an_unfit_event_in_a_batch(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_an_unfit_event_in_a_batch_is_dead_lettered_and_the_rest_applied() {
    an_unfit_event_in_a_batch(Backend::Postgres).await;
}
