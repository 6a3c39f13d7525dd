//! The records of the tables beside the log: consumers' checkpoints and dead letters,
//! where events were published, and durable timers.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// How far a consumer has processed the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub consumer: String,
    pub position: u64,
    pub updated_at: DateTime<Utc>,
}

/// An event a consumer could not handle after its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: u64,
    pub consumer: String,
    pub event_id: Uuid,
    pub position: u64,
    pub event_type: String,
    pub aggregate_id: String,
    pub error: String,
    pub attempts: u32,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    /// `pending` until a retry succeeds, then `resolved`.
    pub status: String,
}

/// Where an event was published: the seed's StoredEvent fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub position: u64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A durable timer: fired once `due_at` has passed, surviving restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// One timer per key; scheduling again moves it.
    pub key: String,
    pub kind: String,
    pub due_at: DateTime<Utc>,
    pub payload: serde_json::Value,
}
