//! What both backends do alike: checking an append's expected version, turning its
//! events into the rows to insert and the events to return, reading a row's trace id,
//! cutting timestamps to microseconds, telling a taken key from other insert errors,
//! counting stored events, building the filters of the queries whose SQL is the same on
//! both, binding a notification's insert arguments, and decoding the rows of every table
//! into their records ([`StoreRow`]: a row of either backend, whose timestamps each backend
//! keeps its own way).

use chrono::{DateTime, Utc};
use cornershop_domain::{AggregateType, EventEnvelope, Metadata};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::{
    trace, AppendRequest, Checkpoint, DeadLetter, EventQuery, IdempotentResponse, NewEvent,
    Notification, NotificationQuery, StoreError, StoredEvent, TimeRange, Timer,
};

/// Counts appended events by type (`events_stored_total`); called by every backend after
/// its commit.
pub(crate) fn count_stored(events: &[StoredEvent]) {
    for event in events {
        metrics::counter!("events_stored_total", "event_type" => event.envelope.event_type.clone())
            .increment(1);
    }
}

/// The store keeps microseconds (truncating towards the past), on both backends.
pub(crate) fn truncate_to_micros(t: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
    from_micros(t.timestamp_micros())
}

/// The instant `us` microseconds after the Unix epoch (how SQLite keeps timestamps).
pub(crate) fn from_micros(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} is out of range")))
}

/// An insert of a key that must be new (an idempotency key, a dedupe key): a unique-key
/// violation becomes `taken`, any other error is the store's.
pub(crate) fn unless_taken<T, E: Into<StoreError>>(
    inserted: Result<T, E>,
    taken: impl FnOnce() -> StoreError,
) -> Result<(), StoreError> {
    match inserted.map_err(Into::into) {
        Err(e) if e.is_unique_violation() => Err(taken()),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

/// An append's expected version against the aggregate's `actual` one: a stale expectation
/// is a [`StoreError::Conflict`].
pub(crate) fn expect_version(request: &AppendRequest, actual: u64) -> Result<(), StoreError> {
    if actual != request.expected_version {
        return Err(StoreError::Conflict {
            aggregate_type: request.aggregate_type,
            aggregate_id: request.aggregate_id.clone(),
            expected: request.expected_version,
            actual,
        });
    }
    Ok(())
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
fn stored_trace_id(column: Option<String>, metadata: &Metadata) -> String {
    column.unwrap_or_else(|| trace::trace_id_for_correlation(&metadata.correlation_id))
}

/// A column of type `T`, read from a row of either backend (a sqlx row of PostgreSQL, a
/// rusqlite row of SQLite).
pub(crate) trait Column<T> {
    fn column(&self, name: &str) -> Result<T, StoreError>;
}

impl<T> Column<T> for PgRow
where
    for<'r> T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    fn column(&self, name: &str) -> Result<T, StoreError> {
        Ok(self.try_get(name)?)
    }
}

impl<T: rusqlite::types::FromSql> Column<T> for rusqlite::Row<'_> {
    fn column(&self, name: &str) -> Result<T, StoreError> {
        Ok(self.get(name)?)
    }
}

/// A row of either backend: the columns both keep alike, read by their types, and what
/// each keeps its own way: timestamps (PostgreSQL's `TIMESTAMPTZ` columns, SQLite's
/// microseconds in `*_us` columns) and the HTTP status of an idempotent response
/// (PostgreSQL's `INTEGER`, SQLite's integer).
pub(crate) trait StoreRow:
    Column<String> + Column<Option<String>> + Column<i64> + Column<Option<i64>> + Column<Option<i32>>
{
    /// The timestamp in the column named `pg` on PostgreSQL, `sqlite` on SQLite.
    fn timestamp(&self, pg: &str, sqlite: &str) -> Result<DateTime<Utc>, StoreError>;

    /// [`StoreRow::timestamp`] of a column that may be NULL.
    fn optional_timestamp(
        &self,
        pg: &str,
        sqlite: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    fn http_status(&self, column: &str) -> Result<u16, StoreError>;
}

impl StoreRow for PgRow {
    fn timestamp(&self, pg: &str, _sqlite: &str) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.try_get(pg)?)
    }

    fn optional_timestamp(
        &self,
        pg: &str,
        _sqlite: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.try_get(pg)?)
    }

    fn http_status(&self, column: &str) -> Result<u16, StoreError> {
        Ok(self.try_get::<i32, _>(column)? as u16)
    }
}

