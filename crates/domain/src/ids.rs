//! Ids derived from other ids, so that whoever needs one (the saga that creates a
//! payment, the payment service, the read side's verification) computes the same one
//! without asking anybody.

use uuid::Uuid;

use crate::values::{OrderId, PaymentId};

/// The payment of an order has an id derived from the order's, so that initiating it
/// twice names the same payment.
pub fn payment_id_for(order_id: &OrderId) -> PaymentId {
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2d0e_8b3a_4c55_9a61_2f7e_0c4b_d913);
    PaymentId::derived(
        Uuid::new_v5(&NAMESPACE, format!("payment:{order_id}").as_bytes()).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orders_payment_id_is_stable_and_its_own() {
        let id = |text: &str| payment_id_for(&OrderId::from(text));
        assert_eq!(id("order-1"), id("order-1"));
        assert_ne!(id("order-1"), id("order-2"));
        // The derivation is a contract with every stored payment: it must not change.
        assert_eq!(
            id("order-0001").to_string(),
            Uuid::new_v5(
                &Uuid::from_u128(0x6f1c_2d0e_8b3a_4c55_9a61_2f7e_0c4b_d913),
                b"payment:order-0001"
            )
            .to_string()
        );
    }
}
