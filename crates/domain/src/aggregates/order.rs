//! The order. Its status only moves along the seed's flow:
//! Created → Validated → Confirmed → Shipped → Delivered, and to Cancelled only before
//! it ships.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{require_money, require_text, Aggregate};
use crate::aggregate_type::AggregateType;
use crate::error::DomainError;
use crate::events::*;
use crate::personal::{Personal, PersonalAddress};
use crate::values::{CartId, Currency, CustomerId, OrderId, PaymentId};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    #[default]
    New,
    Created,
    Validated,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Order {
    pub order_id: OrderId,
    pub cart_id: CartId,
    pub customer_id: CustomerId,
    pub status: OrderStatus,
    pub items: Vec<LineItem>,
    pub total_amount: Decimal,
    /// The currency of its lines and total (`None` until it is created).
    pub currency: Option<Currency>,
    pub payment_method: String,
    pub shipping_address: Option<PersonalAddress>,
    pub email: Personal,
    pub phone: Option<Personal>,
    pub payment_id: Option<PaymentId>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub cancel_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    /// Placed from a checked-out cart: the order takes the cart's lines and contact details.
    Create(Box<CartCheckedOut>),
    Validate,
    Confirm {
        payment_id: PaymentId,
    },
    Ship {
        carrier: String,
        tracking_number: String,
    },
    Deliver,
    Cancel {
        reason: String,
    },
}

impl Order {
    fn transition(&self, action: &str) -> DomainError {
        if self.status == OrderStatus::New {
            return DomainError::NotFound {
                aggregate: AggregateType::Order,
                id: self.order_id.to_string(),
            };
        }
        DomainError::transition(AggregateType::Order, &self.order_id, self.status, action)
    }

    fn expect(&self, from: OrderStatus, action: &str) -> Result<(), DomainError> {
        if self.status == from {
            Ok(())
        } else {
            Err(self.transition(action))
        }
    }
}

impl Aggregate for Order {
    const TYPE: AggregateType = AggregateType::Order;
    /// 1: the shape since snapshots exist (see `Aggregate::STATE_SCHEMA`).
    // 2: the state gained its currency (schema 3 of the events).
    const STATE_SCHEMA: u32 = 2;
    type Command = OrderCommand;

    fn decide(&self, command: &OrderCommand) -> Result<Vec<DomainEvent>, DomainError> {
        let id = self.order_id.clone();
        Ok(match command {
            OrderCommand::Create(c) => {
                if self.status != OrderStatus::New {
                    return Err(DomainError::AlreadyExists {
                        aggregate: AggregateType::Order,
                        id: c.order_id.to_string(),
                    });
                }
                if c.items.is_empty() {
                    return Err(DomainError::Invalid(
                        "an order needs at least one line".into(),
                    ));
                }
                let total_amount = total_of(&c.items).ok_or_else(|| {
                    DomainError::Invalid("the order's total is too large to be paid".into())
                })?;
                require_money("totalAmount", total_amount, crate::money::MAX_AMOUNT)?;
                vec![OrderCreated {
                    order_id: c.order_id.clone(),
                    cart_id: c.cart_id.clone(),
                    customer_id: c.customer_id.clone(),
                    total_amount,
                    currency: c.currency,
                    items: c.items.clone(),
                    payment_method: c.payment_method.clone(),
                    shipping_address: c.shipping_address.clone(),
                    email: c.email.clone(),
                    phone: c.phone.clone(),
                }
                .into()]
            }
            OrderCommand::Validate => {
                self.expect(OrderStatus::Created, "be validated")?;
                vec![OrderValidated { order_id: id }.into()]
            }
            OrderCommand::Confirm { payment_id } => {
                self.expect(OrderStatus::Validated, "be confirmed")?;
                vec![OrderConfirmed {
                    order_id: id,
                    payment_id: payment_id.clone(),
                }
                .into()]
            }
            OrderCommand::Ship {
                carrier,
                tracking_number,
            } => {
                self.expect(
                    OrderStatus::Confirmed,
                    "be shipped (only a confirmed order ships)",
                )?;
                require_text("carrier", carrier, 100)?;
                require_text("trackingNumber", tracking_number, 100)?;
                vec![OrderShipped {
                    order_id: id,
                    carrier: carrier.trim().to_string(),
                    tracking_number: tracking_number.trim().to_string(),
                }
                .into()]
            }
            OrderCommand::Deliver => {
                self.expect(
                    OrderStatus::Shipped,
                    "be delivered (only a shipped order is)",
                )?;
                vec![OrderDelivered { order_id: id }.into()]
            }
            OrderCommand::Cancel { reason } => {
                match self.status {
                    OrderStatus::Created | OrderStatus::Validated | OrderStatus::Confirmed => {}
                    _ => return Err(self.transition("be cancelled (only before it ships)")),
                }
                require_text("reason", reason, 500)?;
                vec![OrderCancelled {
                    order_id: id,
                    reason: reason.trim().to_string(),
                    previous_status: format!("{:?}", self.status),
                }
                .into()]
            }
        })
    }

