//! The event store: the source of truth. A trait, so that the embedded SQLite backend and
//! the production PostgreSQL backend are interchangeable, and nothing above this crate
//! sees SQL.
//!
//! What it offers: the store's traits (this file), one per concern: [`EventLog`] (appends,
//! reads, queries, statistics), [`ConsumerState`] (checkpoints, applied-command keys, dead
//! letters, publications), [`Scheduling`] (timers, leases), [`NotificationOutbox`],
//! [`DataKeys`] and [`Snapshots`] (aggregates' states kept to shorten long folds:
//! derived data, `snapshot.rs`), which [`EventStore`] gathers; its two backends,
//! [`SqliteEventStore`] (`sqlite/`) and [`PgEventStore`] (`postgres/`), cut into the same
//! files by concern, and [`MongoEventStore`] (`mongo/`: the log in MongoDB, the other
//! tables in SQLite beside it, see its module comment); the types the trait takes and returns: events and appends
//! (`event.rs`), queries of the log (`query.rs`), the other tables' records (`records.rs`:
//! checkpoints, dead letters, publications, timers), notifications (`notification.rs`);
//! [`StoreError`] and what counts as the store being unavailable (`error.rs`); and the W3C
//! trace ids of events ([`trace`]). `shared.rs` holds what both backends do alike.
//!
//! It depends on the domain only: never on app, messaging, services, readmodels or server,
//! which all sit above it.

pub mod backup;
mod error;
mod event;
mod keys;
mod mongo;
mod notification;
mod postgres;
mod query;
mod records;
mod shared;
mod snapshot;
mod sqlite;
mod stats;
pub mod trace;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_domain::AggregateType;
use uuid::Uuid;

pub use backup::Backups;

pub use error::{
    mongo_is_duplicate_key, mongo_unavailability, rusqlite_is_unique_violation,
    rusqlite_unavailability, sqlx_unavailability, StoreError, Unavailable,
};
pub use event::{AppendRequest, IdempotentResponse, NewEvent, StoredEvent};
pub use keys::{DataKeyRecord, Erasure};
pub use mongo::MongoEventStore;
pub use notification::{
    notification_status, NewNotification, Notification, NotificationQuery, NotificationUpdate,
};
pub use postgres::PgEventStore;
pub use query::{EventQuery, StoreStats, TimeRange};
pub use records::{Checkpoint, DeadLetter, Publication, Timer};
pub(crate) use shared::{count_stored, events_to_store, truncate_to_micros, unless_taken};
pub use snapshot::Snapshot;
pub use sqlite::readers::{open_writing_connection, Durability, ReadRefused, SqliteReaders};
pub use sqlite::SqliteEventStore;

