//! `EventLog` on the PostgreSQL backend. Appends: one call of `cornershop_append` (the
//! expected-version check, the idempotency and applied-command keys and the events), then a
//! request to the settler to settle the head past them (see the module comment of
//! `postgres`).
//!
//! Reads: an aggregate's events, pages of the global log up to the settled head, the head,
//! the statistics (from one snapshot), a correlation's events and one event by id (the
//! rows decoded by `shared::decode_event`).

use std::time::Duration;

use async_trait::async_trait;
use cornershop_domain::AggregateType;
use sqlx::{Postgres, Row};
use tokio::sync::watch;
use uuid::Uuid;

use super::head::{raise, settled_head, waited_too_long};
use super::{bound, commit_failure, PgEventStore};
use crate::shared::{
    aggregate_events, decode_event, decode_idempotent_response, push_event_query, Arg, Statement,
};
use crate::stats;
use crate::{
    count_stored, AppendRequest, EventLog, EventQuery, IdempotentResponse, StoreError, StoreStats,
    StoredEvent, TimeRange,
};

/// The constraint that makes versions unique per aggregate (migrations/postgres).
const VERSION_CONSTRAINT: &str = "events_aggregate_version_unique";
/// The primary keys of the tables of request and command keys.
const IDEMPOTENCY_CONSTRAINT: &str = "idempotency_keys_pkey";
const DEDUPE_CONSTRAINT: &str = "applied_commands_pkey";

/// An append is one call of `cornershop_append` (migrations/postgres/0004): the
/// expected-version check, the keys and the events in one statement, prepared once per
/// connection and committed on its own.
const APPEND: &str = "SELECT actual_version, positions FROM cornershop_append($1, $2, $3, $4, \
    $5, $6, $7, $8, $9::text[]::uuid[], $10, $11, $12, $13, $14::text[]::json[], \
    $15::text[]::json[], $16, $17, $18)";