impl StoreRow for rusqlite::Row<'_> {
    fn timestamp(&self, _pg: &str, sqlite: &str) -> Result<DateTime<Utc>, StoreError> {
        from_micros(self.get(sqlite)?)
    }

    fn optional_timestamp(
        &self,
        _pg: &str,
        sqlite: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let us: Option<i64> = self.get(sqlite)?;
        us.map(from_micros).transpose()
    }

    fn http_status(&self, column: &str) -> Result<u16, StoreError> {
        Ok(self.get::<_, i64>(column)? as u16)
    }
}

pub(crate) fn unsigned(row: &impl StoreRow, column: &str) -> Result<u64, StoreError> {
    Ok(Column::<i64>::column(row, column)? as u64)
}

/// An event row (the backends' `COLUMNS`) as the event it stores.
pub(crate) fn decode_event(row: &impl StoreRow) -> Result<StoredEvent, StoreError> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    let aggregate_type: String = row.column("aggregate_type")?;
    let event_id: String = row.column("event_id")?;
    let data: String = row.column("data")?;
    let metadata: String = row.column("metadata")?;
    let metadata: Metadata =
        serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", &e))?;
    Ok(StoredEvent {
        trace_id: stored_trace_id(row.column("trace_id")?, &metadata),
        position: unsigned(row, "position")?,
        envelope: EventEnvelope {
            event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt("event_id", &e))?,
            event_type: row.column("event_type")?,
            aggregate_id: row.column("aggregate_id")?,
            aggregate_type: AggregateType::parse(&aggregate_type)
                .ok_or_else(|| corrupt("aggregate_type", &aggregate_type))?,
            timestamp: row.timestamp("occurred_at", "timestamp_us")?,
            version: unsigned(row, "version")?,
            schema_version: Column::<i64>::column(row, "schema_version")? as u32,
            data: serde_json::from_str(&data).map_err(|e| corrupt("data", &e))?,
            metadata,
        },
        topic: row.column("topic")?,
        partition: row.column("kafka_partition")?,
        offset: row.column("kafka_offset")?,
    })
}

/// A notification row (the backends' `NOTIFICATION_COLUMNS`) as its record.
pub(crate) fn decode_notification(row: &impl StoreRow) -> Result<Notification, StoreError> {
    let event_id: String = row.column("event_id")?;
    Ok(Notification {
        id: unsigned(row, "id")?,
        event_id: Uuid::parse_str(&event_id)
            .map_err(|e| StoreError::Corrupt(format!("notification event_id: {e}")))?,
        event_type: row.column("event_type")?,
        channel: row.column("channel")?,
        template: row.column("template")?,
        order_id: row.column("order_id")?,
        customer_id: row.column("customer_id")?,
        recipient: row.column("recipient")?,
        subject: row.column("subject")?,
        body_text: row.column("body_text")?,
        body_html: row.column("body_html")?,
        correlation_id: row.column("correlation_id")?,
        trace_id: row.column("trace_id")?,
        status: row.column("status")?,
        attempts: Column::<i64>::column(row, "attempts")? as u32,
        provider_message_id: row.column("provider_message_id")?,
        last_error: row.column("last_error")?,
        next_attempt_at: row.timestamp("next_attempt_at", "next_attempt_us")?,
        created_at: row.timestamp("created_at", "created_us")?,
        updated_at: row.timestamp("updated_at", "updated_us")?,
    })
}

/// A dead letter row (id, consumer, event_id, position, event_type, aggregate_id, error,
/// attempts, the first and last failure, status) as its record.
pub(crate) fn decode_dead_letter(row: &impl StoreRow) -> Result<DeadLetter, StoreError> {
    let event_id: String = row.column("event_id")?;
    Ok(DeadLetter {
        id: unsigned(row, "id")?,
        consumer: row.column("consumer")?,
        event_id: Uuid::parse_str(&event_id)
            .map_err(|e| StoreError::Corrupt(format!("dead letter event_id: {e}")))?,
        position: unsigned(row, "position")?,
        event_type: row.column("event_type")?,
        aggregate_id: row.column("aggregate_id")?,
        error: row.column("error")?,
        attempts: Column::<i64>::column(row, "attempts")? as u32,
        first_failed_at: row.timestamp("first_failed_at", "first_failed_us")?,
        last_failed_at: row.timestamp("last_failed_at", "last_failed_us")?,
        status: row.column("status")?,
    })
}

/// A timer row (key, kind, when it is due, payload as JSON text) as its record.
pub(crate) fn decode_timer(row: &impl StoreRow) -> Result<Timer, StoreError> {
    let payload: String = row.column("payload")?;
    Ok(Timer {
        key: row.column("key")?,
        kind: row.column("kind")?,
        due_at: row.timestamp("due_at", "due_us")?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("timer payload: {e}")))?,
    })
}

