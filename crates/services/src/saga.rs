//! The order saga: the process manager that carries an order from checkout to
//! confirmation, and cancels it when its payment fails.
//!
//! CartCheckedOut → OrderCreated; (inventory-service reserves and validates);
//! OrderValidated → PaymentInitiated; (payment-service authorizes and captures);
//! PaymentCompleted → OrderConfirmed; PaymentFailed → StockReleased for every line, then
//! OrderCancelled.

use async_trait::async_trait;
use cornershop_app::CommandBus;
use cornershop_domain::{
    DomainEvent, Inventory, InventoryCommand, Order, OrderCommand, OrderStatus, Payment,
    PaymentCommand,
};
use cornershop_messaging::{Handler, HandlerError};
use cornershop_store::StoredEvent;

use cornershop_domain::ids::payment_id_for;

use crate::{handler_error, Reactor};

pub const NAME: &str = "order-saga";

pub struct OrderSaga {
    bus: CommandBus,
}

impl OrderSaga {
    pub fn new(bus: CommandBus) -> Self {
        Self { bus }
    }
}

#[async_trait]
impl Handler for OrderSaga {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "CartCheckedOut" | "OrderValidated" | "PaymentCompleted" | "PaymentFailed"
        )
    }

    fn concurrency(&self) -> usize {
        crate::TRANSACTIONS_AT_ONCE
    }

    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        let decoded = event
            .envelope
            .decode()
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        let react = Reactor::new(&self.bus, NAME, event);
        match decoded {
            DomainEvent::CartCheckedOut(checked_out) => {
                let order_id = checked_out.order_id.clone();
                let create = OrderCommand::Create(Box::new(checked_out));
                react
                    .once_unless_moved_on::<Order>(&order_id, &create, "create-order")
                    .await
            }
            DomainEvent::OrderValidated(validated) => {
                let order = react.order(&validated.order_id).await?;
                let initiate = PaymentCommand::Initiate {
                    payment_id: payment_id_for(&order.order_id),
                    order_id: order.order_id.clone(),
                    customer_id: order.customer_id.clone(),
                    amount: order.total_amount,
                    payment_token: order.payment_token.clone(),
                };
                react
                    .once_unless_moved_on::<Payment>(
                        &payment_id_for(&order.order_id),
                        &initiate,
                        "initiate-payment",
                    )
                    .await
            }
            DomainEvent::PaymentCompleted(completed) => {
                let order = react.order(&completed.order_id).await?;
                if order.status != OrderStatus::Validated {
                    // Cancelled meanwhile: payment-service refunds it.
                    return Ok(());
                }
                let confirm = OrderCommand::Confirm {
                    payment_id: completed.payment_id.clone(),
                };
                react
                    .conclude::<Order>(
                        &order.order_id,
                        &confirm,
                        "confirm-order",
                        "confirmed",
                        "paid",
                    )
                    .await
            }
            DomainEvent::PaymentFailed(failed) => {
                let order = react.order(&failed.order_id).await?;
                for line in &order.items {
                    let release = InventoryCommand::Release {
                        order_id: order.order_id.clone(),
                        reason: format!("payment failed: {}", failed.code),
                    };
                    react
                        .once::<Inventory>(&line.sku, &release, &format!("release:{}", line.sku))
                        .await
                        .map_err(handler_error)?;
                }
                let cancel = OrderCommand::Cancel {
                    reason: format!("payment failed: {} ({})", failed.reason, failed.code),
                };
                react
                    .conclude::<Order>(
                        &order.order_id,
                        &cancel,
                        "cancel-order",
                        "cancelled",
                        "payment_failed",
                    )
                    .await
            }
            _ => Ok(()),
        }
    }
}
