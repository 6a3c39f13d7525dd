//! The typed settings each part of the shop is built with, made from the command line's
//! groups of flags (so that no call site copies them field by field).

use std::time::Duration;

use cornershop_app::SnapshotPolicy;
use cornershop_messaging::kafka::{KafkaSecurity, KafkaSettings, Secret, SecurityProtocol};
use cornershop_messaging::RetryPolicy;
use cornershop_services::notifications::{DispatchPolicy, NotificationSettings};
use cornershop_services::{ServicesConfig, SimulatedGatewayConfig};

use super::{
    HttpArgs, KafkaArgs, KafkaSecurityProtocol, NotificationArgs, ServeArgs, WorkflowArgs,
};
use crate::api::RequestLimits;
use crate::serve::ConnectionLimits;

/// The longest delay between a consumer's retries.
const CONSUMER_MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

impl KafkaArgs {
    /// The broker's settings; none without --kafka-brokers (the embedded log carries the
    /// events then).
    /// A SASL protocol without a user name or password, or a password file that cannot
    /// be read, is an error.
    pub(crate) fn settings(&self) -> anyhow::Result<Option<KafkaSettings>> {
        let Some(brokers) = &self.kafka_brokers else {
            return Ok(None);
        };
        Ok(Some(KafkaSettings {
            brokers: brokers.clone(),
            namespace: self.kafka_namespace.clone(),
            partitions: self.kafka_partitions.max(1),
            replication: self.kafka_replication.max(1),
            security: self.security()?,
        }))
    }

    fn security(&self) -> anyhow::Result<KafkaSecurity> {
        let protocol = match self.kafka_security_protocol {
            KafkaSecurityProtocol::Plaintext => SecurityProtocol::Plaintext,
            KafkaSecurityProtocol::Ssl => SecurityProtocol::Ssl,
            KafkaSecurityProtocol::SaslPlaintext => SecurityProtocol::SaslPlaintext,
            KafkaSecurityProtocol::SaslSsl => SecurityProtocol::SaslSsl,
        };
        let password = match (&self.kafka_sasl_password, &self.kafka_sasl_password_file) {
            (Some(password), _) => Some(password.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot read --kafka-sasl-password-file {}: {e}",
                        path.display()
                    )
                })?;
                Some(Secret::new(text.trim_end_matches(['\r', '\n'])))
            }
            (None, None) => None,
        };
        if protocol.uses_sasl() && (self.kafka_sasl_username.is_none() || password.is_none()) {
            anyhow::bail!(
                "--kafka-security-protocol={} needs --kafka-sasl-username and \
                 --kafka-sasl-password (or --kafka-sasl-password-file)",
                protocol.as_str()
            );
        }
        if let Some(ca) = &self.kafka_ca_file {
            if !protocol.uses_tls() {
                anyhow::bail!(
                    "--kafka-ca-file is for --kafka-security-protocol=ssl or sasl_ssl, not {}",
                    protocol.as_str()
                );
            }
            std::fs::metadata(ca).map_err(|e| {
                anyhow::anyhow!("cannot read --kafka-ca-file {}: {e}", ca.display())
            })?;
        }
        Ok(KafkaSecurity {
            protocol,
            sasl_mechanism: self.kafka_sasl_mechanism.clone(),
            sasl_username: self.kafka_sasl_username.clone(),
            sasl_password: password,
            ca_file: self.kafka_ca_file.clone(),
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

/// How the command bus keeps snapshots (`--snapshot-every`).
impl From<&ServeArgs> for SnapshotPolicy {
    fn from(args: &ServeArgs) -> Self {
        SnapshotPolicy::every(args.snapshot_every)
    }
}
