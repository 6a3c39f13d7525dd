//! Reads of the log on the SQLite backend: an aggregate's events, pages of the global
//! log, the head, the statistics, a correlation's events and one event by id (the rows
//! decoded by `shared::decode_event`).

use cornershop_domain::AggregateType;
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::{micros, SqliteEventStore};
use crate::shared::{count_by, decode_event, decode_stats, push_event_query, push_range};
use crate::{EventQuery, StoreError, StoreStats, StoredEvent, TimeRange};

const COLUMNS: &str = "position, event_id, event_type, aggregate_type, aggregate_id, version, \
    schema_version, timestamp_us, data, metadata, topic, kafka_partition, kafka_offset, trace_id";

pub(super) async fn load_aggregate(
    store: &SqliteEventStore,
    aggregate_type: AggregateType,
    aggregate_id: &str,
    range: TimeRange,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut sql = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = "
    ));
    sql.push_bind(aggregate_type.as_str())
        .push(" AND aggregate_id = ")
        .push_bind(aggregate_id);
    push_range(&mut sql, range, "timestamp_us", |t| Ok(micros(t)))?;
    sql.push(" ORDER BY version");
    let rows = sql.build().fetch_all(&store.reader).await?;
    rows.iter().map(decode_event).collect()
}

pub(super) async fn load_aggregate_after(
    store: &SqliteEventStore,
    aggregate_type: AggregateType,
    aggregate_id: &str,
    after_version: u64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = ? AND aggregate_id = ? \
         AND version > ? ORDER BY version"
    ))
    .bind(aggregate_type.as_str())
    .bind(aggregate_id)
    .bind(after_version as i64)
    .fetch_all(&store.reader)
    .await?;
    rows.iter().map(decode_event).collect()
}

pub(super) async fn query(
    store: &SqliteEventStore,
    query: &EventQuery,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut sql =
        QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM events WHERE position > "));
    push_event_query(&mut sql, query, "timestamp_us", |t| Ok(micros(t)))?;
    let rows = sql.build().fetch_all(&store.reader).await?;
    rows.iter().map(decode_event).collect()
}

pub(super) async fn head_position(store: &SqliteEventStore) -> Result<u64, StoreError> {
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(&store.reader)
        .await?;
    Ok(head as u64)
}

pub(super) async fn stats(store: &SqliteEventStore) -> Result<StoreStats, StoreError> {
    let by_event_type = count_by(
        &sqlx::query("SELECT event_type, COUNT(*) AS n FROM events GROUP BY event_type")
            .fetch_all(&store.reader)
            .await?,
        "event_type",
    )?;
    let by_aggregate_type = count_by(
        &sqlx::query("SELECT aggregate_type, COUNT(*) AS n FROM events GROUP BY aggregate_type")
            .fetch_all(&store.reader)
            .await?,
        "aggregate_type",
    )?;
    let row = sqlx::query(
        "SELECT COUNT(*) AS total, COALESCE(MAX(position), 0) AS head, \
         MIN(timestamp_us) AS first_us, MAX(timestamp_us) AS last_us, \
         (SELECT COUNT(*) FROM events WHERE version = 1) AS aggregates FROM events",
    )
    .fetch_one(&store.reader)
    .await?;
    decode_stats(&row, by_event_type, by_aggregate_type)
}

pub(super) async fn events_by_correlation(
    store: &SqliteEventStore,
    correlation_id: &str,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE correlation_id = ? ORDER BY position"
    ))
    .bind(correlation_id)
    .fetch_all(&store.reader)
    .await?;
    rows.iter().map(decode_event).collect()
}

pub(super) async fn find_event(
    store: &SqliteEventStore,
    event_id: Uuid,
) -> Result<Option<StoredEvent>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM events WHERE event_id = ?"))
        .bind(event_id.to_string())
        .fetch_optional(&store.reader)
        .await?;
    row.as_ref().map(decode_event).transpose()
}
