//! The settings of `cornershop serve`: where it listens and what it runs, Kafka, the HTTP
//! server's bounds, the workflow and the notification providers.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use cornershop_messaging::kafka::Secret;

use super::{AuthArgs, LogArgs, Role, StoreArgs};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port the HTTP API listens on. Port 0 picks a free port.
    #[arg(long, env = "CORNERSHOP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory of the embedded event store (a SQLite file, cornershop.db, in WAL mode).
    /// Created when missing.
    #[arg(long, env = "CORNERSHOP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Which parts of the shop this process runs, comma-separated: all, or any of api,
    /// order, payment, inventory, notification, reporting, relay.
    #[arg(
        long,
        env = "CORNERSHOP_ROLES",
        value_enum,
        value_delimiter = ',',
        default_value = "all"
    )]
    pub roles: Vec<Role>,

    /// PostgreSQL event store, e.g. postgres://user:password@host:5432/cornershop
    /// (production). When absent, the embedded SQLite store under --data-dir is used.
    #[arg(long, env = "CORNERSHOP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// MongoDB event store, e.g. mongodb://host:27017/cornershop (or FerretDB): the event
    /// log in MongoDB, the consumers' state and the read models in SQLite under
    /// --data-dir (one process: see ARCHITECTURE.md's MongoDB section).
    #[arg(
        long,
        env = "CORNERSHOP_MONGODB_URL",
        hide_env_values = true,
        conflicts_with = "database_url"
    )]
    pub mongodb_url: Option<String>,

    /// The master key that wraps the customers' data keys: a file holding the base64 of
    /// 32 random bytes (`head -c 32 /dev/urandom | base64`). Default: master.key in
    /// --data-dir, created (mode 0600) on the first start of a new store. A start with a
    /// key other than the store's is refused.
    #[arg(long, env = "CORNERSHOP_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    /// The erasure ledger: each erasure of a customer's personal data is appended here
    /// (and synced) before it is answered, so that `cornershop backup restore` can erase
    /// them again in a backup taken before. Keep it apart from the store and its backups.
    /// Default: erasures.ndjson in --data-dir.
    #[arg(long, env = "CORNERSHOP_ERASURE_LEDGER")]
    pub erasure_ledger: Option<PathBuf>,

    /// Keep a snapshot of an aggregate's state each time its stream grows past another
    /// multiple of this many events, so that a long stream (a popular SKU's stock) loads
    /// from its snapshot and the events after it rather than from its first event. Derived
    /// data: saved after the command, never needed (a snapshot of another state schema or
    /// a stale one is ignored). 0: none taken, none read.
    #[arg(long, env = "CORNERSHOP_SNAPSHOT_EVERY", default_value_t = 500)]
    pub snapshot_every: u64,

    /// The schema version this process writes new events in: the newest it knows (the
    /// default), or the one before it while processes of the previous release still run
    /// beside it (a rolling upgrade; they refuse events of the newer schema). Every
    /// process reads both. See docs/runbooks/roll-out-event-version.md.
    #[arg(
        long,
        env = "CORNERSHOP_WRITE_SCHEMA_VERSION",
        default_value_t = cornershop_domain::CURRENT_SCHEMA_VERSION,
        value_parser = clap::value_parser!(u32).range(
            i64::from(cornershop_domain::OLDEST_WRITABLE_SCHEMA_VERSION)
                ..=i64::from(cornershop_domain::CURRENT_SCHEMA_VERSION)
        )
    )]
    pub write_schema_version: u32,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "CORNERSHOP_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub workflow: WorkflowArgs,

    /// Boxed: the settings are many, and `ServeArgs` sits in the `Command` enum.
    #[command(flatten)]
    pub notifications: Box<NotificationArgs>,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Apache Kafka bootstrap servers, e.g. 127.0.0.1:9092. When given, events reach the
    /// consumers through Kafka (published by the relay role) instead of the store's log.
    #[arg(long, env = "CORNERSHOP_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Prefix for every topic and consumer group name (to share a broker between shops or
    /// test runs). Empty by default: the topics are carts.events, orders.events, ...
    #[arg(long, env = "CORNERSHOP_KAFKA_NAMESPACE", default_value = "")]
    pub kafka_namespace: String,

    /// Partitions of each topic created at start (existing topics are left as they are).
    #[arg(long, env = "CORNERSHOP_KAFKA_PARTITIONS", default_value_t = 3)]
    pub kafka_partitions: i32,

    /// Replication factor of each topic created at start.
    #[arg(long, env = "CORNERSHOP_KAFKA_REPLICATION", default_value_t = 1)]
    pub kafka_replication: i32,

    /// How long the active relay's lease lasts without renewal; a standby relay takes
    /// over this long after the active one dies.
    #[arg(long, env = "CORNERSHOP_RELAY_LEASE_TTL", default_value = "10s")]
    pub relay_lease_ttl: Option<humantime::Duration>,

    /// How every Kafka client (relay, consumers, topic creation, lag measurement) talks to
    /// the brokers: plaintext, ssl (TLS), sasl_plaintext or sasl_ssl (SASL over TLS).
    #[arg(
        long,
        env = "CORNERSHOP_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value = "plaintext"
    )]
    pub kafka_security_protocol: KafkaSecurityProtocol,

    /// The SASL mechanism (with sasl_plaintext or sasl_ssl): SCRAM-SHA-512, SCRAM-SHA-256
    /// or PLAIN.
    #[arg(
        long,
        env = "CORNERSHOP_KAFKA_SASL_MECHANISM",
        default_value = "SCRAM-SHA-512"
    )]
    pub kafka_sasl_mechanism: String,

    /// The SASL user name.
    #[arg(long, env = "CORNERSHOP_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,

    /// The SASL password. Prefer --kafka-sasl-password-file: a flag's value can be seen
    /// in the process list.
    #[arg(
        long,
        env = "CORNERSHOP_KAFKA_SASL_PASSWORD",
        hide_env_values = true,
        value_parser = parse_secret,
        conflicts_with = "kafka_sasl_password_file"
    )]
    pub kafka_sasl_password: Option<Secret>,

    /// A file holding the SASL password (one line; a trailing newline is dropped).
    #[arg(long, env = "CORNERSHOP_KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,

    /// A PEM file of the CA certificates that signed the brokers' certificates (with ssl
    /// or sasl_ssl); the system's CAs without it. The brokers' names are checked against
    /// their certificates.
    #[arg(long, env = "CORNERSHOP_KAFKA_CA_FILE")]
    pub kafka_ca_file: Option<PathBuf>,
}

