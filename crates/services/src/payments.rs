//! Payments: a gateway behind a trait, a simulated gateway that takes Stripe-style test
//! tokens, and the payment service that drives a payment through the gateway.
//!
//! PaymentInitiated → authorize → PaymentAuthorized (or PaymentFailed);
//! PaymentAuthorized → capture → PaymentCompleted (or PaymentFailed);
//! a completed payment whose order is cancelled → refund → PaymentRefunded. The refund is
//! checked from both sides (PaymentCompleted and OrderCancelled), since either may be
//! seen first; its key is per payment, so it happens once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cornershop_app::CommandBus;
use cornershop_domain::{
    Currency, DomainEvent, EventType, OrderStatus, Payment, PaymentCommand, PaymentStatus,
};
use cornershop_messaging::HandlerError;
use rust_decimal::Decimal;
use uuid::Uuid;

use cornershop_domain::ids::payment_id_for;

use crate::{handler_error, Reaction, Reactor};

pub(crate) const NAME: &str = "payment-service";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The payment is refused for good (a declined card): a business outcome.
    #[error("declined ({code}): {message}")]
    Declined { code: String, message: String },
    /// The gateway could not be reached or failed: try again later.
    #[error("payment gateway unavailable: {0}")]
    Unavailable(String),
}

/// A payment provider. Every call carries the payment id, which a real provider takes as
/// its idempotency key, so a retried call never charges twice.
#[async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    /// Exchanges the single-use token a client got from the gateway for a payment method
    /// the shop may keep a reference to (the token is used here once and never stored).
    async fn register_payment_method(&self, token: &str) -> Result<String, GatewayError>;
    /// Places a hold on the amount in `currency`, charged to the payment method (a
    /// reference from [`register_payment_method`](Self::register_payment_method), or a
    /// token stored by an older version); returns the authorization code. Capture and
    /// refund are of the authorized payment, in its currency.
    async fn authorize(
        &self,
        payment_id: &str,
        amount: Decimal,
        currency: Currency,
        payment_method: &str,
    ) -> Result<String, GatewayError>;
    /// Captures an authorized payment; returns the transaction id.
    async fn capture(&self, payment_id: &str, amount: Decimal) -> Result<String, GatewayError>;
    /// Returns a captured payment; returns the refund id.
    async fn refund(&self, payment_id: &str, amount: Decimal) -> Result<String, GatewayError>;
}

#[derive(Debug, Clone)]
pub struct SimulatedGatewayConfig {
    /// Amounts above this are declined (`amount_too_large`).
    pub max_amount: Decimal,
    /// How long each call takes.
    pub latency: Duration,
}

/// The default gateway: no network, Stripe-style test tokens.
/// `tok_visa` (and `tok_mastercard`) authorize and capture; `tok_chargeDeclined` fails
/// with `card_declined`; `tok_insufficientFunds` with `insufficient_funds`; any other
/// token with `invalid_token`. A token registers as `pm_<kind>_<random>`, which behaves
/// as its token did (the kind is the test token's, never anything of the card holder's).
pub struct SimulatedGateway {
    config: SimulatedGatewayConfig,
}

impl SimulatedGateway {
    pub fn new(config: SimulatedGatewayConfig) -> Self {
        Self { config }
    }

    async fn wait(&self) {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
    }
}

fn declined(code: &str, message: &str) -> GatewayError {
    GatewayError::Declined {
        code: code.to_string(),
        message: message.to_string(),
    }
}

/// A deterministic reference for a call, so that a retried call answers the same.
fn reference(prefix: &str, payment_id: &str) -> String {
    let id = Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("{prefix}:{payment_id}").as_bytes(),
    );
    format!("{prefix}_{}", id.simple())
}

/// The test token a simulated payment method stands for: `pm_visa_…` for `tok_visa`;
/// a bare token (stored by schema version 1) stands for itself.
fn simulated_token(payment_method: &str) -> String {
    match payment_method
        .strip_prefix("pm_")
        .and_then(|rest| rest.rsplit_once('_'))
    {
        Some((kind, _)) => format!("tok_{kind}"),
        None => payment_method.to_string(),
    }
}

#[async_trait]
impl PaymentGateway for SimulatedGateway {
    async fn register_payment_method(&self, token: &str) -> Result<String, GatewayError> {
        let kind = match token {
            "tok_visa" => "visa",
            "tok_mastercard" => "mastercard",
            "tok_chargeDeclined" => "chargeDeclined",
            "tok_insufficientFunds" => "insufficientFunds",
            _ => "unknown",
        };
        Ok(format!("pm_{kind}_{}", Uuid::new_v4().simple()))
    }

