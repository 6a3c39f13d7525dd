//! The shop's typed values: ids, SKUs, contact details, amounts and quantities, each
//! parsed once where it enters (an HTTP request, a decoded event, a command-line flag)
//! and trusted everywhere after. A bad value is refused there, by a [`ValueError`] that
//! names the field and says what is allowed; the aggregates never see an unparsed string.
//!
//! On the wire every value is exactly what it was before it had a type: the text ones are
//! JSON strings, [`Money`] is the decimal string a `Decimal` writes, [`Quantity`] a number.
//! Decoding an event parses its ids with the same rules every writer applied when it
//! wrote them, so a stored event that breaks them is refused by the decoder (and parked
//! by a consumer as poison), never folded into a state.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::iso::{CountryCode, Currency};

/// A value refused where it entered: the field it came in, and why, for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValueError {
    /// The field's name as the API spells it (`sku`, `email`, `shippingAddress.city`).
    pub field: &'static str,
    pub message: String,
}

impl ValueError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The most characters an id may have. Ids this shop makes are UUIDs (36); a customer id
/// is an identity provider's subject, which is far shorter in practice.
pub(crate) const MAX_ID_CHARS: usize = 200;

/// Declares text values, each a newtype over `String` whose only way in is `parse`, read as
/// `&str` everywhere (`Deref`, `Display`, `AsRef`), written and read as a plain JSON
/// string.
macro_rules! text_values {
    ($( $(#[$doc:meta])* $name:ident, field = $field:literal, check = $check:path,
        personal = $personal:literal; )*) => { $(
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses the value as it was sent; the error names the field.
            pub fn parse(text: &str) -> Result<Self, ValueError> {
                $check($field, text).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValueError;
            fn from_str(text: &str) -> Result<Self, ValueError> {
                Self::parse(text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                Self::parse(&text).map_err(|e| {
                    // A decoding error ends up in logs and dead letters: a value that
                    // names a person is not repeated there.
                    if $personal {
                        serde::de::Error::custom(format!(
                            "{} is not valid (the value is personal data and is not repeated here)",
                            e.field
                        ))
                    } else {
                        serde::de::Error::custom(e)
                    }
                })
            }
        }

        /// Tests name values by literals; production code has only `parse`.
        #[cfg(any(test, feature = "testkit"))]
        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self::parse(text).unwrap_or_else(|e| panic!("a test's {}: {e}", $field))
            }
        }

        #[cfg(any(test, feature = "testkit"))]
        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self::from(text.as_str())
            }
        }

        #[cfg(any(test, feature = "testkit"))]
        impl From<&String> for $name {
            fn from(text: &String) -> Self {
                Self::from(text.as_str())
            }
        }
    )* };
}

text_values! {
    /// A cart's id (a UUID when this shop opened it).
    CartId, field = "cartId", check = id_text, personal = false;
    /// An order's id (a UUID, chosen at checkout).
    OrderId, field = "orderId", check = id_text, personal = false;
    /// A payment's id: derived from its order's ([`crate::ids::payment_id_for`]).
    PaymentId, field = "paymentId", check = id_text, personal = false;
    /// Whose cart or order it is: the subject of the customer's token.
    CustomerId, field = "customerId", check = customer_text, personal = false;
    /// A stock-keeping unit: 1 to 64 letters, digits, '-', '_' or '.', starting with a
    /// letter or digit (so never `.` or `..`, which would read as path segments).
    Sku, field = "sku", check = sku_text, personal = false;
    /// An e-mail address the shop writes to, trimmed.
    Email, field = "email", check = email_text, personal = true;
    /// A phone number the shop texts: 7 to 15 digits, optionally with + - ( ) . and spaces.
    Phone, field = "phone", check = phone_text, personal = true;
}

