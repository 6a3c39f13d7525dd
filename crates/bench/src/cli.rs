//! The bench binary's command line (clap): a command and its options, as `bench/run.py`
//! and people pass them after `cargo bench -p cornershop-bench --`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cornershop-bench",
    override_usage = "cargo bench -p cornershop-bench -- COMMAND [OPTIONS]",
    about = "CornerShop's benchmarks; each measurement prints one JSON line on stdout."
)]
pub(crate) struct Cli {
    /// Added by `cargo bench` to every bench binary's arguments; ignored.
    #[arg(long, global = true, hide = true)]
    pub(crate) bench: bool,

    /// Without a command: this help.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Appends through the EventStore (expected-version check) and, on SQLite, raw inserts
    /// of the same rows; one JSON line per case.
    Append(AppendArgs),
    /// Reads the whole log: a raw scan of the events table and the store's read_log.
    Scan(ScanArgs),
    /// Writes N order histories into a new store, scans them raw, rebuilds the read models.
    Rebuild(RebuildArgs),
    /// Appends N events (for the relay benchmark); prints the average record sizes.
    Load(LoadArgs),
    /// Waits until N events carry a Kafka offset; prints the relay's rate.
    RelayWait(RelayWaitArgs),
    /// Grows a store to each of --sizes events and times each read and write at each size.
    Scaling(ScalingArgs),
    /// Verifications/s of an ES256 token through Authenticator::verify (one task), beside
    /// jsonwebtoken's decode without the signature check and ring's raw P-256 verify.
    Auth(AuthArgs),
    /// `cornershop backup` on a store of --events events: create beside a raw scan of the
    /// events table, verify, and the restore's import beside a raw insert of the same rows.
    Backup(BackupArgs),
    /// The cost of sealing a checkout's personal data and opening it again, beside
    /// writing the same payload as JSON; and a new customer's first seal (a key stored).
    Seal(SealArgs),
    /// A cold load of a long Inventory stream (10,000 events) from its snapshot and the
    /// events after it, beside the full fold of every event.
    Snapshot(SnapshotArgs),
    /// The operator's console on a store of --events events: every page timed over HTTP
    /// (p50, p95, max), beside GET /health/live and the API's events?limit=50.
    Console(ConsoleArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Which store a benchmark writes to: `--backend`, with the PostgreSQL database or the
/// directory the SQLite files go in.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    #[arg(long, value_enum)]
    pub(crate) backend: Backend,
    /// The PostgreSQL database (with --backend postgres).
    #[arg(long)]
    pub(crate) database_url: Option<String>,
    /// Where the SQLite files go (a temporary directory in it).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

impl StoreArgs {
    /// A new temporary directory under `--dir` (or the system's).
    pub(crate) fn temp_dir(&self) -> std::io::Result<tempfile::TempDir> {
        match &self.dir {
            Some(dir) => tempfile::tempdir_in(dir),
            None => tempfile::tempdir(),
        }
    }

    /// `--database-url`, which `command` needs with `--backend postgres`.
    pub(crate) fn database_url(&self, command: &str) -> anyhow::Result<&str> {
        self.database_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("{command} needs --database-url"))
    }
}

#[derive(Debug, Args)]
pub(crate) struct AppendArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// How long each case runs.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) seconds: f64,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct ScanArgs {
    /// The data directory of an embedded store.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// A PostgreSQL store.
    #[arg(long)]
    pub(crate) database_url: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RebuildArgs {
    /// A PostgreSQL database; without it, SQLite files under --dir.
    #[arg(long)]
    pub(crate) database_url: Option<String>,
    /// Where the SQLite files go (a temporary directory in it).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Order histories written.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) orders: u64,
}

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    #[arg(long)]
    pub(crate) database_url: String,
    /// Events appended.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) events: u64,
    /// Aggregates the events are spread over.
    #[arg(long, default_value_t = 1000)]
    pub(crate) aggregates: usize,
    /// Events per append.
    #[arg(long, default_value_t = 100)]
    pub(crate) batch: usize,
}

#[derive(Debug, Args)]
pub(crate) struct RelayWaitArgs {
    #[arg(long)]
    pub(crate) database_url: String,
    /// Events that must carry an offset.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) events: i64,
    /// Longest wait.
    #[arg(long, default_value_t = 300.0)]
    pub(crate) timeout_seconds: f64,
}

#[derive(Debug, Args)]
pub(crate) struct ScalingArgs {
    /// The store; a PostgreSQL database should start empty.
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// The sizes of the log (events) at which every operation is timed.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub(crate) sizes: Vec<u64>,
    /// Timings of each operation at each size.
    #[arg(long, default_value_t = 21)]
    pub(crate) samples: usize,
}

#[derive(Debug, Args)]
pub(crate) struct SealArgs {
    /// Seconds each case runs in all.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) seconds: f64,
    /// Rounds the cases take turns in.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: u32,
}

#[derive(Debug, Args)]
pub(crate) struct AuthArgs {
    /// Seconds each case runs in all.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) seconds: f64,
    /// Rounds the cases take turns in.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: u32,
}

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// The source store (with --backend postgres, an empty database).
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// With --backend postgres: the empty database the backup is restored into.
    #[arg(long)]
    pub(crate) target_database_url: Option<String>,
    /// With --backend postgres: the empty database the raw insert writes into.
    #[arg(long)]
    pub(crate) raw_database_url: Option<String>,
    /// Events in the source store.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) events: u64,
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotArgs {
    /// The store; any PostgreSQL database (the stream's SKU is new).
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Events in the stream.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) events: u64,
    /// The snapshot interval (`serve --snapshot-every`).
    #[arg(long, default_value_t = 500)]
    pub(crate) every: u64,
    /// Events after the snapshot (below --every); default: half of --every.
    #[arg(long)]
    pub(crate) tail: Option<u64>,
    /// Timed loads of each case.
    #[arg(long, default_value_t = 21)]
    pub(crate) samples: usize,
}

#[derive(Debug, Args)]
pub(crate) struct ConsoleArgs {
    /// The store; with --backend postgres, an empty database.
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Events written into the store (whole order histories: a little more).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) events: u64,
    /// Timed requests of each page, after one to warm up.
    #[arg(long, default_value_t = 20)]
    pub(crate) requests: usize,
    /// Generators writing the order histories at once (each with its own SKUs).
    #[arg(long, default_value_t = 4)]
    pub(crate) writers: usize,
    /// Pending dead letters recorded (events spread over the log).
    #[arg(long, default_value_t = 200)]
    pub(crate) dead_letters: u64,
}
