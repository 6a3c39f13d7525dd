//! `Scheduling` on the PostgreSQL backend. Durable timers: scheduled, found due and completed.
//!
//! Leases: one holder at a time per name, until it expires, by
//! the database's clock.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PgEventStore;
use crate::shared::decode_timer;
use crate::{truncate_to_micros as truncate, Scheduling, StoreError, Timer};

/// The longest lease we store; a longer ttl is treated as this one.
const MAX_LEASE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[async_trait]
impl Scheduling for PgEventStore {
    async fn schedule_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO timers (key, kind, due_at, payload) VALUES ($1, $2, $3, $4::json) \
             ON CONFLICT (key) DO UPDATE SET due_at = GREATEST(timers.due_at, excluded.due_at), \
             kind = excluded.kind, payload = excluded.payload",
        )
        .bind(&timer.key)
        .bind(&timer.kind)
        .bind(truncate(timer.due_at)?)
        .bind(timer.payload.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn due_timers(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Timer>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, kind, due_at, payload::text AS payload FROM timers \
             WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
        )
        .bind(truncate(now)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_timer).collect()
    }

    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let due: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT MIN(due_at) FROM timers")
            .fetch_one(&self.pool)
            .await?;
        Ok(due)
    }

    async fn complete_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM timers WHERE key = $1 AND due_at = $2")
            .bind(&timer.key)
            .bind(truncate(timer.due_at)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        // The database's clock, not ours: every process compares against the same one.
        let ttl_us = ttl.min(MAX_LEASE).as_micros() as i64;
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) \
             VALUES ($1, $2, clock_timestamp() + $3 * INTERVAL '1 microsecond') \
             ON CONFLICT (name) DO UPDATE \
             SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < clock_timestamp()",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl_us)
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
