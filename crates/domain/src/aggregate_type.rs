//! The five kinds of aggregate, their names in the envelope and their Kafka topics. A leaf
//! of the domain: the errors, the events and the envelope all name it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which kind of aggregate an event belongs to (the envelope's `aggregateType`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum AggregateType {
    Cart,
    Order,
    Payment,
    Inventory,
    /// A customer's privacy record (the erasure of their personal data).
    Customer,
}

impl AggregateType {
    pub const ALL: [AggregateType; 5] = [
        Self::Cart,
        Self::Order,
        Self::Payment,
        Self::Inventory,
        Self::Customer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cart => "Cart",
            Self::Order => "Order",
            Self::Payment => "Payment",
            Self::Inventory => "Inventory",
            Self::Customer => "Customer",
        }
    }

    /// Accepts the canonical name in any letter case ("Order", "order").
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    /// The Kafka topic that carries this aggregate's events.
    pub fn topic(self) -> &'static str {
        match self {
            Self::Cart => "carts.events",
            Self::Order => "orders.events",
            Self::Payment => "payments.events",
            Self::Inventory => "inventory.events",
            Self::Customer => "customers.events",
        }
    }
}

impl std::fmt::Display for AggregateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
