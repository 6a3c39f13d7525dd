//! The Kafka consumer loop, which drives a [`Handler`](crate::Handler) from its group's
//! topics (parking poison messages in `<topic>.dlq`), and the measurement of the groups'
//! lag.

use std::time::Duration;

use cornershop_domain::{DecodeError, EventEnvelope};
use cornershop_store::{trace, StoredEvent};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::relay::POSITION_HEADER;
use super::KafkaSettings;
use crate::{Consumer, Delivery};

/// A header's value, as text, when the message has it.
fn header<'m>(message: &'m BorrowedMessage<'_>, key: &str) -> Option<&'m str> {
    message
        .headers()
        .and_then(|headers| headers.iter().find(|h| h.key == key).and_then(|h| h.value))
        .and_then(|value| std::str::from_utf8(value).ok())
}

/// The trace the message belongs to: its `traceparent` header (set by the relay), or for a
/// message without one (another producer) the trace derived from its correlation id.
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

/// The message's envelope, if it is an event this build can take: its payload an
/// envelope, of a known type, whose data decodes. An envelope of a schema version newer
/// than this build knows is taken too, undecoded: it is a real event of a newer release
/// (during a rolling upgrade), so the consumer dead-letters it in the store, where it is
/// listed and re-driven once this consumer runs that release (see `Consumer`), instead of
/// parking it on the dead-letter topic, from which nothing re-drives.
fn parse(message: &BorrowedMessage<'_>) -> Result<EventEnvelope, String> {
    let payload = message.payload().ok_or("message has no payload")?;
    let envelope: EventEnvelope = serde_json::from_slice(payload)
        .map_err(|e| format!("payload is not an event envelope: {e}"))?;
    match envelope.check_schema_version() {
        Err(DecodeError::NewerSchemaVersion { .. }) => {
            if cornershop_domain::EventType::parse(&envelope.event_type).is_none() {
                return Err(DecodeError::UnknownEventType(envelope.event_type).to_string());
            }
        }
        _ => {
            envelope.decode().map_err(|e| e.to_string())?;
        }
    }
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

/// Drives a consumer from Kafka until `shutdown`: its group reads the seed's topics in
/// batches of what is fetched; a message that is not a well-formed event this build
/// understands (not JSON, unknown eventType, a payload that does not decode) goes to
/// `<topic>.dlq` with the error and its origin in headers; every other message of a type
/// the handler wants goes through it (retries, then the store's dead letters; an event of
/// a newer schema version straight to the store's dead letters, with that reason); the
/// offsets are committed after that.
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
        let first = tokio::select! {
            m = kafka.recv() => m,
            _ = tokio::time::sleep(commit_due.unwrap_or_default()), if commit_due.is_some() => {
                handled.commit(&kafka, &group, CommitMode::Async);
                continue;
            }
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let batch = match first {
            Ok(first) => fetched_batch(&kafka, first),
            Err(e) => {
                tracing::warn!(group, error = %e, "Kafka receive failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut events = Vec::with_capacity(batch.len());
        for message in &batch {
            match parse(message) {
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
                    while let Err(e) = dead_letter_to_topic(&dlq, message, &group, &error).await {
                        tracing::warn!(group, error = %e, "cannot produce to the dead-letter topic; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = shutdown.wait_for(|s| *s) => return,
                        }
                    }
                }
                Ok(envelope) if consumer.handler.handles(&envelope.event_type) => {
                    events.push(StoredEvent {
                        // The global position is the store's, not Kafka's (the relay sends
                        // it in a header); consumers on Kafka work by eventId.
                        position: message_position(message),
                        topic: Some(message.topic().to_string()),
                        partition: Some(message.partition()),
                        offset: Some(message.offset()),
                        trace_id: message_trace_id(message, &envelope),
                        envelope,
                    })
                }
                Ok(_) => {}
            }
        }
        // The batch as the embedded transport delivers one (in one write for a handler that
        // batches, or by business transaction, each one's events in the order they came).
        // Its offsets are recorded only once all of it is handled: a batch cut short by
        // shutdown comes again (handlers are idempotent).
        if consumer.deliver_all(&events, &shutdown).await == Delivery::Interrupted {
            break;
        }
        for message in &batch {
            handled.record(message);
        }
        if handled.due_in() == Some(Duration::ZERO) {
            handled.commit(&kafka, &group, CommitMode::Async);
        }
    }
    // Whatever was handled (and only that: not a message whose handling was interrupted)
    // is committed before leaving the group.
    handled.commit(&kafka, &group, CommitMode::Sync);
    tracing::info!(group, "Kafka consumer stopped");
}

/// Most messages a consumer handles as one batch (see [`fetched_batch`]).
const BATCH: usize = 256;

/// `first` and the messages already fetched behind it, up to [`BATCH`]: never waits for
/// more, so a lone message is handled at once and a backlog in batches whose business
/// transactions are handled side by side (up to the handler's concurrency), their
/// commands sharing the database's commits instead of waiting for one each.
fn fetched_batch<'c>(
    kafka: &'c StreamConsumer,
    first: BorrowedMessage<'c>,
) -> Vec<BorrowedMessage<'c>> {
    use futures::FutureExt;
    let mut batch = vec![first];
    while batch.len() < BATCH {
        match kafka.recv().now_or_never() {
            Some(Ok(message)) => batch.push(message),
            Some(Err(e)) => {
                // What is fetched is handled first; the next receive tries again.
                tracing::warn!(error = %e, "Kafka receive failed; handling what was fetched");
                break;
            }
            None => break,
        }
    }
    batch
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
        let (mut progress, mut behind) = (0u64, 0u64);
        for position in group_positions(settings, &group, &topics, timeout)? {
            let lag = match position.committed {
                Some(committed) => position.high - committed,
                None => position.high - position.low,
            };
            metrics::gauge!(
                "kafka_consumer_lag",
                "consumer_group" => group.clone(),
                "topic" => position.topic,
                "partition" => position.partition.to_string()
            )
            .set(lag.max(0) as f64);
            if let Some(committed) = position.committed {
                progress += committed.max(0) as u64;
            }
            behind += lag.max(0) as u64;
        }
        stalls.observe(&group, progress, progress + behind);
    }
    Ok(())
}

/// Where a group stands on one partition: the offset it committed (`None` when it has
/// committed none there) and the partition's watermarks.
pub(super) struct GroupPosition {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) committed: Option<i64>,
    pub(super) low: i64,
    pub(super) high: i64,
}

/// `group`'s position on every partition of those of `topics` that exist, read from the
/// broker (blocking; each request waits up to `timeout`). The lag measurement and the
/// inspector (`inspect.rs`) both read it this way.
pub(super) fn group_positions(
    settings: &KafkaSettings,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<GroupPosition>, KafkaError> {
    // Not subscribed: it only reads the group's committed offsets, it never joins.
    let client: BaseConsumer = settings
        .client()
        .set("group.id", group)
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
    committed
        .elements()
        .iter()
        .map(|element| {
            let (low, high) =
                client.fetch_watermarks(element.topic(), element.partition(), timeout)?;
            Ok(GroupPosition {
                topic: element.topic().to_string(),
                partition: element.partition(),
                committed: match element.offset() {
                    Offset::Offset(committed) => Some(committed),
                    _ => None,
                },
                low,
                high,
            })
        })
        .collect()
}
