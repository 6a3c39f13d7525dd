//! `ConsumerState` on the SQLite backend, the small tables beside the log: applied
//! commands, consumers' checkpoints and dead letters, and where events were published.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};

use super::{micros, SqliteEventStore};
use crate::shared::{decode_checkpoint, decode_dead_letter};
use crate::{Checkpoint, ConsumerState, DeadLetter, Publication, StoreError, StoredEvent};

#[async_trait]
impl ConsumerState for SqliteEventStore {
    async fn is_applied(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM applied_commands WHERE dedupe_key = ?")
                .bind(dedupe_key)
                .fetch_optional(&self.reader)
                .await?;
        Ok(found.is_some())
    }

    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE consumer = ?")
                .bind(consumer)
                .fetch_optional(&self.reader)
                .await?;
        Ok(position.unwrap_or(0) as u64)
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<(), StoreError> {
        let consumer = consumer.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO checkpoints (consumer, position, updated_us) VALUES (?, ?, ?) \
                     ON CONFLICT (consumer) DO UPDATE SET \
                     position = MAX(position, excluded.position), updated_us = excluded.updated_us",
                )
                .bind(consumer)
                .bind(position as i64)
                .bind(micros(Utc::now()))
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows =
            sqlx::query("SELECT consumer, position, updated_us FROM checkpoints ORDER BY consumer")
                .fetch_all(&self.reader)
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
        let consumer = consumer.to_string();
        let event_id = event.envelope.event_id.to_string();
        let position = event.position as i64;
        let event_type = event.envelope.event_type.clone();
        let aggregate_id = event.envelope.aggregate_id.clone();
        let error = error.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let id: i64 = sqlx::query_scalar(
            "INSERT INTO dead_letters (consumer, event_id, position, event_type, aggregate_id, \
             error, attempts, first_failed_us, last_failed_us, status) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending') \
             ON CONFLICT (consumer, event_id) DO UPDATE SET error = excluded.error, \
             attempts = dead_letters.attempts + excluded.attempts, \
             last_failed_us = excluded.last_failed_us, status = 'pending' \
             RETURNING id",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(position)
        .bind(event_type)
        .bind(aggregate_id)
        .bind(error)
        .bind(attempts as i64)
        .bind(micros(first_failed_at))
        .bind(micros(Utc::now()))
        .fetch_one(&mut *conn)
        .await?;
                Ok(id as u64)
            })
        })
        .await
    }

    async fn dead_letters(&self, status: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT id, consumer, event_id, position, event_type, aggregate_id, error, attempts, \
             first_failed_us, last_failed_us, status FROM dead_letters",
        );
        if let Some(status) = status {
            sql.push(" WHERE status = ").push_bind(status.to_string());
        }
        sql.push(" ORDER BY id");
        let rows = sql.build().fetch_all(&self.reader).await?;
        rows.iter().map(decode_dead_letter).collect()
    }

    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(
            "SELECT id, consumer, event_id, position, event_type, aggregate_id, error, attempts, \
             first_failed_us, last_failed_us, status FROM dead_letters WHERE id = ?",
        )
        .bind(id as i64)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(decode_dead_letter).transpose()
    }

    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query("UPDATE dead_letters SET status = 'resolved' WHERE id = ?")
                    .bind(id as i64)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn record_publications(&self, published: &[Publication]) -> Result<(), StoreError> {
        let published = published.to_vec();
        self
            .write(move |conn| {
                Box::pin(async move {
                    for p in &published {
                        sqlx::query(
                "UPDATE events SET topic = ?, kafka_partition = ?, kafka_offset = ? WHERE position = ?",
            )
            .bind(&p.topic)
            .bind(p.partition)
            .bind(p.offset)
            .bind(p.position as i64)
            .execute(&mut *conn)
            .await?;
                    }
                    Ok(())
                })
            })
            .await
    }
}
