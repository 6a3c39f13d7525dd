//! The event store: the source of truth. A trait, so that the embedded SQLite backend and
//! the production PostgreSQL backend are interchangeable, and nothing above this crate
//! sees SQL.

mod postgres;
mod sqlite;
pub mod trace;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_domain::{AggregateType, EventEnvelope, Metadata};
use serde::Serialize;
use uuid::Uuid;

pub use postgres::PgEventStore;
pub use sqlite::SqliteEventStore;

/// Counts appended events by type (`events_stored_total`); called by every backend after
/// its commit.
pub(crate) fn count_stored(events: &[StoredEvent]) {
    for event in events {
        metrics::counter!("events_stored_total", "event_type" => event.envelope.event_type.clone())
            .increment(1);
    }
}

/// An event about to be appended; the store gives it its version and position.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub timestamp: DateTime<Utc>,
    pub data: serde_json::Value,
    pub metadata: Metadata,
    /// The W3C trace id of the business transaction (see [`trace`]); `None` derives it
    /// from the correlation id.
    pub trace_id: Option<String>,
}

/// An event as the store holds it: the seed's envelope, its place in the global log, and
/// where it was published (the seed's StoredEvent).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    /// Position in the global log (commit order), starting at 1.
    pub position: u64,
    #[serde(flatten)]
    pub envelope: EventEnvelope,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// The W3C trace id of the event's business transaction (see [`trace`]).
    pub trace_id: String,
}

impl StoredEvent {
    /// The event's W3C `traceparent` (its trace, and its own span).
    pub fn traceparent(&self) -> String {
        trace::traceparent(&self.trace_id, self.envelope.event_id)
    }
}

impl NewEvent {
    /// The trace id this event will be stored with.
    pub(crate) fn resolved_trace_id(&self) -> String {
        self.trace_id
            .clone()
            .unwrap_or_else(|| trace::trace_id_for_correlation(&self.metadata.correlation_id))
    }
}

/// The store keeps microseconds (truncating towards the past), on both backends.
pub(crate) fn truncate_to_micros(t: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
    let us = t.timestamp_micros();
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} is out of range")))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// An insert of a key that must be new (an idempotency key, a dedupe key): a unique-key
/// violation becomes `taken`, any other error is the store's.
pub(crate) fn unless_taken<T>(
    inserted: Result<T, sqlx::Error>,
    taken: impl FnOnce() -> StoreError,
) -> Result<(), StoreError> {
    match inserted {
        Err(e) if is_unique_violation(&e) => Err(taken()),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// An event's `data` and `metadata` as the JSON text an insert writes.
pub(crate) type EventJson = (String, String);

/// An append's events as the store will read them back (timestamps cut to microseconds,
/// versions after the expected one; the insert fills in the positions), and each event's
/// data and metadata as the JSON text the insert writes.
pub(crate) fn events_to_store(
    aggregate_type: AggregateType,
    aggregate_id: &str,
    expected_version: u64,
    events: Vec<NewEvent>,
) -> Result<(Vec<StoredEvent>, Vec<EventJson>), StoreError> {
    let mut stored = Vec::with_capacity(events.len());
    let mut rows = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let metadata = serde_json::to_string(&event.metadata)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        rows.push((event.data.to_string(), metadata));
        let trace_id = event.resolved_trace_id();
        stored.push(StoredEvent {
            position: 0,
            envelope: EventEnvelope {
                event_id: event.event_id,
                event_type: event.event_type,
                aggregate_id: aggregate_id.to_string(),
                aggregate_type,
                timestamp: truncate_to_micros(event.timestamp)?,
                version: expected_version + 1 + i as u64,
                schema_version: event.schema_version,
                data: event.data,
                metadata: event.metadata,
            },
            topic: None,
            partition: None,
            offset: None,
            trace_id,
        });
    }
    Ok((stored, rows))
}

/// The trace id of a stored row: the column, or (rows stored before it existed) derived
/// from the correlation id.
pub(crate) fn stored_trace_id(column: Option<String>, metadata: &Metadata) -> String {
    column.unwrap_or_else(|| trace::trace_id_for_correlation(&metadata.correlation_id))
}

/// The answer to a request carrying an `Idempotency-Key`, kept so that a repeat of the
/// request gets the same answer and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentResponse {
    pub key: String,
    /// Identifies the request (method, path, body) so that a key reused for a different
    /// request can be refused.
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
}

