//! The customers' data keys as the store keeps them: wrapped by the master key (which the
//! store never sees), one per customer, destroyed by an erasure.

use chrono::{DateTime, Utc};

/// One customer's data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRecord {
    pub key_id: String,
    pub customer_id: String,
    /// The key, wrapped by the master key; `None` once erased (the erasure keeps the row,
    /// so that no new key is ever made for an erased customer).
    pub wrapped: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub erased_at: Option<DateTime<Utc>>,
}

/// What an erasure destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// The customer's key record after the erasure (no wrapped key).
    pub key: DataKeyRecord,
    /// Whether this call destroyed it (false: it was erased before).
    pub destroyed_now: bool,
    /// The customer's notifications that were still to be sent, cancelled.
    pub notifications_cancelled: u64,
}
