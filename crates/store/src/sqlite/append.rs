//! Appends on the SQLite backend: the expected-version check, the events (positions
//! assigned by the inserts), the idempotency record and the applied command's key, all in
//! one job of the group-commit writer.

use chrono::Utc;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{micros, SqliteEventStore};
use crate::{count_stored, AppendRequest, StoreError, StoredEvent};

/// Events per INSERT statement (12 parameters each; SQLite allows 32,766 per statement).
const INSERT_CHUNK: usize = 1000;

pub(super) async fn append(
    store: &SqliteEventStore,
    request: AppendRequest,
) -> Result<Vec<StoredEvent>, StoreError> {
    store
        .write_then(
            move |conn| Box::pin(append_in(conn, request)),
            |stored: &Vec<StoredEvent>| {
                count_stored(stored);
                stored.last().map(|e| e.position)
            },
        )
        .await
}

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