/// Appends to one aggregate, atomically, only if its version is still `expected_version`.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub aggregate_type: AggregateType,
    pub aggregate_id: String,
    pub expected_version: u64,
    pub events: Vec<NewEvent>,
    /// Stored in the same transaction as the events.
    pub idempotency: Option<IdempotentResponse>,
    /// Marks the command as applied, in the same transaction: a second append with the
    /// same key stores nothing and returns [`StoreError::AlreadyApplied`]. Consumers derive
    /// it from the event that caused the command, which makes their effects exactly-once.
    pub dedupe_key: Option<String>,
}

impl AppendRequest {
    pub fn new(
        aggregate_type: AggregateType,
        aggregate_id: impl Into<String>,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Self {
        Self {
            aggregate_type,
            aggregate_id: aggregate_id.into(),
            expected_version,
            events,
            idempotency: None,
            dedupe_key: None,
        }
    }
}

/// How far a consumer has processed the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub consumer: String,
    pub position: u64,
    pub updated_at: DateTime<Utc>,
}

/// An event a consumer could not handle after its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: u64,
    pub consumer: String,
    pub event_id: Uuid,
    pub position: u64,
    pub event_type: String,
    pub aggregate_id: String,
    pub error: String,
    pub attempts: u32,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    /// `pending` until a retry succeeds, then `resolved`.
    pub status: String,
}

/// Where an event was published: the seed's StoredEvent fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub position: u64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A durable timer: fired once `due_at` has passed, surviving restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// One timer per key; scheduling again moves it.
    pub key: String,
    pub kind: String,
    pub due_at: DateTime<Utc>,
    pub payload: serde_json::Value,
}

/// The notification statuses: recorded and not tried yet; delivered to the provider;
/// failed with an error that may pass, to be tried again at `next_attempt_at`; failed for
/// good (a permanent error, or the last attempt), with a dead letter.
pub mod notification_status {
    pub const PENDING: &str = "pending";
    pub const SENT: &str = "sent";
    pub const RETRYING: &str = "retrying";
    pub const FAILED: &str = "failed";
    pub const ALL: [&str; 4] = [PENDING, SENT, RETRYING, FAILED];
}

/// A notification to record: rendered and ready to send, due at once. At most one is kept
/// per (`event_id`, `channel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// The event that caused it; with the channel, its identity and idempotency key.
    pub event_id: Uuid,
    pub event_type: String,
    /// `email`, `sms` or `push`.
    pub channel: String,
    pub template: String,
    pub order_id: String,
    pub customer_id: String,
    /// An email address, a phone number, or a push topic.
    pub recipient: String,
    /// The email's subject; the push notification's title; empty for an SMS.
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The causing event's correlation and trace ids, for the dispatcher's log lines.
    pub correlation_id: String,
    pub trace_id: String,
}

/// A recorded notification and where its delivery stands: one per (event, channel).
/// Served as is by `GET /api/notifications`, without the message bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: u64,
    /// The event that caused it.
    pub event_id: Uuid,
    pub event_type: String,
    /// `email`, `sms` or `push`.
    pub channel: String,
    pub template: String,
    pub order_id: String,
    pub customer_id: String,
    /// An email address, a phone number or a push topic.
    pub recipient: String,
    /// The email's subject or the push notification's title (empty for SMS).
    pub subject: String,
    #[serde(skip)]
    pub body_text: String,
    #[serde(skip)]
    pub body_html: Option<String>,
    /// The causing event's correlation and trace ids (absent on notifications recorded
    /// before they were kept).
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
    /// One of [`notification_status`]: `pending` (not tried yet), `sent`, `retrying` (after
    /// an error that may pass) or `failed` (a permanent error or out of attempts; also in
    /// the dead letters).
    pub status: String,
    /// Attempts to send so far.
    pub attempts: u32,
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    /// When the next attempt is due (pending and retrying notifications).
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The outcome of an attempt to send a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationUpdate {
    pub id: u64,
    /// `sent`, `retrying` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// Kept as it was when `None`.
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
}

