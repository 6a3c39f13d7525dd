//! The typed events: the seed's seventeen plus the ones a real flow needs
//! (ItemRemovedFromCart, OrderCancelled, PaymentRefunded).
//!
//! Payloads carry everything their consumers need, so that no consumer has to call back
//! into the write side: OrderCreated carries the items and the contact details the
//! notification service will use, OrderShipped the carrier and tracking number, and so on.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::aggregate_type::AggregateType;
use crate::personal::{Personal, PersonalAddress, PersonalData};
use crate::values::{CartId, CountryCode, Currency, CustomerId, OrderId, PaymentId, Sku};

/// One line of a cart or an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    #[schema(value_type = String)]
    pub sku: Sku,
    pub name: String,
    pub quantity: u32,
    #[schema(value_type = String, example = "19.99")]
    pub unit_price: Decimal,
}

impl LineItem {
    /// Unit price times quantity; `None` if it does not fit a `Decimal` (only an event from
    /// a writer that did not bound its prices can get there).
    pub fn line_total(&self) -> Option<Decimal> {
        self.unit_price.checked_mul(Decimal::from(self.quantity))
    }
}

/// Sum of the line totals; `None` if any of them, or the sum, overflows.
pub fn total_of(items: &[LineItem]) -> Option<Decimal> {
    items.iter().try_fold(Decimal::ZERO, |sum, line| {
        sum.checked_add(line.line_total()?)
    })
}

/// Where a checkout ships to, as its command carries it (in clear: the bus seals the
/// event's copy, a [`PersonalAddress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country_code: CountryCode,
}

