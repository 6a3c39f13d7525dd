//! Snapshots under the command bus, over a real SQLite store: a 10,000-event Inventory
//! stream loads from its snapshot reading a bounded number of rows (counted by a store
//! that wraps the real one), a snapshot the bus cannot use (another state schema, a state
//! that does not decode, a stale one) is ignored and the state is still exact, and time
//! travel to before the snapshot is the fold from the first event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use cornershop_app::clock::ManualClock;
use cornershop_app::{CommandBus, CommandContext, Keyring, SnapshotPolicy};
use cornershop_domain::{
    fold, Aggregate, AggregateType, Cart, CartCommand, DomainEvent, Inventory, InventoryCommand,
    Order, OrderCommand, ShippingAddress,
};
use cornershop_store::{
    AppendRequest, Checkpoint, ConsumerState, DataKeyRecord, DataKeys, DeadLetter, Erasure,
    EventLog, EventQuery, EventStore, IdempotentResponse, NewNotification, Notification,
    NotificationOutbox, NotificationQuery, NotificationUpdate, Publication, Scheduling, Snapshot,
    Snapshots, SqliteEventStore, StoreError, StoreStats, StoredEvent, TimeRange, Timer,
};
use rust_decimal_macros::dec;
use uuid::Uuid;

/// The real store, counting the rows it hands back: events (every read that returns
/// events) and snapshots.
struct Counting {
    inner: Arc<dyn EventStore>,
    events_read: AtomicU64,
    snapshots_read: AtomicU64,
}

impl Counting {
    fn new(inner: Arc<dyn EventStore>) -> Self {
        Self {
            inner,
            events_read: AtomicU64::new(0),
            snapshots_read: AtomicU64::new(0),
        }
    }

    fn counted(
        &self,
        events: Result<Vec<StoredEvent>, StoreError>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if let Ok(events) = &events {
            self.events_read
                .fetch_add(events.len() as u64, Ordering::SeqCst);
        }
        events
    }

    /// The rows read since the last call: (events, snapshots).
    fn take(&self) -> (u64, u64) {
        (
            self.events_read.swap(0, Ordering::SeqCst),
            self.snapshots_read.swap(0, Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl EventLog for Counting {
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.append(request).await
    }
    async fn load_aggregate(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        range: TimeRange,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.counted(
            self.inner
                .load_aggregate(aggregate_type, aggregate_id, range)
                .await,
        )
    }
    async fn load_aggregate_after(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        after_version: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.counted(
            self.inner
                .load_aggregate_after(aggregate_type, aggregate_id, after_version)
                .await,
        )
    }
    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self.counted(self.inner.query(query).await)
    }
    async fn head_position(&self) -> Result<u64, StoreError> {
        self.inner.head_position().await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }
    async fn find_idempotent_response(
        &self,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        self.inner.find_idempotent_response(key).await
    }
    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.watch_head()
    }
    async fn events_by_correlation(
        &self,
        correlation_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.counted(self.inner.events_by_correlation(correlation_id).await)
    }
    async fn find_event(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let found = self.inner.find_event(event_id).await;
        if let Ok(Some(_)) = &found {
            self.events_read.fetch_add(1, Ordering::SeqCst);
        }
        found
    }
    async fn read_log(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        self.counted(self.inner.read_log(after, limit).await)
    }
}

#[async_trait]
impl Snapshots for Counting {
    async fn load_snapshot(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let found = self.inner.load_snapshot(aggregate_type, aggregate_id).await;
        if let Ok(Some(_)) = &found {
            self.snapshots_read.fetch_add(1, Ordering::SeqCst);
        }
        found
    }
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
}

// The rest of the store, delegated as it is.

#[async_trait]
impl ConsumerState for Counting {
    async fn is_applied(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        self.inner.is_applied(dedupe_key).await
    }
    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        self.inner.checkpoint(consumer).await
    }
    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<(), StoreError> {
        self.inner.save_checkpoint(consumer, position).await
    }
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.inner.checkpoints().await
    }
    async fn record_dead_letter(
        &self,
        consumer: &str,
        event: &StoredEvent,
        error: &str,
        attempts: u32,
        first_failed_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.inner
            .record_dead_letter(consumer, event, error, attempts, first_failed_at)
            .await
    }
    async fn dead_letters(&self, status: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(status).await
    }
    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        self.inner.dead_letter(id).await
    }
    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError> {
        self.inner.resolve_dead_letter(id).await
    }
    async fn record_publications(&self, published: &[Publication]) -> Result<(), StoreError> {
        self.inner.record_publications(published).await
    }
}