    fn evolve(mut self, event: &DomainEvent) -> Self {
        match event {
            DomainEvent::OrderCreated(e) => {
                self.order_id = e.order_id.clone();
                self.cart_id = e.cart_id.clone();
                self.customer_id = e.customer_id.clone();
                self.items = e.items.clone();
                self.total_amount = e.total_amount;
                self.currency = Some(e.currency);
                self.payment_method = e.payment_method.clone();
                self.shipping_address = Some(e.shipping_address.clone());
                self.email = e.email.clone();
                self.phone = e.phone.clone();
                self.status = OrderStatus::Created;
            }
            DomainEvent::OrderValidated(_) => self.status = OrderStatus::Validated,
            DomainEvent::OrderConfirmed(e) => {
                self.status = OrderStatus::Confirmed;
                self.payment_id = Some(e.payment_id.clone());
            }
            DomainEvent::OrderShipped(e) => {
                self.status = OrderStatus::Shipped;
                self.carrier = Some(e.carrier.clone());
                self.tracking_number = Some(e.tracking_number.clone());
            }
            DomainEvent::OrderDelivered(_) => self.status = OrderStatus::Delivered,
            DomainEvent::OrderCancelled(e) => {
                self.status = OrderStatus::Cancelled;
                self.cancel_reason = Some(e.reason.clone());
            }
            _ => {}
        }
        self
    }

    fn exists(&self) -> bool {
        self.status != OrderStatus::New
    }

    fn owner(&self) -> Option<&str> {
        self.exists().then_some(self.customer_id.as_str())
    }