impl OrderId {
    /// The id of an order this shop places now.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

impl CartId {
    /// The id of a cart this shop opens now.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

impl PaymentId {
    /// Only the derivation in `ids` makes one from nothing but an order id.
    pub(crate) fn derived(text: String) -> Self {
        Self(text)
    }
}

/// The pattern of a stock-keeping unit, as the OpenAPI document gives it.
pub const SKU_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

/// Text that a person reads (names, ids, address lines) holds no control characters
/// (U+0000 to U+001F, U+007F to U+009F): they break logs, e-mails and terminals, and no
/// real name or address needs them.
pub(crate) fn no_control(field: &str, value: &str) -> Result<(), String> {
    match value.chars().position(char::is_control) {
        Some(at) => Err(format!(
            "{field} must not contain control characters (one is at character {})",
            at + 1
        )),
        None => Ok(()),
    }
}

/// Text a person wrote: not blank, no control characters, at most `max_len` characters
/// once trimmed.
pub fn required_text(field: &str, value: &str, max_len: usize) -> Result<(), String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    no_control(field, value)?;
    if trimmed.chars().count() > max_len {
        return Err(format!("{field} must be at most {max_len} characters"));
    }
    Ok(())
}

fn id_text(field: &'static str, text: &str) -> Result<String, ValueError> {
    if text.is_empty() {
        return Err(ValueError::new(field, format!("{field} must not be empty")));
    }
    no_control(field, text).map_err(|m| ValueError::new(field, m))?;
    if text.chars().count() > MAX_ID_CHARS {
        return Err(ValueError::new(
            field,
            format!("{field} must be at most {MAX_ID_CHARS} characters"),
        ));
    }
    Ok(text.to_string())
}

fn customer_text(field: &'static str, text: &str) -> Result<String, ValueError> {
    required_text(field, text, MAX_ID_CHARS).map_err(|m| ValueError::new(field, m))?;
    Ok(text.trim().to_string())
}

fn sku_text(field: &'static str, text: &str) -> Result<String, ValueError> {
    let mut chars = text.chars();
    let ok = text.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(text.to_string())
    } else {
        Err(ValueError::new(
            field,
            format!(
                "{field} '{}' is not a valid SKU: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit",
                text.escape_debug()
            ),
        ))
    }
}

fn email_text(field: &'static str, text: &str) -> Result<String, ValueError> {
    // At most 254 characters as sent (white space around it included): the OpenAPI
    // document says it with a plain `maxLength`.
    let short = text.chars().count() <= 254;
    let email = text.trim();
    let valid = short
        && !email.contains(|c: char| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            }
            None => false,
        };
    if valid {
        Ok(email.to_string())
    } else {
        Err(ValueError::new(
            field,
            format!(
                "{field} '{}' is not a valid e-mail address",
                email.escape_debug()
            ),
        ))
    }
}

fn phone_text(field: &'static str, text: &str) -> Result<String, ValueError> {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    let allowed = text
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    if allowed && (7..=15).contains(&digits) {
        Ok(text.to_string())
    } else {
        Err(ValueError::new(
            field,
            format!(
                "{field} '{}' is not a phone number (7 to 15 digits, optionally with + - ( ) and spaces)",
                text.escape_debug()
            ),
        ))
    }
}

