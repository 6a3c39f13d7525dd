//! CornerShop's domain core: the event envelope, the typed events, and the four
//! aggregates (Cart, Order, Payment, Inventory) written as deciders.
//!
//! Everything here is pure: no I/O, no clocks, no async. A command handler elsewhere
//! loads an aggregate's events, folds them with [`Aggregate::evolve`], asks
//! [`Aggregate::decide`] what the command means, and appends the answer. Replay and
//! time travel use the very same `evolve`, which is what makes them trustworthy.
//!
//! Depends on no other crate of the workspace, and on nothing async or with I/O.

pub mod aggregate_type;
pub mod aggregates;
pub mod causes;
pub mod envelope;
pub mod error;
pub mod events;
pub mod ids;
pub mod money;
/// Given/when/then for the aggregates' tests (and, with the `testkit` feature, other
/// crates' tests).
#[cfg(any(test, feature = "testkit"))]
pub mod spec;

pub use aggregate_type::AggregateType;
pub use aggregates::{
    cart::{Cart, CartCommand, CartStatus},
    fold,
    inventory::{Inventory, InventoryCommand},
    order::{Order, OrderCommand, OrderStatus},
    payment::{Payment, PaymentCommand, PaymentStatus},
    Aggregate,
};
pub use envelope::{EventEnvelope, Metadata, CURRENT_SCHEMA_VERSION};
pub use error::{DomainError, ErrorKind};
pub use events::*;

/// Money is an exact decimal, never a float.
pub type Money = rust_decimal::Decimal;
