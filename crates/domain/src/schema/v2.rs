//! Schema version 2: sealed personal data and the payment method's reference (issue 16).

/// Version 1 kept the payment token; version 2 keeps the payment method's reference in
/// its place. A version-1 token loads as that reference (the simulated gateway takes a
/// legacy token there). A version-1 clear personal field is already a valid
/// [`crate::Personal::Clear`], so it stays as it is.
pub fn from_v1(event_type: &str, mut data: serde_json::Value) -> serde_json::Value {
    if matches!(
        event_type,
        "CartCheckedOut" | "OrderCreated" | "PaymentInitiated"
    ) {
        if let Some(object) = data.as_object_mut() {
            if let Some(token) = object.shift_remove("paymentToken") {
                object.entry("paymentMethod").or_insert(token);
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_payment_token_becomes_the_payment_method_where_it_was_kept() {
        for event_type in ["CartCheckedOut", "OrderCreated", "PaymentInitiated"] {
            let v2 = from_v1(
                event_type,
                json!({"orderId": "o", "paymentToken": "tok_visa", "email": "a@b.c"}),
            );
            assert_eq!(
                v2,
                json!({"orderId": "o", "email": "a@b.c", "paymentMethod": "tok_visa"}),
                "{event_type}"
            );
        }
    }

    #[test]
    fn other_events_and_fields_are_left_alone() {
        let data = json!({"orderId": "o", "paymentToken": "tok_visa"});
        assert_eq!(from_v1("OrderValidated", data.clone()), data);
        let personal = json!({"orderId": "o", "email": "a@b.c", "phone": null,
                              "shippingAddress": {"name": "Ada", "country": "GB"}});
        assert_eq!(from_v1("OrderCreated", personal.clone()), personal);
        // A payload that is not an object is left for the decoder to refuse.
        assert_eq!(from_v1("OrderCreated", json!(42)), json!(42));
    }
}