impl PgEventStore {
    pub(super) async fn append_inner(
        &self,
        mut request: AppendRequest,
        delay: Option<Duration>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (mut stored, rows) = crate::events_to_store(
            request.aggregate_type,
            &request.aggregate_id,
            request.expected_version,
            std::mem::take(&mut request.events),
        )?;
        let envelopes = || stored.iter().map(|e| &e.envelope);
        let idempotency = request.idempotency.as_ref();
        let call = sqlx::query(APPEND)
            .bind(request.aggregate_type.as_str())
            .bind(&request.aggregate_id)
            .bind(request.expected_version as i64)
            .bind(idempotency.map(|r| r.key.clone()))
            .bind(idempotency.map(|r| r.fingerprint.clone()))
            .bind(idempotency.map(|r| i32::from(r.status)))
            .bind(idempotency.map(|r| r.body.clone()))
            .bind(request.dedupe_key.clone())
            .bind(
                envelopes()
                    .map(|e| e.event_id.to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(
                envelopes()
                    .map(|e| e.event_type.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(envelopes().map(|e| e.version as i64).collect::<Vec<_>>())
            .bind(
                envelopes()
                    .map(|e| i64::from(e.schema_version))
                    .collect::<Vec<_>>(),
            )
            .bind(envelopes().map(|e| e.timestamp).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|(data, _)| data.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|(_, meta)| meta.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                envelopes()
                    .map(|e| e.metadata.correlation_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                envelopes()
                    .map(|e| e.metadata.causation_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                stored
                    .iter()
                    .map(|e| e.trace_id.clone())
                    .collect::<Vec<_>>(),
            );

        // A failure to get a connection stored nothing; once the call is sent, a broken
        // connection leaves the outcome unknown (the statement commits on its own).
        let mut conn = self.pool.acquire().await?;
        let answer = match delay {
            None => call.fetch_one(&mut *conn).await.map_err(commit_failure),
            Some(delay) => {
                // The test hook: the same call, inside a transaction held open (with the
                // append registered) before it commits.
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let answer = call.fetch_one(&mut *tx).await;
                if answer.is_ok() {
                    tokio::time::sleep(delay).await;
                    tx.commit().await.map_err(commit_failure)?;
                }
                answer.map_err(StoreError::from)
            }
        };
        drop(conn);
        let answer = match answer {
            Ok(answer) => answer,
            Err(StoreError::Database(e)) => return Err(self.refusal(&request, e).await),
            Err(e) => return Err(e),
        };
        let actual = answer.try_get::<i64, _>("actual_version")? as u64;
        // No positions: the expected version was stale, and nothing was written.
        let Some(positions) = answer.try_get::<Option<Vec<i64>>, _>("positions")? else {
            return Err(StoreError::Conflict {
                aggregate_type: request.aggregate_type,
                aggregate_id: request.aggregate_id,
                expected: request.expected_version,
                actual,
            });
        };
        if positions.len() != stored.len() {
            return Err(StoreError::Corrupt(format!(
                "an append of {} events returned {} positions",
                stored.len(),
                positions.len()
            )));
        }
        for (event, position) in stored.iter_mut().zip(positions) {
            event.position = position as u64;
        }
        count_stored(&stored);
        if let Some(last) = stored.last() {
            self.settle_past(last.position);
        }
        Ok(stored)
    }

    /// What a refused append call means: a version taken meanwhile (a conflict, with the
    /// version read again), a key taken, or the database's own error.
    async fn refusal(&self, request: &AppendRequest, e: sqlx::Error) -> StoreError {
        if violates(&e, VERSION_CONSTRAINT) {
            // Another append to this aggregate committed after our check.
            return match current_version(&self.pool, request.aggregate_type, &request.aggregate_id)
                .await
            {
                Ok(actual) => StoreError::Conflict {
                    aggregate_type: request.aggregate_type,
                    aggregate_id: request.aggregate_id.clone(),
                    expected: request.expected_version,
                    actual,
                },
                Err(e) => e,
            };
        }
        match (&request.idempotency, &request.dedupe_key) {
            (Some(response), _) if violates(&e, IDEMPOTENCY_CONSTRAINT) => {
                StoreError::IdempotencyKeyTaken(response.key.clone())
            }
            (_, Some(key)) if violates(&e, DEDUPE_CONSTRAINT) => {
                StoreError::AlreadyApplied(key.clone())
            }
            _ => e.into(),
        }
    }
}

impl PgEventStore {
    /// Writes merged statistics as the new summary (see stats.rs), unless another fold
    /// came first.
    async fn fold_stats(&self, merged: &stats::Merged) -> Result<(), StoreError> {
        let fold = stats::fold(merged, "occurred_at", "at");
        let mut tx = self.pool.begin().await?;
        if bound(&fold.totals)?
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1
        {
            for statement in &fold.then {
                bound(statement)?.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
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
    let readable = store.readable().await;
    let after = stats::time_start(store, query, readable as u64, |start| async move {
        Ok(bound(&start)?
            .fetch_one(&store.pool)
            .await
            .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?)))?)
    })
    .await?;
    // Never past the settled head: below it, no event can still appear.
    let mut sql = Statement::new(format!("SELECT {COLUMNS} FROM events WHERE"));
    sql.bind(" position <= ", Arg::Int(readable))
        .push(" AND position > ");
    push_event_query(&mut sql, after, query, "occurred_at");
    // Planned for its own values each time, never kept prepared: after five runs a
    // prepared statement may switch to a generic plan, which cannot know that the event
    // type asked for is rare and walks the primary key filtering by type (9.6 ms for a
    // page of a 1% type at 10^6 events against 1.9 ms by the index on type).
    let rows = bound(&sql)?
        .persistent(false)
        .fetch_all(&store.pool)
        .await?;
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
        let sql = aggregate_events(COLUMNS, aggregate_type, aggregate_id, range, "occurred_at");
        let rows = bound(&sql)?.fetch_all(&self.pool).await?;
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
        if !self.bounded {
            return Ok(*self.head.borrow());
        }
        match settled_head(&self.pool).await {
            Ok(position) => {
                raise(&self.head, position);
            }
            // A stuck append holds the head back; the last settled head is still true (the
            // settler names the append in its warning).
            Err(error) if waited_too_long(&error) => {}
            Err(error) => return Err(error),
        }
        Ok(*self.head.borrow())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        // Up to the settled head: no event can still appear below it (see stats.rs).
        let head = self.head_position().await?;
        // One snapshot for the summary and the delta, so that they add up.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let merged = stats::read_pg(&mut tx, head, "occurred_at", "at").await?;
        tx.commit().await?;
        if merged.fold {
            // The statistics are right either way; a failed fold is retried by the next call.
            if let Err(error) = self.fold_stats(&merged).await {
                tracing::warn!(%error, "cannot fold the log's statistics");
            }
        }
        Ok(merged.stats)
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
        let tasks: Vec<_> = match self.tasks.lock() {
            Ok(mut tasks) => tasks.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for task in tasks {
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
