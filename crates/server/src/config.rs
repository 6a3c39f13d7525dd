//! Every setting in one place. Precedence: command-line flag, then the `CORNERSHOP_*`
//! environment variable, then the default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::roles::Role;
/// The simulator's command line, embedded as `cornershop simulate`.
pub use cornershop_simulate::SimulateArgs;

#[derive(Debug, Parser)]
#[command(
    name = "cornershop",
    version,
    about = "An event-sourced shop: carts, orders, payments and inventory.",
    long_about = "An event-sourced shop: carts, orders, payments and inventory.\n\n\
        Every setting can be given as a flag or as the CORNERSHOP_* environment variable \
        shown next to it; a flag wins over the variable."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    // Boxed: its settings are many more than the other commands'.
    /// Run the shop: the HTTP API and every service, on the embedded store by default.
    Serve(Box<ServeArgs>),
    /// Rebuild or verify the read models of the reporting service (CQRS projections).
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Drive real HTTP traffic through whole order lives (stock, carts, checkout, payment,
    /// ship, deliver) against a running shop, and summarize throughput and latencies.
    Simulate(SimulateArgs),
    /// Print an access token signed with the embedded shop's own key (the one `serve`
    /// creates under --data-dir when no --oidc-issuer is given), for curl and scripts.
    Token(TokenArgs),
}

/// `cornershop token`: a bearer token from the embedded issuer.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The token's roles (customer, staff or admin); repeat or comma-separate for more.
    #[arg(long = "role", value_enum, value_delimiter = ',', required = true)]
    pub roles: Vec<crate::auth::Role>,

    /// Whom the token names (its `sub`): for a customer, the customer id.
    #[arg(long)]
    pub sub: String,

    /// How long the token is valid, e.g. 15m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    pub ttl: humantime::Duration,

    /// The data directory of the shop whose key signs the token.
    #[arg(long, env = "CORNERSHOP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// The signing key file, when not the data directory's.
    #[arg(long, env = "CORNERSHOP_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,

    /// The token's audience; must match the shop's --oidc-audience.
    #[arg(long, env = "CORNERSHOP_OIDC_AUDIENCE", default_value = "cornershop")]
    pub oidc_audience: String,
}

/// Whether requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    On,
    /// Nothing is checked and every caller is an admin: for local experiments only.
    Off,
}

/// Who may call the API: OpenID Connect bearer tokens (see `auth`).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// `on` (the default): every route but health, metrics, the OpenAPI document and the
    /// issuer's keys needs a bearer token. `off`: nothing is checked, X-User-Id is
    /// believed, and a warning is logged at start; never on a network.
    #[arg(long = "auth", env = "CORNERSHOP_AUTH", value_enum, default_value_t = AuthMode::On)]
    pub auth: AuthMode,

    /// The OpenID Connect issuer whose access tokens are accepted, e.g.
    /// https://idp.example.com/realms/cornershop; its discovery document names the keys.
    /// Without it the shop is its own issuer: it signs tokens (`cornershop token`) with a
    /// key kept under --data-dir.
    #[arg(long, env = "CORNERSHOP_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// The audience (`aud`) a token must name.
    #[arg(long, env = "CORNERSHOP_OIDC_AUDIENCE", default_value = "cornershop")]
    pub oidc_audience: String,

    /// The claim holding the caller's roles (customer, staff, admin). Keycloak's
    /// realm_access.roles is read too.
    #[arg(long, env = "CORNERSHOP_OIDC_ROLES_CLAIM", default_value = "roles")]
    pub oidc_roles_claim: String,

    /// The embedded issuer's signing key (created, mode 0600, when missing). Default:
    /// signing-key.pem in --data-dir. Processes of one shop that sign their own tokens
    /// share this file.
    #[arg(long, env = "CORNERSHOP_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,

    /// Failed authentications allowed per client address and minute (a burst of as many);
    /// past that, requests without a valid token get 429 with Retry-After. 0: no limit.
    #[arg(long, env = "CORNERSHOP_AUTH_FAILURE_LIMIT", default_value_t = 60)]
    pub auth_failure_limit: u32,
}

