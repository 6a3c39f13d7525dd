//! An event going into the store ([`NewEvent`], in an [`AppendRequest`], perhaps with the
//! [`IdempotentResponse`] to keep with it) and coming out of it ([`StoredEvent`]).

use chrono::{DateTime, Utc};
use cornershop_domain::{AggregateType, EventEnvelope, Metadata};
use serde::Serialize;
use uuid::Uuid;

use crate::trace;

/// An event about to be appended; the store gives it its version and position.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub timestamp: DateTime<Utc>,
    pub data: serde_json::Value,
    pub metadata: Metadata,
    /// The W3C trace id of the business transaction (see [`trace`]); `None` derives it
    /// from the correlation id.
    pub trace_id: Option<String>,
}

/// An event as the store holds it: the seed's envelope, its place in the global log, and
/// where it was published (the seed's StoredEvent).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    /// Position in the global log (commit order), starting at 1.
    pub position: u64,
    #[serde(flatten)]
    pub envelope: EventEnvelope,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// The W3C trace id of the event's business transaction (see [`trace`]).
    pub trace_id: String,
}

impl StoredEvent {
    /// The event's W3C `traceparent` (its trace, and its own span).
    pub fn traceparent(&self) -> String {
        trace::traceparent(&self.trace_id, self.envelope.event_id)
    }
}

impl NewEvent {
    /// The trace id this event will be stored with.
    pub(crate) fn resolved_trace_id(&self) -> String {
        self.trace_id
            .clone()
            .unwrap_or_else(|| trace::trace_id_for_correlation(&self.metadata.correlation_id))
    }
}

/// The answer to a request carrying an `Idempotency-Key`, kept so that a repeat of the
/// request gets the same answer and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentResponse {
    pub key: String,
    /// Identifies the request (method, path, body) so that a key reused for a different
    /// request can be refused.
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
}

/// Appends to one aggregate, atomically, only if its version is still `expected_version`.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub aggregate_type: AggregateType,
    pub aggregate_id: String,
    pub expected_version: u64,
    pub events: Vec<NewEvent>,
    /// Stored in the same transaction as the events.
    pub idempotency: Option<IdempotentResponse>,
    /// Marks the command as applied, in the same transaction: a second append with the
    /// same key stores nothing and returns [`StoreError::AlreadyApplied`]. Consumers derive
    /// it from the event that caused the command, which makes their effects exactly-once.
    ///
    /// [`StoreError::AlreadyApplied`]: crate::StoreError::AlreadyApplied
    pub dedupe_key: Option<String>,
}

impl AppendRequest {
    pub fn new(
        aggregate_type: AggregateType,
        aggregate_id: impl Into<String>,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Self {
        Self {
            aggregate_type,
            aggregate_id: aggregate_id.into(),
            expected_version,
            events,
            idempotency: None,
            dedupe_key: None,
        }
    }
}
