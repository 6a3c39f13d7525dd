//! The consumer machinery on the embedded default: a handler that fails on one event.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{spawn_app_with, Fussy};
use cornershop_messaging::{Handler, HandlerError};
use cornershop_store::StoredEvent;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn a_poison_event_is_dead_lettered_others_flow_and_a_retry_after_the_fix_succeeds() {
    let fussy = Arc::new(Fussy::default());
    let app = spawn_app_with(
        |args| {
            args.workflow.consumer_max_attempts = 3;
            args.workflow.consumer_retry_delay = Duration::from_millis(10).into();
        },
        vec![fussy.clone()],
    )
    .await;
    app.new_cart("poison").await;
    app.new_cart("fine").await;
    app.settle().await;
    assert_eq!(*fussy.handled.lock().unwrap(), ["fine"]);

    let letters = app.json("/api/deadletters").await;
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["consumer"], "fussy-test-consumer");
    assert_eq!(letter["eventType"], "CartCreated");
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["status"], "pending");
    assert!(letter["error"].as_str().unwrap().contains("poison"));
    let id = letter["id"].as_u64().unwrap();

    // Retried before the fix: fails again, stays pending.
    let again = app
        .post(&format!("/api/deadletters/{id}/retry"), &json!({}))
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(
        app.json("/api/deadletters?status=pending")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    fussy.fixed.store(true, Ordering::SeqCst);
    let retried = app
        .post(&format!("/api/deadletters/{id}/retry"), &json!({}))
        .await;
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["status"], "resolved");
    assert_eq!(*fussy.handled.lock().unwrap(), ["fine", "poison"]);
    assert!(app
        .json("/api/deadletters?status=pending")
        .await
        .as_array()
        .unwrap()
        .is_empty());
    let missing = app.post("/api/deadletters/999/retry", &json!({})).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

/// Records what it handles and how many deliveries overlap; slow on purpose, so that the
/// log piles up behind it.
struct Overlapping {
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
    seen: Mutex<Vec<(String, u64, uuid::Uuid)>>,
}

