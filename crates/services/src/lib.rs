//! The workflow's consumers. Each reacts to events by sending commands through the
//! command bus; every command is keyed by the event that caused it and the step of the
//! reaction, so a redelivered event never acts twice (see [`Reactor::once`]).
//!
//! - [`saga::OrderSaga`] (`order-saga`): checkout → order; validated → payment; payment
//!   completed → confirmed; payment failed → stock released, order cancelled.
//! - [`inventory::InventoryService`] (`inventory-service`): reserves every line of a new
//!   order (or releases what it took and cancels when a line is short), and releases the
//!   stock of a cancelled order.
//! - [`payments::PaymentService`] (`payment-service`): authorizes and captures through the
//!   payment gateway, refunds a completed payment of a cancelled order.
//! - [`expiry`] (`cart-expiry`): durable timers that expire idle carts.
//! - [`notifications::NotificationService`] (`notification-service`): records the emails,
//!   SMS and push notifications of an order's events; its dispatchers send them.

pub mod expiry;
pub mod inventory;
pub mod notifications;
pub mod payments;
pub mod saga;

use std::sync::Arc;
use std::time::Duration;

use cornershop_app::{AppError, CommandBus, CommandContext, Executed};
use cornershop_domain::{Aggregate, DomainError, Order};
use cornershop_messaging::{Consumer, ConsumerRegistry, HandlerError, RetryPolicy};
use cornershop_store::StoredEvent;

/// How many business transactions (orders) a workflow consumer works on at once on the
/// embedded log (see `Handler::concurrency`): their commands share group commits.
pub const TRANSACTIONS_AT_ONCE: usize = 32;

pub use payments::{GatewayError, PaymentGateway, SimulatedGateway, SimulatedGatewayConfig};

/// Settings of the workflow's consumers.
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// A cart idle this long expires.
    pub cart_ttl: Duration,
    pub retry: RetryPolicy,
    /// Wakes the notification dispatchers when the notification consumer records work.
    pub notification_wakeup: notifications::Wakeup,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            cart_ttl: Duration::from_secs(30 * 60),
            retry: RetryPolicy::default(),
            notification_wakeup: notifications::Wakeup::default(),
        }
    }
}

pub(crate) fn handler_error(e: AppError) -> HandlerError {
    match e {
        AppError::Store(ref store) if store.unavailability().is_some() => {
            HandlerError::Unavailable(e.to_string())
        }
        AppError::Store(_) | AppError::Contended { .. } => HandlerError::Transient(e.to_string()),
        AppError::Domain(_)
        | AppError::Invalid(_)
        | AppError::Decode(_)
        | AppError::IdempotencyKeyReused(_) => HandlerError::Permanent(e.to_string()),
    }
}

/// What a consumer uses to react to one event: the bus, and the event as the cause of
/// the commands it sends.
pub(crate) struct Reactor<'a> {
    pub bus: &'a CommandBus,
    pub consumer: &'static str,
    pub cause: &'a StoredEvent,
    pub ctx: CommandContext,
}

/// How a step of a reaction ended.
pub(crate) enum Step<A> {
    Applied(Executed<A>),
    /// This step ran already for this cause (a redelivery).
    AlreadyApplied,
}

impl<'a> Reactor<'a> {
    pub fn new(bus: &'a CommandBus, consumer: &'static str, cause: &'a StoredEvent) -> Self {
        Self {
            bus,
            consumer,
            cause,
            ctx: CommandContext::caused_by(cause),
        }
    }

    /// The key that makes step `step` of this reaction happen at most once.
    pub fn key(&self, step: &str) -> String {
        format!(
            "{}:{}:{}",
            self.consumer, self.cause.envelope.event_id, step
        )
    }

