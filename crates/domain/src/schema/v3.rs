//! Schema version 3: prices say their currency, and a shipping address's country is a
//! checked code.
//!
//! - `currency` (ISO 4217) on every event that prices something: StockUpdated (the unit
//!   price), ItemAddedToCart (the line's unit price), CartCheckedOut and OrderCreated (the
//!   lines and the total), PaymentInitiated (the amount; the payment's later events are
//!   in the currency it was initiated in).
//! - CartCheckedOut's and OrderCreated's `shippingAddress.country`, a text the checkout
//!   took as any two letters, became `countryCode`: an assigned ISO 3166-1 alpha-2 code,
//!   or `null` with the old text kept as `unrecognisedCountry` when it named no country.

use serde_json::{Map, Value};

use crate::iso::{CountryCode, Currency};

/// The currency of every price written before version 3. The shop has sold in pounds
/// sterling from its first event: its checkout's examples, its simulator and its tests
/// ship to GB, and no version before 3 could say another currency. (A fact about the
/// past, not the shop's setting: it must never change, or old events would change
/// meaning.)
pub const CURRENCY_BEFORE_V3: Currency = Currency::GBP;

/// The events that gained `currency`.
const PRICED: [&str; 5] = [
    "StockUpdated",
    "ItemAddedToCart",
    "CartCheckedOut",
    "OrderCreated",
    "PaymentInitiated",
];

/// The events whose shipping address gained `countryCode`.
const ADDRESSED: [&str; 2] = ["CartCheckedOut", "OrderCreated"];

/// Version 2 → 3: fills in the currency every older price was in, and codes the
/// address's country: a text that names one country without doubt
/// ([`CountryCode::recognise`]: `GB`, `gb`, `UK`, `United Kingdom`) becomes its code;
/// any other (`XX`, `Narnia`) is not guessed at: `countryCode` is `null` and the text
/// stays as `unrecognisedCountry`, for a person to read. Payloads already in version 3
/// come out unchanged.
pub fn from_v2(event_type: &str, mut data: Value) -> Value {
    let Some(object) = data.as_object_mut() else {
        return data; // Not a payload at all: the decoder refuses it.
    };
    if PRICED.contains(&event_type) {
        object
            .entry("currency")
            .or_insert_with(|| Value::from(CURRENCY_BEFORE_V3.as_str()));
    }
    if ADDRESSED.contains(&event_type) {
        if let Some(Value::Object(address)) = object.get_mut("shippingAddress") {
            code_the_country(address);
        }
    }
    data
}

fn code_the_country(address: &mut Map<String, Value>) {
    let Some(Value::String(text)) = address.get("country") else {
        // No text to read (already version 3, or a payload the decoder will refuse).
        return;
    };
    let text = text.clone();
    address.shift_remove("country");
    match CountryCode::recognise(&text) {
        Some(code) => {
            address.insert("countryCode".into(), Value::from(code.as_str()));
        }
        None => {
            address.insert("countryCode".into(), Value::Null);
            address.insert("unrecognisedCountry".into(), Value::from(text));
        }
    }
}

