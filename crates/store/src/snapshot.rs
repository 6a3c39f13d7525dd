//! A snapshot as the store keeps it: one aggregate's state at one version, as JSON, so that
//! a long stream loads from it plus the events after it. Derived data: the events alone
//! make the state, a snapshot only saves folding them. Neither backend writes one in an
//! append's transaction, and what a snapshot holds is the caller's to judge (the command
//! bus checks its state schema, that it decodes, and that the stream still holds the
//! event it was taken after).

use chrono::{DateTime, Utc};
use cornershop_domain::AggregateType;
use uuid::Uuid;

/// One aggregate's state after its event `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub aggregate_type: AggregateType,
    pub aggregate_id: String,
    /// The version of the last event folded into the state (at least 1).
    pub version: u64,
    /// The id of that event: a stream that does not hold it at `version` is not the stream
    /// the snapshot was taken from (the snapshot is stale).
    pub event_id: Uuid,
    /// The shape of `state` (the aggregate's `STATE_SCHEMA` when it was taken).
    pub state_schema: u32,
    /// The state, as JSON text.
    pub state: String,
    /// The correlation and trace ids of the aggregate's first event (its business
    /// transaction, which a command continuing it joins), so that a load from the
    /// snapshot need not read that event.
    pub origin_correlation_id: String,
    pub origin_trace_id: String,
    pub taken_at: DateTime<Utc>,
}
