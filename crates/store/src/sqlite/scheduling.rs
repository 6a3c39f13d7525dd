//! `Scheduling` on the SQLite backend. Durable timers: scheduled, found due and completed.
//!
//! Leases: one holder at a time per name, until it expires.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{all, micros, SqliteEventStore};
use crate::shared::{decode_timer, from_micros};
use crate::{Scheduling, StoreError, Timer};

#[async_trait]
impl Scheduling for SqliteEventStore {
    async fn schedule_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        let timer = timer.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO timers (key, kind, due_us, payload) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (key) DO UPDATE SET due_us = MAX(due_us, excluded.due_us), \
                 kind = excluded.kind, payload = excluded.payload",
            )?
            .execute(params![
                timer.key,
                timer.kind,
                micros(timer.due_at),
                timer.payload.to_string()
            ])?;
            Ok(())
        })
        .await
    }

    async fn due_timers(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Timer>, StoreError> {
        self.read(move |conn| {
            all(
                conn,
                "SELECT key, kind, due_us, payload FROM timers WHERE due_us <= ?1 \
                 ORDER BY due_us LIMIT ?2",
                params![micros(now), limit as i64],
                |row| decode_timer(row),
            )
        })
        .await
    }

    async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read_here(|conn| {
            let due: Option<i64> = conn
                .prepare_cached("SELECT MIN(due_us) FROM timers")?
                .query_row([], |row| row.get(0))?;
            due.map(from_micros).transpose()
        })
        .await
    }

    async fn complete_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        let (key, due) = (timer.key.clone(), micros(timer.due_at));
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM timers WHERE key = ?1 AND due_us = ?2")?
                .execute(params![key, due])?;
            Ok(())
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
            let taken = conn
                .prepare_cached(
                    "INSERT INTO leases (name, holder, expires_us) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                     expires_us = excluded.expires_us \
                     WHERE leases.holder = excluded.holder OR leases.expires_us < ?4",
                )?
                .execute(params![name, holder, micros(expires), micros(now)])?;
            Ok(taken == 1)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")?
                .execute(params![name, holder])?;
            Ok(())
        })
        .await
    }
}