/// A checkpoint row (consumer, position, when it was saved) as its record.
pub(crate) fn decode_checkpoint(row: &impl StoreRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        consumer: row.column("consumer")?,
        position: unsigned(row, "position")?,
        updated_at: row.timestamp("updated_at", "updated_us")?,
    })
}

/// An idempotency key's row (key, fingerprint, status, body) as the response it keeps.
pub(crate) fn decode_idempotent_response(
    row: &impl StoreRow,
) -> Result<IdempotentResponse, StoreError> {
    Ok(IdempotentResponse {
        key: row.column("key")?,
        fingerprint: row.column("fingerprint")?,
        status: row.http_status("status")?,
        body: row.column("body")?,
    })
}

/// A statement built by code both backends share: its text, with the placeholders `$1`,
/// `$2`, ... (which both accept), and its arguments in that order. PostgreSQL binds it to
/// a sqlx query, SQLite to a rusqlite statement, each a timestamp its own way.
pub(crate) struct Statement {
    pub(crate) text: String,
    pub(crate) args: Vec<Arg>,
}

/// An argument of a [`Statement`]. A timestamp is bound by each backend its own way
/// (PostgreSQL a `TIMESTAMPTZ` cut to microseconds, SQLite the microseconds).
pub(crate) enum Arg {
    Int(i64),
    Text(String),
    Time(Option<DateTime<Utc>>),
}

impl Statement {
    pub(crate) fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            args: Vec::new(),
        }
    }

    /// Appends `text`, then a placeholder bound to `arg`.
    pub(crate) fn bind(&mut self, text: &str, arg: Arg) -> &mut Self {
        self.args.push(arg);
        self.text.push_str(text);
        self.text.push_str(&format!("${}", self.args.len()));
        self
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }
}

/// An aggregate's events in `range`, in version order: `columns` of the backend's
/// events, the range by their timestamp `column`.
pub(crate) fn aggregate_events(
    columns: &str,
    aggregate_type: AggregateType,
    aggregate_id: &str,
    range: TimeRange,
    column: &str,
) -> Statement {
    let mut sql = Statement::new(format!("SELECT {columns} FROM events WHERE"));
    sql.bind(
        " aggregate_type = ",
        Arg::Text(aggregate_type.as_str().into()),
    )
    .bind(" AND aggregate_id = ", Arg::Text(aggregate_id.into()));
    push_range(&mut sql, range, column);
    sql.push(" ORDER BY version");
    sql
}

/// Limits events to `range`, by their timestamp `column`.
pub(crate) fn push_range(sql: &mut Statement, range: TimeRange, column: &str) {
    if let Some(from) = range.from {
        sql.bind(&format!(" AND {column} >= "), Arg::Time(Some(from)));
    }
    if let Some(to) = range.to {
        sql.bind(&format!(" AND {column} <= "), Arg::Time(Some(to)));
    }
}

/// The rest of a page of the log, after `... WHERE position > `: `after` (the query's own,
/// or where [`crate::stats::time_start`] found that its time range starts), the
/// query's filters (the time range by the timestamp `column`), the order and the limit.
pub(crate) fn push_event_query(sql: &mut Statement, after: u64, query: &EventQuery, column: &str) {
    sql.bind("", Arg::Int(after.min(i64::MAX as u64) as i64));
    if let Some(t) = query.aggregate_type {
        sql.bind(" AND aggregate_type = ", Arg::Text(t.as_str().to_string()));
    }
    if let Some(t) = &query.event_type {
        sql.bind(" AND event_type = ", Arg::Text(t.clone()));
    }
    if let Some(c) = &query.correlation_id {
        sql.bind(" AND correlation_id = ", Arg::Text(c.clone()));
    }
    push_range(sql, query.range, column);
    let order = match query.before {
        Some(before) => {
            sql.bind(
                " AND position < ",
                Arg::Int(before.min(i64::MAX as u64) as i64),
            );
            " ORDER BY position DESC LIMIT "
        }
        None => " ORDER BY position LIMIT ",
    };
    sql.bind(order, Arg::Int(i64::from(query.limit)));
}

/// The rest of a listing of notifications, after a `WHERE` that holds: every filter the
/// query gives, newest first, and the limit.
pub(crate) fn push_notification_query(sql: &mut Statement, query: &NotificationQuery) {
    for (column, value) in [
        ("order_id", &query.order_id),
        ("customer_id", &query.customer_id),
        ("channel", &query.channel),
        ("status", &query.status),
    ] {
        if let Some(value) = value {
            sql.bind(&format!(" AND {column} = "), Arg::Text(value.clone()));
        }
    }
    sql.bind(" ORDER BY id DESC LIMIT ", Arg::Int(i64::from(query.limit)));
}