    async fn authorize(
        &self,
        payment_id: &str,
        amount: Decimal,
        _currency: Currency,
        payment_method: &str,
    ) -> Result<String, GatewayError> {
        self.wait().await;
        match simulated_token(payment_method).as_str() {
            "tok_chargeDeclined" => Err(declined("card_declined", "Your card was declined.")),
            "tok_insufficientFunds" => Err(declined(
                "insufficient_funds",
                "Your card has insufficient funds.",
            )),
            "tok_visa" | "tok_mastercard" if amount > self.config.max_amount => Err(declined(
                "amount_too_large",
                &format!(
                    "The amount exceeds the limit of {}.",
                    self.config.max_amount
                ),
            )),
            "tok_visa" | "tok_mastercard" => Ok(reference("auth", payment_id)),
            _ => Err(declined(
                "invalid_token",
                "The payment token is not recognised.",
            )),
        }
    }

    async fn capture(&self, payment_id: &str, _amount: Decimal) -> Result<String, GatewayError> {
        self.wait().await;
        Ok(reference("ch", payment_id))
    }

    async fn refund(&self, payment_id: &str, _amount: Decimal) -> Result<String, GatewayError> {
        self.wait().await;
        Ok(reference("re", payment_id))
    }
}

pub(crate) struct PaymentService {
    bus: CommandBus,
    gateway: Arc<dyn PaymentGateway>,
}

impl PaymentService {
    pub(crate) fn new(bus: CommandBus, gateway: Arc<dyn PaymentGateway>) -> Self {
        Self { bus, gateway }
    }

    async fn payment(&self, payment_id: &str) -> Result<Payment, HandlerError> {
        let (payment, _) = self
            .bus
            .load::<Payment>(payment_id)
            .await
            .map_err(handler_error)?;
        Ok(payment)
    }

    /// Applies a gateway answer: success → `on_success`; declined → PaymentFailed;
    /// unavailable → a transient error, retried.
    async fn settle(
        &self,
        react: &Reactor<'_>,
        payment_id: &str,
        answer: Result<String, GatewayError>,
        on_success: impl FnOnce(String) -> PaymentCommand,
        step: &str,
    ) -> Result<(), HandlerError> {
        let command = match answer {
            Ok(reference) => on_success(reference),
            Err(GatewayError::Declined { code, message }) => PaymentCommand::Fail {
                code,
                reason: message,
            },
            Err(e @ GatewayError::Unavailable(_)) => {
                return Err(HandlerError::Transient(e.to_string()))
            }
        };
        react
            .once_unless_moved_on::<Payment>(payment_id, &command, step)
            .await
    }

    async fn refund_if_cancelled(
        &self,
        react: &Reactor<'_>,
        payment: &Payment,
    ) -> Result<(), HandlerError> {
        if payment.status != PaymentStatus::Completed {
            return Ok(());
        }
        let order = react.order(&payment.order_id).await?;
        if order.status != OrderStatus::Cancelled {
            return Ok(());
        }
        let refund_id = self
            .gateway
            .refund(&payment.payment_id, payment.amount)
            .await
            .map_err(|e| HandlerError::Transient(e.to_string()))?;
        let refund = PaymentCommand::Refund {
            reason: format!(
                "order cancelled: {} (refund {refund_id})",
                order.cancel_reason.as_deref().unwrap_or("no reason given")
            ),
        };
        // Keyed by the payment, not by the event: two events may both lead here.
        let key = format!("{NAME}:refund:{}", payment.payment_id);
        match self
            .bus
            .execute_once::<Payment>(&payment.payment_id, &refund, &react.ctx, &key)
            .await
        {
            Ok(_) => Ok(()),
            Err(cornershop_app::AppError::Domain(e)) => {
                tracing::info!(reason = %e, "refund skipped: the payment has moved on");
                Ok(())
            }
            Err(e) => Err(handler_error(e)),
        }
    }
}

