//! The envelope every event travels in, exactly the seed's JSON shape (camelCase), plus
//! `schemaVersion` so that stored events can be upcast when a payload changes shape.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::aggregate_type::AggregateType;
use crate::events::{DecodeError, DomainEvent};

/// The payload schema version this code writes. Readers upcast anything older and refuse
/// anything newer (a newer producer must not be half-understood).
pub const CURRENT_SCHEMA_VERSION: u32 = 1;

/// Who and what caused an event. `correlationId` ties every event of one business
/// transaction together; `causationId` names the message that directly caused this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub correlation_id: String,
    pub causation_id: String,
    pub user_id: Option<String>,
    pub source: String,
}

/// An event as stored and as published: the seed's envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_id: String,
    pub aggregate_type: AggregateType,
    /// RFC 3339, UTC.
    pub timestamp: DateTime<Utc>,
    /// The aggregate's sequence number: 1 for its first event, contiguous.
    pub version: u64,
    pub schema_version: u32,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub metadata: Metadata,
}

impl EventEnvelope {
    /// Decodes the payload into a typed event, upcasting older schema versions.
    pub fn decode(&self) -> Result<DomainEvent, DecodeError> {
        let data = upcast(&self.event_type, self.schema_version, self.data.clone())?;
        DomainEvent::decode(&self.event_type, data)
    }
}

/// Brings a payload written with an older schema up to [`CURRENT_SCHEMA_VERSION`].
///
/// There is only version 1 so far; when a payload changes shape, the step from the old
/// version to the new one goes here, keyed by event type, and old events stay untouched
/// in the store.
pub(crate) fn upcast(
    event_type: &str,
    schema_version: u32,
    data: serde_json::Value,
) -> Result<serde_json::Value, DecodeError> {
    match schema_version {
        0 => Err(DecodeError::UnsupportedSchemaVersion {
            event_type: event_type.to_string(),
            schema_version,
        }),
        v if v > CURRENT_SCHEMA_VERSION => Err(DecodeError::UnsupportedSchemaVersion {
            event_type: event_type.to_string(),
            schema_version,
        }),
        _ => Ok(data),
    }
}
