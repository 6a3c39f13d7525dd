//! The production backend: PostgreSQL, shared by several processes.
//!
//! The tables mirror the SQLite backend's (`migrations/postgres`), with native types:
//! `UUID` ids, `JSON` payloads (kept as written, key order included) and `TIMESTAMPTZ`
//! timestamps, which hold microseconds exactly like the SQLite backend's `*_us` columns;
//! append truncates a timestamp to the microsecond before it stores or returns it, so what
//! append returns is what a later read returns.
//!
//! Two things work differently from SQLite, because PostgreSQL runs writers concurrently
//! and several processes share one database:
//!
//! 1. **One global order without skipping.** A sequence alone is not enough: a transaction
//!    that drew position *n* early but commits late would become visible after *n + 1*, and
//!    a reader tailing the log by position would already have passed *n*. So every append
//!    takes a transaction-scoped advisory lock (`pg_advisory_xact_lock(APPEND_LOCK)`)
//!    right before it inserts its events, and holds it until it commits: positions (an
//!    identity column with the default `CACHE 1`) are drawn and committed by one append
//!    after another. PostgreSQL releases the lock only after the commit is visible, so a
//!    snapshot that sees a position also sees every position below it. An aborted append
//!    leaves a gap that never fills, which readers tolerate (they page by `position >
//!    after`, never by counting). The lock covers only the event inserts, the notify and
//!    the commit: the expected-version check runs before it, and the idempotency record and
//!    the applied-command key are inserted before it too (so that a transaction never waits
//!    for a key while holding the lock, and no two appends can deadlock). The check stays
//!    race-free: two appends that both passed it insert the same version, the unique
//!    `(aggregate_type, aggregate_id, version)` constraint refuses the second once the
//!    first has committed (it waited for the lock), and that refusal is reported as
//!    [`StoreError::Conflict`] with the version read again.
//! 2. **`watch_head` across processes.** The append transaction runs
//!    `pg_notify('cornershop_events', <last position>)`, which PostgreSQL delivers at
//!    commit, in commit order, to every session listening. Each store runs a background
//!    task with a [`PgListener`] on its own connection that raises the head watch to the
//!    notified position (never lowers it), so consumers in every process wake for every
//!    process's appends. The appending process also raises it itself right after its
//!    commit. Notifications are not durable: when the listener's connection is lost, the
//!    task reconnects, listens again, and then reads `MAX(position)` to catch up on what
//!    it missed.
//!
//! The files are cut as the SQLite backend's are, one concern each: this one holds the
//! type, connecting and the implementations of the store's four traits, which hand each
//! method to the file of its concern: `head` (the head listener), `append`, `events` (reads of the log
//! and its statistics), `bookkeeping` (idempotent responses, applied commands,
//! checkpoints, dead letters, publications), `timers`, `leases` and `notifications`.
//!
//! [`PgListener`]: sqlx::postgres::PgListener

mod append;
mod bookkeeping;
mod events;
mod head;
mod leases;
mod notifications;
mod timers;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_domain::AggregateType;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{sqlx_unavailability, Unavailable};
use crate::{
    AppendRequest, Checkpoint, ConsumerState, DeadLetter, EventLog, EventQuery, IdempotentResponse,
    NewNotification, Notification, NotificationOutbox, NotificationQuery, NotificationUpdate,
    Publication, Scheduling, StoreError, StoreStats, StoredEvent, TimeRange, Timer,
};
use uuid::Uuid;

use head::{follow_head, listen, read_head};

pub struct PgEventStore {
    pool: PgPool,
    /// One connection, used only by the head listener.
    listen_pool: PgPool,
    head: Arc<watch::Sender<u64>>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl PgEventStore {
    /// Connects to `database_url` (`postgres://user:password@host:port/database`), runs the
    /// migrations, starts the head listener and reads the current head.
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        Self::connect_with(PgConnectOptions::from_str(database_url)?).await
    }

    /// [`PgEventStore::connect`] with options built in code.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let named = |name: &str| match options.get_application_name() {
            Some(_) => options.clone(),
            None => options.clone().application_name(name),
        };
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // While PostgreSQL is away the pool keeps trying to connect until this runs
            // out: long enough for a busy pool's queue, short enough that a request is
            // answered 503 (with Retry-After) within moments of an outage.
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(named("cornershop"))
            .await?;
        // sqlx takes an advisory lock while migrating: processes starting together are safe.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(named("cornershop-head-listener"))
            .await?;
        // Listen before reading the head, so that no append falls between the two.
        let listener = listen(&listen_pool).await?;
        let head = Arc::new(watch::Sender::new(read_head(&pool).await?));
        let task = tokio::spawn(follow_head(
            listener,
            listen_pool.clone(),
            pool.clone(),
            head.clone(),
        ));
        Ok(Self {
            pool,
            listen_pool,
            head,
            listener: Mutex::new(Some(task)),
        })
    }

    /// Test hook: [`EventStore::append`], but holding the transaction open for `delay`
    /// after the events are inserted and before the commit, as a slow writer would. The
    /// store contract uses it to check that a reader never skips an event.
    #[doc(hidden)]
    pub async fn append_with_delay(
        &self,
        request: AppendRequest,
        delay: Duration,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.append_inner(request, Some(delay)).await
    }
}

impl Drop for PgEventStore {
    fn drop(&mut self) {
        if let Some(task) = self.listener.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }
}

#[async_trait]
impl EventLog for PgEventStore {
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

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn close(&self) {
        let task = self.listener.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.listen_pool.close().await;
        self.pool.close().await;
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
impl ConsumerState for PgEventStore {
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
impl Scheduling for PgEventStore {
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
impl NotificationOutbox for PgEventStore {
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

/// A COMMIT that failed because the connection broke (rather than because PostgreSQL
/// refused it, as on a full disk) may have been applied or not: it is reported as an
/// unknown outcome, never as a success and never as "nothing stored".
fn commit_failure(e: sqlx::Error) -> StoreError {
    match sqlx_unavailability(&e) {
        Some(Unavailable::Unreachable) if !matches!(e, sqlx::Error::Database(_)) => {
            StoreError::unavailable(
                Unavailable::OutcomeUnknown,
                format!("the connection broke during the commit: {e}"),
            )
        }
        _ => e.into(),
    }
}
