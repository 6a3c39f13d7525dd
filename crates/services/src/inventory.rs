//! The inventory service: holds stock for orders.
//!
//! OrderCreated → StockReserved for every line, then OrderValidated. When a line cannot
//! be reserved, the lines already reserved are released (StockReleased) and the order is
//! cancelled with the reason. PaymentFailed → every line's reservation released, then the
//! order cancelled (the saga leaves this compensation here, where stock is moved).
//! OrderCancelled → every line's reservation released.
//! OrderShipped → every line's reservation shipped (StockShipped): the units have left
//! the warehouse, so they are neither reserved nor available any more.
//!
//! Every move of stock for an order is made by this one consumer, which sees an order's
//! events in order, so a reservation can never land after the release or the shipment of
//! its order (a PaymentFailed comes after the OrderValidated this consumer made once it
//! had reserved).

use async_trait::async_trait;
use cornershop_app::{AppError, CommandBus};
use cornershop_domain::{
    DomainError, DomainEvent, EventType, Inventory, InventoryCommand, Order, OrderCommand,
    OrderStatus,
};
use cornershop_messaging::HandlerError;

use crate::{handler_error, Reaction, Reactor};

pub const NAME: &str = "inventory-service";

pub struct InventoryService {
    bus: CommandBus,
}

impl InventoryService {
    pub fn new(bus: CommandBus) -> Self {
        Self { bus }
    }
}

#[async_trait]
impl Reaction for InventoryService {
    const NAME: &'static str = NAME;
    const REACTS_TO: &'static [EventType] = &[
        EventType::OrderCreated,
        EventType::OrderCancelled,
        EventType::OrderShipped,
        EventType::PaymentFailed,
    ];

    fn bus(&self) -> &CommandBus {
        &self.bus
    }

    async fn react(&self, decoded: DomainEvent, react: &Reactor<'_>) -> Result<(), HandlerError> {
        match decoded {
            DomainEvent::OrderCreated(created) => {
                let order = react.order(&created.order_id).await?;
                reserve_order(react, &order).await
            }
            DomainEvent::OrderCancelled(cancelled) => {
                let order = react.order(&cancelled.order_id).await?;
                release_all(
                    react,
                    &order,
                    &format!("order cancelled: {}", cancelled.reason),
                )
                .await
            }
            DomainEvent::OrderShipped(shipped) => {
                let order = react.order(&shipped.order_id).await?;
                ship_all(react, &order).await
            }
            DomainEvent::PaymentFailed(failed) => {
                let order = react.order(&failed.order_id).await?;
                release_all(react, &order, &format!("payment failed: {}", failed.code)).await?;
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

async fn ship_all(react: &Reactor<'_>, order: &Order) -> Result<(), HandlerError> {
    for line in &order.items {
        let ship = InventoryCommand::Ship {
            order_id: order.order_id.clone(),
        };
        react
            .once::<Inventory>(&line.sku, &ship, &format!("ship:{}", line.sku))
            .await
            .map_err(handler_error)?;
    }
    Ok(())
}

async fn reserve_order(react: &Reactor<'_>, order: &Order) -> Result<(), HandlerError> {
    // Once compensation has begun (a release of this reaction is on record), the outcome
    // is decided: finish cancelling, even if stock has come back meanwhile.
    let mut compensating = false;
    for line in &order.items {
        let released = react
            .bus
            .store()
            .is_applied(&react.key(&format!("release:{}", line.sku)))
            .await?;
        compensating |= released;
    }
    let mut shortfall = None;
    if !compensating && order.status == OrderStatus::Created {
        for line in &order.items {
            let reserve = InventoryCommand::Reserve {
                order_id: order.order_id.clone(),
                quantity: line.quantity,
            };
            match react
                .once::<Inventory>(&line.sku, &reserve, &format!("reserve:{}", line.sku))
                .await
            {
                Ok(_) => {}
                Err(AppError::Domain(
                    e @ (DomainError::InsufficientStock { .. } | DomainError::NotFound { .. }),
                )) => {
                    shortfall = Some(match e {
                        DomainError::NotFound { .. } => {
                            format!("out of stock: '{}' is no longer sold", line.sku)
                        }
                        other => format!("out of stock: {other}"),
                    });
                    break;
                }
                Err(e) => return Err(handler_error(e)),
            }
        }
    }
    match (compensating, shortfall) {
        (false, None) => {
            if order.status != OrderStatus::Created {
                return Ok(());
            }
            react
                .once_unless_moved_on::<Order>(&order.order_id, &OrderCommand::Validate, "validate")
                .await
        }
        (_, reason) => {
            let reason = reason.unwrap_or_else(|| "out of stock".to_string());
            release_all(react, order, &reason).await?;
            let cancel = OrderCommand::Cancel { reason };
            react
                .conclude::<Order>(
                    &order.order_id,
                    &cancel,
                    "cancel",
                    "cancelled",
                    "out_of_stock",
                )
                .await
        }
    }
}

async fn release_all(react: &Reactor<'_>, order: &Order, reason: &str) -> Result<(), HandlerError> {
    for line in &order.items {
        let release = InventoryCommand::Release {
            order_id: order.order_id.clone(),
            reason: reason.to_string(),
        };
        react
            .once::<Inventory>(&line.sku, &release, &format!("release:{}", line.sku))
            .await
            .map_err(handler_error)?;
    }
    Ok(())
}
