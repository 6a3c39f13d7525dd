//! Reads of the log on the SQLite backend: an aggregate's events, pages of the global
//! log, the head, the statistics, a correlation's events and one event by id; and the
//! decoding of an event row.

use std::collections::BTreeMap;

use cornershop_domain::AggregateType;
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::{micros, SqliteEventStore};
use crate::shared::decode_event;
use crate::shared::from_micros;
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
    push_range(&mut sql, range);
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
    sql.push_bind(query.after as i64);
    if let Some(t) = query.aggregate_type {
        sql.push(" AND aggregate_type = ").push_bind(t.as_str());
    }
    if let Some(t) = &query.event_type {
        sql.push(" AND event_type = ").push_bind(t.clone());
    }
    push_range(&mut sql, query.range);
    sql.push(" ORDER BY position LIMIT ")
        .push_bind(query.limit as i64);
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
    let mut by_event_type = BTreeMap::new();
    for row in sqlx::query("SELECT event_type, COUNT(*) AS n FROM events GROUP BY event_type")
        .fetch_all(&store.reader)
        .await?
    {
        by_event_type.insert(
            row.try_get("event_type")?,
            row.try_get::<i64, _>("n")? as u64,
        );
    }
    let mut by_aggregate_type = BTreeMap::new();
    for row in
        sqlx::query("SELECT aggregate_type, COUNT(*) AS n FROM events GROUP BY aggregate_type")
            .fetch_all(&store.reader)
            .await?
    {
        by_aggregate_type.insert(
            row.try_get("aggregate_type")?,
            row.try_get::<i64, _>("n")? as u64,
        );
    }
    let row = sqlx::query(
        "SELECT COUNT(*) AS total, COALESCE(MAX(position), 0) AS head, \
         MIN(timestamp_us) AS first_us, MAX(timestamp_us) AS last_us, \
         (SELECT COUNT(*) FROM events WHERE version = 1) AS aggregates FROM events",
    )
    .fetch_one(&store.reader)
    .await?;
    let first: Option<i64> = row.try_get("first_us")?;
    let last: Option<i64> = row.try_get("last_us")?;
    Ok(StoreStats {
        total_events: row.try_get::<i64, _>("total")? as u64,
        total_aggregates: row.try_get::<i64, _>("aggregates")? as u64,
        head_position: row.try_get::<i64, _>("head")? as u64,
        by_event_type,
        by_aggregate_type,
        first_event_at: first.map(from_micros).transpose()?,
        last_event_at: last.map(from_micros).transpose()?,
    })
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

fn push_range(sql: &mut QueryBuilder<'_, Sqlite>, range: TimeRange) {
    if let Some(from) = range.from {
        sql.push(" AND timestamp_us >= ").push_bind(micros(from));
    }
    if let Some(to) = range.to {
        sql.push(" AND timestamp_us <= ").push_bind(micros(to));
    }
}
