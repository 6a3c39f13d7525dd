//! The outbox relay: publishes the store's log to the seed's topics, in order, at least
//! once, while it holds the relay lease, and records where each event landed.

use std::sync::Arc;
use std::time::Duration;

use cornershop_store::{EventStore, Publication, StoreError, StoredEvent};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::watch;
use uuid::Uuid;

use super::admin::PUBLISHER_CLIENT_ID;
use super::KafkaSettings;

/// The lease that makes one relay active among several.
const RELAY_LEASE: &str = "outbox-relay";
/// The relay's checkpoint in the store: the last position published.
const RELAY_CHECKPOINT: &str = "outbox-relay";

/// Events the relay reads, publishes and records per round: the deliveries of a round are
/// awaited together, and their offsets recorded in one statement.
const RELAY_BATCH: u32 = 2000;

/// The header that carries the event's position in the store's global log, so that a
/// consumer's dead letters and the projection's checkpoint name it without asking the store.
pub(super) const POSITION_HEADER: &str = "position";

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
enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Publishes one batch of the log in order and records where each event landed.
/// Returns the last position published.
async fn publish_batch(
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
                // From the event's decision to the broker's acknowledgement.
                relayed_ms = crate::millis(chrono::Utc::now() - envelope.timestamp),
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
