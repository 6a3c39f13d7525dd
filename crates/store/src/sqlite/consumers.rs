//! `ConsumerState` on the SQLite backend, the small tables beside the log: applied
//! commands, consumers' checkpoints and dead letters, and where events were published.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{all, all_of, first, micros, SqliteEventStore};
use crate::shared::{decode_checkpoint, decode_dead_letter, unsigned, Arg, Statement};
use crate::{Checkpoint, ConsumerState, DeadLetter, Publication, StoreError, StoredEvent};

const DEAD_LETTER_COLUMNS: &str = "id, consumer, event_id, position, event_type, \
    aggregate_id, error, attempts, first_failed_us, last_failed_us, status";

#[async_trait]
impl ConsumerState for SqliteEventStore {
    async fn is_applied(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        let dedupe_key = dedupe_key.to_string();
        self.read_here(move |conn| {
            let found = first(
                conn,
                "SELECT 1 FROM applied_commands WHERE dedupe_key = ?1",
                [dedupe_key],
                |_| Ok(()),
            )?;
            Ok(found.is_some())
        })
        .await
    }

    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        let consumer = consumer.to_string();
        self.read_here(move |conn| {
            let position = first(
                conn,
                "SELECT position FROM checkpoints WHERE consumer = ?1",
                [consumer],
                |row| unsigned(row, "position"),
            )?;
            Ok(position.unwrap_or(0))
        })
        .await
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<(), StoreError> {
        let consumer = consumer.to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO checkpoints (consumer, position, updated_us) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (consumer) DO UPDATE SET \
                 position = MAX(position, excluded.position), updated_us = excluded.updated_us",
            )?
            .execute(params![consumer, position as i64, micros(Utc::now())])?;
            Ok(())
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.read(|conn| {
            all(
                conn,
                "SELECT consumer, position, updated_us FROM checkpoints ORDER BY consumer",
                [],
                |row| decode_checkpoint(row),
            )
        })
        .await
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
            let id: i64 = conn
                .prepare_cached(
                    "INSERT INTO dead_letters (consumer, event_id, position, event_type, \
                     aggregate_id, error, attempts, first_failed_us, last_failed_us, status) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending') \
                     ON CONFLICT (consumer, event_id) DO UPDATE SET error = excluded.error, \
                     attempts = dead_letters.attempts + excluded.attempts, \
                     last_failed_us = excluded.last_failed_us, status = 'pending' \
                     RETURNING id",
                )?
                .query_row(
                    params![
                        consumer,
                        event_id,
                        position,
                        event_type,
                        aggregate_id,
                        error,
                        attempts as i64,
                        micros(first_failed_at),
                        micros(Utc::now()),
                    ],
                    |row| row.get(0),
                )?;
            Ok(id as u64)
        })
        .await
    }

    async fn dead_letters(&self, status: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let mut sql = Statement::new(format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters"));
        if let Some(status) = status {
            sql.bind(" WHERE status = ", Arg::Text(status.to_string()));
        }
        sql.push(" ORDER BY id");
        self.read(move |conn| all_of(conn, &sql, |row| decode_dead_letter(row)))
            .await
    }

    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        self.read_here(move |conn| {
            first(
                conn,
                &format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = ?1"),
                [id as i64],
                |row| decode_dead_letter(row),
            )
        })
        .await
    }

    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached("UPDATE dead_letters SET status = 'resolved' WHERE id = ?1")?
                .execute([id as i64])?;
            Ok(())
        })
        .await
    }

    async fn record_publications(&self, published: &[Publication]) -> Result<(), StoreError> {
        let published = published.to_vec();
        self.write(move |conn| {
            let mut update = conn.prepare_cached(
                "UPDATE events SET topic = ?1, kafka_partition = ?2, kafka_offset = ?3 \
                 WHERE position = ?4",
            )?;
            for p in &published {
                update.execute(params![p.topic, p.partition, p.offset, p.position as i64])?;
            }
            Ok(())
        })
        .await
    }
}