/// Which notifications to list; every filter is optional. Newest first.
#[derive(Debug, Clone, Default)]
pub struct NotificationQuery {
    pub order_id: Option<String>,
    pub customer_id: Option<String>,
    pub channel: Option<String>,
    pub status: Option<String>,
    pub limit: u32,
}

/// An inclusive time window; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl TimeRange {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| t <= to)
    }
}

/// A page of the global log, filtered.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub aggregate_type: Option<AggregateType>,
    pub event_type: Option<String>,
    pub range: TimeRange,
    /// Only events after this position.
    pub after: u64,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreStats {
    pub total_events: u64,
    pub total_aggregates: u64,
    pub head_position: u64,
    pub by_event_type: BTreeMap<String, u64>,
    pub by_aggregate_type: BTreeMap<String, u64>,
    pub first_event_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{aggregate_type} '{aggregate_id}' is at version {actual}, not the expected {expected}"
    )]
    Conflict {
        aggregate_type: AggregateType,
        aggregate_id: String,
        expected: u64,
        actual: u64,
    },
    #[error("idempotency key '{0}' has already been used")]
    IdempotencyKeyTaken(String),
    #[error("the command '{0}' has already been applied")]
    AlreadyApplied(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The store could not take the write (or cannot be reached): nothing of it is
    /// stored, or, for [`Unavailable::OutcomeUnknown`], it cannot be told whether it was.
    #[error("{detail}")]
    Unavailable { kind: Unavailable, detail: String },
}

/// Why the store cannot serve a request right now. Each is temporary: the same request
/// may succeed later without anything being fixed in the request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The disk (or the database's quota) is full: writes fail, reads still work.
    DiskFull,
    /// The database cannot be reached, or is shutting down, or its connection broke
    /// before the statement ran.
    Unreachable,
    /// The connection broke during a commit: the write may or may not be stored.
    OutcomeUnknown,
}

impl StoreError {
    pub fn unavailable(kind: Unavailable, detail: impl Into<String>) -> Self {
        Self::Unavailable {
            kind,
            detail: detail.into(),
        }
    }

    /// Whether (and why) this error means "the store is unavailable", as opposed to a
    /// refusal of this request (a conflict) or a bug (corrupt data).
    pub fn unavailability(&self) -> Option<Unavailable> {
        match self {
            Self::Unavailable { kind, .. } => Some(*kind),
            Self::Database(e) => sqlx_unavailability(e),
            _ => None,
        }
    }
}

/// Whether a database error means that the database cannot take work now (not that the
/// statement is wrong): SQLite's primary result codes (the low byte of an extended code)
/// and PostgreSQL's SQLSTATE classes, and the connection's own failures.
pub fn sqlx_unavailability(e: &sqlx::Error) -> Option<Unavailable> {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code()?;
            if let Ok(sqlite) = code.parse::<i32>() {
                // SQLITE_FULL (13); SQLITE_IOERR (10), SQLITE_NOMEM (7), SQLITE_BUSY (5),
                // SQLITE_CANTOPEN (14) and SQLITE_READONLY (8, a file system remounted
                // read-only) each with their extended variants.
                return match sqlite & 0xff {
                    13 => Some(Unavailable::DiskFull),
                    5 | 7 | 8 | 10 | 14 => Some(Unavailable::Unreachable),
                    _ => None,
                };
            }
            match code.as_ref() {
                // disk_full, insufficient_resources, out_of_memory, too_many_connections
                "53100" => Some(Unavailable::DiskFull),
                c if c.starts_with("53") => Some(Unavailable::Unreachable),
                // connection exceptions; admin/crash shutdown, cannot connect now
                c if c.starts_with("08") || c.starts_with("57P") => Some(Unavailable::Unreachable),
                _ => None,
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Some(Unavailable::Unreachable),
        _ => None,
    }
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
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

    /// Schedules a timer, or moves it later if it exists (never earlier).
    async fn schedule_timer(&self, timer: &Timer) -> Result<(), StoreError>;

    /// Timers due at or before `now`, earliest first.
    async fn due_timers(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Timer>, StoreError>;

    /// When the next timer is due, if any.
    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Deletes a fired timer, unless it was moved to a later time meanwhile.
    async fn complete_timer(&self, timer: &Timer) -> Result<(), StoreError>;

    /// Records where events were published (topic, partition, offset).
    async fn record_publications(&self, published: &[Publication]) -> Result<(), StoreError>;

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