/// The event log: appends with an expected version, an aggregate's events, the global
/// log in commit order and its head, queries and statistics, and the idempotency replies
/// an append stores with its events.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends atomically: either every event (and the idempotency record) is stored, or
    /// nothing is. A stale `expected_version` stores nothing and returns
    /// [`StoreError::Conflict`].
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, StoreError>;

    /// One aggregate's events in version order, optionally within a time range.
    async fn load_aggregate(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        range: TimeRange,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// One aggregate's events after `after_version`, in version order: what a cached
    /// state at that version is missing.
    async fn load_aggregate_after(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        after_version: u64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Events of the global log in commit order, filtered and paged by position.
    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;

    /// The position of the newest event (0 when the log is empty).
    async fn head_position(&self) -> Result<u64, StoreError>;

    async fn stats(&self) -> Result<StoreStats, StoreError>;

    async fn find_idempotent_response(
        &self,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError>;

    /// Watches the head of the log: changes after every committed append, so that
    /// subscribers can wait instead of polling.
    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Every event of one business transaction (one correlation id), in commit order,
    /// which is also causal order: an event is appended only after its cause committed.
    async fn events_by_correlation(
        &self,
        correlation_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    async fn find_event(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError>;

    /// Why the store refuses writes right now (a full disk, say), if it does: the last
    /// write failed for that reason and none has succeeded since. For readiness to say.
    fn write_refusal(&self) -> Option<String> {
        None
    }

    /// Closes the connections, waiting for running statements to finish.
    async fn close(&self) {}

    /// The log from a position, in commit order.
    async fn read_log(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        self.query(&EventQuery {
            after,
            limit,
            ..EventQuery::default()
        })
        .await
    }
}

/// What consumers keep: checkpoints, the keys of applied commands, dead letters, and
/// where the relay published each event.
#[async_trait]
pub trait ConsumerState: Send + Sync + 'static {
    /// Whether a command with this dedupe key has been applied.
    async fn is_applied(&self, dedupe_key: &str) -> Result<bool, StoreError>;

    /// The position a consumer has processed up to (0 when it never ran).
    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError>;

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<(), StoreError>;

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;

    /// Records that a consumer gave up on an event (or updates the record of an earlier
    /// failure of the same consumer and event). Returns the dead letter's id.
    async fn record_dead_letter(
        &self,
        consumer: &str,
        event: &StoredEvent,
        error: &str,
        attempts: u32,
        first_failed_at: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    async fn dead_letters(&self, status: Option<&str>) -> Result<Vec<DeadLetter>, StoreError>;

    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError>;

    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError>;

    /// Records where events were published (topic, partition, offset).
    async fn record_publications(&self, published: &[Publication]) -> Result<(), StoreError>;
}

/// Durable timers, and the leases that let one process at a time do a job.
#[async_trait]
pub trait Scheduling: Send + Sync + 'static {
    /// Schedules a timer, or moves it later if it exists (never earlier).
    async fn schedule_timer(&self, timer: &Timer) -> Result<(), StoreError>;

    /// Timers due at or before `now`, earliest first.
    async fn due_timers(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Timer>, StoreError>;

    /// When the next timer is due, if any.
    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Deletes a fired timer, unless it was moved to a later time meanwhile.
    async fn complete_timer(&self, timer: &Timer) -> Result<(), StoreError>;

    /// Takes the named lease for `holder` until `ttl` from now, or renews it if `holder`
    /// has it. Returns false while another holder's lease has not expired.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Gives the lease up, if `holder` has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
}

/// The notification outbox: notifications recorded by the notification service and
/// settled by the dispatchers.
#[async_trait]
pub trait NotificationOutbox: Send + Sync + 'static {
    /// Records notifications, at most one per (`event_id`, `channel`), atomically: one
    /// recorded before is left exactly as it is. Returns how many were new.
    async fn record_notifications(
        &self,
        notifications: &[NewNotification],
    ) -> Result<u64, StoreError>;

    /// Notifications of `channel` due at `now` (pending or retrying, next attempt at or
    /// before `now`), the longest due first.
    async fn due_notifications(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError>;

    /// When the next pending or retrying notification of `channel` is due, if any.
    async fn next_notification_due(
        &self,
        channel: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Records the outcome of an attempt to send, unless the notification is no longer
    /// pending or retrying (another dispatcher settled it). Returns whether it changed.
    async fn update_notification(&self, update: &NotificationUpdate) -> Result<bool, StoreError>;

    /// Re-drives a failed notification, in one transaction: the dead letter `dead_letter_id`
    /// is resolved and the failed notification of (`event_id`, `channel`) starts over
    /// (`retrying`, no attempts counted, due now), so that the channel's dispatcher sends it
    /// again. Should that send fail for good too, the dispatcher records the dead letter
    /// again and it is pending once more. Returns whether a failed notification was found.
    async fn redrive_notification(
        &self,
        dead_letter_id: u64,
        event_id: Uuid,
        channel: &str,
    ) -> Result<bool, StoreError>;

    /// Notifications matching every filter given, newest first.
    async fn notifications(
        &self,
        query: &NotificationQuery,
    ) -> Result<Vec<Notification>, StoreError>;
}

/// The customers' data keys, wrapped by the master key, and the id of that master key.
#[async_trait]
pub trait DataKeys: Send + Sync + 'static {
    /// The id of the master key the data keys are wrapped with, as recorded by the first
    /// start; records `id` when none is recorded yet. A caller whose key has another id
    /// holds the wrong master key.
    async fn claim_master_key(&self, id: &str) -> Result<String, StoreError>;

    /// The customer's data key record, erased or not.
    async fn data_key_of(&self, customer_id: &str) -> Result<Option<DataKeyRecord>, StoreError>;

    /// A data key record by its id.
    async fn data_key(&self, key_id: &str) -> Result<Option<DataKeyRecord>, StoreError>;

    /// Stores a customer's new data key, wrapped with the master key `master_key_id`,
    /// unless the customer has one (or was erased); returns the record stored for the
    /// customer, this one or the earlier one. `None`, and nothing stored, when the store's
    /// keys are wrapped with another master key (it was rotated under the caller): a key
    /// wrapped with the old one would be lost.
    async fn insert_data_key(
        &self,
        record: &DataKeyRecord,
        master_key_id: &str,
    ) -> Result<Option<DataKeyRecord>, StoreError>;

    /// Erases a customer, in one transaction: the wrapped key is destroyed (a record
    /// without a key, `new_key_id`, is written when the customer had none, so that none is
    /// made later), and the customer's pending and retrying notifications are cancelled.
    /// A repeat destroys nothing more.
    async fn erase_data_key(
        &self,
        customer_id: &str,
        new_key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Erasure, StoreError>;

    /// Every data key that is not erased.
    async fn wrapped_data_keys(&self) -> Result<Vec<DataKeyRecord>, StoreError>;

    /// Key rotation, in one transaction: the data keys get the wrappings given (by key
    /// id) and the recorded master key id becomes `new_master`, provided it is still
    /// `old_master` and every key not erased gets a new wrapping.
    async fn rewrap_data_keys(
        &self,
        old_master: &str,
        new_master: &str,
        rewrapped: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError>;
}

/// Snapshots of aggregates' states: derived data that shortens the fold of a long stream
/// (the command bus loads a snapshot and the events after its version). The store keeps
/// one per aggregate and judges none: whether one can be used (its state schema, whether
/// it decodes, whether the stream still holds the event it was taken after) is the
/// caller's to decide. Never written in an append's transaction; losing every snapshot
/// loses nothing but time.
#[async_trait]
pub trait Snapshots: Send + Sync + 'static {
    /// The aggregate's snapshot, if it has one, whatever its schema or version.
    async fn load_snapshot(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// Keeps `snapshot` as its aggregate's snapshot, replacing the one it had, whatever
    /// that one held: the last save wins. Of two saves that race, the older state may be
    /// the one kept, which is still right (its load folds a longer tail); and a stale
    /// snapshot (of a stream that no longer holds its event) is replaced by the next save.
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;
}

/// The whole store: every backend is all six parts, and a caller that needs several (the
/// command bus, the server's wiring) takes this. A caller that needs one part takes that
/// trait alone (`Arc<dyn EventStore>` coerces to `Arc<dyn NotificationOutbox>`, say).
pub trait EventStore:
    EventLog + ConsumerState + Scheduling + NotificationOutbox + DataKeys + Snapshots + Backups
{
}

impl<
        T: EventLog + ConsumerState + Scheduling + NotificationOutbox + DataKeys + Snapshots + Backups,
    > EventStore for T
{
}
