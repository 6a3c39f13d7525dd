//! The Kafka transport: the outbox relay that publishes the log to the seed's topics, the
//! consumer loop that drives the same [`Handler`](crate::Handler)s from Kafka, and a
//! read-only view of the cluster for an operator ([`KafkaInspector`]).
//!
//! Producer settings are the seed's: `acks=all`, `enable.idempotence=true`, retries with
//! backoff, `client.id=cornerShop-event-publisher`. Consumers use a group per service,
//! `auto.offset.reset=earliest`, `enable.auto.commit=false`, and commit a message's offset
//! only after its handler's effects are durable in the store.
//!
//! `admin` holds the client settings and creates the topics; `security` the protocol (TLS,
//! SASL/SCRAM) and credentials every client gets, and the connection check at start;
//! `relay` the outbox relay; `consumer` the consumer loop and the measurement of the
//! groups' lag; `inspect` the read-only view of the cluster an operator's console shows
//! (the shop's topics with their partitions and watermarks, the consumer groups with
//! their members and lag, the messages of a partition), read with clients that join no
//! group and commit nothing.

mod admin;
mod consumer;
mod inspect;
mod relay;
mod security;

pub use admin::KafkaSettings;
pub use consumer::{monitor_lag, run_kafka_consumer};
pub use inspect::{
    BrowsedMessage, GroupOffsetView, GroupView, HeaderView, InspectError, KafkaInspector,
    MemberView, PartitionView, TopicPartition, TopicView, BROWSE_LIMIT, VALUE_LIMIT,
};
pub use relay::run_relay;
pub use security::{ConnectError, KafkaSecurity, Secret, SecurityProtocol};
