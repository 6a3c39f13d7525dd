//! Reads of the log on the PostgreSQL backend: an aggregate's events, pages of the
//! global log, the head, the statistics (from one snapshot), a correlation's events and
//! one event by id (the rows decoded by `shared::decode_event`).

use cornershop_domain::AggregateType;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::head::read_head;
use super::PgEventStore;
use crate::shared::{count_by, decode_event, decode_stats, push_event_query, push_range};
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
    push_range(&mut sql, range, "occurred_at", truncate)?;
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
    push_event_query(&mut sql, query, "occurred_at", truncate)?;
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
    let by_event_type = count_by(
        &sqlx::query("SELECT event_type, COUNT(*) AS n FROM events GROUP BY event_type")
            .fetch_all(&mut *tx)
            .await?,
        "event_type",
    )?;
    let by_aggregate_type = count_by(
        &sqlx::query("SELECT aggregate_type, COUNT(*) AS n FROM events GROUP BY aggregate_type")
            .fetch_all(&mut *tx)
            .await?,
        "aggregate_type",
    )?;
    let row = sqlx::query(
        "SELECT COUNT(*) AS total, COALESCE(MAX(position), 0) AS head, \
         MIN(occurred_at) AS first_at, MAX(occurred_at) AS last_at, \
         (SELECT COUNT(*) FROM events WHERE version = 1) AS aggregates FROM events",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    decode_stats(&row, by_event_type, by_aggregate_type)
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
