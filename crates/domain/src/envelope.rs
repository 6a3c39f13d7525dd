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
///
/// - 1: the first shape; personal fields in clear, the payment token kept.
/// - 2: personal fields are [`crate::Personal`] (sealed by the command bus), and
///   `paymentToken` became `paymentMethod`, the gateway's reference (CartCheckedOut,
///   OrderCreated, PaymentInitiated).
pub const CURRENT_SCHEMA_VERSION: u32 = 2;

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

/// Brings a payload written with an older schema up to [`CURRENT_SCHEMA_VERSION`], one
/// step at a time (1 → 2 → ...); old events stay untouched in the store.
pub(crate) fn upcast(
    event_type: &str,
    schema_version: u32,
    mut data: serde_json::Value,
) -> Result<serde_json::Value, DecodeError> {
    if schema_version == 0 || schema_version > CURRENT_SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedSchemaVersion {
            event_type: event_type.to_string(),
            schema_version,
        });
    }
    if schema_version < 2 {
        data = v1_to_v2(event_type, data);
    }
    Ok(data)
}

/// Version 1 kept the payment token; version 2 keeps the payment method's reference in
/// its place. A version-1 token loads as that reference (the simulated gateway takes a
/// legacy token there). A version-1 clear personal field is already a valid
/// [`crate::Personal::Clear`].
fn v1_to_v2(event_type: &str, mut data: serde_json::Value) -> serde_json::Value {
    if matches!(
        event_type,
        "CartCheckedOut" | "OrderCreated" | "PaymentInitiated"
    ) {
        if let Some(object) = data.as_object_mut() {
            if let Some(token) = object.remove("paymentToken") {
                object.entry("paymentMethod").or_insert(token);
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::DomainEvent;
    use crate::personal::Personal;
    use serde_json::json;

    fn v1_order_created() -> serde_json::Value {
        json!({
            "orderId": "ord-1", "cartId": "cart-1", "customerId": "cust-1",
            "totalAmount": "10.00",
            "items": [{"sku": "SKU-1", "name": "Mug", "quantity": 1, "unitPrice": "10.00"}],
            "paymentToken": "tok_visa",
            "shippingAddress": {"name": "Ada", "line1": "1 Road", "city": "London",
                                "postalCode": "N1", "country": "GB"},
            "email": "ada@example.com", "phone": null
        })
    }

    #[test]
    fn a_version_1_order_loads_as_version_2_with_its_token_as_the_method() {
        let data = upcast("OrderCreated", 1, v1_order_created()).unwrap();
        assert_eq!(data["paymentMethod"], "tok_visa");
        assert!(data.get("paymentToken").is_none());
        let DomainEvent::OrderCreated(created) = DomainEvent::decode("OrderCreated", data).unwrap()
        else {
            panic!("not an OrderCreated");
        };
        assert_eq!(created.email, Personal::clear("ada@example.com"));
        assert_eq!(created.shipping_address.name, Personal::clear("Ada"));
        assert_eq!(created.shipping_address.country, "GB");
    }

    #[test]
    fn other_version_1_events_load_unchanged_and_unknown_versions_are_refused() {
        let data = json!({"orderId": "ord-1"});
        assert_eq!(upcast("OrderValidated", 1, data.clone()).unwrap(), data);
        assert_eq!(upcast("OrderValidated", 2, data.clone()).unwrap(), data);
        for version in [0, 3, 99] {
            let err = upcast("OrderValidated", version, data.clone()).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("schema version {version}")),
                "{err}"
            );
        }
    }
}
