use crate::aggregate_type::AggregateType;

/// How a domain error should be understood by a caller: the HTTP layer maps these to
/// 400, 404 and 409 in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command itself is malformed or out of range.
    Invalid,
    /// The command names something that does not exist.
    NotFound,
    /// The command is well-formed but the aggregate's state does not allow it.
    Conflict,
}

/// Why an aggregate refused a command. Messages are written for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    Invalid(String),
    #[error("{aggregate} '{id}' does not exist")]
    NotFound {
        aggregate: AggregateType,
        id: String,
    },
    #[error("{aggregate} '{id}' already exists")]
    AlreadyExists {
        aggregate: AggregateType,
        id: String,
    },
    #[error("quantity must be between 1 and 999, got {0}")]
    InvalidQuantity(i64),
    #[error("cart '{cart_id}' is {status}; its items can no longer change")]
    CartNotOpen { cart_id: String, status: String },
    #[error("cart '{0}' is empty; add at least one item before checking out")]
    EmptyCart(String),
    /// Every order is paid for (the payment service refuses an amount of zero), so a cart
    /// of free products only cannot be checked out.
    #[error("cart '{0}' totals 0.00; an order needs something to pay, so add a priced item before checking out")]
    NothingToPay(String),
    /// A valid request that the line's current quantity does not leave room for: a
    /// conflict with the cart's state, not a malformed request.
    #[error("a cart line holds at most {max} units; '{sku}' has {already} and {requested} more were requested")]
    LineFull {
        sku: String,
        already: u32,
        requested: u32,
        max: u32,
    },
    /// A cart holds one currency (its total is one sum).
    #[error("cart '{cart_id}' is in {cart_currency}; '{sku}' is priced in {item_currency}, and a cart holds one currency")]
    CurrencyMismatch {
        cart_id: String,
        sku: String,
        cart_currency: String,
        item_currency: String,
    },
    #[error("item '{sku}' is not in cart '{cart_id}'")]
    ItemNotInCart { cart_id: String, sku: String },
    #[error("{aggregate} '{id}' is {from}; it cannot {action}")]
    InvalidTransition {
        aggregate: AggregateType,
        id: String,
        from: String,
        action: String,
    },
    #[error("not enough stock of '{sku}': {requested} requested, {available} available")]
    InsufficientStock {
        sku: String,
        requested: u32,
        available: u32,
    },
}

impl DomainError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) | Self::InvalidQuantity(_) => ErrorKind::Invalid,
            Self::NotFound { .. } | Self::ItemNotInCart { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. }
            | Self::CartNotOpen { .. }
            | Self::EmptyCart(_)
            | Self::NothingToPay(_)
            | Self::LineFull { .. }
            | Self::CurrencyMismatch { .. }
            | Self::InvalidTransition { .. }
            | Self::InsufficientStock { .. } => ErrorKind::Conflict,
        }
    }

    pub(crate) fn transition(
        aggregate: AggregateType,
        id: &str,
        from: impl std::fmt::Debug,
        action: &str,
    ) -> Self {
        Self::InvalidTransition {
            aggregate,
            id: id.to_string(),
            from: format!("{from:?}"),
            action: action.to_string(),
        }
    }
}
