//! The Kafka inspector against a real broker (`CORNERSHOP_TEST_KAFKA_BROKERS`, as
//! `scripts/stack.sh start` prints it; each test skips without it): the shop's topics with
//! their partitions and watermarks as produced; a consumer group's committed offsets and
//! lag, as the consumer loop commits them; the messages of a partition with key, headers
//! and value, from an offset, and only of the shop's topics.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cornershop_messaging::kafka::{
    run_kafka_consumer, GroupView, InspectError, KafkaInspector, KafkaSecurity, KafkaSettings,
    Secret, SecurityProtocol, TopicPartition, BROWSE_LIMIT, VALUE_LIMIT,
};
use cornershop_messaging::{Consumer, Handler, HandlerError, RetryPolicy};
use cornershop_store::{SqliteEventStore, StoredEvent};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders, ToBytes};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tokio::sync::watch;

const BROKERS: &str = "CORNERSHOP_TEST_KAFKA_BROKERS";

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

/// Topics of their own (`partitions` each) on the test broker, deleted by
/// [`delete_topics`]; `None`, saying why, when no broker is configured.
async fn fresh_topics(test: &str, partitions: i32) -> Option<KafkaSettings> {
    let Ok(brokers) = std::env::var(BROKERS) else {
        eprintln!(
            "skipping {test}: {BROKERS} is not set, and this test needs Kafka. Run \
             ./scripts/test.sh, or `set -a; eval \"$(scripts/stack.sh start)\"; set +a`"
        );
        return None;
    };
    let settings = KafkaSettings {
        brokers,
        namespace: format!("ki{:x}.", rand::random::<u64>()),
        partitions,
        replication: 1,
        security: test_security(),
    };
    settings.ensure_topics().await.expect("create the topics");
    Some(settings)
}

async fn delete_topics(settings: &KafkaSettings) {
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create().unwrap();
    let topics = settings.topics();
    let dlqs: Vec<String> = topics.iter().map(|t| format!("{t}.dlq")).collect();
    let names: Vec<&str> = topics.iter().chain(&dlqs).map(String::as_str).collect();
    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
}

fn topic(settings: &KafkaSettings, name: &str) -> String {
    format!("{}{name}", settings.namespace)
}

/// Sends `record` and waits until Kafka has it.
async fn send<K, P>(producer: &FutureProducer, record: FutureRecord<'_, K, P>)
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    producer
        .send(record, Duration::from_secs(30))
        .await
        .expect("the message is in Kafka");
}

