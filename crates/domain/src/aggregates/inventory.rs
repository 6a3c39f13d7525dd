//! Stock of one SKU. Available stock never goes below zero; each order holds at most
//! one reservation per SKU (so a repeated reservation is a no-op) until it is released
//! (back to available) or shipped (gone from the warehouse); a LowStockAlert is raised
//! once each time available falls to or below the threshold.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{require_text, Aggregate};
use crate::aggregate_type::AggregateType;
use crate::error::DomainError;
use crate::events::*;
use crate::values::{Currency, Money, OrderId, Sku};

/// The most units of one SKU the shop tracks; keeps sums far from overflow.
pub const MAX_STOCK: u32 = 1_000_000_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    pub sku: Sku,
    pub name: String,
    pub unit_price: Decimal,
    /// The unit price's currency (`None` until the product is stocked).
    pub currency: Option<Currency>,
    pub available: u32,
    pub reserved: u32,
    pub low_stock_threshold: u32,
    /// Whether the current dip to or below the threshold has been announced already.
    pub low_stock_alerted: bool,
    /// Units held per order that are not released yet.
    pub reservations: BTreeMap<OrderId, u32>,
    pub exists: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InventoryCommand {
    /// Sets the product's details and the units available for sale (a restock or a
    /// stock count). Setting what is already there changes nothing.
    Set {
        sku: Sku,
        name: String,
        unit_price: Money,
        currency: Currency,
        quantity: i64,
        low_stock_threshold: i64,
    },
    Reserve {
        order_id: OrderId,
        quantity: u32,
    },
    Release {
        order_id: OrderId,
        reason: String,
    },
    /// The order's reservation leaves with its shipment.
    Ship {
        order_id: OrderId,
    },
}

impl Inventory {
    fn low_stock_alert(&self, available: u32, threshold: u32) -> Option<DomainEvent> {
        (available <= threshold && !self.low_stock_alerted).then(|| {
            LowStockAlert {
                sku: self.sku.clone(),
                available,
                low_stock_threshold: threshold,
            }
            .into()
        })
    }

    /// Ends the order's reservation with the event `settled` makes of its quantity
    /// (released back to available, or shipped); nothing when the order holds none here.
    fn settle_reservation<E: Into<DomainEvent>>(
        &self,
        order_id: &str,
        settled: impl FnOnce(u32) -> E,
    ) -> Result<Vec<DomainEvent>, DomainError> {
        self.require_exists()?;
        Ok(self
            .reservations
            .get(order_id)
            .map(|&quantity| vec![settled(quantity).into()])
            .unwrap_or_default())
    }

    fn require_exists(&self) -> Result<(), DomainError> {
        if self.exists {
            Ok(())
        } else {
            Err(DomainError::NotFound {
                aggregate: AggregateType::Inventory,
                id: self.sku.to_string(),
            })
        }
    }
}

impl Aggregate for Inventory {
    const TYPE: AggregateType = AggregateType::Inventory;
    /// 1: the shape since snapshots exist (see `Aggregate::STATE_SCHEMA`).
    // 2: the state gained its currency (schema 3 of the events).
    const STATE_SCHEMA: u32 = 2;
    type Command = InventoryCommand;

