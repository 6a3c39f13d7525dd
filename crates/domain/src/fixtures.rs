//! The committed streams of stored events of older schema versions
//! (`crates/domain/tests/fixtures/`, whose README says how each was written), for tests:
//! each is a shop's log exactly as a release of the shop stored it, one envelope a line.

use crate::envelope::EventEnvelope;

/// Written by the last release that wrote schema 1 (personal data in clear).
pub const SCHEMA_1_EVENTS: &str = include_str!("../tests/fixtures/schema-1/events.ndjson");
/// Written by the last release that wrote schema 2 (personal data sealed).
pub const SCHEMA_2_EVENTS: &str = include_str!("../tests/fixtures/schema-2/events.ndjson");
/// The data keys that open [`SCHEMA_2_EVENTS`]' sealed values, as that store kept them.
pub const SCHEMA_2_DATA_KEYS: &str = include_str!("../tests/fixtures/schema-2/data-keys.ndjson");
/// The master key those data keys are wrapped with (the file's text: base64, a newline).
pub const SCHEMA_2_MASTER_KEY: &str = include_str!("../tests/fixtures/schema-2/master.key");

/// Every stored stream, with the schema version its events have.
pub const STREAMS: [(u32, &str); 2] = [(1, SCHEMA_1_EVENTS), (2, SCHEMA_2_EVENTS)];

/// A stream's lines: each one envelope's JSON, as it was written.
pub fn lines(stream: &str) -> impl Iterator<Item = &str> {
    stream.lines().filter(|line| !line.trim().is_empty())
}

/// A stream's envelopes, in log order.
pub fn envelopes(stream: &str) -> Vec<EventEnvelope> {
    lines(stream)
        .map(|line| serde_json::from_str(line).expect("a fixture line is an envelope"))
        .collect()
}

/// A data key as [`SCHEMA_2_DATA_KEYS`] holds it.
#[derive(Debug, Clone)]
pub struct FixtureDataKey {
    pub key_id: String,
    pub customer_id: String,
    pub wrapped: Vec<u8>,
    pub created_us: i64,
}

/// The data keys of [`SCHEMA_2_DATA_KEYS`].
pub fn data_keys() -> Vec<FixtureDataKey> {
    lines(SCHEMA_2_DATA_KEYS)
        .map(|line| {
            let key: serde_json::Value = serde_json::from_str(line).expect("a key line is JSON");
            let text = |name: &str| key[name].as_str().expect("a key's field").to_string();
            let hex = text("wrappedKey");
            FixtureDataKey {
                key_id: text("keyId"),
                customer_id: text("customerId"),
                wrapped: (0..hex.len())
                    .step_by(2)
                    .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex"))
                    .collect(),
                created_us: key["createdUs"].as_i64().expect("createdUs"),
            }
        })
        .collect()
}
