//! The embedded transport: a consumer tails the store's own log from its checkpoint and
//! sleeps until the next append wakes it (no polling).

use std::time::Duration;

use tokio::sync::watch;

use crate::{Consumer, Delivery};

/// How many events are read per query, and how many are handled between checkpoints.
const BATCH: u32 = 256;

/// Runs a consumer until `shutdown` turns true.
pub async fn run_embedded(consumer: Consumer, mut shutdown: watch::Receiver<bool>) {
    let name = consumer.name();
    let store = consumer.store.clone();
    let mut head = store.watch_head();
    let mut position = loop {
        match store.checkpoint(name).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::error!(consumer = name, error = %e, "cannot read checkpoint; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }
    };
    tracing::info!(consumer = name, position, "consumer started");
    while !*shutdown.borrow() {
        // Mark the current head as seen before reading, so that an append committed
        // after this read is sure to wake us.
        head.borrow_and_update();
        let batch = match store.read_log(position, BATCH).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(consumer = name, error = %e, "cannot read the log; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                changed = head.changed() => if changed.is_err() { break },
                _ = shutdown.wait_for(|s| *s) => break,
            }
            continue;
        }
        let mut handled_to = position;
        if consumer.handler.concurrency() > 1 || consumer.handler.batches() {
            // The whole batch, in one write or by transaction; the checkpoint moves only once
            // all of it is handled (a crash before that delivers the batch again: handlers
            // are idempotent).
            if consumer.deliver_all(&batch, &shutdown).await == Delivery::Handled {
                handled_to = batch.last().map_or(position, |e| e.position);
            }
        } else {
            for event in &batch {
                if consumer.handler.handles(&event.envelope.event_type)
                    && consumer.deliver_traced(event, &mut shutdown).await == Delivery::Interrupted
                {
                    break;
                }
                handled_to = event.position;
            }
        }
        if handled_to > position {
            position = handled_to;
            // On the embedded log, a consumer's lag is its distance from the log head.
            let head = *store.watch_head().borrow();
            metrics::gauge!("kafka_consumer_lag", "consumer_group" => name, "topic" => "log", "partition" => "0")
                .set(head.saturating_sub(position) as f64);
            if let Err(e) = store.save_checkpoint(name, position).await {
                // Not fatal: the events after the stored checkpoint are delivered again
                // after a restart, and handlers are idempotent.
                tracing::warn!(consumer = name, error = %e, "cannot save checkpoint");
            }
        }
    }
    tracing::info!(consumer = name, position, "consumer stopped");
}

/// On the embedded default the store's log is the topic: an event is published when its
/// append commits and subscribers can see it. This task counts those publications with
/// the same metrics the Kafka relay uses (`events_published_total`,
/// `event_publish_duration_seconds`: from the event's timestamp to its being read off the
/// log), so dashboards read the same on both transports.
pub async fn count_publications(
    store: std::sync::Arc<dyn cornershop_store::EventStore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut head = store.watch_head();
    let mut position = *head.borrow_and_update();
    metrics::gauge!("kafka_producer_queue_size", "client_id" => "embedded").set(0.0);
    while !*shutdown.borrow() {
        head.borrow_and_update();
        match store.read_log(position, BATCH).await {
            Ok(batch) if !batch.is_empty() => {
                let now = chrono::Utc::now();
                for event in &batch {
                    let labels = [
                        ("event_type", event.envelope.event_type.clone()),
                        ("topic", event.envelope.aggregate_type.topic().to_string()),
                    ];
                    metrics::counter!("events_published_total", &labels).increment(1);
                    let waited = (now - event.envelope.timestamp)
                        .num_microseconds()
                        .unwrap_or(0);
                    metrics::histogram!("event_publish_duration_seconds", &labels)
                        .record(waited.max(0) as f64 / 1e6);
                    position = event.position;
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the log for publication metrics"),
        }
        tokio::select! {
            changed = head.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
}
