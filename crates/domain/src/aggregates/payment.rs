//! A payment for one order: Initiated → Authorized → Completed, or Failed; a completed
//! payment can be refunded. It can never complete before it is authorized.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{require_text, Aggregate};
use crate::aggregate_type::AggregateType;
use crate::error::DomainError;
use crate::events::*;
use crate::values::{Currency, CustomerId, Money, OrderId, PaymentId};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    #[default]
    New,
    Initiated,
    Authorized,
    Completed,
    Failed,
    Refunded,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Payment {
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub amount: Decimal,
    /// The amount's currency (`None` until it is initiated).
    pub currency: Option<Currency>,
    pub status: PaymentStatus,
    pub authorization_code: Option<String>,
    pub transaction_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub refund_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PaymentCommand {
    Initiate {
        payment_id: PaymentId,
        order_id: OrderId,
        customer_id: CustomerId,
        amount: Money,
        currency: Currency,
        payment_method: String,
    },
    Authorize {
        authorization_code: String,
    },
    Complete {
        transaction_id: String,
    },
    Fail {
        code: String,
        reason: String,
    },
    Refund {
        reason: String,
    },
}

impl Payment {
    fn refuse(&self, action: &str) -> DomainError {
        if self.status == PaymentStatus::New {
            return DomainError::NotFound {
                aggregate: AggregateType::Payment,
                id: self.payment_id.to_string(),
            };
        }
        DomainError::transition(
            AggregateType::Payment,
            &self.payment_id,
            self.status,
            action,
        )
    }
}

impl Aggregate for Payment {
    const TYPE: AggregateType = AggregateType::Payment;
    /// 1: the shape since snapshots exist (see `Aggregate::STATE_SCHEMA`).
    // 2: the state gained its currency (schema 3 of the events).
    const STATE_SCHEMA: u32 = 2;
    type Command = PaymentCommand;

    fn decide(&self, command: &PaymentCommand) -> Result<Vec<DomainEvent>, DomainError> {
        let (payment_id, order_id) = (self.payment_id.clone(), self.order_id.clone());
        Ok(match command {
            PaymentCommand::Initiate {
                payment_id,
                order_id,
                customer_id,
                amount,
                currency,
                payment_method,
            } => {
                if self.status != PaymentStatus::New {
                    return Err(DomainError::AlreadyExists {
                        aggregate: AggregateType::Payment,
                        id: payment_id.to_string(),
                    });
                }
                // (Its bounds are `Money`'s, checked where the amount was parsed.)
                if amount.amount().is_zero() {
                    return Err(DomainError::Invalid(
                        "amount must be greater than zero".into(),
                    ));
                }
                require_text("paymentMethod", payment_method, 200)?;
                vec![PaymentInitiated {
                    payment_id: payment_id.clone(),
                    order_id: order_id.clone(),
                    customer_id: customer_id.clone(),
                    amount: amount.amount(),
                    currency: *currency,
                    payment_method: payment_method.clone(),
                }
                .into()]
            }
            PaymentCommand::Authorize { authorization_code } => {
                if self.status != PaymentStatus::Initiated {
                    return Err(self.refuse("be authorized"));
                }
                vec![PaymentAuthorized {
                    payment_id,
                    order_id,
                    amount: self.amount,
                    authorization_code: authorization_code.clone(),
                }
                .into()]
            }
            PaymentCommand::Complete { transaction_id } => {
                if self.status != PaymentStatus::Authorized {
                    return Err(self.refuse("complete before it is authorized"));
                }
                vec![PaymentCompleted {
                    payment_id,
                    order_id,
                    amount: self.amount,
                    transaction_id: transaction_id.clone(),
                }
                .into()]
            }
            PaymentCommand::Fail { code, reason } => {
                if !matches!(
                    self.status,
                    PaymentStatus::Initiated | PaymentStatus::Authorized
                ) {
                    return Err(self.refuse("fail"));
                }
                vec![PaymentFailed {
                    payment_id,
                    order_id,
                    code: code.clone(),
                    reason: reason.clone(),
                }
                .into()]
            }
            PaymentCommand::Refund { reason } => {
                if self.status != PaymentStatus::Completed {
                    return Err(self.refuse("be refunded (only a completed payment is)"));
                }
                vec![PaymentRefunded {
                    payment_id,
                    order_id,
                    amount: self.amount,
                    reason: reason.clone(),
                }
                .into()]
            }
        })
    }

    fn evolve(mut self, event: &DomainEvent) -> Self {
        match event {
            DomainEvent::PaymentInitiated(e) => {
                self.payment_id = e.payment_id.clone();
                self.order_id = e.order_id.clone();
                self.customer_id = e.customer_id.clone();
                self.amount = e.amount;
                self.currency = Some(e.currency);
                self.status = PaymentStatus::Initiated;
            }
            DomainEvent::PaymentAuthorized(e) => {
                self.status = PaymentStatus::Authorized;
                self.authorization_code = Some(e.authorization_code.clone());
            }
            DomainEvent::PaymentCompleted(e) => {
                self.status = PaymentStatus::Completed;
                self.transaction_id = Some(e.transaction_id.clone());
            }
            DomainEvent::PaymentFailed(e) => {
                self.status = PaymentStatus::Failed;
                self.failure_code = Some(e.code.clone());
                self.failure_reason = Some(e.reason.clone());
            }
            DomainEvent::PaymentRefunded(e) => {
                self.status = PaymentStatus::Refunded;
                self.refund_reason = Some(e.reason.clone());
            }
            _ => {}
        }
        self
    }

    fn exists(&self) -> bool {
        self.status != PaymentStatus::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{given, given_nothing};
    use rust_decimal_macros::dec;

    fn initiate() -> PaymentCommand {
        PaymentCommand::Initiate {
            payment_id: "pay-1".into(),
            order_id: "order-1".into(),
            customer_id: "cust-1".into(),
            amount: dec!(12.34).into(),
            currency: Currency::GBP,
            payment_method: "tok_visa".into(),
        }
    }
    fn authorize() -> PaymentCommand {
        PaymentCommand::Authorize {
            authorization_code: "auth".into(),
        }
    }
    fn complete() -> PaymentCommand {
        PaymentCommand::Complete {
            transaction_id: "txn".into(),
        }
    }
    fn fail() -> PaymentCommand {
        PaymentCommand::Fail {
            code: "card_declined".into(),
            reason: "declined".into(),
        }
    }
    fn refund() -> PaymentCommand {
        PaymentCommand::Refund { reason: "x".into() }
    }

    /// What `initiate()` causes.
    fn initiated() -> DomainEvent {
        PaymentInitiated {
            payment_id: "pay-1".into(),
            order_id: "order-1".into(),
            customer_id: "cust-1".into(),
            amount: dec!(12.34),
            currency: Currency::GBP,
            payment_method: "tok_visa".into(),
        }
        .into()
    }
    /// What `authorize()` causes after `initiated()`.
    fn authorized() -> DomainEvent {
        PaymentAuthorized {
            payment_id: "pay-1".into(),
            order_id: "order-1".into(),
            amount: dec!(12.34),
            authorization_code: "auth".into(),
        }
        .into()
    }
    /// What `fail()` causes after `initiated()`.
    fn failed() -> DomainEvent {
        PaymentFailed {
            payment_id: "pay-1".into(),
            order_id: "order-1".into(),
            code: "card_declined".into(),
            reason: "declined".into(),
        }
        .into()
    }

    #[test]
    fn a_payment_cannot_complete_before_it_is_authorized() {
        given_nothing::<Payment>()
            .when(initiate())
            .then([initiated()]);
        given::<Payment>([initiated()])
            .when(complete())
            .then_error_matching(|e| matches!(e, DomainError::InvalidTransition { .. }));
        given::<Payment>([initiated()])
            .when(authorize())
            .then([authorized()]);
        let accepted = given::<Payment>([initiated(), authorized()])
            .when(complete())
            .then_accepted();
        assert_eq!(accepted.events()[0].event_type(), "PaymentCompleted");
    }

    #[test]
    fn amounts_are_exact_and_positive() {
        let accepted = given_nothing::<Payment>()
            .when(initiate())
            .and(authorize())
            .and(complete())
            .then_accepted()
            .then_state(|p| assert_eq!(p.amount, dec!(12.34)));
        let DomainEvent::PaymentCompleted(c) = &accepted.events()[2] else {
            panic!()
        };
        assert_eq!(c.amount, dec!(12.34));
        // Out of `Money`'s bounds, an amount is refused where it is parsed; zero is a
        // shop amount, but not one to pay.
        for bad in [dec!(-1), dec!(1.001)] {
            assert!(Money::parse("amount", bad, crate::money::MAX_AMOUNT).is_err());
        }
        let cmd = PaymentCommand::Initiate {
            payment_id: "p".into(),
            order_id: "o".into(),
            customer_id: "c".into(),
            amount: Money::ZERO,
            currency: Currency::GBP,
            payment_method: "tok_visa".into(),
        };
        given_nothing::<Payment>()
            .when(cmd)
            .then_error_matching(|e| matches!(e, DomainError::Invalid(_)));
    }

    #[test]
    fn a_failed_payment_neither_completes_nor_refunds() {
        given::<Payment>([initiated()])
            .when(fail())
            .then([failed()])
            .then_state(|p| assert_eq!(p.status, PaymentStatus::Failed));
        for cmd in [complete(), authorize(), refund()] {
            given::<Payment>([initiated(), failed()])
                .when(cmd)
                .then_refused();
        }
    }

    #[test]
    fn only_a_completed_payment_is_refunded() {
        given::<Payment>([initiated()])
            .when(authorize())
            .then([authorized()]);
        given::<Payment>([initiated(), authorized()])
            .when(refund())
            .then_refused();
        let accepted = given::<Payment>([initiated(), authorized()])
            .when(complete())
            .and(refund())
            .then_accepted()
            .then_state(|p| assert_eq!(p.status, PaymentStatus::Refunded));
        assert_eq!(
            accepted.events().last().unwrap().event_type(),
            "PaymentRefunded"
        );
    }
}