/// `--kafka-security-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum KafkaSecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

fn parse_secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(value))
}

/// Bounds on what one request and one connection may hold of the HTTP server.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Longest a request may take from its head read to its answer; past it, it is
    /// abandoned and answered 503 (a command may or may not have been stored: repeat it
    /// with the same Idempotency-Key), so a hung dependency cannot pile requests up. A
    /// projection rebuild (POST /api/projections/{name}/rebuild) answers when it is done.
    #[arg(long, env = "CORNERSHOP_REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: humantime::Duration,

    /// A connection that has not sent a whole request head this long after it opened, or
    /// after its previous answer (an idle keep-alive connection), is closed.
    #[arg(long, env = "CORNERSHOP_HEADER_READ_TIMEOUT", default_value = "5s")]
    pub header_read_timeout: humantime::Duration,

    /// Most client connections open at once; one more is answered 503 (Retry-After) and
    /// closed.
    #[arg(long, env = "CORNERSHOP_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// A separate address for /metrics (and /health/*), e.g. 127.0.0.1:9464, so that the
    /// scrape port need not face the network; /metrics then leaves the API's port. Unset:
    /// /metrics is on the API's port.
    #[arg(long, env = "CORNERSHOP_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// A PEM file with the server's certificate chain (its own certificate first): with
    /// --tls-key, --listen serves HTTPS only (TLS 1.2 and 1.3, rustls). Unset: plain HTTP.
    /// The --metrics-listen address stays plain HTTP.
    #[arg(long, env = "CORNERSHOP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// A PEM file with the private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "CORNERSHOP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct WorkflowArgs {
    /// A cart idle this long gets CartExpired (e.g. "30m", "1s").
    #[arg(long, env = "CORNERSHOP_CART_TTL", default_value = "30m")]
    pub cart_ttl: humantime::Duration,

    /// The simulated payment gateway declines amounts above this (amount_too_large).
    #[arg(long, env = "CORNERSHOP_PAYMENT_MAX_AMOUNT", default_value = "10000")]
    pub payment_max_amount: rust_decimal::Decimal,

    /// How long each call to the simulated payment gateway takes (e.g. "50ms").
    #[arg(long, env = "CORNERSHOP_PAYMENT_LATENCY", default_value = "0ms")]
    pub payment_latency: humantime::Duration,

    /// How often a consumer tries an event before it goes to the dead letters.
    #[arg(long, env = "CORNERSHOP_CONSUMER_MAX_ATTEMPTS", default_value_t = 5)]
    pub consumer_max_attempts: u32,

    /// The first retry's delay; each next one doubles (with jitter), up to 10s.
    #[arg(long, env = "CORNERSHOP_CONSUMER_RETRY_DELAY", default_value = "200ms")]
    pub consumer_retry_delay: humantime::Duration,

    /// A consumer or projection whose checkpoint stays behind the log head this long is
    /// reported as stalled (GET /api/consumers, /api/projections, /health/ready, the
    /// consumer_stalled gauge).
    #[arg(long, env = "CORNERSHOP_STALL_AFTER", default_value = "60s")]
    pub stall_after: humantime::Duration,
}

