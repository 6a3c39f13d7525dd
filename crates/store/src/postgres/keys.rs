//! `DataKeys` on the PostgreSQL backend: the customers' wrapped data keys and the master
//! key's id. After an erasure the table is vacuumed, so that the destroyed key's old row
//! version does not wait in the heap for autovacuum.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::PgEventStore;
use crate::{truncate_to_micros as truncate, DataKeyRecord, DataKeys, Erasure, StoreError};

const KEY_COLUMNS: &str = "key_id, customer_id, wrapped_key, created_at, erased_at";

fn decode_key(row: &sqlx::postgres::PgRow) -> Result<DataKeyRecord, StoreError> {
    Ok(DataKeyRecord {
        key_id: row.try_get("key_id")?,
        customer_id: row.try_get("customer_id")?,
        wrapped: row.try_get("wrapped_key")?,
        created_at: row.try_get("created_at")?,
        erased_at: row.try_get("erased_at")?,
    })
}

async fn key_of<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    customer_id: &str,
) -> Result<Option<DataKeyRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM data_keys WHERE customer_id = $1"
    ))
    .bind(customer_id)
    .fetch_optional(executor)
    .await?
    .as_ref()
    .map(decode_key)
    .transpose()
}

#[async_trait]
impl DataKeys for PgEventStore {
    async fn claim_master_key(&self, id: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO master_key (id, master_key_id) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT master_key_id FROM master_key WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn data_key_of(&self, customer_id: &str) -> Result<Option<DataKeyRecord>, StoreError> {
        key_of(&self.pool, customer_id).await
    }

    async fn data_key(&self, key_id: &str) -> Result<Option<DataKeyRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM data_keys WHERE key_id = $1"
        ))
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(decode_key)
        .transpose()
    }

    async fn insert_data_key(
        &self,
        record: &DataKeyRecord,
        master_key_id: &str,
    ) -> Result<Option<DataKeyRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Shared with other inserts, exclusive with a rotation (FOR UPDATE there): a key is
        // never stored wrapped with a master key the rotation has just replaced.
        let recorded: Option<String> =
            sqlx::query_scalar("SELECT master_key_id FROM master_key WHERE id = 1 FOR SHARE")
                .fetch_optional(&mut *tx)
                .await?;
        if recorded.as_deref() != Some(master_key_id) {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO data_keys (key_id, customer_id, wrapped_key, created_at, erased_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(&record.key_id)
        .bind(&record.customer_id)
        .bind(&record.wrapped)
        .bind(truncate(record.created_at)?)
        .bind(record.erased_at.map(truncate).transpose()?)
        .execute(&mut *tx)
        .await?;
        let stored = key_of(&mut *tx, &record.customer_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a data key vanished as it was stored".into()))?;
        tx.commit().await?;
        Ok(Some(stored))
    }

    async fn erase_data_key(
        &self,
        customer_id: &str,
        new_key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Erasure, StoreError> {
        let at = truncate(at)?;
        let mut tx = self.pool.begin().await?;
        // The row is locked first, so that a concurrent insert of the customer's first key
        // and this erasure cannot both win.
        sqlx::query(
            "INSERT INTO data_keys (key_id, customer_id, wrapped_key, created_at, erased_at) \
             VALUES ($1, $2, NULL, $3, $3) ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(new_key_id)
        .bind(customer_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let destroyed: Option<String> = sqlx::query_scalar(
            "UPDATE data_keys SET wrapped_key = NULL, erased_at = COALESCE(erased_at, $2) \
             WHERE customer_id = $1 AND wrapped_key IS NOT NULL RETURNING key_id",
        )
        .bind(customer_id)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        let cancelled = sqlx::query(
            "UPDATE notifications SET status = 'cancelled', \
             last_error = 'the customer''s personal data was erased', updated_at = $2 \
             WHERE customer_id = $1 AND status IN ('pending', 'retrying')",
        )
        .bind(customer_id)
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let key = key_of(&mut *tx, customer_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("an erased key vanished".into()))?;
        tx.commit().await?;
        if let Err(error) = sqlx::query("VACUUM data_keys").execute(&self.pool).await {
            tracing::warn!(%error, "data_keys could not be vacuumed after an erasure");
        }
        Ok(Erasure {
            key,
            destroyed_now: destroyed.is_some(),
            notifications_cancelled: cancelled,
        })
    }

    async fn wrapped_data_keys(&self) -> Result<Vec<DataKeyRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM data_keys WHERE wrapped_key IS NOT NULL ORDER BY key_id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode_key)
        .collect()
    }

    async fn rewrap_data_keys(
        &self,
        old_master: &str,
        new_master: &str,
        rewrapped: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let recorded: Option<String> =
            sqlx::query_scalar("SELECT master_key_id FROM master_key WHERE id = 1 FOR UPDATE")
                .fetch_optional(&mut *tx)
                .await?;
        if recorded.as_deref() != Some(old_master) {
            return Err(StoreError::Corrupt(format!(
                "the data keys are wrapped by master key {}, not {old_master}",
                recorded.as_deref().unwrap_or("(none recorded)")
            )));
        }
        sqlx::query("LOCK TABLE data_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let live: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM data_keys WHERE wrapped_key IS NOT NULL")
                .fetch_one(&mut *tx)
                .await?;
        let mut updated = 0;
        for (key_id, wrapped) in rewrapped {
            updated += sqlx::query(
                "UPDATE data_keys SET wrapped_key = $2 WHERE key_id = $1 AND wrapped_key IS NOT NULL",
            )
            .bind(key_id)
            .bind(wrapped)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if updated as i64 != live {
            return Err(StoreError::Corrupt(format!(
                "{live} data keys are live but {updated} were re-wrapped; nothing was changed"
            )));
        }
        sqlx::query("UPDATE master_key SET master_key_id = $1 WHERE id = 1")
            .bind(new_master)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
