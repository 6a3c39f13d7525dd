//! The five aggregates as deciders: `decide(state, command) -> events | error` and
//! `evolve(state, event) -> state`, starting from `Default::default()`.

pub mod cart;
pub mod customer;
pub mod inventory;
pub mod order;
pub mod payment;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aggregate_type::AggregateType;
use crate::error::DomainError;
use crate::events::DomainEvent;

/// An event-sourced aggregate. The initial state is `Default::default()`: an aggregate
/// that has no events yet ("does not exist").
///
/// A state is written and read as JSON (`Serialize`, `Deserialize`): the bus keeps
/// snapshots of long streams that way, as derived data the store can always fold again.
pub trait Aggregate:
    Default + Clone + std::fmt::Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    const TYPE: AggregateType;

    /// The version of the state's shape as JSON: bump it whenever a field of the state is
    /// added, removed, renamed or changes its type or meaning, and whenever `evolve` (or an
    /// upcaster) comes to fold the same events into another state (a bug fixed). A
    /// snapshot written under another number is ignored (the stream is folded from its
    /// first event), so a state is never read into a shape it was not written from, nor
    /// kept from an `evolve` that is gone. `tests/state_schema.rs` pins each state's
    /// shape to its number and fails when the shape changes without the number.
    const STATE_SCHEMA: u32;

    type Command;

    /// Turns a command into the events it causes, or refuses it. Returning no events
    /// means the command changes nothing (for example a repeat of one already applied).
    fn decide(&self, command: &Self::Command) -> Result<Vec<DomainEvent>, DomainError>;

    /// Applies one of this aggregate's events. Events of other aggregates leave the
    /// state unchanged.
    fn evolve(self, event: &DomainEvent) -> Self;

    /// Whether any event has been applied yet.
    fn exists(&self) -> bool;

    /// The customer this aggregate belongs to, for aggregates a customer owns (a cart, an
    /// order); `None` for the shop's own (stock, payments). A customer's command on one it
    /// does not own is answered as if it did not exist.
    fn owner(&self) -> Option<&str> {
        None
    }

    /// Whether the state holds a personal value in clear (one folded from an event
    /// written before sealing existed, schema version 1). Such a state is never kept as
    /// a snapshot: that would be one more copy of the value in clear.
    fn holds_clear_personal_data(&self) -> bool {
        false
    }
}

/// Folds events into a state, from the initial one.
pub fn fold<'a, A: Aggregate>(events: impl IntoIterator<Item = &'a DomainEvent>) -> A {
    events.into_iter().fold(A::default(), A::evolve)
}

fn require_text(field: &str, value: &str, max_len: usize) -> Result<(), DomainError> {
    crate::values::required_text(field, value, max_len).map_err(DomainError::Invalid)
}

/// Money in this shop has at most two decimal places, is never negative, and is at most
/// `max` (see [`crate::money`]). For amounts the aggregate computes itself (a total);
/// one a command brings is a parsed [`crate::Money`].
fn require_money(
    field: &str,
    value: rust_decimal::Decimal,
    max: rust_decimal::Decimal,
) -> Result<(), DomainError> {
    crate::money::check_amount(field, value, max).map_err(DomainError::Invalid)
}

fn require_no_control(field: &str, value: &str) -> Result<(), DomainError> {
    crate::values::no_control(field, value).map_err(DomainError::Invalid)
}