    /// Sends a command at most once for (this consumer, this event, this step).
    pub async fn once<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        step: &str,
    ) -> Result<Step<A>, AppError> {
        Ok(
            match self
                .bus
                .execute_once::<A>(id, command, &self.ctx, &self.key(step))
                .await?
            {
                Some(done) => Step::Applied(done),
                None => Step::AlreadyApplied,
            },
        )
    }

    /// Like [`once`](Self::once) for a command whose refusal means that the aggregate has
    /// already moved on by another path (an order cancelled by the customer while the
    /// workflow was running): the refusal is logged and the reaction goes on.
    pub async fn once_unless_moved_on<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        step: &str,
    ) -> Result<(), HandlerError> {
        self.applied_unless_moved_on::<A>(id, command, step)
            .await
            .map(|_| ())
    }

    /// [`once_unless_moved_on`](Self::once_unless_moved_on) for the command that ends an
    /// order's workflow: counts `saga_outcomes_total{saga="order", outcome, reason}` when
    /// it is applied now (not when it was already, or the order had moved on). The order
    /// workflow ends in the order saga (confirmed, payment failed) or in the inventory
    /// service (out of stock), hence one saga label for both.
    pub async fn conclude<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        step: &str,
        outcome: &'static str,
        reason: &'static str,
    ) -> Result<(), HandlerError> {
        if self.applied_unless_moved_on::<A>(id, command, step).await? {
            metrics::counter!(
                "saga_outcomes_total",
                "saga" => "order",
                "outcome" => outcome,
                "reason" => reason
            )
            .increment(1);
        }
        Ok(())
    }

    /// Whether the command was applied by this call.
    async fn applied_unless_moved_on<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        step: &str,
    ) -> Result<bool, HandlerError> {
        match self.once::<A>(id, command, step).await {
            Ok(step) => Ok(matches!(step, Step::Applied(_))),
            Err(AppError::Domain(
                e @ (DomainError::InvalidTransition { .. } | DomainError::AlreadyExists { .. }),
            )) => {
                tracing::info!(consumer = self.consumer, step, reason = %e, "step skipped: the aggregate has moved on");
                Ok(false)
            }
            Err(e) => Err(handler_error(e)),
        }
    }

    pub async fn order(&self, order_id: &str) -> Result<Order, HandlerError> {
        let (order, _) = self
            .bus
            .load::<Order>(order_id)
            .await
            .map_err(handler_error)?;
        Ok(order)
    }
}

/// The services a process can run; each is one consumer (the order service also runs
/// the cart-expiry timers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Order,
    Inventory,
    Payment,
    Notification,
}

/// Builds the consumers of the given services.
pub fn consumers(
    bus: &CommandBus,
    gateway: Arc<dyn PaymentGateway>,
    config: &ServicesConfig,
    services: &[Service],
) -> ConsumerRegistry {
    let store = bus.store().clone();
    let consumer = |handler: Arc<dyn cornershop_messaging::Handler>| Consumer {
        handler,
        store: store.clone(),
        policy: config.retry,
    };
    let mut registry = ConsumerRegistry::default();
    for service in services {
        match service {
            Service::Order => {
                registry.add(consumer(Arc::new(saga::OrderSaga::new(bus.clone()))));
                registry.add(consumer(Arc::new(expiry::CartExpiryScheduler::new(
                    store.clone(),
                    config.cart_ttl,
                ))));
            }
            Service::Inventory => registry.add(consumer(Arc::new(
                inventory::InventoryService::new(bus.clone()),
            ))),
            Service::Payment => registry.add(consumer(Arc::new(payments::PaymentService::new(
                bus.clone(),
                gateway.clone(),
            )))),
            Service::Notification => {
                registry.add(consumer(Arc::new(notifications::NotificationService::new(
                    bus.clone(),
                    config.notification_wakeup.clone(),
                ))))
            }
        }
    }
    // Any process may re-drive a failed notification: that only queues it again in the
    // store, for whichever process sends its channel.
    registry.add_owner(Arc::new(notifications::FailedNotifications));
    registry
}
