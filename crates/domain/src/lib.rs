//! CornerShop's domain core: the event envelope, the typed events, the four aggregates
//! (Cart, Order, Payment, Inventory) written as deciders, and the typed values
//! ([`values`]) their commands and events are made of: an id, a SKU, an e-mail address
//! or an amount is parsed once where it enters, never handed on as a bare string.
//!
//! Everything here is pure: no I/O, no clocks, no async. A command handler elsewhere
//! loads an aggregate's events, folds them with [`Aggregate::evolve`], asks
//! [`Aggregate::decide`] what the command means, and appends the answer. Replay and
//! time travel use the very same `evolve`, which is what makes them trustworthy.
//!
//! Depends on no other crate of the workspace, and on nothing async or with I/O.

mod aggregate_type;
pub mod aggregates;
pub mod causes;
mod envelope;
mod error;
mod events;
/// The committed streams of stored events of older schema versions (tests and the
/// `testkit` feature).
#[cfg(any(test, feature = "testkit"))]
pub mod fixtures;
pub mod ids;
mod iso;
pub mod money;
pub mod panics;
pub mod personal;
pub mod schema;
/// Given/when/then for the aggregates' tests (and, with the `testkit` feature, other
/// crates' tests).
#[cfg(any(test, feature = "testkit"))]
pub mod spec;
pub mod values;

pub use aggregate_type::AggregateType;
pub use aggregates::{
    cart::{Cart, CartCommand, CartStatus},
    customer::{Customer, CustomerCommand},
    fold,
    inventory::{Inventory, InventoryCommand},
    order::{Order, OrderCommand, OrderStatus},
    payment::{Payment, PaymentCommand, PaymentStatus},
    Aggregate,
};
pub use envelope::{EventEnvelope, Metadata};
pub use error::{DomainError, ErrorKind};
pub use events::*;
pub use personal::{Personal, PersonalAddress, PersonalData, Sealed};
pub use schema::{
    EncodeError, WriteSchema, CURRENT_SCHEMA_VERSION, OLDEST_WRITABLE_SCHEMA_VERSION,
};
pub use values::{
    CartId, CountryCode, Currency, CustomerId, Email, Money, OrderId, PaymentId, Phone, Quantity,
    Sku, ValueError,
};
