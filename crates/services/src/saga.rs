//! The order saga: the process manager that carries an order from checkout to
//! confirmation, and cancels it when its payment fails.
//!
//! CartCheckedOut → OrderCreated; (inventory-service reserves and validates);
//! OrderValidated → PaymentInitiated; (payment-service authorizes and captures);
//! PaymentCompleted → OrderConfirmed. A failed payment is compensated by the
//! inventory-service, which alone moves stock: it releases the order's lines, then cancels
//! the order.

use async_trait::async_trait;
use cornershop_app::CommandBus;
use cornershop_domain::ids::payment_id_for;
use cornershop_domain::money::MAX_AMOUNT;
use cornershop_domain::{
    DomainEvent, EventType, Money, Order, OrderCommand, OrderStatus, Payment, PaymentCommand,
};
use cornershop_messaging::HandlerError;

use crate::{Reaction, Reactor};

pub(crate) const NAME: &str = "order-saga";

pub(crate) struct OrderSaga {
    bus: CommandBus,
}

impl OrderSaga {
    pub(crate) fn new(bus: CommandBus) -> Self {
        Self { bus }
    }
}

#[async_trait]
impl Reaction for OrderSaga {
    const NAME: &'static str = NAME;
    const REACTS_TO: &'static [EventType] = &[
        EventType::CartCheckedOut,
        EventType::OrderValidated,
        EventType::PaymentCompleted,
    ];

    fn bus(&self) -> &CommandBus {
        &self.bus
    }

    async fn react(&self, decoded: DomainEvent, react: &Reactor<'_>) -> Result<(), HandlerError> {
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
                // The total is the order's own (bounded when it was created); an order
                // stored by an older writer may hold one no payment can take.
                let amount =
                    Money::parse("totalAmount", order.total_amount, MAX_AMOUNT).map_err(|e| {
                        HandlerError::Permanent(format!("order '{}': {e}", order.order_id))
                    })?;
                let currency = order.currency.ok_or_else(|| {
                    HandlerError::Permanent(format!("order '{}' has no currency", order.order_id))
                })?;
                let initiate = PaymentCommand::Initiate {
                    payment_id: payment_id_for(&order.order_id),
                    order_id: order.order_id.clone(),
                    customer_id: order.customer_id.clone(),
                    amount,
                    currency,
                    payment_method: order.payment_method.clone(),
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
            _ => Ok(()),
        }
    }
}
