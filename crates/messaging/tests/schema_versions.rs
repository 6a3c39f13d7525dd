//! On the embedded transport, an event of a schema version newer than this build knows
//! never reaches a handler: it is dead-lettered at once with the reason (the handler
//! would refuse it, or worse, make something of the fields it recognises), and the events
//! around it flow. Both ways a consumer takes events: one by one, and in batches (the read
//! models' projection).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cornershop_domain::fixtures::{envelopes, SCHEMA_1_EVENTS};
use cornershop_domain::{EventEnvelope, CURRENT_SCHEMA_VERSION};
use cornershop_messaging::{
    run_embedded, Consumer, ConsumerRegistry, Handler, HandlerError, RedriveError, RetryPolicy,
};
use cornershop_store::{AppendRequest, EventStore, NewEvent, SqliteEventStore, StoredEvent};
use serde_json::json;
use tokio::sync::watch;

/// Takes whatever it is handed without decoding it (as a handler that reads a field or two
/// of the raw payload would), recording the event ids.
struct TakesAnything {
    name: &'static str,
    batches: bool,
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Handler for TakesAnything {
    fn name(&self) -> &'static str {
        self.name
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type != "StockUpdated"
    }
    fn batches(&self) -> bool {
        self.batches
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        self.seen
            .lock()
            .unwrap()
            .push(event.envelope.event_id.to_string());
        Ok(())
    }
}

fn new_event(envelope: &EventEnvelope) -> NewEvent {
    NewEvent {
        event_id: envelope.event_id,
        event_type: envelope.event_type.clone(),
        schema_version: envelope.schema_version,
        timestamp: envelope.timestamp,
        data: envelope.data.clone(),
        metadata: envelope.metadata.clone(),
        trace_id: None,
    }
}

/// An event as a release that writes schema 99 would store it.
fn from_the_future(event_type: &str, aggregate_id: &str) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: event_type.into(),
        schema_version: 99,
        timestamp: chrono::Utc::now(),
        data: json!({"orderId": aggregate_id, "items": [{"sku": "MUG", "quantity": 3}],
                     "somethingNew": {"shape": "unknown here"}}),
        metadata: cornershop_domain::Metadata {
            correlation_id: "future".into(),
            causation_id: "future".into(),
            user_id: None,
            source: "OrderService".into(),
        },
        trace_id: None,
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "after 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_newer_schema_is_dead_lettered_with_its_reason(batches: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(dir.path()).await.unwrap());
    // An old stream (schema 1), then an event from a newer release, then the old stream's
    // next aggregate: the consumer must handle the first and the last, and park the middle.
    let old = envelopes(SCHEMA_1_EVENTS);
    let cart: Vec<&EventEnvelope> = old
        .iter()
        .filter(|e| e.aggregate_id == old[4].aggregate_id)
        .collect();
    store
        .append(AppendRequest::new(
            cart[0].aggregate_type,
            cart[0].aggregate_id.clone(),
            0,
            cart.iter().map(|e| new_event(e)).collect(),
        ))
        .await
        .unwrap();
    let future = from_the_future("OrderCreated", "order-from-the-future");
    let future_id = future.event_id;
    store
        .append(AppendRequest::new(
            cornershop_domain::AggregateType::Order,
            "order-from-the-future",
            0,
            vec![future],
        ))
        .await
        .unwrap();
    // A newer event of a type this consumer does not want passes by, parked nowhere.
    let unwanted = from_the_future("StockUpdated", "MUG");
    let unwanted_id = unwanted.event_id;
    store
        .append(AppendRequest::new(
            cornershop_domain::AggregateType::Inventory,
            "MUG",
            0,
            vec![unwanted],
        ))
        .await
        .unwrap();
    let last = old.iter().find(|e| e.event_type == "OrderCreated").unwrap();
    store
        .append(AppendRequest::new(
            last.aggregate_type,
            last.aggregate_id.clone(),
            0,
            vec![new_event(last)],
        ))
        .await
        .unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let name = if batches { "batching" } else { "one-by-one" };
    let consumer = Consumer {
        handler: Arc::new(TakesAnything {
            name,
            batches,
            seen: seen.clone(),
        }),
        store: store.clone(),
        policy: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
        },
    };
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(run_embedded(consumer.clone(), stopped));
    let last_id = last.event_id.to_string();
    wait_until("the event after the newer one is handled", || {
        seen.lock().unwrap().contains(&last_id)
    })
    .await;
    stop.send(true).unwrap();
    running.await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), cart.len() + 1, "{seen:?}");
    assert!(!seen.contains(&future_id.to_string()), "the handler got it");
    let letters = store.dead_letters(None).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.consumer, name);
    assert_eq!(letter.event_id, future_id);
    assert_ne!(letter.event_id, unwanted_id);
    assert_eq!(
        letter.attempts, 1,
        "not retried: it fails however often it is tried"
    );
    assert_eq!(
        letter.error,
        format!(
            "OrderCreated has schema version 99, newer than this build knows \
             ({CURRENT_SCHEMA_VERSION}): upgrade this process to read it; the event was not \
             guessed at"
        )
    );
    assert_eq!(
        store.checkpoint(name).await.unwrap(),
        4 + cart.len() as u64 - 1
    );

    // Re-driven by this build, it fails again for the same reason and stays pending (the
    // runbook re-drives it once the consumer runs the release that knows it).
    let mut registry = ConsumerRegistry::default();
    registry.add(consumer);
    let again = registry
        .redrive(store.as_ref(), letter.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&again, RedriveError::FailedAgain(HandlerError::Permanent(reason)) if *reason == letter.error),
        "{again}"
    );
    let letter = store.dead_letter(letter.id).await.unwrap().unwrap();
    assert_eq!(letter.status, "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_by_one_a_newer_schema_is_dead_lettered_with_its_reason_and_not_handled() {
    a_newer_schema_is_dead_lettered_with_its_reason(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_batch_a_newer_schema_is_dead_lettered_with_its_reason_and_not_handled() {
    a_newer_schema_is_dead_lettered_with_its_reason(true).await;
}