#[async_trait]
impl Scheduling for Counting {
    async fn schedule_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.inner.schedule_timer(timer).await
    }
    async fn due_timers(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Timer>, StoreError> {
        self.inner.due_timers(now, limit).await
    }
    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner.next_timer_due().await
    }
    async fn complete_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.inner.complete_timer(timer).await
    }
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.inner.try_lease(name, holder, ttl).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.release_lease(name, holder).await
    }
}

#[async_trait]
impl NotificationOutbox for Counting {
    async fn record_notifications(
        &self,
        notifications: &[NewNotification],
    ) -> Result<u64, StoreError> {
        self.inner.record_notifications(notifications).await
    }
    async fn due_notifications(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        self.inner.due_notifications(channel, now, limit).await
    }
    async fn next_notification_due(
        &self,
        channel: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner.next_notification_due(channel).await
    }
    async fn update_notification(&self, update: &NotificationUpdate) -> Result<bool, StoreError> {
        self.inner.update_notification(update).await
    }
    async fn redrive_notification(
        &self,
        dead_letter_id: u64,
        event_id: Uuid,
        channel: &str,
    ) -> Result<bool, StoreError> {
        self.inner
            .redrive_notification(dead_letter_id, event_id, channel)
            .await
    }
    async fn notifications(
        &self,
        query: &NotificationQuery,
    ) -> Result<Vec<Notification>, StoreError> {
        self.inner.notifications(query).await
    }
}

#[async_trait]
impl cornershop_store::Backups for Counting {
    async fn export(
        &self,
        since: u64,
        sink: tokio::sync::mpsc::Sender<cornershop_store::backup::ExportItem>,
    ) -> Result<cornershop_store::backup::Cut, StoreError> {
        self.inner.export(since, sink).await
    }

    async fn tables_with_rows(&self) -> Result<Vec<&'static str>, StoreError> {
        self.inner.tables_with_rows().await
    }

    async fn import(
        &self,
        rows: tokio::sync::mpsc::Receiver<cornershop_store::backup::ImportItem>,
    ) -> Result<u64, StoreError> {
        self.inner.import(rows).await
    }
}

#[async_trait]
impl DataKeys for Counting {
    async fn claim_master_key(&self, id: &str) -> Result<String, StoreError> {
        self.inner.claim_master_key(id).await
    }
    async fn data_key_of(&self, customer_id: &str) -> Result<Option<DataKeyRecord>, StoreError> {
        self.inner.data_key_of(customer_id).await
    }
    async fn data_key(&self, key_id: &str) -> Result<Option<DataKeyRecord>, StoreError> {
        self.inner.data_key(key_id).await
    }
    async fn insert_data_key(
        &self,
        record: &DataKeyRecord,
        master_key_id: &str,
    ) -> Result<Option<DataKeyRecord>, StoreError> {
        self.inner.insert_data_key(record, master_key_id).await
    }
    async fn erase_data_key(
        &self,
        customer_id: &str,
        new_key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Erasure, StoreError> {
        self.inner.erase_data_key(customer_id, new_key_id, at).await
    }
    async fn wrapped_data_keys(&self) -> Result<Vec<DataKeyRecord>, StoreError> {
        self.inner.wrapped_data_keys().await
    }
    async fn rewrap_data_keys(
        &self,
        old_master: &str,
        new_master: &str,
        rewrapped: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        self.inner
            .rewrap_data_keys(old_master, new_master, rewrapped)
            .await
    }
}

/// The snapshot interval of these tests: a few hundred, like the default, and not a
/// divisor of 10,000, so that the last snapshot (9,900) leaves a tail to fold.
const EVERY: u64 = 300;
const STREAM: u64 = 10_000;
const SKU: &str = "HOT-MUG";

struct Shop {
    _dir: tempfile::TempDir,
    store: Arc<Counting>,
    clock: Arc<ManualClock>,
    keyring: Arc<Keyring>,
}

impl Shop {
    async fn open() -> Self {
        // On tmpfs when there is one: the 10,000 commands are 10,000 durable commits.
        let dir = match tempfile::tempdir_in("/dev/shm") {
            Ok(dir) => dir,
            Err(_) => tempfile::tempdir().expect("temporary directory"),
        };
        let real: Arc<dyn EventStore> = Arc::new(
            SqliteEventStore::open(dir.path())
                .await
                .expect("open store"),
        );
        let store = Arc::new(Counting::new(real));
        let keyring = Arc::new(Keyring::ephemeral(store.clone()));
        Self {
            _dir: dir,
            store,
            clock: Arc::new(ManualClock::new(t0())),
            keyring,
        }
    }

