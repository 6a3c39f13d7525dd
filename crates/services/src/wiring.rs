//! Which consumers a process runs: the services it was given (`--roles`), each built
//! with its settings.

use std::sync::Arc;
use std::time::Duration;

use cornershop_app::CommandBus;
use cornershop_messaging::{Consumer, ConsumerRegistry, RetryPolicy};

use crate::payments::PaymentGateway;
use crate::reactor::Reacting;
use crate::{expiry, inventory, notifications, payments, saga};

/// Settings of the workflow's consumers (built from the command line, where their
/// defaults are).
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// A cart idle this long expires.
    pub cart_ttl: Duration,
    pub retry: RetryPolicy,
    /// Wakes the notification dispatchers when the notification consumer records work.
    pub notification_wakeup: notifications::Wakeup,
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
    let consumer = |handler: Arc<dyn cornershop_messaging::Handler>| Consumer {
        handler,
        store: bus.store().clone(),
        policy: config.retry,
    };
    let mut registry = ConsumerRegistry::default();
    for service in services {
        match service {
            Service::Order => {
                registry.add(consumer(Arc::new(Reacting(saga::OrderSaga::new(
                    bus.clone(),
                )))));
                registry.add(consumer(Arc::new(Reacting(
                    expiry::CartExpiryScheduler::new(bus.clone(), config.cart_ttl),
                ))));
            }
            Service::Inventory => registry.add(consumer(Arc::new(Reacting(
                inventory::InventoryService::new(bus.clone()),
            )))),
            Service::Payment => registry.add(consumer(Arc::new(Reacting(
                payments::PaymentService::new(bus.clone(), gateway.clone()),
            )))),
            Service::Notification => registry.add(consumer(Arc::new(Reacting(
                notifications::NotificationService::new(
                    bus.clone(),
                    config.notification_wakeup.clone(),
                ),
            )))),
        }
    }
    // Any process may re-drive a failed notification: that only queues it again in the
    // store, for whichever process sends its channel.
    registry.add_owner(Arc::new(notifications::FailedNotifications));
    registry
}
