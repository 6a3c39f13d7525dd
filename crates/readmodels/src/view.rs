//! An order's read model computed from its own events, the way the projection would
//! leave it: what a command on the order answers (from the stream the command bus read
//! for it, `CommandBus::execute_streamed`), and what `verify` compares the projection with.

use cornershop_app::{fold_stored, AppError};
use cornershop_domain::ids::payment_id_for;
use cornershop_domain::{Order, Payment};
use cornershop_store::StoredEvent;

use crate::{lines_of, two_places, OrderReadModel};

/// The read model of an order whose whole stream is `events` and whose
/// payment (state, version; version 0: none yet) is `payment`: what a command on the order
/// answers, from the stream it read once.
pub fn order_view(
    events: &[StoredEvent],
    (payment, payment_version): (Payment, u64),
) -> Result<OrderReadModel, AppError> {
    let Some(first) = events.first() else {
        return Err(AppError::Invalid(
            "an order without events has no read model".into(),
        ));
    };
    let (order, version) = fold_stored::<Order>(events)?;
    let payment_id = payment_id_for(&order.order_id);
    let when = |event_type: &str| {
        events
            .iter()
            .find(|e| e.envelope.event_type == event_type)
            .map(|e| e.envelope.timestamp)
    };
    Ok(OrderReadModel {
        order_id: order.order_id.to_string(),
        cart_id: order.cart_id.to_string(),
        customer_id: order.customer_id.to_string(),
        status: format!("{:?}", order.status),
        total_amount: two_places(order.total_amount),
        currency: order
            .currency
            .map_or_else(String::new, |currency| currency.to_string()),
        items: lines_of(&order.items),
        payment_id: (payment_version > 0).then_some(payment_id.to_string()),
        payment_status: (payment_version > 0).then(|| format!("{:?}", payment.status)),
        carrier: order.carrier.clone(),
        tracking_number: order.tracking_number.clone(),
        cancel_reason: order.cancel_reason.clone(),
        created_at: when("OrderCreated").unwrap_or(first.envelope.timestamp),
        validated_at: when("OrderValidated"),
        confirmed_at: when("OrderConfirmed"),
        shipped_at: when("OrderShipped"),
        delivered_at: when("OrderDelivered"),
        cancelled_at: when("OrderCancelled"),
        correlation_id: first.envelope.metadata.correlation_id.clone(),
        version,
    })
}
