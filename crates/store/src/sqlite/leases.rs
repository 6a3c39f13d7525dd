//! Leases on the SQLite backend: one holder at a time per name, until it expires.

use chrono::Utc;

use super::{micros, SqliteEventStore};
use crate::StoreError;

pub(super) async fn try_lease(
    store: &SqliteEventStore,
    name: &str,
    holder: &str,
    ttl: std::time::Duration,
) -> Result<bool, StoreError> {
    let now = Utc::now();
    let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let (name, holder) = (name.to_string(), holder.to_string());
    store.write(move |conn| {
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

pub(super) async fn release_lease(
    store: &SqliteEventStore,
    name: &str,
    holder: &str,
) -> Result<(), StoreError> {
    let (name, holder) = (name.to_string(), holder.to_string());
    store
        .write(move |conn| {
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
