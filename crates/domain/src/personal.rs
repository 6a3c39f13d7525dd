//! Personal data inside events: a value that names or reaches a person (an e-mail
//! address, a phone number, a recipient's name, an address line).
//!
//! Events are never deleted, so personal data is never stored in clear: the command bus
//! seals every [`Personal::Clear`] of a new event with the customer's data key before it
//! is appended (crypto-shredding: erasing a customer destroys that key, and every copy of
//! the ciphertext, in the store, on Kafka, in dead letters, becomes unreadable). The
//! domain itself never needs the clear value: the workflow runs on ids, totals, SKUs and
//! statuses; only the notification sender and an API answer to someone allowed to see it
//! open a sealed value.
//!
//! On the wire (the envelope's `data`), a value is one of:
//! - a JSON string: clear, as written by schema version 1 (before sealing) or by a
//!   command before the bus seals it;
//! - `{"keyId": "dk_...", "sealed": "<base64url of nonce, ciphertext and tag>"}`;
//! - `{"erased": true}`: the customer's data was erased (what readers show after an
//!   erasure, and what the bus writes for a customer already erased).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::events::ShippingAddress;
use crate::iso::CountryCode;

/// A personal value as events carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Personal {
    /// Not sealed yet (a command's value) or written before sealing existed (schema v1).
    Clear(String),
    Sealed(Sealed),
    Erased,
}

/// A value encrypted with a customer's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sealed {
    /// The data key's id (the key is looked up by it; the customer is not named here).
    pub key_id: String,
    /// base64url (no padding) of the 12-byte nonce, the ciphertext and the 16-byte tag.
    pub sealed: String,
}

impl Personal {
    pub fn clear(value: impl Into<String>) -> Self {
        Self::Clear(value.into())
    }

    pub fn is_clear(&self) -> bool {
        matches!(self, Self::Clear(_))
    }

    /// Whether `value` is the JSON of a sealed value.
    pub fn is_sealed_json(value: &serde_json::Value) -> bool {
        value.as_object().is_some_and(|o| {
            o.len() == 2
                && o.get("keyId").is_some_and(|k| k.is_string())
                && o.get("sealed").is_some_and(|s| s.is_string())
        })
    }

    /// The marker readers show for an erased value.
    pub fn erased_json() -> serde_json::Value {
        serde_json::json!({ "erased": true })
    }
}

impl From<&str> for Personal {
    fn from(value: &str) -> Self {
        Self::clear(value)
    }
}

impl Default for Personal {
    fn default() -> Self {
        Self::Clear(String::new())
    }
}

impl Serialize for Personal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Clear(value) => serializer.serialize_str(value),
            Self::Sealed(sealed) => sealed.serialize(serializer),
            Self::Erased => Erasure { erased: true }.serialize(serializer),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Erasure {
    erased: bool,
}

impl<'de> Deserialize<'de> for Personal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Clear(String),
            Sealed(Sealed),
            Erased(Erasure),
        }
        match Wire::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "a personal field must be a string, {\"keyId\", \"sealed\"} or {\"erased\": true}",
            )
        })? {
            Wire::Clear(value) => Ok(Self::Clear(value)),
            Wire::Sealed(sealed) => Ok(Self::Sealed(sealed)),
            Wire::Erased(Erasure { erased: true }) => Ok(Self::Erased),
            Wire::Erased(_) => Err(serde::de::Error::custom(
                "an erased personal field is {\"erased\": true}",
            )),
        }
    }
}

/// A shipping address as events carry it: every line that names or locates the person is
/// [`Personal`]; the country stays clear (reports and shipping rules read it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersonalAddress {
    pub name: Personal,
    pub line1: Personal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<Personal>,
    pub city: Personal,
    pub postal_code: Personal,
    /// The country (schema 3). `None` only in an event of an older schema whose free
    /// `country` named no country (see [`unrecognised_country`](Self::unrecognised_country)).
    pub country_code: Option<CountryCode>,
    /// The old `country` as it was written, when it named no country: kept for a person
    /// to read, never guessed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrecognised_country: Option<String>,
}

impl From<&ShippingAddress> for PersonalAddress {
    fn from(a: &ShippingAddress) -> Self {
        Self {
            name: Personal::clear(&a.name),
            line1: Personal::clear(&a.line1),
            line2: a.line2.as_deref().map(Personal::clear),
            city: Personal::clear(&a.city),
            postal_code: Personal::clear(&a.postal_code),
            country_code: Some(a.country_code),
            unrecognised_country: None,
        }
    }
}

impl PersonalAddress {
    /// Its personal values (the same list as [`values_mut`](Self::values_mut)).
    pub fn values(&self) -> impl Iterator<Item = &Personal> {
        [
            Some(&self.name),
            Some(&self.line1),
            self.line2.as_ref(),
            Some(&self.city),
            Some(&self.postal_code),
        ]
        .into_iter()
        .flatten()
    }

    /// Its personal values, to seal or open in place.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Personal> {
        [
            Some(&mut self.name),
            Some(&mut self.line1),
            self.line2.as_mut(),
            Some(&mut self.city),
            Some(&mut self.postal_code),
        ]
        .into_iter()
        .flatten()
    }
}

/// Whose personal data an event holds, and its personal values, to seal or open in
/// place. Events without personal data answer `None`.
pub struct PersonalData<'a> {
    pub customer_id: &'a str,
    pub values: Vec<&'a mut Personal>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_form_round_trips_through_its_wire_shape() {
        let forms = [
            (Personal::clear("ada@example.com"), json!("ada@example.com")),
            (
                Personal::Sealed(Sealed {
                    key_id: "dk_1".into(),
                    sealed: "AAAA".into(),
                }),
                json!({"keyId": "dk_1", "sealed": "AAAA"}),
            ),
            (Personal::Erased, json!({"erased": true})),
        ];
        for (value, wire) in forms {
            assert_eq!(serde_json::to_value(&value).unwrap(), wire);
            assert_eq!(serde_json::from_value::<Personal>(wire).unwrap(), value);
        }
        assert!(Personal::is_sealed_json(
            &json!({"keyId": "dk_1", "sealed": "AAAA"})
        ));
        assert!(!Personal::is_sealed_json(&json!("x")));
    }

    #[test]
    fn anything_else_is_refused_with_what_is_expected() {
        for wire in [json!(42), json!({"erased": false}), json!({"keyId": "k"})] {
            let err = serde_json::from_value::<Personal>(wire).unwrap_err();
            assert!(err.to_string().contains("personal field"), "{err}");
        }
    }
}