    /// A bus with an empty state cache (a process just started), as `policy` says.
    fn fresh_bus(&self, policy: SnapshotPolicy) -> CommandBus {
        CommandBus::new(self.store.clone(), self.clock.clone(), self.keyring.clone())
            .with_snapshots(policy)
    }

    async fn events(&self, aggregate_type: AggregateType, id: &str) -> Vec<StoredEvent> {
        self.store
            .inner
            .load_aggregate(aggregate_type, id, TimeRange::default())
            .await
            .unwrap()
    }

    /// Waits for the aggregate's snapshot to reach `version` (snapshots are saved by a
    /// task of their own).
    async fn snapshot_at(&self, aggregate_type: AggregateType, id: &str, version: u64) -> Snapshot {
        for _ in 0..500 {
            if let Some(snapshot) = self
                .store
                .inner
                .load_snapshot(aggregate_type, id)
                .await
                .unwrap()
            {
                if snapshot.version == version {
                    return snapshot;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no snapshot of {aggregate_type} {id} at version {version}");
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 9, 0, 0).unwrap()
}

fn ctx() -> CommandContext {
    CommandContext::new_root()
}

/// A hot SKU's stream of `STREAM` events through the bus, one per command, each a
/// millisecond after the one before: stock set once, then reservations, each shipped a
/// hundred orders later (so a hundred are held at any time). Returns the bus, whose cache
/// holds the SKU.
async fn hot_sku(shop: &Shop) -> CommandBus {
    let bus = shop.fresh_bus(SnapshotPolicy::every(EVERY));
    let set = InventoryCommand::Set {
        sku: SKU.into(),
        name: "Enamel mug".into(),
        unit_price: dec!(9.99).into(),
        quantity: 1_000_000,
        low_stock_threshold: 0,
        currency: cornershop_domain::money::SHOP_CURRENCY,
    };
    let mut version = bus
        .execute::<Inventory>(SKU, &set, &ctx())
        .await
        .unwrap()
        .version;
    let (mut reserved, mut shipped) = (0u64, 0u64);
    while version < STREAM {
        shop.clock.advance(chrono::Duration::milliseconds(1));
        let command = if reserved >= shipped + 100 && reserved.is_multiple_of(2) {
            shipped += 1;
            InventoryCommand::Ship {
                order_id: format!("order-{}", shipped - 1).into(),
            }
        } else {
            reserved += 1;
            InventoryCommand::Reserve {
                order_id: format!("order-{}", reserved - 1).into(),
                quantity: 1,
            }
        };
        let executed = bus
            .execute::<Inventory>(SKU, &command, &ctx())
            .await
            .unwrap();
        assert_eq!(executed.events.len(), 1, "one event per command");
        version = executed.version;
    }
    bus
}

/// The state folded from every event, with the domain's own fold (no bus, no snapshot).
fn folded<A: Aggregate>(events: &[StoredEvent]) -> A {
    let decoded: Vec<DomainEvent> = events
        .iter()
        .map(|e| e.envelope.decode().unwrap())
        .collect();
    fold(&decoded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_loads_from_its_snapshot_reading_a_bounded_number_of_rows() {
    let shop = Shop::open().await;
    let warm = hot_sku(&shop).await;
    let last_snapshot = STREAM / EVERY * EVERY;
    let snapshot = shop
        .snapshot_at(AggregateType::Inventory, SKU, last_snapshot)
        .await;
    assert_eq!(snapshot.state_schema, Inventory::STATE_SCHEMA);
    let events = shop.events(AggregateType::Inventory, SKU).await;
    assert_eq!(events.len() as u64, STREAM);
    let truth: Inventory = folded(&events);
    assert_eq!(
        warm.load::<Inventory>(SKU).await.unwrap(),
        (truth.clone(), STREAM)
    );

    // A process just started: nothing cached.
    shop.store.take();
    let (state, version) = shop
        .fresh_bus(SnapshotPolicy::every(EVERY))
        .load::<Inventory>(SKU)
        .await
        .unwrap();
    assert_eq!((state, version), (truth.clone(), STREAM));
    let (events_read, snapshots_read) = shop.store.take();
    assert_eq!(snapshots_read, 1);
    // The tail after the snapshot, and the snapshot's own event (which proves it is of this
    // stream): 101 of the 10,000, and never more than N + 1.
    assert_eq!(events_read, STREAM - last_snapshot + 1);
    assert!(events_read <= EVERY + 1);

    // Without snapshots, the same load folds every event.
    let (state, _) = shop
        .fresh_bus(SnapshotPolicy::every(0))
        .load::<Inventory>(SKU)
        .await
        .unwrap();
    assert_eq!(state, truth);
    assert_eq!(shop.store.take(), (STREAM, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_bus_cannot_use_is_ignored_and_the_state_stays_exact() {
    let shop = Shop::open().await;
    hot_sku(&shop).await;
    let last_snapshot = STREAM / EVERY * EVERY;
    let good = shop
        .snapshot_at(AggregateType::Inventory, SKU, last_snapshot)
        .await;
    let events = shop.events(AggregateType::Inventory, SKU).await;
    let truth: Inventory = folded(&events);
    let at = |version: u64| &events[version as usize - 1];

    // Each is as a stale or foreign snapshot could be found in a store.
    let unusable = [
        // Written under another state schema (an older build's shape).
        Snapshot {
            state_schema: Inventory::STATE_SCHEMA + 1,
            ..good.clone()
        },
        // Its state does not decode (a shape changed without its number).
        Snapshot {
            state: r#"{"sku":"HOT-MUG","onHand":12}"#.into(),
            ..good.clone()
        },
        // Above the stream's version (a store restored from an older backup).
        Snapshot {
            version: STREAM + 50,
            ..good.clone()
        },
        // At a version the stream has, after an event the stream does not hold (another
        // stream under the same id).
        Snapshot {
            event_id: Uuid::new_v4(),
            ..good.clone()
        },
        // A state that decodes, at an event that is not the one at its version: it says
        // 7 units available, which no fold gives.
        Snapshot {
            version: 5_000,
            event_id: at(4_999).envelope.event_id,
            state: serde_json::to_string(&Inventory {
                available: 7,
                ..truth.clone()
            })
            .unwrap(),
            ..good.clone()
        },
    ];
    for snapshot in unusable {
        shop.store.inner.save_snapshot(&snapshot).await.unwrap();
        shop.store.take();
        let (state, version) = shop
            .fresh_bus(SnapshotPolicy::every(EVERY))
            .load::<Inventory>(SKU)
            .await
            .unwrap();
        assert_eq!((&state, version), (&truth, STREAM), "{snapshot:?}");
        // The whole stream was folded...
        let (events_read, _) = shop.store.take();
        assert!(events_read >= STREAM, "{events_read} events read");
        // ...and a usable snapshot of it saved again, in the background.
        let rebuilt = shop
            .snapshot_at(AggregateType::Inventory, SKU, STREAM)
            .await;
        assert_eq!(rebuilt.state_schema, Inventory::STATE_SCHEMA);
        assert_eq!(rebuilt.event_id, at(STREAM).envelope.event_id);
        assert_eq!(
            serde_json::from_str::<Inventory>(&rebuilt.state).unwrap(),
            truth
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_before_the_snapshot_is_the_fold_from_the_first_event() {
    let shop = Shop::open().await;
    let bus = hot_sku(&shop).await;
    let last_snapshot = STREAM / EVERY * EVERY;
    shop.snapshot_at(AggregateType::Inventory, SKU, last_snapshot)
        .await;
    let events = shop.events(AggregateType::Inventory, SKU).await;
    let fresh = shop.fresh_bus(SnapshotPolicy::every(EVERY));
    // Before the first snapshot, between two, just before the last, at it and after it.
    for version in [
        1,
        299,
        4_321,
        last_snapshot - 1,
        last_snapshot,
        STREAM - 1,
        STREAM,
    ] {
        let instant = events[version as usize - 1].envelope.timestamp;
        let truth: Inventory = folded(&events[..version as usize]);
        for bus in [&bus, &fresh] {
            let replay = bus
                .replay(AggregateType::Inventory, SKU, None, Some(instant))
                .await
                .unwrap();
            assert_eq!(replay.version, version);
            assert_eq!(
                serde_json::from_value::<Inventory>(replay.state).unwrap(),
                truth,
                "time travel to version {version}"
            );
        }
    }
}

/// A snapshot holds a state's personal values as the events do: sealed, never opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_holds_personal_data_only_sealed() {
    let shop = Shop::open().await;
    let bus = shop.fresh_bus(SnapshotPolicy::every(2));
    let (cart, order) = ("cart-1", "order-1");
    bus.execute::<Cart>(
        cart,
        &CartCommand::Create {
            cart_id: cart.into(),
            customer_id: "cust-1".into(),
        },
        &ctx(),
    )
    .await
    .unwrap();
    let address = ShippingAddress {
        name: "Ada Lovelace".into(),
        line1: "12 Analytical Way".into(),
        line2: Some("Flat 3".into()),
        city: "Marylebone".into(),
        postal_code: "NW1 6XE".into(),
        country_code: "GB".into(),
    };
    let checked_out = bus
        .execute::<Cart>(
            cart,
            &CartCommand::AddItem {
                sku: "MUG".into(),
                name: "Mug".into(),
                unit_price: dec!(12.50).into(),
                quantity: 2.into(),
                currency: cornershop_domain::money::SHOP_CURRENCY,
            },
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(checked_out.version, 2);
    let checkout = bus
        .execute::<Cart>(
            cart,
            &CartCommand::Checkout {
                order_id: order.into(),
                payment_method: "pm_visa".into(),
                shipping_address: address.clone(),
                email: "ada@example.com".into(),
                phone: Some("+44 20 7946 0018".into()),
            },
            &ctx(),
        )
        .await
        .unwrap();
    let DomainEvent::CartCheckedOut(checkout) = checkout.events[0].envelope.decode().unwrap()
    else {
        panic!("a checkout");
    };
    bus.execute::<Order>(order, &OrderCommand::Create(Box::new(checkout)), &ctx())
        .await
        .unwrap();
    bus.execute::<Order>(order, &OrderCommand::Validate, &ctx())
        .await
        .unwrap();
    let snapshot = shop.snapshot_at(AggregateType::Order, order, 2).await;
    let state: Order = serde_json::from_str(&snapshot.state).unwrap();
    assert!(!state.email.is_clear(), "{state:?}");
    for clear in [
        "ada@example.com",
        "+44 20 7946 0018",
        "Ada Lovelace",
        "Analytical",
        "Flat 3",
        "Marylebone",
        "NW1 6XE",
    ] {
        assert!(
            !snapshot.state.contains(clear),
            "{clear} in {}",
            snapshot.state
        );
    }
    // And it loads as the fold of the (sealed) events.
    let (loaded, version) = shop
        .fresh_bus(SnapshotPolicy::every(2))
        .load::<Order>(order)
        .await
        .unwrap();
    assert_eq!(version, 2);
    assert_eq!(
        loaded,
        folded::<Order>(&shop.events(AggregateType::Order, order).await)
    );
}
