//! How the Kafka clients reach the brokers: the security protocol (TLS, SASL) and the
//! credentials, set on every client the shop makes (relay, consumers, admin, lag
//! measurement), and the check at start that the brokers take them.
//!
//! The password never leaves this module in clear: `Debug` shows it redacted, and
//! rdkafka's own `ClientConfig` redacts `sasl.password` in its `Debug` too.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// A secret that prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The protocol and, for SASL, the mechanism and credentials; for TLS, the CA that signed
/// the brokers' certificates (the system's CAs without one). The brokers' host names are
/// verified against their certificates (librdkafka's default,
/// `ssl.endpoint.identification.algorithm=https`).
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    pub protocol: SecurityProtocol,
    /// SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN.
    pub sasl_mechanism: String,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
}

impl KafkaSecurity {
    /// Sets these settings on a client's configuration.
    pub(super) fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol.as_str());
        if self.protocol.uses_sasl() {
            config.set("sasl.mechanism", &self.sasl_mechanism);
            if let Some(username) = &self.sasl_username {
                config.set("sasl.username", username);
            }
            if let Some(password) = &self.sasl_password {
                config.set("sasl.password", password.expose());
            }
        }
        if self.protocol.uses_tls() {
            if let Some(ca) = &self.ca_file {
                config.set("ssl.ca.location", ca.to_string_lossy());
            }
        }
    }
}

/// Why the brokers could not be reached at start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The brokers refused the credentials, or the TLS handshake failed: retrying will not
    /// help.
    #[error("Kafka at {brokers} refused the connection ({protocol}): {reason}")]
    Refused {
        brokers: String,
        protocol: &'static str,
        reason: String,
    },
    #[error("Kafka at {brokers} did not answer within {waited:?} ({protocol}): {reason}")]
    Unreachable {
        brokers: String,
        protocol: &'static str,
        waited: Duration,
        reason: String,
    },
    #[error("cannot make a Kafka client for {brokers}: {source}")]
    Client { brokers: String, source: KafkaError },
}

/// Remembers what librdkafka reported (a refused SASL handshake, a failed TLS handshake),
/// which a metadata request alone would only show as a timeout: the first error that
/// retrying cannot mend, else the last one (a later "all brokers are down" must not hide
/// the refused login that caused it).
#[derive(Default)]
struct LastError(Mutex<Option<(RDKafkaErrorCode, String)>>);

impl ClientContext for LastError {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code() {
            let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if !last.as_ref().is_some_and(|(kept, _)| is_fatal(*kept)) {
                *last = Some((code, reason.to_string()));
            }
        }
    }
}

impl ProducerContext for LastError {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl LastError {
    fn get(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Whether an error is one that retrying cannot mend.
fn is_fatal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::UnsupportedSASLMechanism
            | RDKafkaErrorCode::IllegalSASLState
            | RDKafkaErrorCode::SSL
    )
}

/// Connects with `config` and fetches the cluster's metadata, for up to `timeout`; returns
/// at once when the brokers refuse the credentials or the TLS handshake fails. Blocking.
pub(super) fn check_connection(
    config: &ClientConfig,
    brokers: &str,
    protocol: SecurityProtocol,
    timeout: Duration,
) -> Result<(), ConnectError> {
    let producer: BaseProducer<LastError> = config
        .create_with_context(LastError::default())
        .map_err(|source| ConnectError::Client {
            brokers: brokers.to_string(),
            source,
        })?;
    let started = Instant::now();
    loop {
        let fetched = producer
            .client()
            .fetch_metadata(None, Duration::from_millis(500));
        // Serves the error events, which the context records.
        producer.poll(Duration::from_millis(50));
        let last = producer.context().get();
        match (fetched, last) {
            (Ok(_), _) => return Ok(()),
            (Err(_), Some((code, reason))) if is_fatal(code) => {
                return Err(ConnectError::Refused {
                    brokers: brokers.to_string(),
                    protocol: protocol.as_str(),
                    reason,
                })
            }
            (Err(e), last) if started.elapsed() >= timeout => {
                return Err(ConnectError::Unreachable {
                    brokers: brokers.to_string(),
                    protocol: protocol.as_str(),
                    waited: timeout,
                    reason: last.map_or_else(|| e.to_string(), |(_, reason)| reason),
                })
            }
            (Err(_), _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_printed() {
        let security = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: Some("shop".into()),
            sasl_password: Some(Secret::new("hunter2-very-secret")),
            ca_file: None,
        };
        let printed = format!("{security:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        let mut config = ClientConfig::new();
        security.apply(&mut config);
        assert_eq!(config.get("sasl.password"), Some("hunter2-very-secret"));
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn plaintext_sets_no_credentials() {
        let mut config = ClientConfig::new();
        KafkaSecurity {
            sasl_username: Some("shop".into()),
            ..Default::default()
        }
        .apply(&mut config);
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("sasl.username"), None);
    }
}
