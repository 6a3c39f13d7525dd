//! `EventLog` on the SQLite backend. Appends:  the expected-version check, the events (positions
//! assigned by the inserts), the idempotency record and the applied command's key, all in
//! one job of the group-commit writer.
//!
//! Reads: an aggregate's events, pages of the global
//! log, the head, the statistics, a correlation's events and one event by id (the rows
//! decoded by `shared::decode_event`).

use async_trait::async_trait;
use chrono::Utc;
use cornershop_domain::AggregateType;
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::watch;
use uuid::Uuid;

use super::{micros, SqliteEventStore};
use crate::shared::{decode_event, decode_idempotent_response, push_event_query, push_range};
use crate::stats;
use crate::{
    count_stored, AppendRequest, EventLog, EventQuery, IdempotentResponse, StoreError, StoreStats,
    StoredEvent, TimeRange,
};

/// Events per INSERT statement (12 parameters each; SQLite allows 32,766 per statement).
const INSERT_CHUNK: usize = 1000;

/// One append inside the writer's transaction: the expected-version check, the events,
/// the idempotency record and the dedupe key. Positions are assigned by the inserts.
async fn append_in(
    conn: &mut sqlx::SqliteConnection,
    request: AppendRequest,
) -> Result<Vec<StoredEvent>, StoreError> {
    let actual: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_type = ? AND aggregate_id = ?",
        )
        .bind(request.aggregate_type.as_str())
        .bind(&request.aggregate_id)
        .fetch_one(&mut *conn)
        .await?;
    crate::shared::expect_version(&request, actual as u64)?;

    let (mut stored, rows) = crate::events_to_store(
        request.aggregate_type,
        &request.aggregate_id,
        request.expected_version,
        request.events,
    )?;
    // One multi-row INSERT per chunk: a batch of events is one statement, not one per
    // event (each statement is a round trip to sqlx's SQLite worker thread).
    for (chunk, chunk_rows) in stored
        .chunks_mut(INSERT_CHUNK)
        .zip(rows.chunks(INSERT_CHUNK))
    {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, version, \
             schema_version, timestamp_us, data, metadata, correlation_id, causation_id, \
             trace_id) ",
        );
        sql.push_values(
            chunk.iter().zip(chunk_rows),
            |mut row, (e, (data, meta))| {
                let envelope = &e.envelope;
                row.push_bind(envelope.event_id.to_string())
                    .push_bind(envelope.event_type.clone())
                    .push_bind(envelope.aggregate_type.as_str())
                    .push_bind(envelope.aggregate_id.clone())
                    .push_bind(envelope.version as i64)
                    .push_bind(i64::from(envelope.schema_version))
                    .push_bind(micros(envelope.timestamp))
                    .push_bind(data.clone())
                    .push_bind(meta.clone())
                    .push_bind(envelope.metadata.correlation_id.clone())
                    .push_bind(envelope.metadata.causation_id.clone())
                    .push_bind(e.trace_id.clone());
            },
        );
        // RETURNING's row order is not promised: match the positions by version.
        sql.push(" RETURNING version, position");
        let inserted = sql.build().fetch_all(&mut *conn).await?;
        let first_version = chunk[0].envelope.version;
        for row in inserted {
            let version: i64 = row.try_get("version")?;
            let position: i64 = row.try_get("position")?;
            chunk[(version as u64 - first_version) as usize].position = position as u64;
        }
    }

    if let Some(response) = &request.idempotency {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_us) \
                 VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&response.key)
        .bind(&response.fingerprint)
        .bind(response.status as i64)
        .bind(&response.body)
        .bind(micros(Utc::now()))
        .execute(&mut *conn)
        .await;
        crate::unless_taken(inserted, || {
            StoreError::IdempotencyKeyTaken(response.key.clone())
        })?;
    }

    if let Some(key) = &request.dedupe_key {
        let inserted =
            sqlx::query("INSERT INTO applied_commands (dedupe_key, applied_us) VALUES (?, ?)")
                .bind(key)
                .bind(micros(Utc::now()))
                .execute(&mut *conn)
                .await;
        crate::unless_taken(inserted, || StoreError::AlreadyApplied(key.clone()))?;
    }

    Ok(stored)
}

const COLUMNS: &str = "position, event_id, event_type, aggregate_type, aggregate_id, version, \
    schema_version, timestamp_us, data, metadata, topic, kafka_partition, kafka_offset, trace_id";

pub(super) async fn query(
    store: &SqliteEventStore,
    query: &EventQuery,
) -> Result<Vec<StoredEvent>, StoreError> {
    let head = *store.head.borrow();
    let after = stats::time_start(&store.reader, store, query, head, |t| Ok(micros(t))).await?;
    let mut sql =
        QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM events WHERE position > "));
    push_event_query(&mut sql, after, query, "timestamp_us", |t| Ok(micros(t)))?;
    let rows = sql.build().fetch_all(&store.reader).await?;
    rows.iter().map(decode_event).collect()
}

#[async_trait]
impl EventLog for SqliteEventStore {
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, StoreError> {
        self.write_then(
            move |conn| Box::pin(append_in(conn, request)),
            |stored: &Vec<StoredEvent>| {
                count_stored(stored);
                stored.last().map(|e| e.position)
            },
        )
        .await
    }

    async fn load_aggregate(
        &self,
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
        let rows = sql.build().fetch_all(&self.reader).await?;
        rows.iter().map(decode_event).collect()
    }

    async fn load_aggregate_after(
        &self,
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
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_event).collect()
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self::query(self, query).await
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&self.reader)
            .await?;
        Ok(head as u64)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        // One read transaction for the summary and the delta, so that they add up. The
        // delta runs to the end of the log: SQLite commits positions in order.
        let mut tx = self.reader.begin().await?;
        let merged = stats::read::<Sqlite>(&mut tx, u64::MAX, "timestamp_us", "us").await?;
        tx.commit().await?;
        let stats = merged.stats.clone();
        if merged.fold {
            // The statistics are right either way; a failed fold is retried by the next call.
            let folded = self
                .write(move |conn| {
                    Box::pin(async move {
                        stats::fold::<Sqlite, _>(conn, &merged, "timestamp_us", "us", |t| {
                            Ok(micros(t))
                        })
                        .await?;
                        Ok(())
                    })
                })
                .await;
            if let Err(error) = folded {
                tracing::warn!(%error, "cannot fold the log's statistics");
            }
        }
        Ok(stats)
    }

    async fn find_idempotent_response(
        &self,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        let row = sqlx::query(
            "SELECT key, fingerprint, status, body FROM idempotency_keys WHERE key = ?",
        )
        .bind(key)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(decode_idempotent_response).transpose()
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
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE correlation_id = ? ORDER BY position"
        ))
        .bind(correlation_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_event).collect()
    }

    async fn find_event(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM events WHERE event_id = ?"))
            .bind(event_id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(decode_event).transpose()
    }
}
