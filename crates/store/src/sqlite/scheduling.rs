//! `Scheduling` on the SQLite backend. Durable timers: scheduled, found due and completed.
//!
//! Leases: one holder at a time per name, until it expires.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{micros, SqliteEventStore};
use crate::shared::{decode_timer, from_micros};
use crate::{Scheduling, StoreError, Timer};

#[async_trait]
impl Scheduling for SqliteEventStore {
    async fn schedule_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        let timer = timer.clone();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO timers (key, kind, due_us, payload) VALUES (?, ?, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET due_us = MAX(due_us, excluded.due_us), \
             kind = excluded.kind, payload = excluded.payload",
                )
                .bind(&timer.key)
                .bind(&timer.kind)
                .bind(micros(timer.due_at))
                .bind(timer.payload.to_string())
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn due_timers(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Timer>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, kind, due_us, payload FROM timers WHERE due_us <= ? ORDER BY due_us LIMIT ?",
        )
        .bind(micros(now))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_timer).collect()
    }

    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar("SELECT MIN(due_us) FROM timers")
            .fetch_one(&self.reader)
            .await?;
        due.map(from_micros).transpose()
    }

    async fn complete_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        let (key, due) = (timer.key.clone(), micros(timer.due_at));
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query("DELETE FROM timers WHERE key = ? AND due_us = ?")
                    .bind(key)
                    .bind(due)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now = Utc::now();
        let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |conn| {
            Box::pin(async move {
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, expires_us) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_us = excluded.expires_us \
             WHERE leases.holder = excluded.holder OR leases.expires_us < ?",
        )
        .bind(name)
        .bind(holder)
        .bind(micros(expires))
        .bind(micros(now))
        .execute(&mut *conn)
        .await?;
        Ok(taken.rows_affected() == 1)
            })
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query("DELETE FROM leases WHERE name = ? AND holder = ?")
                    .bind(name)
                    .bind(holder)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }
}
