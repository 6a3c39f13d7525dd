//! Reads of the log on the PostgreSQL backend: an aggregate's events, pages of the
//! global log, the head, the statistics (from one snapshot), a correlation's events and
//! one event by id; and the decoding of an event row.

use std::collections::BTreeMap;

use cornershop_domain::AggregateType;
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::head::read_head;
use super::PgEventStore;
use crate::shared::decode_event;
use crate::truncate_to_micros as truncate;
use crate::{EventQuery, StoreError, StoreStats, StoredEvent, TimeRange};

const COLUMNS: &str = "position, event_id::text AS event_id, event_type, aggregate_type, \
    aggregate_id, version, schema_version, occurred_at, data::text AS data, \
    metadata::text AS metadata, topic, kafka_partition, kafka_offset, trace_id";

pub(super) async fn load_aggregate(
    store: &PgEventStore,
    aggregate_type: AggregateType,
    aggregate_id: &str,
    range: TimeRange,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = "
    ));
    sql.push_bind(aggregate_type.as_str())
        .push(" AND aggregate_id = ")
        .push_bind(aggregate_id);
    push_range(&mut sql, range)?;
    sql.push(" ORDER BY version");
    let rows = sql.build().fetch_all(&store.pool).await?;
    rows.iter().map(decode_event).collect()
}

pub(super) async fn load_aggregate_after(
    store: &PgEventStore,
    aggregate_type: AggregateType,
    aggregate_id: &str,
    after_version: u64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
         AND version > $3 ORDER BY version"
    ))
    .bind(aggregate_type.as_str())
    .bind(aggregate_id)
    .bind(after_version as i64)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(decode_event).collect()
}

pub(super) async fn query(
    store: &PgEventStore,
    query: &EventQuery,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut sql =
        QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM events WHERE position > "));
    sql.push_bind(query.after as i64);
    if let Some(t) = query.aggregate_type {
        sql.push(" AND aggregate_type = ").push_bind(t.as_str());
    }
    if let Some(t) = &query.event_type {
        sql.push(" AND event_type = ").push_bind(t.clone());
    }
    push_range(&mut sql, query.range)?;
    sql.push(" ORDER BY position LIMIT ")
        .push_bind(i64::from(query.limit));
    let rows = sql.build().fetch_all(&store.pool).await?;
    rows.iter().map(decode_event).collect()
}

pub(super) async fn head_position(store: &PgEventStore) -> Result<u64, StoreError> {
    read_head(&store.pool).await
}

pub(super) async fn stats(store: &PgEventStore) -> Result<StoreStats, StoreError> {
    // One snapshot for all three statements, so that the numbers agree.
    let mut tx = store.pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let mut by_event_type = BTreeMap::new();
    for row in sqlx::query("SELECT event_type, COUNT(*) AS n FROM events GROUP BY event_type")
        .fetch_all(&mut *tx)
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
            .fetch_all(&mut *tx)
            .await?
    {
        by_aggregate_type.insert(
            row.try_get("aggregate_type")?,
            row.try_get::<i64, _>("n")? as u64,
        );
    }
    let row = sqlx::query(
        "SELECT COUNT(*) AS total, COALESCE(MAX(position), 0) AS head, \
         MIN(occurred_at) AS first_at, MAX(occurred_at) AS last_at, \
         (SELECT COUNT(*) FROM events WHERE version = 1) AS aggregates FROM events",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(StoreStats {
        total_events: row.try_get::<i64, _>("total")? as u64,
        total_aggregates: row.try_get::<i64, _>("aggregates")? as u64,
        head_position: row.try_get::<i64, _>("head")? as u64,
        by_event_type,
        by_aggregate_type,
        first_event_at: row.try_get("first_at")?,
        last_event_at: row.try_get("last_at")?,
    })
}

pub(super) async fn events_by_correlation(
    store: &PgEventStore,
    correlation_id: &str,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE correlation_id = $1 ORDER BY position"
    ))
    .bind(correlation_id)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(decode_event).collect()
}

pub(super) async fn find_event(
    store: &PgEventStore,
    event_id: Uuid,
) -> Result<Option<StoredEvent>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE event_id = $1::uuid"
    ))
    .bind(event_id.to_string())
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(decode_event).transpose()
}

fn push_range(sql: &mut QueryBuilder<'_, Postgres>, range: TimeRange) -> Result<(), StoreError> {
    if let Some(from) = range.from {
        sql.push(" AND occurred_at >= ").push_bind(truncate(from)?);
    }
    if let Some(to) = range.to {
        sql.push(" AND occurred_at <= ").push_bind(truncate(to)?);
    }
    Ok(())
}
