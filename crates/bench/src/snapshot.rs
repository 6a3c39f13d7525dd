//! Loading a long stream on a cold cache: from its snapshot and the events after it,
//! beside the baseline measured in the same run, the full fold of every event (what a
//! load did before snapshots, and still does with `--snapshot-every 0`).
//!
//! The stream is a hot SKU's: stock set once, then reservations, each shipped a hundred
//! orders later (so a hundred are held at any time, and the state stays the size a real
//! SKU's is), `--events` in all, appended 100 per append. The snapshot is the bus's own:
//! a cold load of the stream without its last `--tail` events saves it, then the tail is
//! appended (`--tail` defaults to half of `--every`, the tail an average load meets). Each
//! sample loads the SKU through a new `CommandBus` (an empty state cache, a process just
//! started), the two cases taking turns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use cornershop_app::{CommandBus, Keyring, SnapshotPolicy, SystemClock};
use cornershop_domain::{
    AggregateType, DomainEvent, Inventory, Metadata, StockReserved, StockShipped, StockUpdated,
    CURRENT_SCHEMA_VERSION,
};
use cornershop_store::{AppendRequest, EventStore, NewEvent, PgEventStore, SqliteEventStore};
use serde_json::json;
use uuid::Uuid;

use crate::cli::{Backend, SnapshotArgs};
use crate::{emit, round3};

/// Events per append while the stream is built.
const BATCH: u64 = 100;

/// Reservations held at once (each is shipped this many orders after it was made).
const HELD: u64 = 100;

/// The SKU's event at `version` (1-based): the stock set, then a reservation and, once a
/// hundred are held, a shipment every other event.
fn event_at(sku: &str, version: u64) -> DomainEvent {
    if version == 1 {
        return StockUpdated {
            sku: sku.into(),
            name: "Enamel mug, 350 ml".into(),
            unit_price: "9.99".parse().expect("a price"),
            quantity: 1_000_000,
            low_stock_threshold: 0,
            currency: cornershop_domain::money::SHOP_CURRENCY,
        }
        .into();
    }
    // After the first HELD reservations, reservations and shipments alternate.
    let n = version - 2;
    let (order, reserve) = if n < HELD {
        (n, true)
    } else {
        let k = n - HELD;
        if k.is_multiple_of(2) {
            (HELD + k / 2, true)
        } else {
            (k / 2, false)
        }
    };
    let order_id = format!("order-{order}");
    if reserve {
        StockReserved {
            sku: sku.into(),
            order_id: order_id.as_str().into(),
            quantity: 1,
        }
        .into()
    } else {
        StockShipped {
            sku: sku.into(),
            order_id: order_id.as_str().into(),
            quantity: 1,
        }
        .into()
    }
}

fn new_event(event: &DomainEvent) -> NewEvent {
    let correlation = Uuid::new_v4().to_string();
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event.event_type().to_string(),
        schema_version: CURRENT_SCHEMA_VERSION,
        timestamp: Utc::now(),
        data: event.data(),
        metadata: Metadata {
            correlation_id: correlation.clone(),
            causation_id: correlation,
            user_id: None,
            source: "InventoryService".to_string(),
        },
        trace_id: None,
    }
}

/// Appends the SKU's events after `from` up to `to`.
async fn append(store: &dyn EventStore, sku: &str, from: u64, to: u64) -> anyhow::Result<()> {
    let mut version = from;
    while version < to {
        let last = (version + BATCH).min(to);
        let events = (version + 1..=last)
            .map(|v| new_event(&event_at(sku, v)))
            .collect();
        store
            .append(AppendRequest {
                aggregate_type: AggregateType::Inventory,
                aggregate_id: sku.to_string(),
                expected_version: version,
                events,
                idempotency: None,
                dedupe_key: None,
            })
            .await?;
        version = last;
    }
    Ok(())
}

/// `snapshot --backend B [--events N] [--every E] [--tail T] [--samples S]`.
pub(crate) async fn snapshot(args: &SnapshotArgs) -> anyhow::Result<()> {
    let every = args.every.max(1);
    let samples = args.samples.max(1);
    let tail = args.tail.unwrap_or(every / 2).min(every - 1);
    if args.events <= tail + 1 {
        bail!("--events must be more than --tail + 1");
    }
    let temp = args.store.temp_dir()?;
    let store: Arc<dyn EventStore> = match args.store.backend {
        Backend::Sqlite => Arc::new(SqliteEventStore::open(temp.path()).await?),
        Backend::Postgres => {
            Arc::new(PgEventStore::connect(args.store.database_url("snapshot")?).await?)
        }
    };
    let backend = args.store.backend.name();
    let keyring = Arc::new(Keyring::ephemeral(store.clone()));
    let bus = |policy: SnapshotPolicy| {
        CommandBus::new(store.clone(), Arc::new(SystemClock), keyring.clone())
            .with_snapshots(policy)
    };
    let sku = format!("BENCH-{}", &Uuid::new_v4().simple().to_string()[..8]);

    // The stream without its tail; a cold load of it leaves the bus's snapshot behind.
    let snapshot_at = args.events - tail;
    append(&*store, &sku, 0, snapshot_at).await?;
    bus(SnapshotPolicy::every(every))
        .load::<Inventory>(&sku)
        .await?;
    let snapshot = wait_for_snapshot(&*store, &sku, snapshot_at).await?;
    append(&*store, &sku, snapshot_at, args.events).await?;

    let cases = [
        ("full fold", SnapshotPolicy::every(0), args.events),
        ("snapshot + tail", SnapshotPolicy::every(every), tail + 1),
    ];
    let mut took: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut states = Vec::new();
    // One untimed load of each first (connections, statements prepared, pages cached).
    for round in 0..=samples {
        for (i, (_, policy, _)) in cases.iter().enumerate() {
            let fresh = bus(*policy);
            let started = Instant::now();
            let loaded = fresh.load::<Inventory>(&sku).await?;
            let elapsed = started.elapsed();
            if round > 0 {
                took[i].push(elapsed.as_secs_f64() * 1000.0);
            }
            states.push(loaded);
        }
        if states.windows(2).any(|pair| pair[0] != pair[1]) {
            bail!("the snapshot's load and the full fold gave different states");
        }
        states.clear();
    }
    let full_median = median(&mut took[0]);
    for ((name, _, events_read), took) in cases.iter().zip(&mut took) {
        let median_ms = median(took);
        emit(json!({
            "kind": "snapshot-load", "backend": backend, "case": name,
            "streamEvents": args.events, "eventsRead": events_read,
            "snapshotEvery": every, "samples": took.len(),
            "medianMs": round3(median_ms),
            "p90Ms": round3(took[took.len() * 9 / 10]),
            "ratioToFullFold": round3(median_ms / full_median),
        }));
    }
    emit(json!({
        "kind": "snapshot-size", "backend": backend, "version": snapshot.version,
        "stateBytes": snapshot.state.len(),
    }));
    store.close().await;
    Ok(())
}

/// The median, sorting `samples`.
fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The SKU's snapshot once it is at `version` (the bus saves it on a task of its own).
async fn wait_for_snapshot(
    store: &dyn EventStore,
    sku: &str,
    version: u64,
) -> anyhow::Result<cornershop_store::Snapshot> {
    for _ in 0..1000 {
        if let Some(snapshot) = store.load_snapshot(AggregateType::Inventory, sku).await? {
            if snapshot.version == version {
                return Ok(snapshot);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None.context("the bus saved no snapshot within 10 s")
}