#[async_trait]
impl Handler for Overlapping {
    fn name(&self) -> &'static str {
        "overlapping-test-consumer"
    }
    fn handles(&self, event_type: &str) -> bool {
        matches!(event_type, "CartCreated" | "ItemAddedToCart")
    }
    fn concurrency(&self) -> usize {
        8
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.seen.lock().unwrap().push((
            event.envelope.metadata.correlation_id.clone(),
            event.envelope.version,
            event.envelope.event_id,
        ));
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_consumer_overlaps_transactions_but_keeps_each_in_order() {
    let tracker = Arc::new(Overlapping {
        in_flight: Default::default(),
        most_in_flight: Default::default(),
        seen: Mutex::default(),
    });
    let app = spawn_app_with(|_| {}, vec![tracker.clone()]).await;
    app.stock("OVL", "1.00", 100).await;
    // Eight carts, each its own business transaction (correlation id), written at once.
    let carts = (0..8).map(|i| {
        let (client, base) = (app.client.clone(), app.base.clone());
        tokio::spawn(async move {
            let correlation = format!("overlap-{i}");
            let r = client
                .post(format!("{base}/api/carts"))
                .header("x-correlation-id", &correlation)
                .json(&json!({"customerId": format!("c{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            let cart: Value = r.json().await.unwrap();
            let cart = cart["cartId"].as_str().unwrap().to_string();
            for _ in 0..3 {
                let r = client
                    .post(format!("{base}/api/carts/{cart}/items"))
                    .header("x-correlation-id", &correlation)
                    .json(&json!({"sku": "OVL", "quantity": 1}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            }
        })
    });
    for cart in carts.collect::<Vec<_>>() {
        cart.await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tracker.seen.lock().unwrap().len() < 32 {
        assert!(
            std::time::Instant::now() < deadline,
            "not every event was handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = tracker.seen.lock().unwrap().clone();
    let ids: std::collections::HashSet<_> = seen.iter().map(|(_, _, id)| *id).collect();
    assert_eq!(ids.len(), 32, "an event was handled twice: {seen:?}");
    for i in 0..8 {
        let correlation = format!("overlap-{i}");
        let versions: Vec<u64> = seen
            .iter()
            .filter(|(c, _, _)| *c == correlation)
            .map(|(_, v, _)| *v)
            .collect();
        assert_eq!(versions, [1, 2, 3, 4], "{correlation} out of order");
    }
    assert!(
        tracker.most_in_flight.load(Ordering::SeqCst) > 1,
        "deliveries never overlapped"
    );
}

/// A consumer that panics on carts of the customer "panic" (a bug, or an event it cannot
/// take), and records the others.
struct Panicky {
    handled: Mutex<Vec<String>>,
}

#[async_trait]
impl Handler for Panicky {
    fn name(&self) -> &'static str {
        "panicky-test-consumer"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "CartCreated"
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        let customer = event.envelope.data["customerId"].as_str().unwrap();
        if customer == "panic" {
            panic!("this handler cannot digest customer '{customer}'");
        }
        self.handled.lock().unwrap().push(customer.to_string());
        Ok(())
    }
}

#[tokio::test]
async fn a_handler_that_panics_dead_letters_the_event_with_the_panic_and_handles_the_next() {
    let panicky = Arc::new(Panicky {
        handled: Mutex::default(),
    });
    let app = spawn_app_with(
        |args| {
            args.workflow.consumer_max_attempts = 2;
            args.workflow.consumer_retry_delay = Duration::from_millis(10).into();
        },
        vec![panicky.clone()],
    )
    .await;
    app.new_cart("before").await;
    app.new_cart("panic").await;
    app.new_cart("after").await;
    app.settle().await;
    assert_eq!(*panicky.handled.lock().unwrap(), ["before", "after"]);
    let letters = app.json("/api/deadletters").await;
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["consumer"], "panicky-test-consumer");
    assert_eq!(letter["attempts"], 2);
    let error = letter["error"].as_str().unwrap();
    assert!(
        error.contains("panicked") && error.contains("cannot digest customer 'panic'"),
        "{error}"
    );
    // A re-drive that panics again is a failed retry, not a dead request.
    let id = letter["id"].as_u64().unwrap();
    let again = app
        .post(&format!("/api/deadletters/{id}/retry"), &json!({}))
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    // And the consumer is still alive: a new event after all that is handled.
    app.new_cart("later").await;
    app.settle().await;
    assert_eq!(
        *panicky.handled.lock().unwrap(),
        ["before", "after", "later"]
    );
}

/// A consumer that cannot get past carts of the customer "stuck" while its dependency is
/// away (it says `Unavailable`, so the event is retried, never dead-lettered).
struct Stuck {
    away: AtomicBool,
}

#[async_trait]
impl Handler for Stuck {
    fn name(&self) -> &'static str {
        "stuck-test-consumer"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "CartCreated"
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        if event.envelope.data["customerId"] == "stuck" && self.away.load(Ordering::SeqCst) {
            return Err(HandlerError::Unavailable("its database is away".into()));
        }
        Ok(())
    }
}

fn stalled_consumer(consumers: &Value, name: &str) -> Option<bool> {
    consumers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["consumer"] == name)
        .map(|c| c["stalled"].as_bool().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_is_reported_by_the_api_readiness_and_the_gauge() {
    let stuck = Arc::new(Stuck {
        away: AtomicBool::new(true),
    });
    let app = spawn_app_with(
        |args| {
            args.workflow.stall_after = Duration::from_secs(1).into();
            args.workflow.consumer_retry_delay = Duration::from_millis(10).into();
        },
        vec![stuck.clone()],
    )
    .await;
    app.new_cart("fine").await;
    app.settle().await;
    assert_eq!(
        stalled_consumer(&app.json("/api/consumers").await, "stuck-test-consumer"),
        Some(false),
        "a consumer at the head is idle, not stalled"
    );
    app.new_cart("stuck").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let consumers = app.json("/api/consumers").await;
        if stalled_consumer(&consumers, "stuck-test-consumer") == Some(true) {
            let me = consumers
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["consumer"] == "stuck-test-consumer")
                .unwrap();
            assert!(me["lag"].as_u64().unwrap() >= 1, "{me}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reported stalled: {consumers}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = app.get("/health/ready").await;
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "readiness stays about serving"
    );
    let ready: Value = ready.json().await.unwrap();
    assert!(
        ready["stalled"]
            .as_array()
            .is_some_and(|s| s.iter().any(|n| n == "stuck-test-consumer")),
        "{ready}"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("consumer_stalled{")
            && l.contains("consumer_group=\"stuck-test-consumer\"")
            && l.ends_with(" 1")),
        "the gauge says 1:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("consumer_stalled"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        app.json("/api/deadletters")
            .await
            .as_array()
            .unwrap()
            .is_empty(),
        "an outage dead-letters nothing"
    );

    // The dependency is back: the consumer moves on and is no longer stalled.
    stuck.away.store(false, Ordering::SeqCst);
    app.settle().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stalled_consumer(&app.json("/api/consumers").await, "stuck-test-consumer") != Some(false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "still stalled after recovering"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
