//! Test support (not part of the API): writes consistent order histories straight into an
//! event store, fast (one append per aggregate and order, stock moves batched per SKU), with
//! the timestamps a test chooses. The events are exactly what the workflow would write:
//! the aggregates' own `decide` produced them in the order the services would.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cornershop_app::source_of;
use cornershop_domain::ids::payment_id_for;
use cornershop_domain::*;
use cornershop_store::{AppendRequest, EventStore, NewEvent, StoreError};
use rust_decimal::Decimal;
use uuid::Uuid;

/// How an order's story ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Only created.
    Created,
    /// Paid and confirmed.
    Confirmed,
    Shipped,
    Delivered,
    /// The card was declined: stock released, order cancelled.
    Declined,
    /// A line was short: cancelled before any payment.
    OutOfStock,
    /// Confirmed, then cancelled by the customer: stock released, payment refunded.
    CancelledAfterPayment,
}

#[derive(Debug, Clone)]
pub struct Line {
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price: Decimal,
}

#[derive(Debug, Clone)]
pub struct OrderPlan {
    pub order_id: String,
    pub customer_id: String,
    pub lines: Vec<Line>,
    pub outcome: Outcome,
    /// When the order was created; each next event is `step` later.
    pub at: DateTime<Utc>,
    pub step: Duration,
}

/// Writes order histories into a store.
pub struct Generator {
    store: Arc<dyn EventStore>,
    versions: HashMap<(AggregateType, String), u64>,
    stock: BTreeMap<String, (Inventory, Vec<NewEvent>)>,
    /// Stock events are appended per SKU in batches of this many.
    pub stock_batch: usize,
    pub events_written: u64,
}

fn new_event(event: &DomainEvent, at: DateTime<Utc>, correlation: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event.event_type().to_string(),
        schema_version: CURRENT_SCHEMA_VERSION,
        timestamp: at,
        data: event.data(),
        metadata: Metadata {
            correlation_id: correlation.to_string(),
            causation_id: correlation.to_string(),
            user_id: None,
            source: source_of(event.aggregate_type()).to_string(),
        },
        trace_id: None,
    }
}

fn decide<A: Aggregate>(state: &mut A, command: A::Command) -> Vec<DomainEvent> {
    let events = state
        .decide(&command)
        .unwrap_or_else(|e| panic!("the generator's command was refused: {e}"));
    for event in &events {
        *state = state.clone().evolve(event);
    }
    events
}