    fn decide(&self, command: &InventoryCommand) -> Result<Vec<DomainEvent>, DomainError> {
        match command {
            InventoryCommand::Set {
                sku,
                name,
                unit_price,
                currency,
                quantity,
                low_stock_threshold,
            } => {
                require_text("name", name, 200)?;
                let unit_price = &unit_price.amount();
                if !(0..=MAX_STOCK as i64).contains(quantity) {
                    return Err(DomainError::Invalid(format!(
                        "quantity must be between 0 and {MAX_STOCK}, got {quantity}"
                    )));
                }
                if !(0..=MAX_STOCK as i64).contains(low_stock_threshold) {
                    return Err(DomainError::Invalid(format!(
                        "lowStockThreshold must be between 0 and {MAX_STOCK}, got {low_stock_threshold}"
                    )));
                }
                let (quantity, threshold) = (*quantity as u32, *low_stock_threshold as u32);
                let name = name.trim().to_string();
                let unchanged = self.exists
                    && self.name == name
                    && self.unit_price == *unit_price
                    && self.currency == Some(*currency)
                    && self.available == quantity
                    && self.low_stock_threshold == threshold;
                if unchanged {
                    return Ok(vec![]);
                }
                let mut events = vec![StockUpdated {
                    sku: sku.clone(),
                    name,
                    unit_price: *unit_price,
                    currency: *currency,
                    quantity,
                    low_stock_threshold: threshold,
                }
                .into()];
                // The alert state after the update: a restock above the threshold re-arms it.
                let after = Self {
                    low_stock_alerted: self.low_stock_alerted && quantity <= threshold,
                    sku: sku.clone(),
                    ..Self::default()
                };
                events.extend(after.low_stock_alert(quantity, threshold));
                Ok(events)
            }
            InventoryCommand::Reserve { order_id, quantity } => {
                self.require_exists()?;
                if self.reservations.contains_key(order_id) {
                    return Ok(vec![]);
                }
                if *quantity == 0 {
                    return Err(DomainError::InvalidQuantity(0));
                }
                if *quantity > self.available {
                    return Err(DomainError::InsufficientStock {
                        sku: self.sku.to_string(),
                        requested: *quantity,
                        available: self.available,
                    });
                }
                let mut events = vec![StockReserved {
                    sku: self.sku.clone(),
                    order_id: order_id.clone(),
                    quantity: *quantity,
                }
                .into()];
                events.extend(
                    self.low_stock_alert(self.available - quantity, self.low_stock_threshold),
                );
                Ok(events)
            }
            InventoryCommand::Release { order_id, reason } => {
                self.settle_reservation(order_id, |quantity| StockReleased {
                    sku: self.sku.clone(),
                    order_id: order_id.clone(),
                    quantity,
                    reason: reason.clone(),
                })
            }
            InventoryCommand::Ship { order_id } => {
                self.settle_reservation(order_id, |quantity| StockShipped {
                    sku: self.sku.clone(),
                    order_id: order_id.clone(),
                    quantity,
                })
            }
        }
    }

    fn evolve(mut self, event: &DomainEvent) -> Self {
        match event {
            DomainEvent::StockUpdated(e) => {
                self.exists = true;
                self.sku = e.sku.clone();
                self.name = e.name.clone();
                self.unit_price = e.unit_price;
                self.currency = Some(e.currency);
                self.available = e.quantity;
                self.low_stock_threshold = e.low_stock_threshold;
                if self.available > self.low_stock_threshold {
                    self.low_stock_alerted = false;
                }
            }
            DomainEvent::StockReserved(e) => {
                // Saturating: `evolve` takes stored events as they are, and `decide` never
                // emits one that would go below zero or past the stock bound.
                self.available = self.available.saturating_sub(e.quantity);
                self.reserved = self.reserved.saturating_add(e.quantity);
                self.reservations.insert(e.order_id.clone(), e.quantity);
            }
            DomainEvent::StockReleased(e) => {
                self.available = self.available.saturating_add(e.quantity);
                self.reserved = self.reserved.saturating_sub(e.quantity);
                self.reservations.remove(&e.order_id);
                if self.available > self.low_stock_threshold {
                    self.low_stock_alerted = false;
                }
            }
            DomainEvent::StockShipped(e) => {
                self.reserved = self.reserved.saturating_sub(e.quantity);
                self.reservations.remove(&e.order_id);
            }
            DomainEvent::LowStockAlert(_) => self.low_stock_alerted = true,
            _ => {}
        }
        self
    }

