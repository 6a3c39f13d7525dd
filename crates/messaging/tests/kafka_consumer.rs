//! The Kafka consumer against a real broker (`CORNERSHOP_TEST_KAFKA_BROKERS`, as
//! `scripts/stack.sh start` prints it): an offset is committed only for a message whose
//! handling finished, also when the consumer stops in the middle of a retry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cornershop_messaging::kafka::{run_kafka_consumer, KafkaSettings};
use cornershop_messaging::{Consumer, Handler, HandlerError, RetryPolicy};
use cornershop_store::{SqliteEventStore, StoredEvent};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureRecord;
use serde_json::json;
use tokio::sync::watch;

const GROUP: &str = "interrupted-consumer";

/// Fails every attempt (an error that may pass), counting them.
struct AlwaysFailing(Arc<AtomicUsize>);

#[async_trait]
impl Handler for AlwaysFailing {
    fn name(&self) -> &'static str {
        GROUP
    }
    fn handles(&self, _event_type: &str) -> bool {
        true
    }
    async fn handle(&self, _event: &StoredEvent) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(HandlerError::Transient("the database is down".into()))
    }
}

/// Records the event ids it handles.
struct Recording(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Handler for Recording {
    fn name(&self) -> &'static str {
        GROUP
    }
    fn handles(&self, _event_type: &str) -> bool {
        true
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        self.0
            .lock()
            .unwrap()
            .push(event.envelope.event_id.to_string());
        Ok(())
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "after 60 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stopped_in_the_middle_of_a_retry_gets_the_message_again() {
    let brokers = std::env::var("CORNERSHOP_TEST_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "CORNERSHOP_TEST_KAFKA_BROKERS is not set: this test needs Kafka. Run \
             ./scripts/test.sh, or `set -a; eval \"$(scripts/stack.sh start)\"; set +a`"
        )
    });
    let settings = KafkaSettings {
        brokers: brokers.clone(),
        namespace: format!("kc{:x}.", rand::random::<u64>()),
        partitions: 1,
        replication: 1,
    };
    settings.ensure_topics().await.expect("create the topics");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteEventStore::open(dir.path()).await.unwrap());

    let event_id = uuid::Uuid::new_v4().to_string();
    let envelope = json!({
        "eventId": event_id, "eventType": "CartCreated", "aggregateId": "cart-1",
        "aggregateType": "Cart", "timestamp": "2026-01-01T00:00:00Z", "version": 1,
        "schemaVersion": 1, "data": {"cartId": "cart-1", "customerId": "ada"},
        "metadata": {"correlationId": "c", "causationId": "c", "userId": null,
                     "source": "CartService"},
    })
    .to_string();
    let topic = format!("{}carts.events", settings.namespace);
    settings
        .producer()
        .unwrap()
        .send(
            FutureRecord::to(&topic).key("cart-1").payload(&envelope),
            Duration::from_secs(30),
        )
        .await
        .expect("the event is in Kafka");

    // First life: every attempt fails, and the consumer stops while it waits to retry.
    let attempts = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let first = tokio::spawn(run_kafka_consumer(
        Consumer {
            handler: Arc::new(AlwaysFailing(attempts.clone())),
            store: store.clone(),
            policy: RetryPolicy {
                max_attempts: 100,
                base_delay: Duration::from_secs(5),
                max_delay: Duration::from_secs(5),
            },
        },
        settings.clone(),
        stopped,
    ));
    wait_until("the failing consumer never got the event", || {
        attempts.load(Ordering::SeqCst) >= 1
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("the consumer stops")
        .unwrap();

    // Second life, same group: the message was not committed, so it comes again.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (stop, stopped) = watch::channel(false);
    let second = tokio::spawn(run_kafka_consumer(
        Consumer {
            handler: Arc::new(Recording(seen.clone())),
            store: store.clone(),
            policy: RetryPolicy::default(),
        },
        settings.clone(),
        stopped,
    ));
    wait_until(
        "the event whose handling was interrupted never came again",
        || seen.lock().unwrap().contains(&event_id),
    )
    .await;
    stop.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), second).await;

    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let topics = settings.topics();
    let dlqs: Vec<String> = topics.iter().map(|t| format!("{t}.dlq")).collect();
    let names: Vec<&str> = topics.iter().chain(&dlqs).map(String::as_str).collect();
    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
}
