//! Durable timers on the PostgreSQL backend: scheduled, found due and completed.

use chrono::{DateTime, Utc};

use super::PgEventStore;
use crate::shared::decode_timer;
use crate::truncate_to_micros as truncate;
use crate::{StoreError, Timer};

pub(super) async fn schedule_timer(store: &PgEventStore, timer: &Timer) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO timers (key, kind, due_at, payload) VALUES ($1, $2, $3, $4::json) \
         ON CONFLICT (key) DO UPDATE SET due_at = GREATEST(timers.due_at, excluded.due_at), \
         kind = excluded.kind, payload = excluded.payload",
    )
    .bind(&timer.key)
    .bind(&timer.kind)
    .bind(truncate(timer.due_at)?)
    .bind(timer.payload.to_string())
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub(super) async fn due_timers(
    store: &PgEventStore,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<Timer>, StoreError> {
    let rows = sqlx::query(
        "SELECT key, kind, due_at, payload::text AS payload FROM timers \
         WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
    )
    .bind(truncate(now)?)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(decode_timer).collect()
}

pub(super) async fn next_timer_due(
    store: &PgEventStore,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let due: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT MIN(due_at) FROM timers")
        .fetch_one(&store.pool)
        .await?;
    Ok(due)
}

pub(super) async fn complete_timer(store: &PgEventStore, timer: &Timer) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM timers WHERE key = $1 AND due_at = $2")
        .bind(&timer.key)
        .bind(truncate(timer.due_at)?)
        .execute(&store.pool)
        .await?;
    Ok(())
}
