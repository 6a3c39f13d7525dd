//! Leases on the PostgreSQL backend: one holder at a time per name, until it expires, by
//! the database's clock.

use std::time::Duration;

use super::PgEventStore;
use crate::StoreError;

/// The longest lease we store; a longer ttl is treated as this one.
const MAX_LEASE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub(super) async fn try_lease(
    store: &PgEventStore,
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
    .execute(&store.pool)
    .await?;
    Ok(taken.rows_affected() == 1)
}

pub(super) async fn release_lease(
    store: &PgEventStore,
    name: &str,
    holder: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(&store.pool)
        .await?;
    Ok(())
}
