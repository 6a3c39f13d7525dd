//! The Kafka clients' settings (the seed's producer, the consumers' groups) and the
//! creation of the topics.

use std::time::Duration;

use cornershop_domain::AggregateType;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

use super::security::{self, ConnectError, KafkaSecurity};

pub(super) const PUBLISHER_CLIENT_ID: &str = "cornerShop-event-publisher";

/// Where Kafka is and how topics are laid out.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    /// Prefixed to every topic and consumer group name, so that several shops (or test
    /// runs) can share a broker. Empty by default: the topics are then exactly the seed's.
    pub namespace: String,
    pub partitions: i32,
    pub replication: i32,
    /// TLS and SASL: plaintext by default.
    pub security: KafkaSecurity,
}

impl KafkaSettings {
    pub(super) fn topic(&self, aggregate_type: AggregateType) -> String {
        format!("{}{}", self.namespace, aggregate_type.topic())
    }

    pub fn topics(&self) -> Vec<String> {
        AggregateType::ALL.iter().map(|t| self.topic(*t)).collect()
    }

    pub(super) fn group(&self, consumer: &str) -> String {
        format!("{}{}", self.namespace, consumer)
    }

    /// A client's configuration with these settings (brokers, TLS, SASL), for a client
    /// of one's own (tests, tools).
    pub fn client_config(&self) -> ClientConfig {
        self.client()
    }

    pub(super) fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        self.security.apply(&mut config);
        config
    }

    /// Connects to the brokers and reads the cluster's metadata, waiting up to `timeout`
    /// for them; refused credentials or a failed TLS handshake (an untrusted certificate)
    /// end it at once, with what librdkafka said.
    pub async fn check_connection(&self, timeout: Duration) -> Result<(), ConnectError> {
        let (config, brokers, protocol) =
            (self.client(), self.brokers.clone(), self.security.protocol);
        let named = brokers.clone();
        tokio::task::spawn_blocking(move || {
            security::check_connection(&config, &brokers, protocol, timeout)
        })
        .await
        .unwrap_or_else(|failed| {
            // (A panic inside librdkafka's client setup: told as a refusal, not a crash.)
            Err(ConnectError::Refused {
                brokers: named,
                protocol: protocol.as_str(),
                reason: format!("the connection check failed: {failed}"),
            })
        })
    }

    /// The seed's idempotent producer.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.producer_with_timeout(Duration::from_secs(30))
    }

    /// The producer, giving up on a message after `timeout` (retries included).
    pub(super) fn producer_with_timeout(
        &self,
        timeout: Duration,
    ) -> Result<FutureProducer, KafkaError> {
        self.client()
            .set("client.id", PUBLISHER_CLIENT_ID)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.send.max.retries", "10")
            .set("retry.backoff.ms", "1000")
            .set(
                "message.timeout.ms",
                timeout.as_millis().max(1000).to_string(),
            )
            // Each hop of an order crosses Kafka once, so the linger is paid once per hop:
            // 5 ms made checkout-to-confirmation 117-124 ms (p50, half rate), 1 ms about
            // 67 ms. 0 was as fast but cost a fifth of the orders/s at full load (fewer
            // messages per request); BENCHMARKS.md has the runs.
            .set("linger.ms", "1")
            .create()
    }

    pub(super) fn consumer(&self, group: &str) -> Result<StreamConsumer, KafkaError> {
        self.client()
            .set("group.id", group)
            .set("client.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            .create()
    }

    /// Creates the seed's topics and their dead-letter topics when missing.
    pub async fn ensure_topics(&self) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client().create()?;
        let names: Vec<String> = self
            .topics()
            .into_iter()
            .flat_map(|t| [format!("{t}.dlq"), t])
            .collect();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.partitions,
                    TopicReplication::Fixed(self.replication),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::error!(topic, "cannot create topic");
                    })
                }
            }
        }
        Ok(())
    }
}
