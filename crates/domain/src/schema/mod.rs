//! The payload schema of events: which version this build writes, and the steps between
//! versions. One number for the whole set of event types (the envelope's
//! `schemaVersion`): version N is the shape every event type had in the release that
//! introduced N. A step from N to N+1 takes an event type and a payload and changes only
//! the types whose shape changed at N+1; the others pass through it unchanged.
//!
//! Reading: [`upcast`] brings a stored payload of any older version up to
//! [`CURRENT_SCHEMA_VERSION`], one step after another (1 → 2 → 3); a newer version is
//! refused ([`DecodeError::NewerSchemaVersion`]), never half-understood. Stored events
//! are never rewritten: the steps run every time an old event is read.
//!
//! Writing: [`WriteSchema`] says which version new events are written in. The current one,
//! or, during a rolling upgrade, the one before it (what processes still on the previous
//! release read): then a step down ([`v3::to_v2`]) writes the older shape, and refuses an
//! event that shape cannot say (a currency other than the pound).
//!
//! The versions:
//! - 1: the first shape: personal fields in clear, the payment token kept.
//! - 2 ([`v2`]): personal fields are [`crate::Personal`] (sealed by the command bus), and
//!   `paymentToken` became `paymentMethod`, the gateway's reference (CartCheckedOut,
//!   OrderCreated, PaymentInitiated).
//! - 3 ([`v3`]): every event that prices something says in which currency (`currency`,
//!   ISO 4217: StockUpdated, ItemAddedToCart, CartCheckedOut, OrderCreated,
//!   PaymentInitiated), and a shipping address's free `country` became a checked ISO
//!   3166-1 `countryCode` (CartCheckedOut, OrderCreated).

pub mod v2;
pub mod v3;

use crate::events::{DecodeError, DomainEvent};

/// The payload schema version this build writes by default, and the newest it reads.
pub const CURRENT_SCHEMA_VERSION: u32 = 3;

/// The oldest version a writer can be told to write ([`WriteSchema`]): the current one's
/// predecessor, which the previous release reads.
pub const OLDEST_WRITABLE_SCHEMA_VERSION: u32 = CURRENT_SCHEMA_VERSION - 1;

/// One step up: the payload of `event_type` at version N, as version N+1 has it.
type Step = fn(&str, serde_json::Value) -> serde_json::Value;

/// `STEPS[n - 1]` brings version n to n + 1.
const STEPS: [Step; (CURRENT_SCHEMA_VERSION - 1) as usize] = [v2::from_v1, v3::from_v2];

/// Brings a payload written with schema `schema_version` up to [`CURRENT_SCHEMA_VERSION`],
/// one step at a time. Refuses a version no build wrote (0) or one newer than this build
/// knows.
pub(crate) fn upcast(
    event_type: &str,
    schema_version: u32,
    data: serde_json::Value,
) -> Result<serde_json::Value, DecodeError> {
    check(event_type, schema_version)?;
    Ok(STEPS[schema_version as usize - 1..]
        .iter()
        .fold(data, |data, step| step(event_type, data)))
}

