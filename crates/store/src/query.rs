//! Queries of the log: a time window, a filtered page of the global log, and the log's
//! statistics.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cornershop_domain::AggregateType;
use serde::Serialize;

/// An inclusive time window; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl TimeRange {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| t <= to)
    }
}

/// A page of the global log, filtered.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub aggregate_type: Option<AggregateType>,
    pub event_type: Option<String>,
    pub range: TimeRange,
    /// Only events of this business transaction (the envelope's `metadata.correlationId`).
    pub correlation_id: Option<String>,
    /// Only events after this position.
    pub after: u64,
    /// Newest first: only events before this position, in descending order (`u64::MAX`
    /// from the head). `None`: oldest first, the log's order.
    pub before: Option<u64>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreStats {
    pub total_events: u64,
    pub total_aggregates: u64,
    pub head_position: u64,
    pub by_event_type: BTreeMap<String, u64>,
    pub by_aggregate_type: BTreeMap<String, u64>,
    pub first_event_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
}
