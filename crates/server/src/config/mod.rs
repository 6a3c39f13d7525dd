//! Every setting in one place. Precedence: command-line flag, then the `CORNERSHOP_*`
//! environment variable, then the default.
//!
//! `mod.rs` holds the commands and the settings they share (store, log); `serve` the
//! settings of `cornershop serve`, `auth` who may call the API, and `settings` the typed
//! settings the shop's parts are built with, made from these.

use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};

mod auth;
mod serve;
mod settings;

pub use crate::roles::Role;
pub use auth::{AuthArgs, AuthMode};
/// The simulator's command line, embedded as `cornershop simulate`.
pub use cornershop_simulate::SimulateArgs;
pub use serve::{
    HttpArgs, KafkaArgs, KafkaSecurityProtocol, NotificationArgs, ServeArgs, WorkflowArgs,
};

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
    /// Manage the master key that wraps the customers' data keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Back the event store up while the shop serves, check a backup, or restore one
    /// into an empty store of either backend (SQLite -> PostgreSQL is a migration).
    #[command(subcommand)]
    Backup(BackupCommand),
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

/// The erasure ledger's default name, in the data directory (`erasures`).
pub const ERASURE_LEDGER_FILE: &str = "erasures.ndjson";

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

/// `cornershop backup ...`
#[derive(Debug, Clone, Subcommand)]
pub enum BackupCommand {
    /// Write a consistent cut of the store (every event up to one position, none above,
    /// and the consumers' checkpoints, dead letters, timers, notifications and wrapped
    /// data keys as of that moment) to a file; the shop keeps serving.
    Create {
        /// The backup file to write (zstd-compressed NDJSON; see docs/backup-format.md).
        #[arg(long)]
        out: PathBuf,
        /// Only the events after this position (an incremental backup; the other tables
        /// in full). Restore takes full backups.
        #[arg(long, default_value_t = 0)]
        since: u64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check a backup: its checksums and counts, and every aggregate replayed with the
    /// write side's rules. Exits with status 1 and names what is wrong.
    Verify {
        /// The backup file.
        file: PathBuf,
    },
    /// Restore a backup into an empty store (refused otherwise), then erase again the
    /// customers of the erasure ledger and rebuild the read models. A damaged backup
    /// writes nothing.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// An erasure ledger whose customers are erased again after the restore (repeat
        /// for each API process's ledger). Default: erasures.ndjson in --data-dir, if
        /// there is one.
        #[arg(long = "erasure-ledger")]
        erasure_ledgers: Vec<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `cornershop keys ...`
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Re-wraps every customer's data key with a new master key, in one transaction, and
    /// records the new key's id; no event is touched. Afterwards, start every process with
    /// the new key file (the old one no longer opens the store).
    Rotate {
        /// The new master key; created (mode 0600, random) when it does not exist.
        #[arg(long)]
        new_master_key_file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
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

    /// MongoDB event store (or FerretDB), e.g. mongodb://host:27017/cornershop; the other
    /// tables and the read models stay in SQLite under --data-dir.
    #[arg(
        long,
        env = "CORNERSHOP_MONGODB_URL",
        hide_env_values = true,
        conflicts_with = "database_url"
    )]
    pub mongodb_url: Option<String>,

    /// The master key that wraps the customers' data keys: a file holding the base64 of
    /// 32 random bytes (`head -c 32 /dev/urandom | base64`). Default: master.key in
    /// --data-dir, created (mode 0600) on the first start of a new store.
    #[arg(long, env = "CORNERSHOP_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

impl StoreArgs {
    /// Which backend holds the event log: `postgresql`, `mongodb` or `sqlite`.
    pub fn backend_name(&self) -> &'static str {
        if self.database_url.is_some() {
            "postgresql"
        } else if self.mongodb_url.is_some() {
            "mongodb"
        } else {
            "sqlite"
        }
    }

    /// The master key file, given or the data directory's.
    pub fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
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

/// The defaults of a group of settings as the command line has them (the environment is
/// not read): for tests and embedded uses, so that no default is written twice.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"))
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(["defaults"])
        .expect("the defaults of the command line parse");
    T::from_arg_matches(&matches).expect("the defaults of the command line parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_command_lines_whatever_the_environment() {
        let args = ServeArgs::for_data_dir("/tmp/x");
        assert_eq!(args.listen.to_string(), "127.0.0.1:0");
        assert_eq!(args.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(args.roles, [Role::All]);
        assert_eq!(args.max_body_bytes, 64 * 1024);
        assert_eq!(args.snapshot_every, 500);
        assert_eq!(args.auth.auth, AuthMode::On);
        assert_eq!(args.auth.oidc_audience, "cornershop");
        assert_eq!(args.auth.auth_failure_limit, 60);
        assert_eq!(
            *args.http.request_timeout,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(args.http.max_connections, 10_000);
        assert_eq!(
            *args.workflow.cart_ttl,
            std::time::Duration::from_secs(1800)
        );
        assert_eq!(args.workflow.consumer_max_attempts, 5);
        assert_eq!(
            args.notifications.mail_from,
            "CornerShop <orders@cornershop.local>"
        );
        assert_eq!(args.notifications.notification_max_attempts, 8);
        assert_eq!(args.kafka.kafka_brokers, None);
        assert_eq!(
            args.kafka.relay_lease_ttl(),
            std::time::Duration::from_secs(10)
        );
        assert_eq!(args.log.otlp_service_name, "cornershop");
        assert_eq!(args.log.log_format, LogFormat::Auto);
    }
}
