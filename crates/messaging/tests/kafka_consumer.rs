//! The Kafka consumer against a real broker (`CORNERSHOP_TEST_KAFKA_BROKERS`, as
//! `scripts/stack.sh start` prints it): an offset is committed only for a message whose
//! handling finished, also when the consumer stops in the middle of a retry; a handler
//! that panics costs only its event (dead-lettered with the panic) and the next flows; a
//! handler that may work on several business transactions at once gets them side by side,
//! each one's events in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cornershop_messaging::kafka::{
    run_kafka_consumer, KafkaSecurity, KafkaSettings, Secret, SecurityProtocol,
};
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

/// TLS and SASL as `scripts/stack.sh` says (`CORNERSHOP_TEST_KAFKA_SECURITY_PROTOCOL`,
/// `..._SASL_MECHANISM`, `..._SASL_USERNAME`, `..._SASL_PASSWORD`, `..._CA_FILE`);
/// plaintext without them.
fn test_security() -> KafkaSecurity {
    let var = |name: &str| std::env::var(format!("CORNERSHOP_TEST_KAFKA_{name}")).ok();
    KafkaSecurity {
        protocol: match var("SECURITY_PROTOCOL").as_deref() {
            None | Some("plaintext") => SecurityProtocol::Plaintext,
            Some("ssl") => SecurityProtocol::Ssl,
            Some("sasl_plaintext") => SecurityProtocol::SaslPlaintext,
            Some("sasl_ssl") => SecurityProtocol::SaslSsl,
            Some(other) => panic!("CORNERSHOP_TEST_KAFKA_SECURITY_PROTOCOL={other}?"),
        },
        sasl_mechanism: var("SASL_MECHANISM").unwrap_or_else(|| "SCRAM-SHA-512".into()),
        sasl_username: var("SASL_USERNAME"),
        sasl_password: var("SASL_PASSWORD").map(Secret::new),
        ca_file: var("CA_FILE").map(Into::into),
    }
}

/// Topics of their own on the test broker (deleted by [`delete_topics`]).
async fn fresh_topics() -> KafkaSettings {
    let brokers = std::env::var("CORNERSHOP_TEST_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "CORNERSHOP_TEST_KAFKA_BROKERS is not set: this test needs Kafka. Run \
             ./scripts/test.sh, or `set -a; eval \"$(scripts/stack.sh start)\"; set +a`"
        )
    });
    let settings = KafkaSettings {
        brokers,
        namespace: format!("kc{:x}.", rand::random::<u64>()),
        partitions: 1,
        replication: 1,
        security: test_security(),
    };
    settings.ensure_topics().await.expect("create the topics");
    settings
}

/// Publishes a CartCreated of `customer` to the carts topic; returns its eventId.
async fn publish_cart(settings: &KafkaSettings, cart: &str, customer: &str) -> String {
    publish_cart_in(settings, cart, customer, "c").await
}

/// [`publish_cart`] in the business transaction `correlation`.
async fn publish_cart_in(
    settings: &KafkaSettings,
    cart: &str,
    customer: &str,
    correlation: &str,
) -> String {
    let event_id = uuid::Uuid::new_v4().to_string();
    let envelope = json!({
        "eventId": event_id, "eventType": "CartCreated", "aggregateId": cart,
        "aggregateType": "Cart", "timestamp": "2026-01-01T00:00:00Z", "version": 1,
        "schemaVersion": 1, "data": {"cartId": cart, "customerId": customer},
        "metadata": {"correlationId": correlation, "causationId": correlation, "userId": null,
                     "source": "CartService"},
    })
    .to_string();
    let topic = format!("{}carts.events", settings.namespace);
    settings
        .producer()
        .unwrap()
        .send(
            FutureRecord::to(&topic).key(cart).payload(&envelope),
            Duration::from_secs(30),
        )
        .await
        .expect("the event is in Kafka");
    event_id
}

async fn delete_topics(settings: &KafkaSettings) {
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create().unwrap();
    let topics = settings.topics();
    let dlqs: Vec<String> = topics.iter().map(|t| format!("{t}.dlq")).collect();
    let names: Vec<&str> = topics.iter().chain(&dlqs).map(String::as_str).collect();
    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stopped_in_the_middle_of_a_retry_gets_the_message_again() {
    let settings = fresh_topics().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteEventStore::open(dir.path()).await.unwrap());
    let event_id = publish_cart(&settings, "cart-1", "ada").await;

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
            policy: RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(10),
            },
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
    delete_topics(&settings).await;
}

