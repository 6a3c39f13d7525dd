//! The embedded backend: one SQLite file in WAL mode.
//!
//! All writes go through a pool of exactly one connection. SQLite admits one writer at a
//! time anyway; queueing writers in our pool instead of in SQLite's busy handler keeps
//! latency predictable, and it makes the global order trivially safe: positions are
//! assigned and committed by one transaction after another. Reads use a separate pool and,
//! thanks to WAL, never wait for the writer. Writes are group-committed: those that
//! arrive while a commit is being made durable share the next commit (and its fsync).
//!
//! The files, one concern each: this one holds the type, opening the file and the
//! implementations of the store's four traits (`EventLog`, `ConsumerState`, `Scheduling`,
//! `NotificationOutbox`), which hand each method to the file of its concern:
//! `writer` (the group commit every write goes through), `append`, `events` (reads of the
//! log and its statistics), `bookkeeping` (idempotent responses, applied commands,
//! checkpoints, dead letters, publications), `timers`, `leases` and `notifications`.

mod append;
mod bookkeeping;
mod events;
mod leases;
mod notifications;
mod timers;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_domain::AggregateType;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::{
    AppendRequest, Checkpoint, ConsumerState, DeadLetter, EventLog, EventQuery, IdempotentResponse,
    NewNotification, Notification, NotificationOutbox, NotificationQuery, NotificationUpdate,
    Publication, Scheduling, StoreError, StoreStats, StoredEvent, TimeRange, Timer,
};
use uuid::Uuid;

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

#[async_trait]
impl EventLog for SqliteEventStore {
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, StoreError> {
        append::append(self, request).await
    }

    async fn load_aggregate(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        range: TimeRange,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        events::load_aggregate(self, aggregate_type, aggregate_id, range).await
    }

    async fn load_aggregate_after(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        after_version: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        events::load_aggregate_after(self, aggregate_type, aggregate_id, after_version).await
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        events::query(self, query).await
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        events::head_position(self).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        events::stats(self).await
    }

    async fn find_idempotent_response(
        &self,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        bookkeeping::find_idempotent_response(self, key).await
    }

    fn write_refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn events_by_correlation(
        &self,
        correlation_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        events::events_by_correlation(self, correlation_id).await
    }

    async fn find_event(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        events::find_event(self, event_id).await
    }
}

#[async_trait]
impl ConsumerState for SqliteEventStore {
    async fn is_applied(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        bookkeeping::is_applied(self, dedupe_key).await
    }

    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        bookkeeping::checkpoint(self, consumer).await
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<(), StoreError> {
        bookkeeping::save_checkpoint(self, consumer, position).await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        bookkeeping::checkpoints(self).await
    }

    async fn record_dead_letter(
        &self,
        consumer: &str,
        event: &StoredEvent,
        error: &str,
        attempts: u32,
        first_failed_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        bookkeeping::record_dead_letter(self, consumer, event, error, attempts, first_failed_at)
            .await
    }

    async fn dead_letters(&self, status: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        bookkeeping::dead_letters(self, status).await
    }

    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        bookkeeping::dead_letter(self, id).await
    }

    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError> {
        bookkeeping::resolve_dead_letter(self, id).await
    }

    async fn record_publications(&self, published: &[Publication]) -> Result<(), StoreError> {
        bookkeeping::record_publications(self, published).await
    }
}

#[async_trait]
impl Scheduling for SqliteEventStore {
    async fn schedule_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        timers::schedule_timer(self, timer).await
    }

    async fn due_timers(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Timer>, StoreError> {
        timers::due_timers(self, now, limit).await
    }

    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        timers::next_timer_due(self).await
    }

    async fn complete_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        timers::complete_timer(self, timer).await
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        leases::try_lease(self, name, holder, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        leases::release_lease(self, name, holder).await
    }
}

#[async_trait]
impl NotificationOutbox for SqliteEventStore {
    async fn record_notifications(
        &self,
        notifications: &[NewNotification],
    ) -> Result<u64, StoreError> {
        notifications::record_notifications(self, notifications).await
    }

    async fn due_notifications(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        notifications::due_notifications(self, channel, now, limit).await
    }

    async fn next_notification_due(
        &self,
        channel: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        notifications::next_notification_due(self, channel).await
    }

    async fn update_notification(&self, update: &NotificationUpdate) -> Result<bool, StoreError> {
        notifications::update_notification(self, update).await
    }

    async fn redrive_notification(
        &self,
        dead_letter_id: u64,
        event_id: Uuid,
        channel: &str,
    ) -> Result<bool, StoreError> {
        notifications::redrive_notification(self, dead_letter_id, event_id, channel).await
    }

    async fn notifications(
        &self,
        query: &NotificationQuery,
    ) -> Result<Vec<Notification>, StoreError> {
        notifications::notifications(self, query).await
    }
}
