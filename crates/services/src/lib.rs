//! The workflow's consumers. Each is a [`Reaction`]: the events it reacts to, and the
//! commands it sends through the command bus in answer, every one keyed by the event that
//! caused it and the step of the reaction, so a redelivered event never acts twice (see
//! `reactor.rs`).
//!
//! - `saga::OrderSaga` (`order-saga`): checkout → order; validated → payment; payment
//!   completed → confirmed.
//! - [`inventory::InventoryService`] (`inventory-service`), the only one that moves stock:
//!   reserves every line of a new order (or releases what it took and cancels when a line
//!   is short), releases the stock of an order whose payment failed (then cancels it) or
//!   that was cancelled, and ships the stock of a shipped order.
//! - `payments::PaymentService` (`payment-service`): authorizes and captures through the
//!   payment gateway, refunds a completed payment of a cancelled order.
//! - [`expiry`] (`cart-expiry`): durable timers that expire idle carts.
//! - [`notifications::NotificationService`] (`notification-service`): records the emails,
//!   SMS and push notifications of an order's events; its dispatchers send them.
//!
//! Offers: [`consumers`] (the consumers of the services a process runs), the
//! [`PaymentGateway`] trait and its [`SimulatedGateway`], the notification settings and
//! dispatchers, the cart-expiry timer runner. Depends on domain, store, app and messaging;
//! never on the read side (readmodels) or the server.

pub mod expiry;
pub mod inventory;
pub mod notifications;
mod payments;
mod reactor;
mod saga;
mod wiring;

pub use payments::{GatewayError, PaymentGateway, SimulatedGateway, SimulatedGatewayConfig};
pub use reactor::{Reacting, Reaction, TRANSACTIONS_AT_ONCE};
pub use wiring::{consumers, Service, ServicesConfig};

pub(crate) use reactor::{handler_error, Reactor};