    fn exists(&self) -> bool {
        self.exists
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn skus_start_with_a_letter_or_digit_and_are_never_dots() {
        for ok in ["MUG-1", "a", "A.b_c-9", &"x".repeat(64)] {
            assert!(Sku::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            ".",
            "..",
            "...",
            ".hidden",
            "-x",
            "",
            "a b",
            "a\u{0}",
            &"x".repeat(65),
        ] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
    }

    use super::*;
    use crate::spec::{given, given_nothing};
    use rust_decimal_macros::dec;

    fn set(quantity: i64, threshold: i64) -> InventoryCommand {
        InventoryCommand::Set {
            sku: "MUG-1".into(),
            name: "Mug".into(),
            unit_price: dec!(9.99).into(),
            currency: Currency::GBP,
            quantity,
            low_stock_threshold: threshold,
        }
    }
    fn reserve(order: &str, quantity: u32) -> InventoryCommand {
        InventoryCommand::Reserve {
            order_id: order.into(),
            quantity,
        }
    }
    fn release(order: &str) -> InventoryCommand {
        InventoryCommand::Release {
            order_id: order.into(),
            reason: "cancelled".into(),
        }
    }
    fn ship(order: &str) -> InventoryCommand {
        InventoryCommand::Ship {
            order_id: order.into(),
        }
    }
    fn types(events: &[DomainEvent]) -> Vec<&'static str> {
        events.iter().map(DomainEvent::event_type).collect()
    }

    /// What `set(quantity, threshold)` causes (above the threshold).
    fn stock_set(quantity: u32, threshold: u32) -> DomainEvent {
        StockUpdated {
            sku: "MUG-1".into(),
            name: "Mug".into(),
            unit_price: dec!(9.99),
            currency: Currency::GBP,
            quantity,
            low_stock_threshold: threshold,
        }
        .into()
    }
    fn reserved(order: &str, quantity: u32) -> DomainEvent {
        StockReserved {
            sku: "MUG-1".into(),
            order_id: order.into(),
            quantity,
        }
        .into()
    }
    fn released(order: &str, quantity: u32) -> DomainEvent {
        StockReleased {
            sku: "MUG-1".into(),
            order_id: order.into(),
            quantity,
            reason: "cancelled".into(),
        }
        .into()
    }
    fn shipped(order: &str, quantity: u32) -> DomainEvent {
        StockShipped {
            sku: "MUG-1".into(),
            order_id: order.into(),
            quantity,
        }
        .into()
    }

    #[test]
    fn available_stock_never_goes_below_zero() {
        given_nothing::<Inventory>()
            .when(set(5, 0))
            .and(reserve("o1", 3))
            .then([stock_set(5, 0), reserved("o1", 3)])
            .then_state(|inv| assert_eq!((inv.available, inv.reserved), (2, 3)));
        let two_left = || given::<Inventory>([stock_set(5, 0), reserved("o1", 3)]);
        two_left()
            .when(reserve("o2", 3))
            .then_error_is(DomainError::InsufficientStock {
                sku: "MUG-1".into(),
                requested: 3,
                available: 2,
            });
        two_left()
            .when(reserve("o2", 2))
            .then_accepted()
            .then_state(|inv| assert_eq!(inv.available, 0));
        two_left()
            .when(reserve("o2", 2))
            .and(reserve("o3", 1))
            .then_refused();
    }

    #[test]
    fn a_negative_stock_level_is_refused() {
        given_nothing::<Inventory>()
            .when(set(-1, 0))
            .then_error_matching(|e| matches!(e, DomainError::Invalid(_)));
    }

    #[test]
    fn reserving_twice_for_one_order_is_a_no_op_and_release_returns_the_units() {
        given_nothing::<Inventory>()
            .when(set(10, 0))
            .and(reserve("o1", 4))
            .then([stock_set(10, 0), reserved("o1", 4)]);
        let holding = || given::<Inventory>([stock_set(10, 0), reserved("o1", 4)]);
        holding().when(reserve("o1", 4)).then([]);
        let accepted = holding()
            .when(release("o1"))
            .then([released("o1", 4)])
            .then_state(|inv| assert_eq!((inv.available, inv.reserved), (10, 0)));
        assert_eq!(types(accepted.events()), ["StockReleased"]);
        given::<Inventory>(accepted.history())
            .when(release("o1"))
            .then([]);
    }

    #[test]
    fn shipping_takes_the_reserved_units_out_for_good() {
        given_nothing::<Inventory>()
            .when(set(10, 0))
            .and(reserve("o1", 4))
            .and(reserve("o2", 1))
            .then([stock_set(10, 0), reserved("o1", 4), reserved("o2", 1)]);
        let history = [stock_set(10, 0), reserved("o1", 4), reserved("o2", 1)];
        let accepted = given::<Inventory>(history)
            .when(ship("o1"))
            .then([shipped("o1", 4)])
            .then_state(|inv| assert_eq!((inv.available, inv.reserved), (5, 1)));
        assert_eq!(types(accepted.events()), ["StockShipped"]);
        assert_eq!(
            accepted.events()[0],
            DomainEvent::from(StockShipped {
                sku: "MUG-1".into(),
                order_id: "o1".into(),
                quantity: 4
            })
        );
        // Shipped units are gone: neither shipped again nor released back to available.
        let after = || given::<Inventory>(accepted.history());
        after().when(ship("o1")).then([]);
        after().when(release("o1")).then([]);
        // An order that holds nothing here ships nothing.
        after().when(ship("o9")).then([]);
        given_nothing::<Inventory>()
            .when(ship("o1"))
            .then_error_matching(|e| matches!(e, DomainError::NotFound { .. }));
    }

    #[test]
    fn low_stock_alert_fires_once_per_dip_and_rearms_after_restock() {
        let dipped = given_nothing::<Inventory>()
            .when(set(10, 3))
            .and(reserve("o1", 6))
            .and(reserve("o2", 1))
            .and(reserve("o3", 1))
            .then_accepted()
            .then_state(|inv| assert!(inv.low_stock_alerted));
        assert_eq!(
            types(dipped.events()),
            [
                "StockUpdated",
                "StockReserved",
                "StockReserved",
                "LowStockAlert",
                "StockReserved"
            ]
        );
        // Restock above the threshold re-arms the alert ...
        let restocked = given::<Inventory>(dipped.history())
            .when(set(20, 3))
            .then_accepted()
            .then_state(|inv| assert!(!inv.low_stock_alerted));
        assert_eq!(types(restocked.events()), ["StockUpdated"]);
        // ... so the next dip alerts again.
        let dipped_again = given::<Inventory>(restocked.history())
            .when(reserve("o4", 17))
            .then_accepted();
        assert_eq!(
            types(dipped_again.events()),
            ["StockReserved", "LowStockAlert"]
        );
    }

    #[test]
    fn setting_stock_at_or_below_threshold_alerts() {
        let accepted = given_nothing::<Inventory>().when(set(2, 5)).then_accepted();
        assert_eq!(types(accepted.events()), ["StockUpdated", "LowStockAlert"]);
    }

    #[test]
    fn setting_the_same_stock_again_changes_nothing() {
        given_nothing::<Inventory>()
            .when(set(10, 2))
            .then([stock_set(10, 2)]);
        given::<Inventory>([stock_set(10, 2)])
            .when(set(10, 2))
            .then([]);
    }

    #[test]
    fn reserving_an_unknown_sku_is_not_found() {
        given_nothing::<Inventory>()
            .when(reserve("o", 1))
            .then_error_matching(|e| matches!(e, DomainError::NotFound { .. }));
    }

    #[test]
    fn bad_prices_and_skus_are_refused() {
        // Prices and SKUs are parsed before a command is made: what is left to the
        // aggregate is the name and the counts.
        assert!(Money::parse("unitPrice", dec!(-0.01), crate::money::MAX_UNIT_PRICE).is_err());
        assert!(Money::parse("unitPrice", dec!(1000000.01), crate::money::MAX_UNIT_PRICE).is_err());
        let blank_name = InventoryCommand::Set {
            sku: "A".into(),
            name: " ".into(),
            unit_price: dec!(1).into(),
            currency: Currency::GBP,
            quantity: 1,
            low_stock_threshold: 0,
        };
        given_nothing::<Inventory>().when(blank_name).then_refused();
        assert!(Sku::parse("has space").is_err());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("SKU-1.a_b").is_ok());
    }
}