/// Panics on carts of the customer "panic" (a bug, or an event it cannot take); records
/// the others.
struct Panicky(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Handler for Panicky {
    fn name(&self) -> &'static str {
        "panicky-kafka-consumer"
    }
    fn handles(&self, _event_type: &str) -> bool {
        true
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        if event.envelope.data["customerId"] == "panic" {
            panic!("cannot digest this customer");
        }
        self.0
            .lock()
            .unwrap()
            .push(event.envelope.event_id.to_string());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_a_handler_panic_dead_letters_the_event_and_the_next_is_handled() {
    let settings = fresh_topics().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteEventStore::open(dir.path()).await.unwrap());
    let poison = publish_cart(&settings, "cart-1", "panic").await;
    let next = publish_cart(&settings, "cart-1", "ada").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (stop, stopped) = watch::channel(false);
    let consumer = tokio::spawn(run_kafka_consumer(
        Consumer {
            handler: Arc::new(Panicky(seen.clone())),
            store: store.clone(),
            policy: RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(10),
            },
        },
        settings.clone(),
        stopped,
    ));
    wait_until(
        "the event after the panicking one was never handled",
        || seen.lock().unwrap().contains(&next),
    )
    .await;
    let letters = cornershop_store::ConsumerState::dead_letters(store.as_ref(), None)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].event_id.to_string(), poison);
    assert_eq!(letters[0].attempts, 2);
    assert!(
        letters[0].error.contains("panicked") && letters[0].error.contains("cannot digest"),
        "{}",
        letters[0].error
    );
    stop.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), consumer).await;
    delete_topics(&settings).await;
}

/// Takes its time over each event (a command waiting for its commit), counting how many
/// it has in hand at once and recording each business transaction's events in the order
/// they are handled.
#[derive(Clone, Default)]
struct Slow {
    in_hand: Arc<AtomicUsize>,
    most_in_hand: Arc<AtomicUsize>,
    handled: Arc<Mutex<std::collections::BTreeMap<String, Vec<String>>>>,
}

#[async_trait]
impl Handler for Slow {
    fn name(&self) -> &'static str {
        "slow-kafka-consumer"
    }
    fn handles(&self, _event_type: &str) -> bool {
        true
    }
    fn concurrency(&self) -> usize {
        4
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        let now = self.in_hand.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_hand.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.handled
            .lock()
            .unwrap()
            .entry(event.envelope.metadata.correlation_id.clone())
            .or_default()
            .push(event.envelope.event_id.to_string());
        self.in_hand.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_business_transactions_are_handled_side_by_side_each_in_order() {
    let settings = fresh_topics().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteEventStore::open(dir.path()).await.unwrap());
    // Four business transactions of three events each, interleaved on one partition.
    let mut published: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for step in 0..3 {
        for transaction in 0..4 {
            let correlation = format!("transaction-{transaction}");
            let id = publish_cart_in(
                &settings,
                &format!("cart-{transaction}-{step}"),
                "ada",
                &correlation,
            )
            .await;
            published.entry(correlation).or_default().push(id);
        }
    }
    let slow = Slow::default();
    let (stop, stopped) = watch::channel(false);
    let consumer = tokio::spawn(run_kafka_consumer(
        Consumer {
            handler: Arc::new(slow.clone()),
            store: store.clone(),
            policy: RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(10),
            },
        },
        settings.clone(),
        stopped,
    ));
    wait_until("not every event was handled", || {
        slow.handled
            .lock()
            .unwrap()
            .values()
            .map(Vec::len)
            .sum::<usize>()
            >= 12
    })
    .await;
    stop.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), consumer).await;
    delete_topics(&settings).await;
    assert_eq!(
        *slow.handled.lock().unwrap(),
        published,
        "each transaction's events, once each, in order"
    );
    let most = slow.most_in_hand.load(Ordering::SeqCst);
    assert!(
        most >= 2,
        "one event in hand at a time ({most}): the transactions were handled one after another"
    );
    assert!(
        most <= 4,
        "{most} events in hand at once, more than the handler's concurrency of 4"
    );
}

/// Keeps every event it is handed, undecoded (as a handler that reads a field or two of
/// the raw payload would), except PaymentRefunded, which it does not want.
#[derive(Clone, Default)]
struct Keeps(Arc<Mutex<Vec<StoredEvent>>>);

#[async_trait]
impl Handler for Keeps {
    fn name(&self) -> &'static str {
        "keeping-kafka-consumer"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type != "PaymentRefunded"
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// Produces `payload` to the topic of its aggregate type, keyed by its aggregate id.
async fn produce(
    producer: &rdkafka::producer::FutureProducer,
    settings: &KafkaSettings,
    payload: &str,
) {
    let envelope: cornershop_domain::EventEnvelope = serde_json::from_str(payload).unwrap();
    let topic = format!("{}{}", settings.namespace, envelope.aggregate_type.topic());
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&envelope.aggregate_id)
                .payload(payload),
            Duration::from_secs(30),
        )
        .await
        .expect("the event is in Kafka");
}

