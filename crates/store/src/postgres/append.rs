//! Appends on the PostgreSQL backend: the expected-version check, the idempotency and
//! applied-command keys, then, under the append lock, the events and the notification of
//! the new head (see the module comment of `postgres` for why in this order).

use std::time::Duration;

use chrono::Utc;
use cornershop_domain::AggregateType;
use sqlx::{Postgres, QueryBuilder, Row};

use super::head::{raise, CHANNEL};
use super::{commit_failure, PgEventStore};
use crate::{count_stored, AppendRequest, StoreError, StoredEvent};

/// The key of the advisory lock that serializes appends (ASCII "CSEVENTS").
const APPEND_LOCK: i64 = 0x4353_4556_454E_5453;

/// The constraint that makes versions unique per aggregate (migrations/postgres).
const VERSION_CONSTRAINT: &str = "events_aggregate_version_unique";

/// Rows per INSERT statement (PostgreSQL allows at most 65535 bind parameters).
const INSERT_CHUNK: usize = 1000;

pub(super) async fn append(
    store: &PgEventStore,
    request: AppendRequest,
) -> Result<Vec<StoredEvent>, StoreError> {
    store.append_inner(request, None).await
}

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
