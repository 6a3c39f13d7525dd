//! Durable timers on the SQLite backend: scheduled, found due and completed.

use chrono::{DateTime, Utc};

use super::{micros, SqliteEventStore};
use crate::shared::decode_timer;
use crate::shared::from_micros;
use crate::{StoreError, Timer};

pub(super) async fn schedule_timer(
    store: &SqliteEventStore,
    timer: &Timer,
) -> Result<(), StoreError> {
    let timer = timer.clone();
    store
        .write(move |conn| {
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

pub(super) async fn due_timers(
    store: &SqliteEventStore,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<Timer>, StoreError> {
    let rows = sqlx::query(
        "SELECT key, kind, due_us, payload FROM timers WHERE due_us <= ? ORDER BY due_us LIMIT ?",
    )
    .bind(micros(now))
    .bind(limit as i64)
    .fetch_all(&store.reader)
    .await?;
    rows.iter().map(decode_timer).collect()
}

pub(super) async fn next_timer_due(
    store: &SqliteEventStore,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let due: Option<i64> = sqlx::query_scalar("SELECT MIN(due_us) FROM timers")
        .fetch_one(&store.reader)
        .await?;
    due.map(from_micros).transpose()
}

pub(super) async fn complete_timer(
    store: &SqliteEventStore,
    timer: &Timer,
) -> Result<(), StoreError> {
    let (key, due) = (timer.key.clone(), micros(timer.due_at));
    store
        .write(move |conn| {
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
