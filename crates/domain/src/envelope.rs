//! The envelope every event travels in, exactly the seed's JSON shape (camelCase), plus
//! `schemaVersion` so that stored events can be upcast when a payload changes shape
//! ([`crate::schema`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::aggregate_type::AggregateType;
use crate::events::{DecodeError, DomainEvent};
use crate::schema;

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
    /// Decodes the payload into a typed event, upcasting older schema versions (see
    /// [`crate::schema`]); a newer version is refused, not guessed at.
    pub fn decode(&self) -> Result<DomainEvent, DecodeError> {
        let data = schema::upcast(&self.event_type, self.schema_version, self.data.clone())?;
        DomainEvent::decode(&self.event_type, data)
    }

    /// Whether this build reads the envelope's schema version at all: a consumer asks
    /// before its handler sees the event, so that an event from a newer writer is
    /// dead-lettered with that reason whatever the handler would have made of it.
    pub fn check_schema_version(&self) -> Result<(), DecodeError> {
        schema::check(&self.event_type, self.schema_version)
    }
}