/// An envelope as a release that writes schema 99 would publish it.
fn from_the_future(event_type: &str, aggregate_type: &str, id: &str) -> (String, String) {
    let event_id = uuid::Uuid::new_v4().to_string();
    let envelope = json!({
        "eventId": event_id, "eventType": event_type, "aggregateId": id,
        "aggregateType": aggregate_type, "timestamp": "2027-01-01T00:00:00Z", "version": 1,
        "schemaVersion": 99,
        "data": {"orderId": id, "items": [{"sku": "MUG", "quantity": 3}], "somethingNew": {}},
        "metadata": {"correlationId": "future", "causationId": "future", "userId": null,
                     "source": "OrderService"},
    });
    (event_id, envelope.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_old_events_decode_as_the_current_shape_and_a_newer_one_is_dead_lettered() {
    use cornershop_domain::fixtures::{lines, STREAMS};
    use cornershop_domain::{Currency, DomainEvent, CURRENT_SCHEMA_VERSION};

    let settings = fresh_topics().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteEventStore::open(dir.path()).await.unwrap());
    // Both old days, each line as it was stored, and two events of a newer release: one of
    // a type the consumer wants, one of a type it does not.
    let producer = settings.producer().unwrap();
    let mut wanted = 0;
    for (_, stream) in STREAMS {
        for line in lines(stream) {
            produce(&producer, &settings, line).await;
            wanted += usize::from(!line.contains(r#""eventType":"PaymentRefunded""#));
        }
    }
    let (future, payload) = from_the_future("OrderCreated", "Order", "order-from-the-future");
    produce(&producer, &settings, &payload).await;
    let (_, payload) = from_the_future("PaymentRefunded", "Payment", "payment-from-the-future");
    produce(&producer, &settings, &payload).await;

    let keeps = Keeps::default();
    let (stop, stopped) = watch::channel(false);
    let consumer = tokio::spawn(run_kafka_consumer(
        Consumer {
            handler: Arc::new(keeps.clone()),
            store: store.clone(),
            policy: RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(10),
            },
        },
        settings.clone(),
        stopped,
    ));
    wait_until("every old event the consumer wants is handed to it", || {
        keeps.0.lock().unwrap().len() >= wanted
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let letters = loop {
        let letters = cornershop_store::ConsumerState::dead_letters(store.as_ref(), None)
            .await
            .unwrap();
        if !letters.is_empty() || Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), consumer).await;

    // The newer event: parked in the store's dead letters (listed, and re-driven once the
    // consumer runs that release), with the reason; never handed to the handler.
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].event_id.to_string(), future);
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(
        letters[0].error,
        format!(
            "OrderCreated has schema version 99, newer than this build knows \
             ({CURRENT_SCHEMA_VERSION}): upgrade this process to read it; the event was not \
             guessed at"
        )
    );
    let kept = keeps.0.lock().unwrap().clone();
    assert_eq!(kept.len(), wanted);
    assert!(kept
        .iter()
        .all(|e| e.envelope.event_id.to_string() != future));

    // The old events: as published (their schema), and decoded as the current shape.
    let mut countries = std::collections::BTreeMap::new();
    for event in &kept {
        assert!([1, 2].contains(&event.envelope.schema_version));
        let decoded = event.envelope.decode().expect("an old event decodes");
        match &decoded {
            DomainEvent::StockUpdated(e) => assert_eq!(e.currency, Currency::GBP),
            DomainEvent::ItemAddedToCart(e) => assert_eq!(e.currency, Currency::GBP),
            DomainEvent::PaymentInitiated(e) => assert_eq!(e.currency, Currency::GBP),
            DomainEvent::OrderCreated(e) => {
                assert_eq!(e.currency, Currency::GBP);
                countries.insert(
                    (event.envelope.schema_version, e.customer_id.to_string()),
                    e.shipping_address.country_code.map(|c| c.to_string()),
                );
            }
            _ => {}
        }
    }
    for version in [1, 2] {
        let of = |customer: &str| countries[&(version, customer.to_string())].clone();
        assert_eq!(of("cust-ada").as_deref(), Some("GB"));
        assert_eq!(of("cust-bob").as_deref(), Some("GB"), "'gb'");
        assert_eq!(of("cust-cy"), None, "'XX' names no country");
        assert_eq!(of("cust-dee").as_deref(), Some("GB"), "'UK'");
        assert_eq!(of("cust-eve").as_deref(), Some("US"));
    }
    delete_topics(&settings).await;
}