impl Generator {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            versions: HashMap::new(),
            stock: BTreeMap::new(),
            stock_batch: 500,
            events_written: 0,
        }
    }

    async fn append(
        &mut self,
        aggregate_type: AggregateType,
        id: &str,
        events: Vec<NewEvent>,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let key = (aggregate_type, id.to_string());
        let version = self.versions.get(&key).copied().unwrap_or(0);
        let n = events.len() as u64;
        let mut attempt = 0;
        loop {
            let request = AppendRequest::new(aggregate_type, id, version, events.clone());
            match self.store.append(request).await {
                Ok(_) => break,
                // Another handle on the same SQLite file wrote meanwhile (a test may write
                // beside a running shop): the append stored nothing; try again.
                Err(StoreError::Database(e))
                    if attempt < 1000 && e.to_string().contains("database is locked") =>
                {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                Err(e) => return Err(e),
            }
        }
        self.versions.insert(key, version + n);
        self.events_written += n;
        Ok(())
    }

    /// Appends one event as it is, without asking its aggregate: what an older or buggy
    /// writer could have stored (a price this shop no longer accepts, say).
    pub async fn raw(&mut self, event: DomainEvent, at: DateTime<Utc>) -> Result<(), StoreError> {
        let id = event.aggregate_id().to_string();
        let new = new_event(&event, at, &Uuid::new_v4().to_string());
        self.append(event.aggregate_type(), &id, vec![new]).await
    }

    /// Puts a product in stock (StockUpdated, now).
    pub async fn stock(
        &mut self,
        sku: &str,
        name: &str,
        unit_price: Decimal,
        quantity: i64,
        low_stock_threshold: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let entry = self
            .stock
            .entry(sku.to_string())
            .or_insert_with(|| (Inventory::default(), Vec::new()));
        let events = decide(
            &mut entry.0,
            InventoryCommand::Set {
                sku: sku.into(),
                name: name.to_string(),
                unit_price: unit_price.into(),
                currency: cornershop_domain::money::SHOP_CURRENCY,
                quantity,
                low_stock_threshold,
            },
        );
        let correlation = Uuid::new_v4().to_string();
        entry
            .1
            .extend(events.iter().map(|e| new_event(e, at, &correlation)));
        self.flush_sku(sku).await
    }

    async fn flush_sku(&mut self, sku: &str) -> Result<(), StoreError> {
        let events = match self.stock.get_mut(sku) {
            Some((_, pending)) => std::mem::take(pending),
            None => return Ok(()),
        };
        self.append(AggregateType::Inventory, sku, events).await
    }

    /// Appends the stock events still held back.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        let skus: Vec<String> = self.stock.keys().cloned().collect();
        for sku in skus {
            self.flush_sku(&sku).await?;
        }
        Ok(())
    }

    fn stock_step(
        &mut self,
        sku: &str,
        command: InventoryCommand,
        at: DateTime<Utc>,
        correlation: &str,
    ) -> bool {
        let (state, pending) = self
            .stock
            .get_mut(sku)
            .unwrap_or_else(|| panic!("SKU {sku} was never stocked"));
        let events = decide(state, command);
        let any = !events.is_empty();
        pending.extend(events.iter().map(|e| new_event(e, at, correlation)));
        any
    }

    /// Writes one order's history.
    pub async fn order(&mut self, plan: &OrderPlan) -> Result<(), StoreError> {
        let correlation = Uuid::new_v4().to_string();
        let mut clock = plan.at;
        let mut tick = || {
            let now = clock;
            clock += plan.step;
            now
        };
        let items: Vec<LineItem> = plan
            .lines
            .iter()
            .map(|l| LineItem {
                sku: l.sku.clone().into(),
                name: l.name.clone(),
                quantity: l.quantity,
                unit_price: l.unit_price,
            })
            .collect();
        let mut order = Order::default();
        let mut order_events = Vec::new();
        let mut payment = Payment::default();
        let mut payment_events = Vec::new();
        let payment_id = payment_id_for(&plan.order_id.as_str().into());
        let mut on_order = |order: &mut Order, command, at: DateTime<Utc>| {
            for e in decide(order, command) {
                order_events.push(new_event(&e, at, &correlation));
            }
        };
        let at = tick();
        on_order(
            &mut order,
            OrderCommand::Create(Box::new(CartCheckedOut {
                cart_id: format!("cart-{}", plan.order_id).into(),
                order_id: plan.order_id.clone().into(),
                customer_id: plan.customer_id.clone().into(),
                total_amount: total_of(&items).expect("generated prices are bounded"),
                currency: cornershop_domain::money::SHOP_CURRENCY,
                items: items.clone(),
                payment_method: "pm_visa_testkit".into(),
                shipping_address: PersonalAddress {
                    name: "Ada Lovelace".into(),
                    line1: "12 Analytical Row".into(),
                    line2: None,
                    city: "London".into(),
                    postal_code: "N1 9GU".into(),
                    country_code: Some("GB".into()),
                    unrecognised_country: None,
                },
                email: "ada@example.com".into(),
                phone: None,
            })),
            at,
        );
        if plan.outcome == Outcome::OutOfStock {
            let at = tick();
            on_order(
                &mut order,
                OrderCommand::Cancel {
                    reason: format!("out of stock: {}", items[0].sku),
                },
                at,
            );
        }
        let reserve = !matches!(plan.outcome, Outcome::Created | Outcome::OutOfStock);
        if reserve {
            for item in &items {
                let at = tick();
                self.stock_step(
                    &item.sku,
                    InventoryCommand::Reserve {
                        order_id: plan.order_id.clone().into(),
                        quantity: item.quantity,
                    },
                    at,
                    &correlation,
                );
            }
            let at = tick();
            on_order(&mut order, OrderCommand::Validate, at);
            let mut on_payment = |command, at| {
                for e in decide(&mut payment, command) {
                    payment_events.push(new_event(&e, at, &correlation));
                }
            };
            on_payment(
                PaymentCommand::Initiate {
                    payment_id: payment_id.clone(),
                    order_id: plan.order_id.clone().into(),
                    customer_id: plan.customer_id.clone().into(),
                    amount: total_of(&items)
                        .expect("generated prices are bounded")
                        .into(),
                    currency: cornershop_domain::money::SHOP_CURRENCY,
                    payment_method: "pm_visa_testkit".into(),
                },
                tick(),
            );
            if plan.outcome == Outcome::Declined {
                on_payment(
                    PaymentCommand::Fail {
                        code: "card_declined".into(),
                        reason: "card_declined: the card was declined".into(),
                    },
                    tick(),
                );
                for item in &items {
                    let at = tick();
                    self.stock_step(
                        &item.sku,
                        InventoryCommand::Release {
                            order_id: plan.order_id.clone().into(),
                            reason: "payment failed".into(),
                        },
                        at,
                        &correlation,
                    );
                }
                let at = tick();
                on_order(
                    &mut order,
                    OrderCommand::Cancel {
                        reason: "payment failed: card_declined".into(),
                    },
                    at,
                );
            } else {
                on_payment(
                    PaymentCommand::Authorize {
                        authorization_code: "AUTH".into(),
                    },
                    tick(),
                );
                on_payment(
                    PaymentCommand::Complete {
                        transaction_id: "TX".into(),
                    },
                    tick(),
                );
                let at = tick();
                on_order(
                    &mut order,
                    OrderCommand::Confirm {
                        payment_id: payment_id.clone(),
                    },
                    at,
                );
                match plan.outcome {
                    Outcome::Shipped | Outcome::Delivered => {
                        let at = tick();
                        on_order(
                            &mut order,
                            OrderCommand::Ship {
                                carrier: "DHL".into(),
                                tracking_number: format!("TRK-{}", plan.order_id),
                            },
                            at,
                        );
                        for item in &items {
                            let at = tick();
                            self.stock_step(
                                &item.sku,
                                InventoryCommand::Ship {
                                    order_id: plan.order_id.clone().into(),
                                },
                                at,
                                &correlation,
                            );
                        }
                        if plan.outcome == Outcome::Delivered {
                            let at = tick();
                            on_order(&mut order, OrderCommand::Deliver, at);
                        }
                    }
                    Outcome::CancelledAfterPayment => {
                        let at = tick();
                        on_order(
                            &mut order,
                            OrderCommand::Cancel {
                                reason: "changed my mind".into(),
                            },
                            at,
                        );
                        for item in &items {
                            let at = tick();
                            self.stock_step(
                                &item.sku,
                                InventoryCommand::Release {
                                    order_id: plan.order_id.clone().into(),
                                    reason: "order cancelled".into(),
                                },
                                at,
                                &correlation,
                            );
                        }
                        on_payment(
                            PaymentCommand::Refund {
                                reason: "order cancelled".into(),
                            },
                            tick(),
                        );
                    }
                    _ => {}
                }
            }
        }
        self.append(AggregateType::Order, &plan.order_id, order_events)
            .await?;
        self.append(AggregateType::Payment, &payment_id, payment_events)
            .await?;
        let full: Vec<String> = self
            .stock
            .iter()
            .filter(|(_, (_, pending))| pending.len() >= self.stock_batch)
            .map(|(sku, _)| sku.clone())
            .collect();
        for sku in full {
            self.flush_sku(&sku).await?;
        }
        Ok(())
    }
}