/// An amount of the shop's currency: an exact decimal, never a float, not negative, at
/// most two decimal places, and at most the bound of the field it came in (see
/// [`crate::money`]). Written and read exactly as a `Decimal` is.
///
/// Stored events keep their amounts as plain `Decimal`s: an event is never refused once
/// written (an older writer's may be out of today's bounds), so `evolve` saturates where
/// `decide` would refuse, and a command takes its amount as `Money`, parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Money(Decimal);

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// An amount for `field`, refused unless it is a shop amount at most `max`.
    pub fn parse(field: &'static str, value: Decimal, max: Decimal) -> Result<Self, ValueError> {
        crate::money::check_amount(field, value, max)
            .map(|()| Self(value))
            .map_err(|m| ValueError::new(field, m))
    }

    pub fn amount(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Money> for Decimal {
    fn from(value: Money) -> Decimal {
        value.0
    }
}

/// How many units of a product a cart line gets in one request: 1 to 999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    const FIELD: &'static str = "quantity";
    /// The most units one cart line holds.
    pub const MAX: u32 = 999;

    /// Signed, so that a zero or negative request is refused with what was sent.
    pub fn parse(count: i64) -> Result<Self, ValueError> {
        if (1..=i64::from(Self::MAX)).contains(&count) {
            Ok(Self(count as u32))
        } else {
            Err(ValueError::new(
                Self::FIELD,
                format!(
                    "{} must be between 1 and {}, got {count}",
                    Self::FIELD,
                    Self::MAX
                ),
            ))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// Tests write amounts as literals, within the largest bound (an order's total).
#[cfg(any(test, feature = "testkit"))]
impl From<Decimal> for Money {
    fn from(value: Decimal) -> Self {
        Self::parse("amount", value, crate::money::MAX_AMOUNT)
            .unwrap_or_else(|e| panic!("a test's amount: {e}"))
    }
}

#[cfg(any(test, feature = "testkit"))]
impl From<u32> for Quantity {
    fn from(count: u32) -> Self {
        Self::parse(i64::from(count)).unwrap_or_else(|e| panic!("a test's quantity: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn ids_are_taken_as_sent_and_refused_with_their_field_name() {
        assert_eq!(CartId::parse("c-1").unwrap().as_str(), "c-1");
        let e = OrderId::parse("").unwrap_err();
        assert_eq!(
            (e.field, e.message.as_str()),
            ("orderId", "orderId must not be empty")
        );
        let e = PaymentId::parse("a\u{0}b").unwrap_err();
        assert!(
            e.message
                .starts_with("paymentId must not contain control characters"),
            "{e}"
        );
        assert!(CartId::parse(&"x".repeat(201)).is_err());
        assert!(CartId::parse(&"x".repeat(200)).is_ok());
    }

    #[test]
    fn a_customer_id_is_trimmed_and_never_blank() {
        assert_eq!(CustomerId::parse(" alice ").unwrap().as_str(), "alice");
        let e = CustomerId::parse("   ").unwrap_err();
        assert_eq!(e.message, "customerId must not be empty");
        assert!(CustomerId::parse(&"a".repeat(201)).is_err());
    }

    #[test]
    fn skus_follow_the_documented_pattern() {
        for good in ["A", "SKU-1", "a.b_c-9", &"x".repeat(64)] {
            assert!(Sku::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "-a", "a b", "a/b", &"x".repeat(65), "é"] {
            let e = Sku::parse(bad).unwrap_err();
            assert_eq!(e.field, "sku");
            assert!(e.message.starts_with("sku '"), "{e}");
        }
    }

    #[test]
    fn emails_and_phones_are_checked_and_named() {
        assert_eq!(Email::parse(" a@b.io ").unwrap().as_str(), "a@b.io");
        for bad in ["a", "@b.io", "a@b", "a@.b", "a@b.", "a b@c.io", "a@b@c.io"] {
            let e = Email::parse(bad).unwrap_err();
            assert!(e.message.starts_with("email '"), "{e}");
        }
        assert!(Phone::parse("+1 (555) 010-9999").is_ok());
        for bad in ["123", "phone me", "1234567890123456"] {
            let e = Phone::parse(bad).unwrap_err();
            assert!(e.message.starts_with("phone '"), "{e}");
        }
    }

    #[test]
    fn values_are_plain_json_on_the_wire_and_parsed_on_the_way_in() {
        let sku = Sku::parse("MUG-1").unwrap();
        assert_eq!(
            serde_json::to_value(&sku).unwrap(),
            serde_json::json!("MUG-1")
        );
        assert_eq!(serde_json::from_str::<Sku>("\"MUG-1\"").unwrap(), sku);
        let e = serde_json::from_str::<Sku>("\"../x\"").unwrap_err();
        assert!(
            e.to_string().contains("sku '../x' is not a valid SKU"),
            "{e}"
        );
        // An e-mail address or phone number is personal: its decoding error (which a
        // consumer logs and dead-letters) names the field, not the value.
        let e = serde_json::from_str::<Email>("\"ada at example\"").unwrap_err();
        assert!(e.to_string().starts_with("email is not valid"), "{e}");
        assert!(!e.to_string().contains("ada"), "{e}");
        let e = serde_json::from_str::<Phone>("\"call ada\"").unwrap_err();
        assert!(!e.to_string().contains("ada"), "{e}");
        let money = Money::parse("unitPrice", dec!(19.99), dec!(100)).unwrap();
        assert_eq!(
            serde_json::to_value(money).unwrap(),
            serde_json::json!("19.99")
        );
        assert_eq!(
            serde_json::to_value(Quantity::parse(3).unwrap()).unwrap(),
            3
        );
    }

    #[test]
    fn money_and_quantities_are_bounded() {
        assert!(Money::parse("unitPrice", dec!(0.001), dec!(100)).is_err());
        let e = Money::parse("unitPrice", dec!(101), dec!(100)).unwrap_err();
        assert_eq!(e.field, "unitPrice");
        assert_eq!(Quantity::parse(999).unwrap().get(), 999);
        let e = Quantity::parse(0).unwrap_err();
        assert_eq!(e.message, "quantity must be between 1 and 999, got 0");
        assert!(Quantity::parse(1000).is_err());
        assert!(Quantity::parse(-5).is_err());
    }
}
