//! What both backends do alike: turning an append's events into the rows to insert and
//! the events to return, reading a row's trace id, cutting timestamps to microseconds,
//! telling a taken key from other insert errors, and counting stored events.

use chrono::{DateTime, Utc};
use cornershop_domain::{AggregateType, EventEnvelope, Metadata};

use crate::{trace, NewEvent, StoreError, StoredEvent};

/// Counts appended events by type (`events_stored_total`); called by every backend after
/// its commit.
pub(crate) fn count_stored(events: &[StoredEvent]) {
    for event in events {
        metrics::counter!("events_stored_total", "event_type" => event.envelope.event_type.clone())
            .increment(1);
    }
}

/// The store keeps microseconds (truncating towards the past), on both backends.
pub(crate) fn truncate_to_micros(t: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
    let us = t.timestamp_micros();
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} is out of range")))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// An insert of a key that must be new (an idempotency key, a dedupe key): a unique-key
/// violation becomes `taken`, any other error is the store's.
pub(crate) fn unless_taken<T>(
    inserted: Result<T, sqlx::Error>,
    taken: impl FnOnce() -> StoreError,
) -> Result<(), StoreError> {
    match inserted {
        Err(e) if is_unique_violation(&e) => Err(taken()),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// An event's `data` and `metadata` as the JSON text an insert writes.
pub(crate) type EventJson = (String, String);

/// An append's events as the store will read them back (timestamps cut to microseconds,
/// versions after the expected one; the insert fills in the positions), and each event's
/// data and metadata as the JSON text the insert writes.
pub(crate) fn events_to_store(
    aggregate_type: AggregateType,
    aggregate_id: &str,
    expected_version: u64,
    events: Vec<NewEvent>,
) -> Result<(Vec<StoredEvent>, Vec<EventJson>), StoreError> {
    let mut stored = Vec::with_capacity(events.len());
    let mut rows = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let metadata = serde_json::to_string(&event.metadata)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        rows.push((event.data.to_string(), metadata));
        let trace_id = event.resolved_trace_id();
        stored.push(StoredEvent {
            position: 0,
            envelope: EventEnvelope {
                event_id: event.event_id,
                event_type: event.event_type,
                aggregate_id: aggregate_id.to_string(),
                aggregate_type,
                timestamp: truncate_to_micros(event.timestamp)?,
                version: expected_version + 1 + i as u64,
                schema_version: event.schema_version,
                data: event.data,
                metadata: event.metadata,
            },
            topic: None,
            partition: None,
            offset: None,
            trace_id,
        });
    }
    Ok((stored, rows))
}

/// The trace id of a stored row: the column, or (rows stored before it existed) derived
/// from the correlation id.
pub(crate) fn stored_trace_id(column: Option<String>, metadata: &Metadata) -> String {
    column.unwrap_or_else(|| trace::trace_id_for_correlation(&metadata.correlation_id))
}