/// Whether this build reads payloads of `schema_version` at all (without looking at one).
pub(crate) fn check(event_type: &str, schema_version: u32) -> Result<(), DecodeError> {
    if schema_version == 0 {
        return Err(DecodeError::UnknownSchemaVersion {
            event_type: event_type.to_string(),
        });
    }
    if schema_version > CURRENT_SCHEMA_VERSION {
        return Err(DecodeError::NewerSchemaVersion {
            event_type: event_type.to_string(),
            schema_version,
            known: CURRENT_SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// The schema version new events are written in: [`CURRENT_SCHEMA_VERSION`], or during
/// a rolling upgrade [`OLDEST_WRITABLE_SCHEMA_VERSION`], so that processes still on the
/// previous release can read what the new ones write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSchema(u32);

impl Default for WriteSchema {
    fn default() -> Self {
        Self::CURRENT
    }
}

/// An event that the schema being written cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event_type} cannot be written in schema version {schema_version}: {reason}")]
pub struct EncodeError {
    pub event_type: &'static str,
    pub schema_version: u32,
    pub reason: String,
}

impl WriteSchema {
    pub const CURRENT: Self = Self(CURRENT_SCHEMA_VERSION);

    /// The version to write, if this build can write it.
    pub fn new(version: u32) -> Result<Self, String> {
        if (OLDEST_WRITABLE_SCHEMA_VERSION..=CURRENT_SCHEMA_VERSION).contains(&version) {
            Ok(Self(version))
        } else {
            Err(format!(
                "this build writes schema version {OLDEST_WRITABLE_SCHEMA_VERSION} or \
                 {CURRENT_SCHEMA_VERSION}, not {version}"
            ))
        }
    }

    pub fn version(self) -> u32 {
        self.0
    }

    /// The envelope's `data` of `event` in this version: the current shape, or brought
    /// down a step.
    pub fn encode(self, event: &DomainEvent) -> Result<serde_json::Value, EncodeError> {
        let data = event.data();
        if self.0 == CURRENT_SCHEMA_VERSION {
            return Ok(data);
        }
        v3::to_v2(event.event_type(), data).map_err(|reason| EncodeError {
            event_type: event.event_type(),
            schema_version: self.0,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_chain_runs_every_step_from_the_stored_version() {
        // A version-1 order: both steps, in order (the token renamed, then the country
        // coded and the currency filled in).
        let v1 = json!({
            "orderId": "ord-1", "totalAmount": "10.00", "paymentToken": "tok_visa",
            "shippingAddress": {"name": "Ada", "line1": "1 Road", "city": "London",
                                "postalCode": "N1", "country": "GB"},
        });
        let current = upcast("OrderCreated", 1, v1.clone()).unwrap();
        assert_eq!(
            current,
            v3::from_v2("OrderCreated", v2::from_v1("OrderCreated", v1))
        );
        assert_eq!(current["paymentMethod"], "tok_visa");
        assert_eq!(current["currency"], "GBP");
        assert_eq!(current["shippingAddress"]["countryCode"], "GB");
        // A version-2 one: the last step only; a current one: none.
        let v2 = json!({"orderId": "ord-1", "paymentMethod": "pm_1",
                        "shippingAddress": {"country": "US"}});
        let from_v2 = upcast("OrderCreated", 2, v2.clone()).unwrap();
        assert_eq!(from_v2, v3::from_v2("OrderCreated", v2));
        assert_eq!(upcast("OrderCreated", 3, from_v2.clone()).unwrap(), from_v2);
    }

    #[test]
    fn events_whose_shape_never_changed_pass_every_step_unchanged() {
        let data = json!({"orderId": "ord-1"});
        for version in 1..=CURRENT_SCHEMA_VERSION {
            assert_eq!(
                upcast("OrderValidated", version, data.clone()).unwrap(),
                data
            );
        }
    }

    #[test]
    fn a_version_no_build_wrote_or_a_newer_one_is_refused_and_not_guessed_at() {
        let data = json!({"orderId": "ord-1"});
        let newer = upcast("OrderCreated", 99, data.clone()).unwrap_err();
        assert!(matches!(
            newer,
            DecodeError::NewerSchemaVersion {
                schema_version: 99,
                known: CURRENT_SCHEMA_VERSION,
                ..
            }
        ));
        assert_eq!(
            newer.to_string(),
            format!(
                "OrderCreated has schema version 99, newer than this build knows \
                 ({CURRENT_SCHEMA_VERSION}): upgrade this process to read it; the event was \
                 not guessed at"
            )
        );
        let next = upcast("OrderCreated", CURRENT_SCHEMA_VERSION + 1, data.clone());
        assert!(matches!(next, Err(DecodeError::NewerSchemaVersion { .. })));
        let zero = upcast("OrderCreated", 0, data).unwrap_err();
        assert!(zero.to_string().contains("schema version 0"), "{zero}");
    }

    #[test]
    fn a_writer_writes_the_current_version_or_the_one_before_and_nothing_else() {
        assert_eq!(WriteSchema::default().version(), CURRENT_SCHEMA_VERSION);
        assert_eq!(
            WriteSchema::new(OLDEST_WRITABLE_SCHEMA_VERSION)
                .unwrap()
                .version(),
            2
        );
        for version in [0, 1, CURRENT_SCHEMA_VERSION + 1] {
            let refused = WriteSchema::new(version).unwrap_err();
            assert!(refused.contains(&version.to_string()), "{refused}");
        }
    }
}