/// A CartCreated envelope of `cart`, as the relay publishes it.
fn cart_created(cart: &str) -> String {
    json!({
        "eventId": uuid::Uuid::new_v4().to_string(), "eventType": "CartCreated",
        "aggregateId": cart, "aggregateType": "Cart", "timestamp": "2026-01-01T00:00:00Z",
        "version": 1, "schemaVersion": 1, "data": {"cartId": cart, "customerId": "ada"},
        "metadata": {"correlationId": cart, "causationId": cart, "userId": null,
                     "source": "CartService"},
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_lists_the_shop_topics_with_their_partitions_and_watermarks() {
    let Some(settings) = fresh_topics(
        "topics_lists_the_shop_topics_with_their_partitions_and_watermarks",
        2,
    )
    .await
    else {
        return;
    };
    let producer = settings.producer().unwrap();
    let (carts, orders) = (
        topic(&settings, "carts.events"),
        topic(&settings, "orders.events"),
    );
    for (topic, partition, count) in [(&carts, 0, 3), (&carts, 1, 2), (&orders, 1, 1)] {
        for i in 0..count {
            let key = format!("k{i}");
            send(
                &producer,
                FutureRecord::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload("{}"),
            )
            .await;
        }
    }

    let views = KafkaInspector::new(settings.clone())
        .topics()
        .await
        .unwrap();

    let names: Vec<&str> = views.iter().map(|t| t.name.as_str()).collect();
    let expected: BTreeSet<String> = settings
        .topics()
        .into_iter()
        .flat_map(|t| [format!("{t}.dlq"), t])
        .collect();
    assert_eq!(
        names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>(),
        expected,
        "the event topics and their dead-letter topics, nothing else"
    );
    for pair in names.chunks(2) {
        assert_eq!(
            pair[1],
            format!("{}.dlq", pair[0]),
            "each topic, then its .dlq"
        );
    }
    for view in &views {
        assert_eq!(view.dead_letter, view.name.ends_with(".dlq"), "{view:?}");
        assert_eq!(
            view.partitions
                .iter()
                .map(|p| p.partition)
                .collect::<Vec<_>>(),
            [0, 1],
            "{view:?}"
        );
        for p in &view.partitions {
            assert!(
                p.leader >= 0,
                "a single broker leads every partition: {p:?}"
            );
            assert_eq!(p.replicas, [p.leader], "{p:?}");
            assert_eq!(p.in_sync_replicas, [p.leader], "{p:?}");
            assert_eq!(p.low, 0, "{p:?}");
            assert_eq!(p.messages, p.high - p.low, "{p:?}");
        }
        let watermarks: Vec<(i64, i64)> = view.partitions.iter().map(|p| (p.low, p.high)).collect();
        let (want, total) = if view.name == carts {
            (vec![(0, 3), (0, 2)], 5)
        } else if view.name == orders {
            (vec![(0, 0), (0, 1)], 1)
        } else {
            (vec![(0, 0), (0, 0)], 0)
        };
        assert_eq!(watermarks, want, "{}", view.name);
        assert_eq!(view.messages, total, "{}", view.name);
    }
    let json = serde_json::to_value(&views[0]).unwrap();
    assert!(json["partitions"][0]["inSyncReplicas"].is_array(), "{json}");
    assert!(json["deadLetter"].is_boolean(), "{json}");
    delete_topics(&settings).await;
}

const GROUP: &str = "inspected-consumer";

/// Records the carts it handles.
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
            .push(event.envelope.aggregate_id.clone());
        Ok(())
    }
}

/// The inspector's groups, read until `done` holds of them (up to 60 s).
async fn groups_until(
    inspector: &KafkaInspector,
    what: &str,
    done: impl Fn(&[GroupView]) -> bool,
) -> Vec<GroupView> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let groups = inspector.groups().await.unwrap();
        if done(&groups) {
            return groups;
        }
        assert!(Instant::now() < deadline, "after 60 s: {what}; {groups:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_shows_its_members_committed_offsets_and_lag() {
    let Some(settings) =
        fresh_topics("a_group_shows_its_members_committed_offsets_and_lag", 1).await
    else {
        return;
    };
    let inspector = KafkaInspector::new(settings.clone());
    let producer = settings.producer().unwrap();
    let carts = topic(&settings, "carts.events");
    for cart in ["cart-1", "cart-2", "cart-3"] {
        let payload = cart_created(cart);
        send(
            &producer,
            FutureRecord::to(&carts).key(cart).payload(&payload),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteEventStore::open(dir.path()).await.unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (stop, stopped) = watch::channel(false);
    let consumer = tokio::spawn(run_kafka_consumer(
        Consumer {
            handler: Arc::new(Recording(seen.clone())),
            store,
            policy: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
            },
        },
        settings.clone(),
        stopped,
    ));
    let group = format!("{}{GROUP}", settings.namespace);

    // Running, and all of it handled and committed: lag 0, and its member is assigned the
    // event topics.
    let groups = groups_until(
        &inspector,
        "the consumer's commits reach the end",
        |groups| {
            groups.iter().any(|g| {
                g.name == group
                    && g.state == "Stable"
                    && g.offsets
                        .iter()
                        .any(|o| o.topic == carts && o.committed == 3)
            })
        },
    )
    .await;
    assert_eq!(groups.len(), 1, "only the namespace's group: {groups:#?}");
    let view = &groups[0];
    assert_eq!(view.protocol_type, "consumer", "{view:#?}");
    assert!(!view.protocol.is_empty(), "{view:#?}");
    assert_eq!(view.lag, 0, "{view:#?}");
    let carts_offset = view.offsets.iter().find(|o| o.topic == carts).unwrap();
    assert_eq!(
        (
            carts_offset.partition,
            carts_offset.committed,
            carts_offset.high,
            carts_offset.lag
        ),
        (0, 3, 3, 0)
    );
    assert_eq!(view.members.len(), 1, "{view:#?}");
    let member = &view.members[0];
    assert_eq!(
        member.client_id, group,
        "the consumer names itself after its group"
    );
    assert!(
        !member.member_id.is_empty() && !member.host.is_empty(),
        "{member:#?}"
    );
    let mut assigned: Vec<TopicPartition> = settings
        .topics()
        .into_iter()
        .map(|topic| TopicPartition {
            topic,
            partition: 0,
        })
        .collect();
    assigned.sort();
    assert_eq!(
        member.assignment, assigned,
        "decoded from the consumer protocol"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);

    // Browsing reads without joining or committing: still only the consumer's group.
    let browsed = inspector.browse(&carts, 0, 0, 10).await.unwrap();
    assert_eq!(browsed.len(), 3);
    let names: Vec<String> = inspector
        .groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, [group.as_str()]);

    // Stopped, with two more messages behind its commit: lag 2, no members.
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), consumer)
        .await
        .expect("the consumer stops")
        .unwrap();
    for cart in ["cart-4", "cart-5"] {
        let payload = cart_created(cart);
        send(
            &producer,
            FutureRecord::to(&carts).key(cart).payload(&payload),
        )
        .await;
    }
    let groups = groups_until(&inspector, "the group is left with a lag", |groups| {
        groups
            .iter()
            .any(|g| g.name == group && g.lag > 0 && g.members.is_empty())
    })
    .await;
    let view = &groups[0];
    assert_eq!(view.state, "Empty", "{view:#?}");
    let carts_offset = view.offsets.iter().find(|o| o.topic == carts).unwrap();
    assert_eq!(
        (carts_offset.committed, carts_offset.high, carts_offset.lag),
        (3, 5, 2)
    );
    assert_eq!(view.lag, 2, "{view:#?}");
    let json = serde_json::to_value(view).unwrap();
    assert_eq!(json["offsets"][0]["lag"], 2, "{json}");
    assert!(json["protocolType"].is_string(), "{json}");
    delete_topics(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_returns_the_messages_of_a_shop_topic_from_an_offset() {
    let Some(settings) = fresh_topics(
        "browse_returns_the_messages_of_a_shop_topic_from_an_offset",
        1,
    )
    .await
    else {
        return;
    };
    let inspector = KafkaInspector::new(settings.clone());
    let producer = settings.producer().unwrap();
    let carts = topic(&settings, "carts.events");
    for i in 0..5 {
        let (key, value, n) = (format!("cart-{i}"), format!("{{\"n\":{i}}}"), i.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "eventType",
                value: Some("CartCreated"),
            })
            .insert(Header {
                key: "n",
                value: Some(n.as_str()),
            })
            .insert(Header::<&str> {
                key: "empty",
                value: None,
            });
        send(
            &producer,
            FutureRecord::to(&carts)
                .key(&key)
                .payload(&value)
                .headers(headers),
        )
        .await;
    }
    // A value past the limit, its last character a two-byte one across the cut.
    let big = format!("{}é", "x".repeat(VALUE_LIMIT - 1));
    send(&producer, FutureRecord::to(&carts).key("big").payload(&big)).await;
    let started = chrono::Utc::now().timestamp_millis() - 120_000;

    // From offset 2, three of them.
    let messages = inspector.browse(&carts, 0, 2, 3).await.unwrap();
    assert_eq!(
        messages.iter().map(|m| m.offset).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    for m in &messages {
        let i = m.offset;
        assert_eq!(m.partition, 0);
        assert_eq!(m.key.as_deref(), Some(format!("cart-{i}").as_str()));
        assert_eq!(m.value.as_deref(), Some(format!("{{\"n\":{i}}}").as_str()));
        assert!(!m.value_truncated);
        assert_eq!(m.value_bytes, m.value.as_ref().unwrap().len());
        assert!(m.timestamp.is_some_and(|t| t > started), "{m:?}");
        let headers: Vec<(&str, Option<&str>)> = m
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_deref()))
            .collect();
        assert_eq!(
            headers,
            [
                ("eventType", Some("CartCreated")),
                ("n", Some(i.to_string().as_str())),
                ("empty", None)
            ]
        );
    }

    // Below the low watermark: from the first; a limit past what there is: up to the end.
    let all = inspector.browse(&carts, 0, -10, 50).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    let last = &all[5];
    assert!(last.value_truncated);
    assert_eq!(last.value_bytes, VALUE_LIMIT + 1);
    assert_eq!(
        last.value.as_deref(),
        Some("x".repeat(VALUE_LIMIT - 1).as_str())
    );
    let json = serde_json::to_value(last).unwrap();
    assert_eq!(json["valueTruncated"], true);

    // At the high watermark, and on an empty topic: nothing (and at once).
    let at = Instant::now();
    assert!(inspector.browse(&carts, 0, 6, 10).await.unwrap().is_empty());
    let dlq = format!("{carts}.dlq");
    assert!(inspector.browse(&dlq, 0, 0, 10).await.unwrap().is_empty());
    assert!(at.elapsed() < Duration::from_secs(3), "{:?}", at.elapsed());

    // At most BROWSE_LIMIT at once.
    let orders = topic(&settings, "orders.events");
    let sends = (0..BROWSE_LIMIT + 20).map(|i| {
        let (producer, orders) = (&producer, &orders);
        async move {
            let key = format!("order-{i}");
            send(producer, FutureRecord::to(orders).key(&key).payload("{}")).await
        }
    });
    futures::future::join_all(sends).await;
    let many = inspector.browse(&orders, 0, 0, 1000).await.unwrap();
    assert_eq!(many.len(), BROWSE_LIMIT);
    assert_eq!(many.last().unwrap().offset, BROWSE_LIMIT as i64 - 1);

    // Not the shop's topics, nor a partition that is not there.
    for other in ["__consumer_offsets", "carts.events", "elsewhere.events"] {
        match inspector.browse(other, 0, 0, 10).await {
            Err(InspectError::NotAShopTopic(named)) => assert_eq!(named, other),
            got => panic!("browsing {other}: {got:?}"),
        }
    }
    let refused = inspector
        .browse("elsewhere.events", 0, 0, 10)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("not one of the shop's topics"),
        "{refused}"
    );
    match inspector.browse(&carts, 7, 0, 10).await {
        Err(InspectError::NoSuchPartition { topic, partition }) => {
            assert_eq!((topic.as_str(), partition), (carts.as_str(), 7))
        }
        got => panic!("browsing partition 7: {got:?}"),
    }
    delete_topics(&settings).await;
}
