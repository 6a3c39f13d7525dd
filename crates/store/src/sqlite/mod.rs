//! The embedded backend: one SQLite file in WAL mode.
//!
//! All writes go through one connection, owned by a thread of its own (`writer`: rusqlite,
//! prepared statements cached, a whole write handed over as one message). SQLite admits
//! one writer at a time anyway; queueing writers in our queue instead of in SQLite's busy
//! handler keeps latency predictable, and it makes the global order trivially safe:
//! positions are assigned and committed by one transaction after another. Reads use a
//! separate pool and, thanks to WAL, never wait for the writer. Writes are
//! group-committed: those that arrive while a commit is being made durable share the next
//! commit (and its fsync).
//!
//! The files, one per trait of the store: `log` (`EventLog`: appends, reads, statistics,
//! idempotency replies), `consumers` (`ConsumerState`), `scheduling` (`Scheduling`: timers
//! and leases), `notifications` (`NotificationOutbox`) and `snapshots` (`Snapshots`); this
//! one holds the type and opening the file, and `writer` the group commit every write goes
//! through.

mod backup;
mod consumers;
mod keys;
mod log;
mod notifications;
pub(crate) mod readers;
mod scheduling;
mod snapshots;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, watch};

use crate::shared::{Arg, Statement};
use crate::StoreError;
use readers::{open_writing_connection, Durability, ReadRefused, SqliteReaders};

use writer::{run_group_commit, WriteJob, Writer, GROUP_COMMIT_MAX, PREPARED_STATEMENTS};

pub struct SqliteEventStore {
    path: std::path::PathBuf,
    readers: SqliteReaders,
    head: Arc<watch::Sender<u64>>,
    /// Every write goes to the group-commit writer (see [`run_group_commit`]); `None` once
    /// the store is closed.
    writes: Mutex<Option<mpsc::Sender<WriteJob>>>,
    /// The writer's thread, joined by `close`.
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set by the writer while writes fail for a reason of the store's own (a full disk),
    /// cleared by the next commit that succeeds.
    refusal: Arc<Mutex<Option<String>>>,
}

impl SqliteEventStore {
    /// Opens (creating if needed) `cornershop.db` under `data_dir` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Corrupt(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join("cornershop.db");
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it is acknowledged, so an acknowledged event
            // survives a crash of the process and of the machine.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // sqlx migrates (its table of applied migrations is the one every store so far
        // has), on a connection that is closed before the writer opens its own.
        let migrator = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&migrator).await?;
        migrator.close().await;
        // FULL: see the options above (an acknowledged event survives a power loss).
        let conn = open_writing_connection(
            &path,
            Durability::Full,
            Duration::from_secs(10),
            PREPARED_STATEMENTS,
        )?;
        // What a write removes is overwritten, not left in a free page: an erased data key
        // must not survive in the file (`keys.rs`).
        conn.execute_batch("PRAGMA secure_delete = ON")?;
        let head: i64 =
            conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |row| {
                row.get(0)
            })?;
        let head = Arc::new(watch::Sender::new(head as u64));
        let (writes, queue) = mpsc::channel(4 * GROUP_COMMIT_MAX);
        let refusal = Arc::new(Mutex::new(None));
        let writer = Writer {
            conn,
            refusal: refusal.clone(),
            head: head.clone(),
        };
        let writer_thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_group_commit(writer, queue))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            readers: SqliteReaders::new(path.clone(), PREPARED_STATEMENTS),
            path,
            head,
            writes: Mutex::new(Some(writes)),
            writer_thread: Mutex::new(Some(writer_thread)),
            refusal,
        })
    }

    /// Stops taking writes and waits for the writer to finish the ones queued.
    async fn close_writer(&self) {
        self.writes.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            // The thread ends once the last write sent before now is answered (writes
            // still being sent hold a sender until then).
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl SqliteEventStore {
    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `read` on a reader connection, on a blocking thread.
    pub(super) async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.readers.read(read).await.map_err(refused)?
    }

    /// Runs `read`, a read of a row or two by a key, on a reader connection right here
    /// (see [`SqliteReaders::read_here`]).
    pub(super) async fn read_here<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    {
        self.readers.read_here(read).await.map_err(refused)?
    }
}

fn refused(refused: ReadRefused) -> StoreError {
    match refused {
        ReadRefused::Closed => writer::closed(),
        ReadRefused::Panicked(e) => {
            StoreError::Corrupt(format!("a read of the store panicked: {e}"))
        }
    }
}

/// Every row of `statement` (cached prepared), each decoded.
fn all<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        decoded.push(decode(row)?);
    }
    Ok(decoded)
}

/// The first row of `sql`, if any, decoded.
fn first<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    rows.next()?.map(decode).transpose()
}

/// Every row of a statement built by shared code, each decoded.
fn all_of<T>(
    conn: &rusqlite::Connection,
    statement: &Statement,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    all(
        conn,
        &statement.text,
        rusqlite::params_from_iter(&statement.args),
        decode,
    )
}

/// SQLite binds a timestamp as its microseconds (see `shared::Arg`).
impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Arg::Int(n) => ToSqlOutput::Owned(Value::Integer(*n)),
            Arg::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Arg::Time(t) => {
                ToSqlOutput::Owned(t.map_or(Value::Null, |t| Value::Integer(micros(t))))
            }
        })
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}
