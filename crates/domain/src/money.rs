//! Money's bounds, and exact parsing at the edge.
//!
//! Every amount in this shop has at most two decimal places. A unit price is at most
//! [`MAX_UNIT_PRICE`]; with at most 999 units a line, a cart's total stays far inside
//! what a `Decimal` (and a count of cents in an `i64`) can hold, but every sum and product
//! is still checked: an event written by an older or buggy writer can hold anything.

use rust_decimal::Decimal;

/// The currency the shop sells in: every price it sets (a StockUpdated) is in it, and so
/// every cart, order and payment made of those prices. Pounds sterling, as the shop has
/// always sold (see [`crate::schema::v3::CURRENCY_BEFORE_V3`], which fills it into events
/// older than prices with a currency). Amounts' two decimal places are the pound's.
pub const SHOP_CURRENCY: crate::Currency = crate::Currency::GBP;

/// The most a unit price can be: 1,000,000.00.
pub const MAX_UNIT_PRICE: Decimal = Decimal::from_parts(100_000_000, 0, 0, false, 2);

/// The most an order's total (and so a payment) can be: 1,000,000,000,000.00, which is
/// still exact in cents as an `i64` (10¹⁴ cents).
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0x107A_4000, 0x5AF3, 0, false, 2);

/// Decimal places an amount may have.
pub(crate) const MONEY_SCALE: u32 = 2;

/// Checks that an amount is a shop amount: not negative, at most two decimal places, at
/// most `max`. The error names the field and says what is allowed.
pub fn check_amount(field: &str, value: Decimal, max: Decimal) -> Result<(), String> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(format!("{field} must not be negative, got {value}"));
    }
    if value.normalize().scale() > MONEY_SCALE {
        return Err(format!(
            "{field} must have at most two decimal places, got {value}"
        ));
    }
    if value > max {
        return Err(format!("{field} must be at most {max}, got {value}"));
    }
    Ok(())
}

/// An amount in hundredths (cents), if it is a whole number of them and fits an `i64`.
pub fn to_cents(amount: Decimal) -> Option<i64> {
    use rust_decimal::prelude::ToPrimitive;
    let scaled = amount.checked_mul(Decimal::ONE_HUNDRED)?;
    if !scaled.fract().is_zero() {
        return None;
    }
    scaled.trunc().to_i64()
}

/// Parses an amount written as text, strictly as the API documents it: digits, then
/// optionally a point and one or two digits (`"19.99"`, `"7"`, `"0.5"`). No sign, no
/// exponent, no spaces, no separators: what a person meant is never guessed.
pub(crate) fn parse_text(text: &str) -> Option<Decimal> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // (However many digits: one too large for a `Decimal` is refused below, and one that
    // fits but exceeds the field's maximum is refused by its bound, which names it.)
    let ok = digits(whole) && fraction.is_none_or(|f| digits(f) && f.len() <= MONEY_SCALE as usize);
    if !ok {
        return None;
    }
    Decimal::from_str_exact(text).ok()
}

/// Parses a decimal exactly, exponents allowed (the text of a JSON number): no rounding,
/// no float. `None` when the text is not a decimal a `Decimal` can hold exactly (too many
/// digits, an exponent that pushes it past 28 places, not a number at all).
pub(crate) fn parse_exact(text: &str) -> Option<Decimal> {
    let text = text.trim();
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let value = Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()?;
    // `from_scientific` rounds what does not fit: an exact value prints back the same
    // digits (up to trailing zeros).
    let exact = Decimal::from_str_exact(&value.to_string()).ok()? == value;
    exact.then_some(value)
}

/// `#[serde(deserialize_with = "cornershop_domain::money::exact")]`: an amount from a JSON
/// string (`"19.99"`) or number (`19.99`), parsed exactly. A number is taken by the
/// digits it is written with (through the shortest text that reads back as the same
/// float), so `1e-300` is refused rather than silently becoming zero.
pub fn exact<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    struct Exact;
    impl serde::de::Visitor<'_> for Exact {
        type Value = Decimal;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an amount such as \"19.99\": at most two decimal places")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decimal, E> {
            parse_text(v).ok_or_else(|| {
                E::custom(format!(
                    "'{}' is not an amount; write digits with at most two decimal places, such as \"19.99\"",
                    v.escape_debug()
                ))
            })
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Decimal, E> {
            // `{:?}` is the shortest text that reads back as `v` (and may use an exponent).
            parse_exact(&format!("{v:?}")).ok_or_else(|| {
                E::custom(format!(
                    "{v} is not an amount this shop can take exactly; write it as a decimal such as \"19.99\""
                ))
            })
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }
    }
    deserializer.deserialize_any(Exact)
}

/// The same for an optional amount.
pub fn exact_option<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Decimal>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "exact")] Decimal);
    let value: Option<Wrapped> = serde::Deserialize::deserialize(deserializer)?;
    Ok(value.map(|Wrapped(v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn the_bounds_are_what_they_say() {
        assert_eq!(MAX_UNIT_PRICE, dec!(1000000.00));
        assert_eq!(MAX_AMOUNT, dec!(1000000000000.00));
        assert_eq!(to_cents(MAX_AMOUNT), Some(100_000_000_000_000));
    }

    #[test]
    fn amounts_parse_exactly_or_not_at_all() {
        assert_eq!(parse_exact("19.99"), Some(dec!(19.99)));
        assert_eq!(parse_exact("1e2"), Some(dec!(100)));
        assert_eq!(parse_exact("1e-300"), None);
        assert_eq!(parse_exact("1e300"), None);
        assert_eq!(parse_exact("0.1234567890123456789012345678901"), None);
        assert_eq!(parse_exact("abc"), None);
        assert_eq!(parse_exact(""), None);
    }

    #[test]
    fn amount_text_is_digits_and_at_most_two_places() {
        assert_eq!(parse_text("19.99"), Some(dec!(19.99)));
        assert_eq!(parse_text("7"), Some(dec!(7)));
        assert_eq!(parse_text("0.5"), Some(dec!(0.5)));
        for bad in [
            "1e2", "1E2", " 1", "1 ", "1.000", "+1", "-1", "-0", "1_0", ".5", "1.", "", "abc",
            "1,5",
        ] {
            assert_eq!(parse_text(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn json_numbers_are_taken_by_their_digits() {
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(deserialize_with = "exact")]
            price: Decimal,
        }
        let parse = |json: &str| serde_json::from_str::<Body>(json).map(|b| b.price);
        assert_eq!(parse(r#"{"price": 19.99}"#).unwrap(), dec!(19.99));
        assert_eq!(parse(r#"{"price": "19.99"}"#).unwrap(), dec!(19.99));
        assert_eq!(parse(r#"{"price": 7}"#).unwrap(), dec!(7));
        assert!(parse(r#"{"price": 1e-300}"#).is_err());
        assert!(parse(r#"{"price": true}"#).is_err());
    }

    #[test]
    fn checks_name_the_field() {
        let e = check_amount(
            "unitPrice",
            dec!(1000000000000000000000000000),
            MAX_UNIT_PRICE,
        )
        .unwrap_err();
        assert!(e.contains("unitPrice must be at most 1000000.00"), "{e}");
        assert!(check_amount("unitPrice", dec!(0.001), MAX_UNIT_PRICE).is_err());
        assert!(check_amount("unitPrice", dec!(-1), MAX_UNIT_PRICE).is_err());
        assert!(check_amount("unitPrice", dec!(1000000.00), MAX_UNIT_PRICE).is_ok());
        assert!(check_amount("unitPrice", dec!(19.990), MAX_UNIT_PRICE).is_ok());
    }
}