    fn holds_clear_personal_data(&self) -> bool {
        // The empty clear value is the state's default, before any contact was known.
        let in_clear =
            |value: &Personal| matches!(value, Personal::Clear(text) if !text.is_empty());
        in_clear(&self.email)
            || self.phone.as_ref().is_some_and(in_clear)
            || self
                .shipping_address
                .as_ref()
                .is_some_and(|address| address.values().any(in_clear))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{given, given_nothing};
    use rust_decimal_macros::dec;

    fn checked_out() -> CartCheckedOut {
        CartCheckedOut {
            cart_id: "cart-1".into(),
            order_id: "order-1".into(),
            customer_id: "cust-1".into(),
            items: vec![LineItem {
                sku: "A".into(),
                name: "Mug".into(),
                quantity: 2,
                unit_price: dec!(4.25),
            }],
            total_amount: dec!(8.50),
            currency: Currency::GBP,
            payment_method: "tok_visa".into(),
            shipping_address: PersonalAddress {
                name: "Ada".into(),
                line1: "1 Way".into(),
                line2: None,
                city: "London".into(),
                postal_code: "N1".into(),
                country_code: Some("GB".into()),
                unrecognised_country: None,
            },
            email: "ada@example.com".into(),
            phone: None,
        }
    }

    fn create() -> OrderCommand {
        OrderCommand::Create(Box::new(checked_out()))
    }
    fn confirm() -> OrderCommand {
        OrderCommand::Confirm {
            payment_id: "pay-1".into(),
        }
    }
    fn ship() -> OrderCommand {
        OrderCommand::Ship {
            carrier: "DHL".into(),
            tracking_number: "TRK1".into(),
        }
    }
    fn cancel() -> OrderCommand {
        OrderCommand::Cancel {
            reason: "customer asked".into(),
        }
    }

    /// What `create()` causes.
    fn created() -> DomainEvent {
        let c = checked_out();
        OrderCreated {
            order_id: c.order_id,
            cart_id: c.cart_id,
            customer_id: c.customer_id,
            total_amount: c.total_amount,
            currency: c.currency,
            items: c.items,
            payment_method: c.payment_method,
            shipping_address: c.shipping_address,
            email: c.email,
            phone: c.phone,
        }
        .into()
    }
    fn validated() -> DomainEvent {
        OrderValidated {
            order_id: "order-1".into(),
        }
        .into()
    }
    fn confirmed() -> DomainEvent {
        OrderConfirmed {
            order_id: "order-1".into(),
            payment_id: "pay-1".into(),
        }
        .into()
    }
    fn shipped() -> DomainEvent {
        OrderShipped {
            order_id: "order-1".into(),
            carrier: "DHL".into(),
            tracking_number: "TRK1".into(),
        }
        .into()
    }
    /// What `cancel()` causes for a created order.
    fn cancelled() -> DomainEvent {
        OrderCancelled {
            order_id: "order-1".into(),
            reason: "customer asked".into(),
            previous_status: "Created".into(),
        }
        .into()
    }

    #[test]
    fn the_happy_path_moves_through_every_status_in_order() {
        let accepted = given_nothing::<Order>()
            .when(create())
            .and(OrderCommand::Validate)
            .and(confirm())
            .and(ship())
            .and(OrderCommand::Deliver)
            .then_accepted()
            .then_state(|order| {
                assert_eq!(order.status, OrderStatus::Delivered);
                assert_eq!(order.total_amount, dec!(8.50));
                assert_eq!(order.tracking_number.as_deref(), Some("TRK1"));
            });
        let types: Vec<_> = accepted
            .events()
            .iter()
            .map(DomainEvent::event_type)
            .collect();
        assert_eq!(
            types,
            [
                "OrderCreated",
                "OrderValidated",
                "OrderConfirmed",
                "OrderShipped",
                "OrderDelivered"
            ]
        );
    }

    #[test]
    fn steps_cannot_be_skipped() {
        for cmd in [confirm(), ship(), OrderCommand::Deliver] {
            given::<Order>([created()])
                .when(cmd)
                .then_error_matching(|e| matches!(e, DomainError::InvalidTransition { .. }));
        }
        given::<Order>([created()])
            .when(OrderCommand::Validate)
            .then([validated()]);
        given::<Order>([created(), validated()])
            .when(ship())
            .then_refused();
        given::<Order>([created(), validated()])
            .when(OrderCommand::Validate)
            .then_refused();
    }

    #[test]
    fn cancelled_only_before_shipped() {
        for history in [
            vec![created()],
            vec![created(), validated()],
            vec![created(), validated(), confirmed()],
        ] {
            let accepted = given::<Order>(history).when(cancel()).then_accepted();
            assert_eq!(accepted.events()[0].event_type(), "OrderCancelled");
        }
        let shipped = || given::<Order>([created(), validated(), confirmed(), shipped()]);
        shipped()
            .when(cancel())
            .then_error_matching(|e| matches!(e, DomainError::InvalidTransition { .. }));
        shipped()
            .when(OrderCommand::Deliver)
            .and(cancel())
            .then_refused();
    }

    #[test]
    fn a_cancelled_order_goes_nowhere() {
        given::<Order>([created()])
            .when(cancel())
            .then([cancelled()]);
        for cmd in [
            OrderCommand::Validate,
            confirm(),
            ship(),
            OrderCommand::Deliver,
            cancel(),
        ] {
            given::<Order>([created(), cancelled()])
                .when(cmd)
                .then_refused();
        }
    }

    #[test]
    fn an_unknown_order_is_not_found() {
        given_nothing::<Order>()
            .when(OrderCommand::Validate)
            .then_error_matching(|e| matches!(e, DomainError::NotFound { .. }));
    }

    #[test]
    fn an_order_is_created_once() {
        given_nothing::<Order>().when(create()).then([created()]);
        given::<Order>([created()])
            .when(create())
            .then_error_matching(|e| matches!(e, DomainError::AlreadyExists { .. }));
    }
}
