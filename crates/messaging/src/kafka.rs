//! The Kafka transport: the outbox relay that publishes the log to the seed's topics, and
//! the consumer loop that drives the same [`Handler`](crate::Handler)s from Kafka.
//!
//! Producer settings are the seed's: `acks=all`, `enable.idempotence=true`, retries with
//! backoff, `client.id=cornerShop-event-publisher`. Consumers use a group per service,
//! `auto.offset.reset=earliest`, `enable.auto.commit=false`, and commit a message's offset
//! only after its handler's effects are durable in the store.

use std::sync::Arc;
use std::time::Duration;

use cornershop_domain::{AggregateType, EventEnvelope};
use cornershop_store::{trace, EventStore, Publication, StoreError, StoredEvent};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{Consumer, Delivery};

pub const PUBLISHER_CLIENT_ID: &str = "cornerShop-event-publisher";
/// The lease that makes one relay active among several.
pub const RELAY_LEASE: &str = "outbox-relay";
/// The relay's checkpoint in the store: the last position published.
pub const RELAY_CHECKPOINT: &str = "outbox-relay";

/// Events the relay reads, publishes and records per round: the deliveries of a round are
/// awaited together, and their offsets recorded in one statement.
const RELAY_BATCH: u32 = 2000;

/// Where Kafka is and how topics are laid out.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    /// Prefixed to every topic and consumer group name, so that several shops (or test
    /// runs) can share a broker. Empty by default: the topics are then exactly the seed's.
    pub namespace: String,
    pub partitions: i32,
    pub replication: i32,
}

impl KafkaSettings {
    pub fn topic(&self, aggregate_type: AggregateType) -> String {
        format!("{}{}", self.namespace, aggregate_type.topic())
    }

    pub fn topics(&self) -> Vec<String> {
        AggregateType::ALL.iter().map(|t| self.topic(*t)).collect()
    }

    pub fn group(&self, consumer: &str) -> String {
        format!("{}{}", self.namespace, consumer)
    }

    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    /// The seed's idempotent producer.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.producer_with_timeout(Duration::from_secs(30))
    }

    /// The producer, giving up on a message after `timeout` (retries included).
    pub fn producer_with_timeout(&self, timeout: Duration) -> Result<FutureProducer, KafkaError> {
        self.client()
            .set("client.id", PUBLISHER_CLIENT_ID)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.send.max.retries", "10")
            .set("retry.backoff.ms", "1000")
            .set(
                "message.timeout.ms",
                timeout.as_millis().max(1000).to_string(),
            )
            .set("linger.ms", "5")
            .create()
    }

    fn consumer(&self, group: &str) -> Result<StreamConsumer, KafkaError> {
        self.client()
            .set("group.id", group)
            .set("client.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            .create()
    }

    /// Creates the seed's topics and their dead-letter topics when missing.
    pub async fn ensure_topics(&self) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client().create()?;
        let names: Vec<String> = self
            .topics()
            .into_iter()
            .flat_map(|t| [format!("{t}.dlq"), t])
            .collect();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.partitions,
                    TopicReplication::Fixed(self.replication),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::error!(topic, "cannot create topic");
                    })
                }
            }
        }
        Ok(())
    }
}

/// The header that carries the event's position in the store's global log, so that a
/// consumer's dead letters and the projection's checkpoint name it without asking the store.
pub const POSITION_HEADER: &str = "position";

