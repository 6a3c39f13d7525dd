//! The PostgreSQL backend's small tables beside the log: idempotent responses, applied
//! commands, consumers' checkpoints and dead letters, and where events were published.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};

use super::PgEventStore;
use crate::shared::{decode_checkpoint, decode_dead_letter, decode_idempotent_response};
use crate::truncate_to_micros as truncate;
use crate::{Checkpoint, DeadLetter, IdempotentResponse, Publication, StoreError, StoredEvent};

const DEAD_LETTER_COLUMNS: &str = "id, consumer, event_id::text AS event_id, position, \
    event_type, aggregate_id, error, attempts, first_failed_at, last_failed_at, status";

pub(super) async fn find_idempotent_response(
    store: &PgEventStore,
    key: &str,
) -> Result<Option<IdempotentResponse>, StoreError> {
    let row =
        sqlx::query("SELECT key, fingerprint, status, body FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(&store.pool)
            .await?;
    row.as_ref().map(decode_idempotent_response).transpose()
}

pub(super) async fn is_applied(store: &PgEventStore, dedupe_key: &str) -> Result<bool, StoreError> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM applied_commands WHERE dedupe_key = $1")
            .bind(dedupe_key)
            .fetch_optional(&store.pool)
            .await?;
    Ok(found.is_some())
}

pub(super) async fn checkpoint(store: &PgEventStore, consumer: &str) -> Result<u64, StoreError> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM checkpoints WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(&store.pool)
            .await?;
    Ok(position.unwrap_or(0) as u64)
}

pub(super) async fn save_checkpoint(
    store: &PgEventStore,
    consumer: &str,
    position: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO checkpoints (consumer, position, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer) DO UPDATE \
         SET position = GREATEST(checkpoints.position, excluded.position), \
         updated_at = excluded.updated_at",
    )
    .bind(consumer)
    .bind(position as i64)
    .bind(Utc::now())
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub(super) async fn checkpoints(store: &PgEventStore) -> Result<Vec<Checkpoint>, StoreError> {
    let rows =
        sqlx::query("SELECT consumer, position, updated_at FROM checkpoints ORDER BY consumer")
            .fetch_all(&store.pool)
            .await?;
    rows.iter().map(decode_checkpoint).collect()
}

pub(super) async fn record_dead_letter(
    store: &PgEventStore,
    consumer: &str,
    event: &StoredEvent,
    error: &str,
    attempts: u32,
    first_failed_at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dead_letters (consumer, event_id, position, event_type, aggregate_id, \
         error, attempts, first_failed_at, last_failed_at, status) \
         VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8, $9, 'pending') \
         ON CONFLICT (consumer, event_id) DO UPDATE SET error = excluded.error, \
         attempts = dead_letters.attempts + excluded.attempts, \
         last_failed_at = excluded.last_failed_at, status = 'pending' \
         RETURNING id",
    )
    .bind(consumer)
    .bind(event.envelope.event_id.to_string())
    .bind(event.position as i64)
    .bind(&event.envelope.event_type)
    .bind(&event.envelope.aggregate_id)
    .bind(error)
    .bind(i64::from(attempts))
    .bind(truncate(first_failed_at)?)
    .bind(Utc::now())
    .fetch_one(&store.pool)
    .await?;
    Ok(id as u64)
}

pub(super) async fn dead_letters(
    store: &PgEventStore,
    status: Option<&str>,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut sql =
        QueryBuilder::<Postgres>::new(format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters"));
    if let Some(status) = status {
        sql.push(" WHERE status = ").push_bind(status.to_string());
    }
    sql.push(" ORDER BY id");
    let rows = sql.build().fetch_all(&store.pool).await?;
    rows.iter().map(decode_dead_letter).collect()
}

pub(super) async fn dead_letter(
    store: &PgEventStore,
    id: u64,
) -> Result<Option<DeadLetter>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1"
    ))
    .bind(id as i64)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(decode_dead_letter).transpose()
}

pub(super) async fn resolve_dead_letter(store: &PgEventStore, id: u64) -> Result<(), StoreError> {
    sqlx::query("UPDATE dead_letters SET status = 'resolved' WHERE id = $1")
        .bind(id as i64)
        .execute(&store.pool)
        .await?;
    Ok(())
}

pub(super) async fn record_publications(
    store: &PgEventStore,
    published: &[Publication],
) -> Result<(), StoreError> {
    // One statement for the whole batch (arrays unnested), not one round trip per event.
    let positions: Vec<i64> = published.iter().map(|p| p.position as i64).collect();
    let topics: Vec<&str> = published.iter().map(|p| p.topic.as_str()).collect();
    let partitions: Vec<i32> = published.iter().map(|p| p.partition).collect();
    let offsets: Vec<i64> = published.iter().map(|p| p.offset).collect();
    sqlx::query(
        "UPDATE events AS e SET topic = u.topic, kafka_partition = u.kafka_partition, \
         kafka_offset = u.kafka_offset \
         FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::bigint[]) \
         AS u(position, topic, kafka_partition, kafka_offset) \
         WHERE e.position = u.position",
    )
    .bind(&positions)
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .execute(&store.pool)
    .await?;
    Ok(())
}