impl Default for AuthArgs {
    fn default() -> Self {
        Self {
            auth: AuthMode::On,
            oidc_issuer: None,
            oidc_audience: "cornershop".to_string(),
            oidc_roles_claim: "roles".to_string(),
            signing_key_file: None,
            auth_failure_limit: 60,
        }
    }
}

impl AuthArgs {
    /// Where the embedded issuer's key is.
    pub fn signing_key_path(&self, data_dir: &std::path::Path) -> PathBuf {
        self.signing_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join(SIGNING_KEY_FILE))
    }
}

/// The embedded issuer's key, in the data directory.
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuild read models from the event store into shadow tables, then swap them in
    /// atomically; a running shop keeps answering queries meanwhile.
    Rebuild {
        /// The projection to rebuild (reporting-service, the only one); all when absent.
        name: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Compare every order's (and every SKU's) read model with the state replayed from its
    /// events; print each mismatch and exit with status 1 when there is any.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        log: LogArgs,
    },
}

/// The store settings of `serve`, for the commands that work on a shop's data.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory of the embedded event store (cornershop.db) and read models (readmodels.db).
    #[arg(long, env = "CORNERSHOP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// PostgreSQL event store, e.g. postgres://user:password@host:5432/cornershop
    /// (production); its read models are in the same database. When absent, the embedded
    /// SQLite files under --data-dir are used.
    #[arg(long, env = "CORNERSHOP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

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

#[derive(Debug, Clone, Default, Args)]
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
}

impl Default for HttpArgs {
    fn default() -> Self {
        Self {
            request_timeout: std::time::Duration::from_secs(30).into(),
            header_read_timeout: std::time::Duration::from_secs(5).into(),
            max_connections: 10_000,
            metrics_listen: None,
        }
    }
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

impl Default for WorkflowArgs {
    fn default() -> Self {
        Self {
            cart_ttl: std::time::Duration::from_secs(30 * 60).into(),
            payment_max_amount: rust_decimal::Decimal::from(10_000),
            payment_latency: std::time::Duration::ZERO.into(),
            consumer_max_attempts: 5,
            consumer_retry_delay: std::time::Duration::from_millis(200).into(),
            stall_after: std::time::Duration::from_secs(60).into(),
        }
    }
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

impl Default for NotificationArgs {
    fn default() -> Self {
        Self {
            smtp_url: None,
            mail_from: "CornerShop <orders@cornershop.local>".to_string(),
            sms_url: None,
            sms_token: None,
            sms_from: "CornerShop".to_string(),
            push_url: None,
            push_token: None,
            provider_ca_file: None,
            notification_retry_delay: std::time::Duration::from_secs(1).into(),
            notification_max_attempts: 8,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter in RUST_LOG syntax, e.g. "info" or "info,cornershop_app=debug".
    /// RUST_LOG is used when this is not given.
    #[arg(long = "log", env = "CORNERSHOP_LOG")]
    pub filter: Option<String>,

    /// Log format: JSON lines, human-readable text, or auto (text on a terminal, JSON
    /// otherwise).
    #[arg(long, env = "CORNERSHOP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Export traces over OTLP/HTTP (JSON) to this collector, e.g. http://127.0.0.1:4318
    /// (spans go to <URL>/v1/traces). Unset: no export; logs still carry traceId.
    #[arg(long, env = "CORNERSHOP_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// The service.name of exported spans (e.g. the process's roles).
    #[arg(
        long,
        env = "CORNERSHOP_OTLP_SERVICE_NAME",
        default_value = "cornershop"
    )]
    pub otlp_service_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

impl ServeArgs {
    /// The store settings alone.
    pub fn store_args(&self) -> StoreArgs {
        StoreArgs {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
        }
    }

    /// Settings for a test or an embedded use: a free port on loopback and the given
    /// data directory.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            data_dir: data_dir.into(),
            roles: vec![Role::All],
            database_url: None,
            kafka: KafkaArgs::default(),
            max_body_bytes: 64 * 1024,
            http: HttpArgs::default(),
            auth: AuthArgs::default(),
            workflow: WorkflowArgs::default(),
            notifications: Box::default(),
            log: LogArgs {
                filter: None,
                log_format: LogFormat::Auto,
                otlp_endpoint: None,
                otlp_service_name: "cornershop".to_string(),
            },
        }
    }
}
