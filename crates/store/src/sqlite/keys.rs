//! `DataKeys` on the SQLite backend: the customers' wrapped data keys and the master key's
//! id. An erasure overwrites the destroyed key in the file (secure_delete) and then
//! truncates the WAL, so that no copy of the wrapped key is left on disk.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{all, micros, SqliteEventStore};
use crate::shared::from_micros;
use crate::{DataKeyRecord, DataKeys, Erasure, StoreError};

const KEY_COLUMNS: &str = "key_id, customer_id, wrapped_key, created_us, erased_us";

fn decode_key(row: &rusqlite::Row<'_>) -> Result<DataKeyRecord, StoreError> {
    Ok(DataKeyRecord {
        key_id: row.get(0)?,
        customer_id: row.get(1)?,
        wrapped: row.get(2)?,
        created_at: from_micros(row.get(3)?)?,
        erased_at: row.get::<_, Option<i64>>(4)?.map(from_micros).transpose()?,
    })
}

fn key_of(
    conn: &rusqlite::Connection,
    customer_id: &str,
) -> Result<Option<DataKeyRecord>, StoreError> {
    Ok(all(
        conn,
        &format!("SELECT {KEY_COLUMNS} FROM data_keys WHERE customer_id = ?1"),
        params![customer_id],
        decode_key,
    )?
    .pop())
}

