//! Business figures as Prometheus counters, counted where events are appended (once per
//! committed event, in the process that appended it; Prometheus sums the processes):
//! `orders_total{status}` for each order lifecycle event, and `revenue_cents_total` /
//! `refunds_cents_total`, the amounts of completed and refunded payments in hundredths of
//! the shop's currency unit (a counter is an integer; cents keep it exact).

use cornershop_domain::DomainEvent;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// The `status` label values of `orders_total`.
pub const ORDER_STATUSES: &[&str] = &[
    "created",
    "validated",
    "confirmed",
    "shipped",
    "delivered",
    "cancelled",
];

/// Counts the business figures of events just appended (the decided events, so that
/// nothing is decoded again).
pub fn count(events: &[DomainEvent]) {
    for event in events {
        let status = match event {
            DomainEvent::OrderCreated(_) => "created",
            DomainEvent::OrderValidated(_) => "validated",
            DomainEvent::OrderConfirmed(_) => "confirmed",
            DomainEvent::OrderShipped(_) => "shipped",
            DomainEvent::OrderDelivered(_) => "delivered",
            DomainEvent::OrderCancelled(_) => "cancelled",
            DomainEvent::PaymentCompleted(e) => {
                count_cents("revenue_cents_total", e.amount);
                continue;
            }
            DomainEvent::PaymentRefunded(e) => {
                count_cents("refunds_cents_total", e.amount);
                continue;
            }
            _ => continue,
        };
        metrics::counter!("orders_total", "status" => status).increment(1);
    }
}

fn count_cents(name: &'static str, amount: Decimal) {
    if let Some(cents) = (amount * Decimal::ONE_HUNDRED).round().to_u64() {
        metrics::counter!(name).increment(cents);
    }
}