#[async_trait]
impl Reaction for PaymentService {
    const NAME: &'static str = NAME;
    const REACTS_TO: &'static [EventType] = &[
        EventType::PaymentInitiated,
        EventType::PaymentAuthorized,
        EventType::PaymentCompleted,
        EventType::OrderCancelled,
    ];

    fn bus(&self) -> &CommandBus {
        &self.bus
    }

    async fn react(&self, decoded: DomainEvent, react: &Reactor<'_>) -> Result<(), HandlerError> {
        match decoded {
            DomainEvent::PaymentInitiated(initiated) => {
                let payment = self.payment(&initiated.payment_id).await?;
                if payment.status != PaymentStatus::Initiated {
                    return Ok(());
                }
                let answer = self
                    .gateway
                    .authorize(
                        &initiated.payment_id,
                        initiated.amount,
                        initiated.currency,
                        &initiated.payment_method,
                    )
                    .await;
                self.settle(
                    react,
                    &initiated.payment_id,
                    answer,
                    |authorization_code| PaymentCommand::Authorize { authorization_code },
                    "authorize",
                )
                .await
            }
            DomainEvent::PaymentAuthorized(authorized) => {
                let payment = self.payment(&authorized.payment_id).await?;
                if payment.status != PaymentStatus::Authorized {
                    return Ok(());
                }
                let answer = self
                    .gateway
                    .capture(&authorized.payment_id, authorized.amount)
                    .await;
                self.settle(
                    react,
                    &authorized.payment_id,
                    answer,
                    |transaction_id| PaymentCommand::Complete { transaction_id },
                    "capture",
                )
                .await
            }
            DomainEvent::PaymentCompleted(completed) => {
                let payment = self.payment(&completed.payment_id).await?;
                self.refund_if_cancelled(react, &payment).await
            }
            DomainEvent::OrderCancelled(cancelled) => {
                let payment = self.payment(&payment_id_for(&cancelled.order_id)).await?;
                self.refund_if_cancelled(react, &payment).await
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[tokio::test]
    async fn the_simulated_gateway_answers_stripe_test_tokens() {
        let gateway = SimulatedGateway::new(SimulatedGatewayConfig {
            max_amount: dec!(100),
            latency: Duration::ZERO,
        });
        assert!(gateway
            .authorize("p", dec!(10), Currency::GBP, "tok_visa")
            .await
            .is_ok());
        let code = |r: Result<String, GatewayError>| match r {
            Err(GatewayError::Declined { code, .. }) => code,
            other => panic!("expected a decline, got {other:?}"),
        };
        assert_eq!(
            code(
                gateway
                    .authorize("p", dec!(10), Currency::GBP, "tok_chargeDeclined")
                    .await
            ),
            "card_declined"
        );
        assert_eq!(
            code(
                gateway
                    .authorize("p", dec!(10), Currency::GBP, "tok_insufficientFunds")
                    .await
            ),
            "insufficient_funds"
        );
        assert_eq!(
            code(
                gateway
                    .authorize("p", dec!(100.01), Currency::GBP, "tok_visa")
                    .await
            ),
            "amount_too_large"
        );
        assert_eq!(
            code(
                gateway
                    .authorize("p", dec!(1), Currency::GBP, "tok_bogus")
                    .await
            ),
            "invalid_token"
        );
        // A retried call gets the same reference: no second charge.
        assert_eq!(
            gateway.capture("p1", dec!(1)).await,
            gateway.capture("p1", dec!(1)).await
        );
    }

    #[tokio::test]
    async fn a_registered_payment_method_behaves_as_its_token_and_does_not_contain_it() {
        let gateway = SimulatedGateway::new(SimulatedGatewayConfig {
            max_amount: dec!(100),
            latency: Duration::ZERO,
        });
        for (token, outcome) in [
            ("tok_visa", None),
            ("tok_chargeDeclined", Some("card_declined")),
            ("tok_insufficientFunds", Some("insufficient_funds")),
            ("tok_bogus-secret", Some("invalid_token")),
        ] {
            let method = gateway.register_payment_method(token).await.unwrap();
            assert!(method.starts_with("pm_"), "{method}");
            assert!(!method.contains(token), "{method} holds {token}");
            let answer = gateway
                .authorize("p", dec!(10), Currency::GBP, &method)
                .await;
            match (outcome, answer) {
                (None, Ok(_)) => {}
                (Some(want), Err(GatewayError::Declined { code, .. })) => assert_eq!(code, want),
                (want, got) => panic!("{token}: expected {want:?}, got {got:?}"),
            }
        }
        let twice = (
            gateway.register_payment_method("tok_visa").await.unwrap(),
            gateway.register_payment_method("tok_visa").await.unwrap(),
        );
        assert_ne!(
            twice.0, twice.1,
            "a reference is the method's own, not the token's"
        );
    }
}