fn headers(event: &StoredEvent) -> OwnedHeaders {
    let envelope = &event.envelope;
    let trace = event.traceparent();
    let position = event.position.to_string();
    OwnedHeaders::new()
        .insert(Header {
            key: "eventType",
            value: Some(envelope.event_type.as_str()),
        })
        .insert(Header {
            key: "correlationId",
            value: Some(envelope.metadata.correlation_id.as_str()),
        })
        .insert(Header {
            key: "causationId",
            value: Some(envelope.metadata.causation_id.as_str()),
        })
        .insert(Header {
            key: "traceparent",
            value: Some(trace.as_str()),
        })
        .insert(Header {
            key: POSITION_HEADER,
            value: Some(position.as_str()),
        })
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Publishes one batch of the log in order and records where each event landed.
/// Returns the last position published.
pub async fn publish_batch(
    store: &dyn EventStore,
    producer: &FutureProducer,
    settings: &KafkaSettings,
    batch: &[StoredEvent],
) -> Result<Option<u64>, RelayError> {
    // Enqueue the whole batch first (the idempotent producer keeps per-partition order),
    // then wait for every delivery report.
    let mut pending = Vec::with_capacity(batch.len());
    for event in batch {
        let topic = settings.topic(event.envelope.aggregate_type);
        let payload = serde_json::to_vec(&event.envelope).expect("envelopes serialize");
        let record = FutureRecord::to(&topic)
            .key(event.envelope.aggregate_id.as_str())
            .payload(&payload)
            .headers(headers(event));
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| RelayError::Kafka(e))?;
        pending.push((event, topic, delivery));
    }
    let started = std::time::Instant::now();
    let mut published = Vec::with_capacity(pending.len());
    for (event, topic, delivery) in pending {
        let (position, envelope) = (event.position, &event.envelope);
        let event_type = envelope.event_type.as_str();
        let result = delivery.await;
        let ok = matches!(result, Ok(Ok(_)));
        let labels = [
            ("event_type", event_type.to_string()),
            ("topic", topic.clone()),
        ];
        if ok {
            metrics::counter!("events_published_total", &labels).increment(1);
            metrics::histogram!("event_publish_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
        } else {
            metrics::counter!("events_publish_errors_total", &labels).increment(1);
        }
        if let Ok(Ok(d)) = &result {
            tracing::info!(
                eventType = event_type,
                topic = %topic,
                partition = d.partition,
                offset = d.offset,
                correlationId = %envelope.metadata.correlation_id,
                traceId = %event.trace_id,
                aggregateId = %envelope.aggregate_id,
                "Event published successfully"
            );
        }
        match result {
            Ok(Ok(d)) => published.push(Publication {
                position,
                topic,
                partition: d.partition,
                offset: d.offset,
            }),
            Ok(Err((e, _))) => return Err(e.into()),
            Err(_) => return Err(KafkaError::Canceled.into()),
        }
    }
    store.record_publications(&published).await?;
    Ok(published.last().map(|p| p.position))
}

/// The outbox relay: while it holds the relay lease, it publishes the log after its
/// checkpoint to Kafka, in order, at least once. A relay that dies loses the lease when
/// it expires, and another relay takes over from the checkpoint.
pub async fn run_relay(
    store: Arc<dyn EventStore>,
    settings: KafkaSettings,
    lease_ttl: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // The holder names the process, so that an operator (or a test) can tell which relay
    // is active from the lease row.
    let holder = format!(
        "relay-pid{}-{}",
        std::process::id(),
        Uuid::new_v4().simple()
    );
    // A batch must fail (and the loop renew the lease) before the lease can lapse, or a
    // standby could take over while this relay still waits on deliveries.
    let producer = match settings.producer_with_timeout(lease_ttl / 2) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the Kafka producer; relay not started");
            return;
        }
    };
    let mut head = store.watch_head();
    let renew_every = lease_ttl / 3;
    let mut leader = false;
    let mut last_renewal = tokio::time::Instant::now();
    while !*shutdown.borrow() {
        if !leader || last_renewal.elapsed() >= renew_every {
            let held = store
                .try_lease(RELAY_LEASE, &holder, lease_ttl)
                .await
                .unwrap_or(false);
            if held != leader {
                tracing::info!(holder, active = held, "relay lease changed hands");
            }
            leader = held;
            last_renewal = tokio::time::Instant::now();
            if !leader {
                tokio::select! {
                    _ = tokio::time::sleep(renew_every) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                continue;
            }
        }
        head.borrow_and_update();
        let result = async {
            let after = store.checkpoint(RELAY_CHECKPOINT).await?;
            let batch = store.read_log(after, RELAY_BATCH).await?;
            if batch.is_empty() {
                return Ok::<bool, RelayError>(false);
            }
            if let Some(last) = publish_batch(store.as_ref(), &producer, &settings, &batch).await? {
                store.save_checkpoint(RELAY_CHECKPOINT, last).await?;
                tracing::debug!(events = batch.len(), position = last, "relayed to Kafka");
            }
            Ok(true)
        }
        .await;
        metrics::gauge!("kafka_producer_queue_size", "client_id" => PUBLISHER_CLIENT_ID)
            .set(producer.in_flight_count() as f64);
        match result {
            Ok(true) => continue,
            Ok(false) => {
                // Idle: wait for an append, the next lease renewal, or shutdown.
                tokio::select! {
                    _ = head.changed() => {}
                    _ = tokio::time::sleep(renew_every) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "relay batch failed; it will be published again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(5));
    if leader {
        let _ = store.release_lease(RELAY_LEASE, &holder).await;
    }
    tracing::info!(holder, "relay stopped");
}

/// Why a message cannot be handed to a handler at all.
/// The trace the message belongs to: its `traceparent` header (set by the relay), or for a
/// message without one (another producer) the trace derived from its correlation id.
fn header<'m>(message: &'m BorrowedMessage<'_>, key: &str) -> Option<&'m str> {
    message
        .headers()
        .and_then(|headers| headers.iter().find(|h| h.key == key).and_then(|h| h.value))
        .and_then(|value| std::str::from_utf8(value).ok())
}

fn message_trace_id(message: &BorrowedMessage<'_>, envelope: &EventEnvelope) -> String {
    header(message, "traceparent")
        .and_then(trace::trace_id_from_traceparent)
        .unwrap_or_else(|| trace::trace_id_for_correlation(&envelope.metadata.correlation_id))
}

/// The store position the relay put in the headers; 0 (unknown) on a message produced by
/// anything else.
fn message_position(message: &BorrowedMessage<'_>) -> u64 {
    header(message, POSITION_HEADER)
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

fn parse(message: &BorrowedMessage<'_>) -> Result<EventEnvelope, String> {
    let payload = message.payload().ok_or("message has no payload")?;
    let envelope: EventEnvelope = serde_json::from_slice(payload)
        .map_err(|e| format!("payload is not an event envelope: {e}"))?;
    envelope.decode().map_err(|e| e.to_string())?;
    Ok(envelope)
}

async fn dead_letter_to_topic(
    producer: &FutureProducer,
    message: &BorrowedMessage<'_>,
    group: &str,
    error: &str,
) -> Result<(), KafkaError> {
    let dlq = format!("{}.dlq", message.topic());
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: "error",
            value: Some(error),
        })
        .insert(Header {
            key: "originTopic",
            value: Some(message.topic()),
        })
        .insert(Header {
            key: "originPartition",
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: "originOffset",
            value: Some(offset.as_str()),
        })
        .insert(Header {
            key: "consumerGroup",
            value: Some(group),
        });
    if let Some(original) = message.headers() {
        for header in original.iter() {
            headers = headers.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    let mut record = FutureRecord::to(&dlq).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// Drives a consumer from Kafka until `shutdown`: its group reads the seed's topics; a
/// message that is not a well-formed event this build understands (not JSON, unknown
/// eventType, a newer schemaVersion) goes to `<topic>.dlq` with the error and its origin
/// in headers; every other message goes through the handler (retries, then the store's
/// dead letters); the offset is committed after that.
pub async fn run_kafka_consumer(
    consumer: Consumer,
    settings: KafkaSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let group = settings.group(consumer.name());
    let (kafka, dlq) = match (settings.consumer(&group), settings.producer()) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(group, error = %e, "cannot create the Kafka consumer");
            return;
        }
    };
    let topics = settings.topics();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = kafka.subscribe(&topic_refs) {
        tracing::error!(group, error = %e, "cannot subscribe");
        return;
    }
    tracing::info!(group, "Kafka consumer started");
    let mut handled = HandledOffsets::default();
    loop {
        let commit_due = handled.due_in();
        let message = tokio::select! {
            m = kafka.recv() => m,
            _ = tokio::time::sleep(commit_due.unwrap_or_default()), if commit_due.is_some() => {
                handled.commit(&kafka, &group, CommitMode::Async);
                continue;
            }
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(group, error = %e, "Kafka receive failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        match parse(&message) {
            Err(error) => {
                tracing::warn!(
                    group,
                    topic = message.topic(),
                    offset = message.offset(),
                    error,
                    "poison message; sending it to the dead-letter topic"
                );
                // Keep trying: the offset must not move past a message that is neither
                // handled nor parked.
                while let Err(e) = dead_letter_to_topic(&dlq, &message, &group, &error).await {
                    tracing::warn!(group, error = %e, "cannot produce to the dead-letter topic; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
            Ok(envelope) => {
                if consumer.handler.handles(&envelope.event_type) {
                    let event = StoredEvent {
                        // The global position is the store's, not Kafka's (the relay sends
                        // it in a header); consumers on Kafka work by eventId.
                        position: message_position(&message),
                        topic: Some(message.topic().to_string()),
                        partition: Some(message.partition()),
                        offset: Some(message.offset()),
                        trace_id: message_trace_id(&message, &envelope),
                        envelope,
                    };
                    let delivery = consumer.deliver_traced(&event, &mut shutdown).await;
                    if delivery == Delivery::Interrupted {
                        break;
                    }
                }
            }
        }
        handled.record(&message);
        if handled.due_in() == Some(Duration::ZERO) {
            handled.commit(&kafka, &group, CommitMode::Async);
        }
    }
    // Whatever was handled (and only that: not a message whose handling was interrupted)
    // is committed before leaving the group.
    handled.commit(&kafka, &group, CommitMode::Sync);
    tracing::info!(group, "Kafka consumer stopped");
}

/// How often a consumer commits the offsets it has handled. One OffsetCommit per message
/// queues up on the connection to the group coordinator, and the group's heartbeats wait
/// behind it: a broker slow to write commits (one just started) then misses heartbeats for
/// the session timeout, and the group stalls about 20 s to rejoin. A crash loses at most
/// this much of the commits, and the handlers are idempotent, so the repeats are harmless.
const COMMIT_EVERY: Duration = Duration::from_millis(250);

/// The next offset of every partition whose messages are handled (or parked) and not yet
/// committed.
#[derive(Default)]
struct HandledOffsets {
    next: std::collections::BTreeMap<(String, i32), i64>,
    last_commit: Option<tokio::time::Instant>,
}

impl HandledOffsets {
    fn record(&mut self, message: &BorrowedMessage<'_>) {
        self.next.insert(
            (message.topic().to_string(), message.partition()),
            message.offset() + 1,
        );
    }

    /// How long until a commit is due; `None` when there is nothing to commit.
    fn due_in(&self) -> Option<Duration> {
        if self.next.is_empty() {
            return None;
        }
        Some(self.last_commit.map_or(Duration::ZERO, |at| {
            COMMIT_EVERY.saturating_sub(at.elapsed())
        }))
    }

    fn commit(&mut self, kafka: &StreamConsumer, group: &str, mode: CommitMode) {
        self.last_commit = Some(tokio::time::Instant::now());
        if self.next.is_empty() {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in std::mem::take(&mut self.next) {
            if let Err(e) = offsets.add_partition_offset(&topic, partition, Offset::Offset(next)) {
                tracing::warn!(group, topic, partition, error = %e, "cannot list an offset to commit");
            }
        }
        if let Err(e) = kafka.commit(&offsets, mode) {
            tracing::warn!(group, error = %e, "offset commit failed; the messages since the last commit may be delivered again");
        }
    }
}

/// Measures `kafka_consumer_lag` (high watermark minus committed offset, per group, topic
/// and partition) from the broker every `every`, until `shutdown`.
pub async fn monitor_lag(
    settings: KafkaSettings,
    consumers: Vec<String>,
    every: Duration,
    stalls: std::sync::Arc<crate::StallWatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        let (s, c, w) = (settings.clone(), consumers.clone(), stalls.clone());
        match tokio::task::spawn_blocking(move || measure_lag(&s, &c, &w)).await {
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot measure consumer lag"),
            Err(e) => tracing::debug!(error = %e, "lag measurement panicked"),
            Ok(Ok(())) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
}

/// Sets `kafka_consumer_lag` per partition and tells the stall watch where each group
/// stands: its committed offsets summed over the partitions, against the same plus its
/// lag (a group is stalled when it has messages to take and its commits stand still).
fn measure_lag(
    settings: &KafkaSettings,
    consumers: &[String],
    stalls: &crate::StallWatch,
) -> Result<(), KafkaError> {
    let timeout = Duration::from_secs(5);
    let topics = settings.topics();
    for consumer in consumers {
        let group = settings.group(consumer);
        // Not subscribed: it only reads the group's committed offsets, it never joins.
        let client: BaseConsumer = settings
            .client()
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = client.fetch_metadata(None, timeout)?;
        let mut partitions = TopicPartitionList::new();
        for topic in metadata.topics() {
            if topics.iter().any(|t| t == topic.name()) {
                for p in topic.partitions() {
                    partitions.add_partition(topic.name(), p.id());
                }
            }
        }
        let committed = client.committed_offsets(partitions, timeout)?;
        let (mut progress, mut behind) = (0u64, 0u64);
        for element in committed.elements() {
            let (low, high) =
                client.fetch_watermarks(element.topic(), element.partition(), timeout)?;
            let lag = match element.offset() {
                Offset::Offset(committed) => high - committed,
                _ => high - low,
            };
            metrics::gauge!(
                "kafka_consumer_lag",
                "consumer_group" => group.clone(),
                "topic" => element.topic().to_string(),
                "partition" => element.partition().to_string()
            )
            .set(lag.max(0) as f64);
            if let Offset::Offset(committed) = element.offset() {
                progress += committed.max(0) as u64;
            }
            behind += lag.max(0) as u64;
        }
        stalls.observe(&group, progress, progress + behind);
    }
    Ok(())
}
