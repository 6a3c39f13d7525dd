//! The embedded backend: one SQLite file in WAL mode.
//!
//! All writes go through a pool of exactly one connection. SQLite admits one writer at a
//! time anyway; queueing writers in our pool instead of in SQLite's busy handler keeps
//! latency predictable, and it makes the global order trivially safe: positions are
//! assigned and committed by one transaction after another. Reads use a separate pool and,
//! thanks to WAL, never wait for the writer. Writes are group-committed: those that
//! arrive while a commit is being made durable share the next commit (and its fsync).
//!
//! The files, one per trait of the store: `log` (`EventLog`: appends, reads, statistics,
//! idempotency replies), `consumers` (`ConsumerState`), `scheduling` (`Scheduling`: timers
//! and leases) and `notifications` (`NotificationOutbox`); this one holds the type and
//! opening the file, and `writer` the group commit every write goes through.

mod consumers;
mod log;
mod notifications;
mod scheduling;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::StoreError;

use writer::{run_group_commit, WriteJob, Writer, GROUP_COMMIT_MAX};

pub struct SqliteEventStore {
    writer: SqlitePool,
    reader: SqlitePool,
    head: Arc<watch::Sender<u64>>,
    /// Every write goes to the group-commit writer (see [`run_group_commit`]).
    writes: mpsc::Sender<WriteJob>,
    /// Set by the writer while writes fail for a reason of the store's own (a full disk),
    /// cleared by the next commit that succeeds.
    refusal: Arc<std::sync::Mutex<Option<String>>>,
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
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(data_dir.join("cornershop.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it is acknowledged, so an acknowledged event
            // survives a crash of the process and of the machine.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // SQLite rolls a whole transaction back by itself on some errors (full disk, I/O
        // error, out of memory, busy). The group commit must know, or it would go on
        // releasing savepoints of a transaction that is gone (see `commit_group`): the
        // writer's connection counts every rollback of a transaction (not of a savepoint).
        let rollbacks = Arc::new(AtomicU64::new(0));
        let hook = rollbacks.clone();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .after_connect(move |conn, _| {
                let hook = hook.clone();
                Box::pin(async move {
                    conn.lock_handle().await?.set_rollback_hook(move || {
                        hook.fetch_add(1, Ordering::SeqCst);
                    });
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&reader)
            .await?;
        let head = Arc::new(watch::Sender::new(head as u64));
        let (writes, queue) = mpsc::channel(4 * GROUP_COMMIT_MAX);
        let refusal = Arc::new(std::sync::Mutex::new(None));
        let writer_state = Writer {
            pool: writer.clone(),
            rollbacks,
            refusal: refusal.clone(),
        };
        tokio::spawn(run_group_commit(writer_state, head.clone(), queue));
        Ok(Self {
            writer,
            reader,
            head,
            writes,
            refusal,
        })
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}