/// The notification service's providers. A channel without a URL uses the `log` provider,
/// which only logs what it would send.
#[derive(Debug, Clone, Args)]
pub struct NotificationArgs {
    /// SMTP server for email: smtp://127.0.0.1:2525 (plain, for a local relay),
    /// smtp://user:password@host:587?tls=required (STARTTLS) or smtps://user:password@host
    /// (TLS from the start, port 465); credentials percent-encoded. Unset: emails are only
    /// logged.
    #[arg(long, env = "CORNERSHOP_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// The sender of emails.
    #[arg(
        long,
        env = "CORNERSHOP_MAIL_FROM",
        default_value = "CornerShop <orders@cornershop.local>"
    )]
    pub mail_from: String,

    /// SMS provider endpoint (https://... or http://...): POST {"to", "from", "body"} with a
    /// bearer token.
    /// Unset: SMS are only logged.
    #[arg(long, env = "CORNERSHOP_SMS_URL")]
    pub sms_url: Option<String>,

    /// Bearer token for the SMS provider.
    #[arg(long, env = "CORNERSHOP_SMS_TOKEN", hide_env_values = true)]
    pub sms_token: Option<String>,

    /// The sender of SMS (a number or an alphanumeric sender id).
    #[arg(long, env = "CORNERSHOP_SMS_FROM", default_value = "CornerShop")]
    pub sms_from: String,

    /// Push provider endpoint (https://... or http://...): POST {"to": "/topics/customer-<id>",
    /// "notification": {"title", "body"}, "data"} with a bearer token. Unset: pushes are
    /// only logged.
    #[arg(long, env = "CORNERSHOP_PUSH_URL")]
    pub push_url: Option<String>,

    /// Bearer token for the push provider.
    #[arg(long, env = "CORNERSHOP_PUSH_TOKEN", hide_env_values = true)]
    pub push_token: Option<String>,

    /// A PEM file of CA certificates that the SMTP, SMS and push connections trust besides
    /// the public web roots built in (for providers behind a private CA).
    #[arg(long, env = "CORNERSHOP_PROVIDER_CA_FILE")]
    pub provider_ca_file: Option<std::path::PathBuf>,

    /// The first retry's delay after a provider error that may pass; each next one doubles
    /// (with jitter), up to 5 minutes.
    #[arg(
        long,
        env = "CORNERSHOP_NOTIFICATION_RETRY_DELAY",
        default_value = "1s"
    )]
    pub notification_retry_delay: humantime::Duration,

    /// How often a notification is tried before it fails and goes to the dead letters.
    #[arg(
        long,
        env = "CORNERSHOP_NOTIFICATION_MAX_ATTEMPTS",
        default_value_t = 8
    )]
    pub notification_max_attempts: u32,
}

impl ServeArgs {
    /// The erasure ledger's file, given or the data directory's.
    pub fn erasure_ledger_path(&self) -> PathBuf {
        self.erasure_ledger
            .clone()
            .unwrap_or_else(|| self.data_dir.join(super::ERASURE_LEDGER_FILE))
    }

    /// The store settings alone.
    pub(crate) fn store_args(&self) -> StoreArgs {
        StoreArgs {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            mongodb_url: self.mongodb_url.clone(),
            master_key_file: self.master_key_file.clone(),
        }
    }

    /// Settings for a test or an embedded use: the command line's defaults (not the
    /// environment's), on a free port on loopback and with the given data directory.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut args: Self = super::defaults();
        args.listen = "127.0.0.1:0".parse().expect("valid address");
        args.data_dir = data_dir.into();
        args
    }
}
