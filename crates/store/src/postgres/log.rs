//! `EventLog` on the PostgreSQL backend. Appends:  the expected-version check, the idempotency and
//! applied-command keys, then, under the append lock, the events and the notification of
//! the new head (see the module comment of `postgres` for why in this order).
//!
//! Reads: an aggregate's events, pages of the
//! global log, the head, the statistics (from one snapshot), a correlation's events and
//! one event by id (the rows decoded by `shared::decode_event`).

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use cornershop_domain::AggregateType;
use sqlx::{Postgres, QueryBuilder, Row};
use tokio::sync::watch;
use uuid::Uuid;

use super::head::{raise, read_head, CHANNEL};
use super::{commit_failure, PgEventStore};
use crate::shared::{
    count_by, decode_event, decode_idempotent_response, decode_stats, push_event_query, push_range,
};
use crate::{
    count_stored, truncate_to_micros as truncate, AppendRequest, EventLog, EventQuery,
    IdempotentResponse, StoreError, StoreStats, StoredEvent, TimeRange,
};

/// The key of the advisory lock that serializes appends (ASCII "CSEVENTS").
const APPEND_LOCK: i64 = 0x4353_4556_454E_5453;

/// The constraint that makes versions unique per aggregate (migrations/postgres).
const VERSION_CONSTRAINT: &str = "events_aggregate_version_unique";

/// Rows per INSERT statement (PostgreSQL allows at most 65535 bind parameters).
const INSERT_CHUNK: usize = 1000;

impl PgEventStore {
    pub(super) async fn append_inner(
        &self,
        request: AppendRequest,
        delay: Option<Duration>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let actual =
            current_version(&mut *tx, request.aggregate_type, &request.aggregate_id).await?;
        crate::shared::expect_version(&request, actual)?;

        // The keys go in before the append lock is taken: a second request with the same
        // key waits here for the first to finish, without holding the lock.
        if let Some(response) = &request.idempotency {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&response.key)
            .bind(&response.fingerprint)
            .bind(i32::from(response.status))
            .bind(&response.body)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await;
            crate::unless_taken(inserted, || {
                StoreError::IdempotencyKeyTaken(response.key.clone())
            })?;
        }
        if let Some(key) = &request.dedupe_key {
            let inserted = sqlx::query(
                "INSERT INTO applied_commands (dedupe_key, applied_at) VALUES ($1, $2)",
            )
            .bind(key)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await;
            crate::unless_taken(inserted, || StoreError::AlreadyApplied(key.clone()))?;
        }

        let (mut stored, rows) = crate::events_to_store(
            request.aggregate_type,
            &request.aggregate_id,
            request.expected_version,
            request.events,
        )?;

        if !stored.is_empty() {
            // From here to the commit, appends run one at a time: see the module comment.
            // (To see the contract's slow-writer check fail, comment this statement out.)
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(APPEND_LOCK)
                .execute(&mut *tx)
                .await?;
            for (chunk, chunk_rows) in stored
                .chunks_mut(INSERT_CHUNK)
                .zip(rows.chunks(INSERT_CHUNK))
            {
                let mut sql = QueryBuilder::<Postgres>::new(
                    "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, \
                     version, schema_version, occurred_at, data, metadata, correlation_id, \
                     causation_id, trace_id) ",
                );
                sql.push_values(
                    chunk.iter().zip(chunk_rows),
                    |mut row, (stored, (data, meta))| {
                        let e = &stored.envelope;
                        row.push_bind(e.event_id.to_string())
                            .push_unseparated("::uuid")
                            .push_bind(e.event_type.clone())
                            .push_bind(e.aggregate_type.as_str())
                            .push_bind(e.aggregate_id.clone())
                            .push_bind(e.version as i64)
                            .push_bind(i64::from(e.schema_version))
                            .push_bind(e.timestamp)
                            .push_bind(data.clone())
                            .push_unseparated("::json")
                            .push_bind(meta.clone())
                            .push_unseparated("::json")
                            .push_bind(e.metadata.correlation_id.clone())
                            .push_bind(e.metadata.causation_id.clone())
                            .push_bind(stored.trace_id.clone());
                    },
                );
                sql.push(" RETURNING version, position");
                let inserted = sql.build().fetch_all(&mut *tx).await;
                let inserted = match inserted {
                    Err(e) if violates(&e, VERSION_CONSTRAINT) => {
                        // Another append to this aggregate committed after our check.
                        tx.rollback().await?;
                        let actual = current_version(
                            &self.pool,
                            request.aggregate_type,
                            &request.aggregate_id,
                        )
                        .await?;
                        return Err(StoreError::Conflict {
                            aggregate_type: request.aggregate_type,
                            aggregate_id: request.aggregate_id,
                            expected: request.expected_version,
                            actual,
                        });
                    }
                    Err(e) => {
                        tx.rollback().await?;
                        return Err(e.into());
                    }
                    Ok(rows) => rows,
                };
                for row in inserted {
                    let version = row.try_get::<i64, _>("version")? as u64;
                    let position = row.try_get::<i64, _>("position")? as u64;
                    let event = chunk
                        .iter_mut()
                        .find(|e| e.envelope.version == version)
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "insert returned unknown version {version}"
                            ))
                        })?;
                    event.position = position;
                }
            }
            let last = stored.last().map_or(0, |e| e.position);
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(last.to_string())
                .execute(&mut *tx)
                .await?;
        }

        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        tx.commit().await.map_err(commit_failure)?;
        count_stored(&stored);
        if let Some(last) = stored.last() {
            raise(&self.head, last.position);
        }
        Ok(stored)
    }
}

async fn current_version<'e, E>(
    executor: E,
    aggregate_type: AggregateType,
    aggregate_id: &str,
) -> Result<u64, StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let version: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type.as_str())
    .bind(aggregate_id)
    .fetch_one(executor)
    .await?;
    Ok(version as u64)
}

fn violates(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.is_unique_violation() && db.constraint() == Some(constraint))
}

const COLUMNS: &str = "position, event_id::text AS event_id, event_type, aggregate_type, \
    aggregate_id, version, schema_version, occurred_at, data::text AS data, \
    metadata::text AS metadata, topic, kafka_partition, kafka_offset, trace_id";

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

#[async_trait]
impl EventLog for PgEventStore {
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, StoreError> {
        self.append_inner(request, None).await
    }

    async fn load_aggregate(
        &self,
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
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(decode_event).collect()
    }

    async fn load_aggregate_after(
        &self,
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
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_event).collect()
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self::query(self, query).await
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        read_head(&self.pool).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        // One snapshot for all three statements, so that the numbers agree.
        let mut tx = self.pool.begin().await?;
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
            &sqlx::query(
                "SELECT aggregate_type, COUNT(*) AS n FROM events GROUP BY aggregate_type",
            )
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

    async fn find_idempotent_response(
        &self,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        let row = sqlx::query(
            "SELECT key, fingerprint, status, body FROM idempotency_keys WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_idempotent_response).transpose()
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
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE correlation_id = $1 ORDER BY position"
        ))
        .bind(correlation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_event).collect()
    }

    async fn find_event(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE event_id = $1::uuid"
        ))
        .bind(event_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_event).transpose()
    }
}