#[async_trait]
impl DataKeys for SqliteEventStore {
    async fn claim_master_key(&self, id: &str) -> Result<String, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO master_key (id, master_key_id) VALUES (1, ?1) \
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![id])?;
            Ok(conn
                .prepare_cached("SELECT master_key_id FROM master_key WHERE id = 1")?
                .query_row([], |row| row.get(0))?)
        })
        .await
    }

    async fn data_key_of(&self, customer_id: &str) -> Result<Option<DataKeyRecord>, StoreError> {
        let customer_id = customer_id.to_string();
        self.read_here(move |conn| key_of(conn, &customer_id)).await
    }

    async fn data_key(&self, key_id: &str) -> Result<Option<DataKeyRecord>, StoreError> {
        let key_id = key_id.to_string();
        self.read_here(move |conn| {
            Ok(all(
                conn,
                &format!("SELECT {KEY_COLUMNS} FROM data_keys WHERE key_id = ?1"),
                params![key_id],
                decode_key,
            )?
            .pop())
        })
        .await
    }

    async fn insert_data_key(
        &self,
        record: &DataKeyRecord,
        master_key_id: &str,
    ) -> Result<Option<DataKeyRecord>, StoreError> {
        let (record, master_key_id) = (record.clone(), master_key_id.to_string());
        self.write(move |conn| {
            // One writer at a time: the check and the insert cannot be split by a rotation.
            let recorded: Option<String> = conn
                .prepare_cached("SELECT master_key_id FROM master_key WHERE id = 1")?
                .query_row([], |row| row.get(0))
                .optional()?;
            if recorded.as_deref() != Some(master_key_id.as_str()) {
                return Ok(None);
            }
            conn.prepare_cached(
                "INSERT INTO data_keys (key_id, customer_id, wrapped_key, created_us, erased_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (customer_id) DO NOTHING",
            )?
            .execute(params![
                record.key_id,
                record.customer_id,
                record.wrapped,
                micros(record.created_at),
                record.erased_at.map(micros),
            ])?;
            key_of(conn, &record.customer_id)?
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt("a data key vanished as it was stored".into()))
        })
        .await
    }

    async fn erase_data_key(
        &self,
        customer_id: &str,
        new_key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Erasure, StoreError> {
        let (customer_id, new_key_id) = (customer_id.to_string(), new_key_id.to_string());
        let erasure = self
            .write(move |conn| {
                let before = key_of(conn, &customer_id)?;
                let destroyed_now = before.as_ref().is_some_and(|k| k.wrapped.is_some());
                match &before {
                    Some(_) => {
                        conn.prepare_cached(
                            "UPDATE data_keys SET wrapped_key = NULL, \
                             erased_us = COALESCE(erased_us, ?2) WHERE customer_id = ?1",
                        )?
                        .execute(params![customer_id, micros(at)])?;
                    }
                    None => {
                        conn.prepare_cached(
                            "INSERT INTO data_keys (key_id, customer_id, wrapped_key, \
                             created_us, erased_us) VALUES (?1, ?2, NULL, ?3, ?3)",
                        )?
                        .execute(params![
                            new_key_id,
                            customer_id,
                            micros(at)
                        ])?;
                    }
                }
                let cancelled =
                    conn.prepare_cached(
                        "UPDATE notifications SET status = 'cancelled', \
                         last_error = 'the customer''s personal data was erased', updated_us = ?2 \
                         WHERE customer_id = ?1 AND status IN ('pending', 'retrying')",
                    )?
                    .execute(params![customer_id, micros(at)])? as u64;
                let key = key_of(conn, &customer_id)?
                    .ok_or_else(|| StoreError::Corrupt("an erased key vanished".into()))?;
                Ok(Erasure {
                    key,
                    destroyed_now,
                    notifications_cancelled: cancelled,
                })
            })
            .await?;
        self.truncate_wal().await;
        Ok(erasure)
    }

    async fn wrapped_data_keys(&self) -> Result<Vec<DataKeyRecord>, StoreError> {
        self.read(move |conn| {
            all(
                conn,
                &format!(
                    "SELECT {KEY_COLUMNS} FROM data_keys WHERE wrapped_key IS NOT NULL \
                     ORDER BY key_id"
                ),
                [],
                decode_key,
            )
        })
        .await
    }

    async fn rewrap_data_keys(
        &self,
        old_master: &str,
        new_master: &str,
        rewrapped: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let (old_master, new_master) = (old_master.to_string(), new_master.to_string());
        let rewrapped = rewrapped.to_vec();
        self.write(move |conn| {
            let recorded: Option<String> = conn
                .prepare_cached("SELECT master_key_id FROM master_key WHERE id = 1")?
                .query_row([], |row| row.get(0))
                .optional()?;
            if recorded.as_deref() != Some(old_master.as_str()) {
                return Err(StoreError::Corrupt(format!(
                    "the data keys are wrapped by master key {}, not {old_master}",
                    recorded.as_deref().unwrap_or("(none recorded)")
                )));
            }
            let live: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM data_keys WHERE wrapped_key IS NOT NULL")?
                .query_row([], |row| row.get(0))?;
            let mut update = conn.prepare_cached(
                "UPDATE data_keys SET wrapped_key = ?2 WHERE key_id = ?1 AND wrapped_key IS NOT NULL",
            )?;
            let mut updated = 0;
            for (key_id, wrapped) in &rewrapped {
                updated += update.execute(params![key_id, wrapped])?;
            }
            if updated as i64 != live {
                return Err(StoreError::Corrupt(format!(
                    "{live} data keys are live but {updated} were re-wrapped; nothing was changed"
                )));
            }
            conn.prepare_cached("UPDATE master_key SET master_key_id = ?1 WHERE id = 1")?
                .execute(params![new_master])?;
            Ok(())
        })
        .await
    }
}

impl SqliteEventStore {
    /// Checkpoints the WAL into the file and truncates it, so that an erased key's old
    /// page does not linger there. Best effort: a reader holding an old snapshot makes
    /// SQLite stop short, and the next checkpoint finishes the job.
    async fn truncate_wal(&self) {
        let path = self.path().to_path_buf();
        let outcome = tokio::task::spawn_blocking(move || -> rusqlite::Result<i64> {
            let conn = rusqlite::Connection::open(&path)?;
            conn.busy_timeout(std::time::Duration::from_secs(2))?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        })
        .await;
        match outcome {
            Ok(Ok(0)) => {}
            Ok(Ok(_)) => tracing::info!("the WAL could not be truncated yet (a reader holds it)"),
            Ok(Err(error)) => tracing::warn!(%error, "the WAL could not be checkpointed"),
            Err(error) => tracing::warn!(%error, "the WAL checkpoint panicked"),
        }
    }
}
