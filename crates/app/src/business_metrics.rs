//! Business figures as Prometheus counters, counted where events are appended (once per
//! committed event, in the process that appended it; Prometheus sums the processes):
//! `orders_total{status}` for each order lifecycle event, and `revenue_cents_total` /
//! `refunds_cents_total`, the amounts of completed and refunded payments in hundredths of
//! the shop's currency unit (a counter is an integer; cents keep it exact).

use cornershop_domain::{DomainEvent, Money};
use cornershop_store::StoredEvent;
use rust_decimal::prelude::ToPrimitive;

/// The `status` label values of `orders_total`.
pub const ORDER_STATUSES: &[&str] = &[
    "created",
    "validated",
    "confirmed",
    "shipped",
    "delivered",
    "cancelled",
];

/// Counts the business figures of freshly appended events.
pub fn count(events: &[StoredEvent]) {
    for event in events {
        let status = match event.envelope.event_type.as_str() {
            "OrderCreated" => "created",
            "OrderValidated" => "validated",
            "OrderConfirmed" => "confirmed",
            "OrderShipped" => "shipped",
            "OrderDelivered" => "delivered",
            "OrderCancelled" => "cancelled",
            "PaymentCompleted" | "PaymentRefunded" => {
                count_amount(event);
                continue;
            }
            _ => continue,
        };
        metrics::counter!("orders_total", "status" => status).increment(1);
    }
}

fn count_amount(event: &StoredEvent) {
    let (name, amount) = match event.envelope.decode() {
        Ok(DomainEvent::PaymentCompleted(e)) => ("revenue_cents_total", e.amount),
        Ok(DomainEvent::PaymentRefunded(e)) => ("refunds_cents_total", e.amount),
        _ => return,
    };
    if let Some(cents) = (amount * Money::ONE_HUNDRED).round().to_u64() {
        metrics::counter!(name).increment(cents);
    }
}
