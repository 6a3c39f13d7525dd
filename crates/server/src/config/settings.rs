//! The typed settings each part of the shop is built with, made from the command line's
//! groups of flags (so that no call site copies them field by field).

use std::time::Duration;

use cornershop_messaging::kafka::KafkaSettings;
use cornershop_messaging::RetryPolicy;
use cornershop_services::notifications::{DispatchPolicy, NotificationSettings};
use cornershop_services::{ServicesConfig, SimulatedGatewayConfig};

use super::{HttpArgs, KafkaArgs, NotificationArgs, ServeArgs, WorkflowArgs};
use crate::api::RequestLimits;
use crate::serve::ConnectionLimits;

/// The longest delay between a consumer's retries.
const CONSUMER_MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

impl KafkaArgs {
    /// The broker's settings; none without --kafka-brokers (the embedded log carries the
    /// events then).
    pub(crate) fn settings(&self) -> Option<KafkaSettings> {
        self.kafka_brokers.as_ref().map(|brokers| KafkaSettings {
            brokers: brokers.clone(),
            namespace: self.kafka_namespace.clone(),
            partitions: self.kafka_partitions.max(1),
            replication: self.kafka_replication.max(1),
        })
    }

    /// How long the active relay's lease lasts.
    pub(crate) fn relay_lease_ttl(&self) -> Duration {
        self.relay_lease_ttl
            .map_or(Duration::from_secs(10), Into::into)
    }
}

impl From<&WorkflowArgs> for ServicesConfig {
    fn from(workflow: &WorkflowArgs) -> Self {
        Self {
            cart_ttl: workflow.cart_ttl.into(),
            retry: RetryPolicy {
                max_attempts: workflow.consumer_max_attempts.max(1),
                base_delay: workflow.consumer_retry_delay.into(),
                max_delay: CONSUMER_MAX_RETRY_DELAY,
            },
            notification_wakeup: Default::default(),
        }
    }
}

impl From<&WorkflowArgs> for SimulatedGatewayConfig {
    fn from(workflow: &WorkflowArgs) -> Self {
        Self {
            max_amount: workflow.payment_max_amount,
            latency: workflow.payment_latency.into(),
        }
    }
}

/// The notification providers and retry settings.
impl From<&NotificationArgs> for NotificationSettings {
    fn from(n: &NotificationArgs) -> Self {
        let policy = DispatchPolicy::with_retries(
            n.notification_retry_delay.into(),
            n.notification_max_attempts,
        );
        Self {
            smtp_url: n.smtp_url.clone(),
            mail_from: n.mail_from.clone(),
            sms_url: n.sms_url.clone(),
            sms_token: n.sms_token.clone(),
            sms_from: n.sms_from.clone(),
            push_url: n.push_url.clone(),
            push_token: n.push_token.clone(),
            provider_ca_file: n.provider_ca_file.clone(),
            policy,
        }
    }
}

impl From<&HttpArgs> for ConnectionLimits {
    fn from(http: &HttpArgs) -> Self {
        Self {
            header_read_timeout: http.header_read_timeout.into(),
            max_connections: http.max_connections as usize,
        }
    }
}

impl From<&ServeArgs> for RequestLimits {
    fn from(args: &ServeArgs) -> Self {
        Self {
            max_body_bytes: args.max_body_bytes,
            request_timeout: args.http.request_timeout.into(),
            metrics_here: args.http.metrics_listen.is_none(),
        }
    }
}
