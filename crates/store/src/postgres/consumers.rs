//! `ConsumerState` on the PostgreSQL backend, the small tables beside the log: applied
//! commands, consumers' checkpoints and dead letters, and where events were published.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};

use super::PgEventStore;
use crate::shared::{decode_checkpoint, decode_dead_letter};
use crate::{
    truncate_to_micros as truncate, Checkpoint, ConsumerState, DeadLetter, Publication, StoreError,
    StoredEvent,
};

const DEAD_LETTER_COLUMNS: &str = "id, consumer, event_id::text AS event_id, position, \
    event_type, aggregate_id, error, attempts, first_failed_at, last_failed_at, status";

#[async_trait]
impl ConsumerState for PgEventStore {
    async fn is_applied(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM applied_commands WHERE dedupe_key = $1")
                .bind(dedupe_key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE consumer = $1")
                .bind(consumer)
                .fetch_optional(&self.pool)
                .await?;
        Ok(position.unwrap_or(0) as u64)
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkpoints (consumer, position, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer) DO UPDATE \
             SET position = GREATEST(checkpoints.position, excluded.position), \
             updated_at = excluded.updated_at",
        )
        .bind(consumer)
        .bind(position as i64)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows =
            sqlx::query("SELECT consumer, position, updated_at FROM checkpoints ORDER BY consumer")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(decode_checkpoint).collect()
    }

    async fn record_dead_letter(
        &self,
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
        .fetch_one(&self.pool)
        .await?;
        Ok(id as u64)
    }

    async fn dead_letters(&self, status: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters"
        ));
        if let Some(status) = status {
            sql.push(" WHERE status = ").push_bind(status.to_string());
        }
        sql.push(" ORDER BY id");
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(decode_dead_letter).collect()
    }

    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1"
        ))
        .bind(id as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_dead_letter).transpose()
    }

    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE dead_letters SET status = 'resolved' WHERE id = $1")
            .bind(id as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn record_publications(&self, published: &[Publication]) -> Result<(), StoreError> {
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