// ---- Cart ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CartCreated {
    pub cart_id: CartId,
    pub customer_id: CustomerId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemAddedToCart {
    pub cart_id: CartId,
    pub sku: Sku,
    pub name: String,
    pub quantity: u32,
    pub unit_price: Decimal,
    /// The unit price's currency (schema 3; older events were in pounds).
    pub currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemRemovedFromCart {
    pub cart_id: CartId,
    pub sku: Sku,
    /// The quantity the line had when it was removed.
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CartCheckedOut {
    pub cart_id: CartId,
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub items: Vec<LineItem>,
    pub total_amount: Decimal,
    /// The currency of the lines and the total (schema 3; older events were in pounds).
    pub currency: Currency,
    /// The gateway's reference of the payment method the checkout's token was exchanged
    /// for (schema version 1 kept the token itself here, as `paymentToken`).
    pub payment_method: String,
    pub shipping_address: PersonalAddress,
    pub email: Personal,
    pub phone: Option<Personal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CartExpired {
    pub cart_id: CartId,
    pub customer_id: CustomerId,
}

// ---- Order --------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub order_id: OrderId,
    pub cart_id: CartId,
    pub customer_id: CustomerId,
    pub total_amount: Decimal,
    /// The currency of the lines and the total (schema 3; older events were in pounds).
    pub currency: Currency,
    pub items: Vec<LineItem>,
    /// The gateway's reference of the payment method (see [`CartCheckedOut`]).
    pub payment_method: String,
    pub shipping_address: PersonalAddress,
    pub email: Personal,
    pub phone: Option<Personal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderValidated {
    pub order_id: OrderId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderConfirmed {
    pub order_id: OrderId,
    pub payment_id: PaymentId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderShipped {
    pub order_id: OrderId,
    pub carrier: String,
    pub tracking_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderDelivered {
    pub order_id: OrderId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    pub order_id: OrderId,
    pub reason: String,
    /// The status the order had when it was cancelled; compensation depends on it.
    pub previous_status: String,
}

// ---- Payment ------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentInitiated {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub amount: Decimal,
    /// The amount's currency, which the payment's later events are in too (schema 3;
    /// older events were in pounds).
    pub currency: Currency,
    /// The gateway's reference of the payment method (see [`CartCheckedOut`]).
    pub payment_method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentAuthorized {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub amount: Decimal,
    pub authorization_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCompleted {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub amount: Decimal,
    pub transaction_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentFailed {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    /// A machine-readable code such as `card_declined` or `insufficient_funds`.
    pub code: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRefunded {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub amount: Decimal,
    pub reason: String,
}

// ---- Inventory ----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockUpdated {
    pub sku: Sku,
    pub name: String,
    pub unit_price: Decimal,
    /// The unit price's currency (schema 3; older events were in pounds).
    pub currency: Currency,
    /// Units available for sale after the update (reserved units are not included).
    pub quantity: u32,
    pub low_stock_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockReserved {
    pub sku: Sku,
    pub order_id: OrderId,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockReleased {
    pub sku: Sku,
    pub order_id: OrderId,
    pub quantity: u32,
    pub reason: String,
}

/// An order's reserved units left the warehouse with its shipment: they are no longer
/// reserved, and they never come back to available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockShipped {
    pub sku: Sku,
    pub order_id: OrderId,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LowStockAlert {
    pub sku: Sku,
    pub available: u32,
    pub low_stock_threshold: u32,
}

// ---- Customer -----------------------------------------------------------------------

/// A customer's personal data was erased on request (GDPR article 17): their data key is
/// destroyed, so every sealed value of theirs is unreadable from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerDataErased {
    pub customer_id: CustomerId,
    /// The data keys destroyed.
    pub key_ids: Vec<String>,
    /// Stored events that hold this customer's data in clear (written before sealing
    /// existed, schema version 1): an erasure cannot shred them.
    #[serde(default)]
    pub unshredded_event_ids: Vec<uuid::Uuid>,
}

/// Declares the event enum once and derives from that single list the names, the
/// aggregate each event belongs to, and the encode/decode functions, so the list of
/// event types cannot drift between them.
macro_rules! domain_events {
    ($( $variant:ident => $aggregate:ident, $id:ident; )*) => {
        /// Every event of the shop.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum DomainEvent {
            $( $variant($variant), )*
        }

        /// The type of an event without its payload: what a consumer names when it says
        /// which events it reacts to (a misspelt type is a compile error, not a silent
        /// filter that never matches).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType {
            $( $variant, )*
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$( Self::$variant, )*];

            /// The name as it appears in the envelope's `eventType`.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => stringify!($variant), )* }
            }

            /// The type of an envelope's `eventType`; `None` for a name this build does
            /// not know.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $( stringify!($variant) => Some(Self::$variant), )*
                    _ => None,
                }
            }

            /// The kind of aggregate whose events are of this type.
            pub fn aggregate_type(self) -> AggregateType {
                match self { $( Self::$variant => AggregateType::$aggregate, )* }
            }

            /// Whether the name is one of `types` (a consumer's filter).
            pub fn is_one_of(name: &str, types: &[EventType]) -> bool {
                Self::parse(name).is_some_and(|t| types.contains(&t))
            }
        }

        impl std::fmt::Display for EventType {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl DomainEvent {
            /// Every event type name, as it appears in `eventType`.
            pub const TYPES: &'static [&'static str] = &[$( stringify!($variant), )*];

            pub fn event_type(&self) -> &'static str {
                self.kind().as_str()
            }

            pub fn kind(&self) -> EventType {
                match self { $( Self::$variant(_) => EventType::$variant, )* }
            }

            pub fn aggregate_type(&self) -> AggregateType {
                match self { $( Self::$variant(_) => AggregateType::$aggregate, )* }
            }

            /// The id of the aggregate this event belongs to.
            pub fn aggregate_id(&self) -> &str {
                match self { $( Self::$variant(e) => e.$id.as_str(), )* }
            }

            /// The payload as it goes into the envelope's `data`.
            pub fn data(&self) -> serde_json::Value {
                match self {
                    $( Self::$variant(e) => serde_json::to_value(e)
                        .expect("event payloads are plain data and always serialize"), )*
                }
            }

            /// Builds a typed event from an (upcast) payload.
            pub fn decode(event_type: &str, data: serde_json::Value) -> Result<Self, DecodeError> {
                match event_type {
                    $( stringify!($variant) => serde_json::from_value(data)
                        .map(Self::$variant)
                        .map_err(|error| DecodeError::BadPayload {
                            event_type: event_type.to_string(),
                            error,
                        }), )*
                    other => Err(DecodeError::UnknownEventType(other.to_string())),
                }
            }
        }

        $(
            impl From<$variant> for DomainEvent {
                fn from(e: $variant) -> Self { Self::$variant(e) }
            }
        )*
    };
}

domain_events! {
    CartCreated => Cart, cart_id;
    ItemAddedToCart => Cart, cart_id;
    ItemRemovedFromCart => Cart, cart_id;
    CartCheckedOut => Cart, cart_id;
    CartExpired => Cart, cart_id;
    OrderCreated => Order, order_id;
    OrderValidated => Order, order_id;
    OrderConfirmed => Order, order_id;
    OrderShipped => Order, order_id;
    OrderDelivered => Order, order_id;
    OrderCancelled => Order, order_id;
    PaymentInitiated => Payment, payment_id;
    PaymentAuthorized => Payment, payment_id;
    PaymentCompleted => Payment, payment_id;
    PaymentFailed => Payment, payment_id;
    PaymentRefunded => Payment, payment_id;
    StockUpdated => Inventory, sku;
    StockReserved => Inventory, sku;
    StockReleased => Inventory, sku;
    StockShipped => Inventory, sku;
    LowStockAlert => Inventory, sku;
    CustomerDataErased => Customer, customer_id;
}

impl DomainEvent {
    /// The personal data this event holds and whose it is; `None` for an event without.
    pub fn personal_data_mut(&mut self) -> Option<PersonalData<'_>> {
        let (customer_id, address, email, phone) = match self {
            Self::CartCheckedOut(e) => (
                &e.customer_id,
                &mut e.shipping_address,
                &mut e.email,
                &mut e.phone,
            ),
            Self::OrderCreated(e) => (
                &e.customer_id,
                &mut e.shipping_address,
                &mut e.email,
                &mut e.phone,
            ),
            _ => return None,
        };
        let mut values: Vec<&mut Personal> = address.values_mut().collect();
        values.push(email);
        values.extend(phone.as_mut());
        Some(PersonalData {
            customer_id: customer_id.as_str(),
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_named_as_in_the_envelope_and_parses_back() {
        assert_eq!(EventType::ALL.len(), DomainEvent::TYPES.len());
        for (kind, name) in EventType::ALL.iter().zip(DomainEvent::TYPES) {
            assert_eq!(kind.as_str(), *name);
            assert_eq!(EventType::parse(name), Some(*kind));
        }
        assert_eq!(EventType::parse("orderCreated"), None);
        assert!(EventType::is_one_of(
            "OrderCreated",
            &[EventType::OrderCreated]
        ));
        assert!(!EventType::is_one_of(
            "OrderCreated",
            &[EventType::OrderShipped]
        ));
        assert!(!EventType::is_one_of("NoSuchEvent", EventType::ALL));
    }

    #[test]
    fn all_seventeen_seed_event_types_exist() {
        let seed = [
            "CartCreated",
            "ItemAddedToCart",
            "CartCheckedOut",
            "CartExpired",
            "OrderCreated",
            "OrderValidated",
            "OrderConfirmed",
            "OrderShipped",
            "OrderDelivered",
            "PaymentInitiated",
            "PaymentAuthorized",
            "PaymentCompleted",
            "PaymentFailed",
            "StockReserved",
            "StockReleased",
            "StockUpdated",
            "LowStockAlert",
        ];
        for name in seed {
            assert!(DomainEvent::TYPES.contains(&name), "{name} missing");
        }
        for extra in [
            "ItemRemovedFromCart",
            "OrderCancelled",
            "PaymentRefunded",
            "StockShipped",
        ] {
            assert!(DomainEvent::TYPES.contains(&extra), "{extra} missing");
        }
    }

    #[test]
    fn payload_round_trips_through_json_with_camel_case_and_exact_money() {
        let event = DomainEvent::from(ItemAddedToCart {
            cart_id: "c1".into(),
            sku: "SKU-1".into(),
            name: "Mug".into(),
            quantity: 3,
            unit_price: "0.10".parse().unwrap(),
            currency: Currency::GBP,
        });
        let data = event.data();
        assert_eq!(data["cartId"], "c1");
        assert_eq!(data["unitPrice"], "0.10");
        assert_eq!(data["currency"], "GBP");
        let back = DomainEvent::decode("ItemAddedToCart", data).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn a_payload_with_a_value_no_writer_may_write_is_refused_by_name() {
        let data = serde_json::json!({
            "cartId": "c1", "sku": "../etc", "name": "Mug", "quantity": 1, "unitPrice": "1.00",
            "currency": "GBP"
        });
        let err = DomainEvent::decode("ItemAddedToCart", data).unwrap_err();
        assert!(matches!(err, DecodeError::BadPayload { .. }), "{err:?}");
        assert!(
            err.to_string().contains("sku '../etc' is not a valid SKU"),
            "{err}"
        );
        let data = serde_json::json!({"cartId": "", "customerId": "c"});
        let err = DomainEvent::decode("CartCreated", data).unwrap_err();
        assert!(
            err.to_string().contains("cartId must not be empty"),
            "{err}"
        );
    }

    #[test]
    fn unknown_event_type_is_refused() {
        let err = DomainEvent::decode("Teleported", serde_json::json!({})).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownEventType(t) if t == "Teleported"));
    }
}

/// A stored payload that this code cannot turn into a typed event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type '{0}'")]
    UnknownEventType(String),
    /// Written by a newer release: read by none of this build's steps, so refused whole
    /// (a consumer dead-letters it, to be re-driven once it runs the newer release).
    #[error("{event_type} has schema version {schema_version}, newer than this build knows ({known}): upgrade this process to read it; the event was not guessed at")]
    NewerSchemaVersion {
        event_type: String,
        schema_version: u32,
        /// The newest version this build reads.
        known: u32,
    },
    #[error("{event_type} has schema version 0, which no build writes")]
    UnknownSchemaVersion { event_type: String },
    /// (The JSON error is told in the message, so it is not a `source` too: a chain
    /// printed whole would say it twice.)
    #[error("payload of '{event_type}' does not match its schema: {error}")]
    BadPayload {
        event_type: String,
        error: serde_json::Error,
    },
}