/// Version 3 → 2, for a writer told to write the previous version during a rolling
/// upgrade: drops the currency (version 2 means pounds; an event in another currency
/// cannot be said in version 2 and is refused) and writes the country code (or the
/// unrecognised text) back as `country`.
pub fn to_v2(event_type: &str, mut data: Value) -> Result<Value, String> {
    let Some(object) = data.as_object_mut() else {
        return Ok(data);
    };
    if PRICED.contains(&event_type) {
        match object.shift_remove("currency") {
            Some(Value::String(code)) if code == CURRENCY_BEFORE_V3.as_str() => {}
            Some(other) => {
                return Err(format!(
                    "its currency is {other}, and version 2 prices everything in \
                     {CURRENCY_BEFORE_V3}"
                ))
            }
            None => return Err("it has no currency".into()),
        }
    }
    if ADDRESSED.contains(&event_type) {
        if let Some(Value::Object(address)) = object.get_mut("shippingAddress") {
            let code = address.shift_remove("countryCode");
            let text = address.shift_remove("unrecognisedCountry");
            let country = match (code, text) {
                (Some(Value::String(code)), _) => code,
                (_, Some(Value::String(text))) => text,
                _ => return Err("its shipping address has no country".into()),
            };
            address.insert("country".into(), Value::from(country));
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn address(country: &str) -> Value {
        json!({"name": {"keyId": "dk_1", "sealed": "AAAA"}, "line1": "1 Road", "city": "London",
               "postalCode": "N1", "country": country})
    }

    #[test]
    fn every_priced_event_gets_the_currency_older_prices_were_in() {
        for event_type in PRICED {
            let v3 = from_v2(event_type, json!({"unitPrice": "1.00"}));
            assert_eq!(v3["currency"], "GBP", "{event_type}");
        }
        let untouched = json!({"orderId": "o", "amount": "1.00"});
        assert_eq!(from_v2("PaymentCompleted", untouched.clone()), untouched);
        assert_eq!(from_v2("OrderValidated", untouched.clone()), untouched);
    }

    #[test]
    fn a_country_that_names_one_country_becomes_its_code() {
        for (old, code) in [
            ("GB", "GB"),
            ("gb", "GB"),
            ("UK", "GB"),
            ("United Kingdom", "GB"),
            ("US", "US"),
        ] {
            for event_type in ADDRESSED {
                let v3 = from_v2(event_type, json!({"shippingAddress": address(old)}));
                let a = &v3["shippingAddress"];
                assert_eq!(a["countryCode"], code, "{event_type} {old}");
                assert!(a.get("country").is_none() && a.get("unrecognisedCountry").is_none());
                // The rest of the address is as it was (sealed values untouched).
                assert_eq!(a["name"], json!({"keyId": "dk_1", "sealed": "AAAA"}));
                assert_eq!(a["city"], "London");
            }
        }
    }

    #[test]
    fn a_country_that_names_none_is_kept_as_written_and_not_guessed() {
        for old in ["XX", "Narnia", "Korea", ""] {
            let v3 = from_v2("OrderCreated", json!({"shippingAddress": address(old)}));
            let a = &v3["shippingAddress"];
            assert_eq!(a["countryCode"], Value::Null, "{old}");
            assert_eq!(a["unrecognisedCountry"], old);
        }
    }

    #[test]
    fn the_step_is_idempotent_and_leaves_what_it_cannot_read_to_the_decoder() {
        let v3 = from_v2(
            "OrderCreated",
            json!({"currency": "GBP", "shippingAddress": address("GB")}),
        );
        assert_eq!(from_v2("OrderCreated", v3.clone()), v3);
        // A currency already there is never replaced.
        let euros = json!({"currency": "EUR"});
        assert_eq!(from_v2("ItemAddedToCart", euros.clone()), euros);
        for odd in [json!(42), json!({"shippingAddress": {"country": 7}})] {
            let out = from_v2("CartCheckedOut", odd.clone());
            assert_eq!(out.get("shippingAddress"), odd.get("shippingAddress"));
        }
    }

    #[test]
    fn a_step_down_writes_what_version_2_reads_and_refuses_what_it_cannot_say() {
        let v2 = json!({"totalAmount": "1.00", "shippingAddress": address("GB")});
        let v3 = from_v2("OrderCreated", v2.clone());
        assert_eq!(to_v2("OrderCreated", v3).unwrap(), v2);
        // An unrecognised country goes back as it was written.
        let v2 = json!({"totalAmount": "1.00", "shippingAddress": address("XX")});
        assert_eq!(
            to_v2("OrderCreated", from_v2("OrderCreated", v2.clone())).unwrap(),
            v2
        );
        let other = to_v2("ItemAddedToCart", json!({"currency": "EUR"})).unwrap_err();
        assert!(other.contains("EUR") && other.contains("GBP"), "{other}");
        assert!(to_v2("StockUpdated", json!({})).is_err());
        let unchanged = json!({"orderId": "o"});
        assert_eq!(to_v2("OrderShipped", unchanged.clone()).unwrap(), unchanged);
    }
}
