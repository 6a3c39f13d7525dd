//! Cart expiry through durable timers.
//!
//! The `cart-expiry` consumer (re)schedules a timer for every change of an open cart, due
//! one TTL after the change. Timers live in the store, so they survive restarts. The timer
//! runner fires due timers: a cart still open and idle for a whole TTL gets CartExpired;
//! a cart touched since is rescheduled; a closed cart is left alone.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_app::{fold_stored, CommandBus, CommandContext};
use cornershop_domain::{AggregateType, Cart, CartCommand, CartStatus, DomainEvent, EventType};
use cornershop_messaging::HandlerError;
use cornershop_store::{TimeRange, Timer};
use tokio::sync::watch;

use crate::{Reaction, Reactor};

pub const NAME: &str = "cart-expiry";
const TIMER_KIND: &str = "cart-expiry";

fn timer_key(cart_id: &str) -> String {
    format!("{TIMER_KIND}:{cart_id}")
}

fn ttl_after(t: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

pub(crate) struct CartExpiryScheduler {
    bus: CommandBus,
    ttl: Duration,
}

impl CartExpiryScheduler {
    pub(crate) fn new(bus: CommandBus, ttl: Duration) -> Self {
        Self { bus, ttl }
    }
}

#[async_trait]
impl Reaction for CartExpiryScheduler {
    const NAME: &'static str = NAME;
    const REACTS_TO: &'static [EventType] = &[
        EventType::CartCreated,
        EventType::ItemAddedToCart,
        EventType::ItemRemovedFromCart,
    ];
    /// One at a time, as the timers are written one by one anyway.
    const CONCURRENCY: usize = 1;

    fn bus(&self) -> &CommandBus {
        &self.bus
    }

    /// Scheduling is idempotent (a timer only ever moves later), so a redelivered event
    /// changes nothing.
    async fn react(&self, _: DomainEvent, on: &Reactor<'_>) -> Result<(), HandlerError> {
        let event = on.cause;
        let cart_id = &event.envelope.aggregate_id;
        self.bus
            .store()
            .schedule_timer(&Timer {
                key: timer_key(cart_id),
                kind: TIMER_KIND.to_string(),
                due_at: ttl_after(event.envelope.timestamp, self.ttl),
                payload: serde_json::json!({ "cartId": cart_id }),
            })
            .await?;
        Ok(())
    }
}

/// Fires due timers until `shutdown`; sleeps until the next one is due (at most a second,
/// so that timers scheduled meanwhile are noticed).
pub async fn run_timers(bus: CommandBus, ttl: Duration, mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if let Err(e) = fire_due(&bus, ttl).await {
            tracing::warn!(error = %e, "timer run failed; will try again");
        }
        let now = bus.clock().now();
        let next = bus.store().next_timer_due().await.ok().flatten();
        let pause = next
            .and_then(|due| (due - now).to_std().ok())
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(pause.max(Duration::from_millis(10))) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
}

/// Fires every timer due now. Returns how many carts were expired.
pub(crate) async fn fire_due(
    bus: &CommandBus,
    ttl: Duration,
) -> Result<usize, cornershop_app::AppError> {
    let mut expired = 0;
    let now = bus.clock().now();
    for timer in bus.store().due_timers(now, 100).await? {
        let cart_id = timer.key.trim_start_matches("cart-expiry:").to_string();
        let events = bus
            .store()
            .load_aggregate(AggregateType::Cart, &cart_id, TimeRange::default())
            .await?;
        let (cart, version) = fold_stored::<Cart>(&events)?;
        if let (CartStatus::Open, Some(last)) = (cart.status, events.last()) {
            let idle_until = ttl_after(last.envelope.timestamp, ttl);
            if idle_until <= now {
                let mut ctx = CommandContext::caused_by(last);
                ctx.causation_id = format!("timer:{}", timer.key);
                // Keyed by the cart's version: this idle period expires the cart once.
                let key = format!("{NAME}:{cart_id}:{version}");
                if bus
                    .execute_once::<Cart>(&cart_id, &CartCommand::Expire, &ctx, &key)
                    .await?
                    .is_some()
                {
                    expired += 1;
                }
            } else {
                bus.store()
                    .schedule_timer(&Timer {
                        due_at: idle_until,
                        ..timer.clone()
                    })
                    .await?;
            }
        }
        bus.store().complete_timer(&timer).await?;
    }
    Ok(expired)
}
