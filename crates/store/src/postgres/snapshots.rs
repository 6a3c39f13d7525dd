//! `Snapshots` on the PostgreSQL backend: one row per aggregate, upserted in a statement of
//! its own (never inside an append's call of `cornershop_append`).

use async_trait::async_trait;
use cornershop_domain::AggregateType;
use sqlx::Row;

use super::PgEventStore;
use crate::{truncate_to_micros as truncate, Snapshot, Snapshots, StoreError};

#[async_trait]
impl Snapshots for PgEventStore {
    async fn load_snapshot(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(
            "SELECT version, event_id::text AS event_id, state_schema, state::text AS state, \
             origin_correlation_id, origin_trace_id, taken_at FROM snapshots \
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(aggregate_type.as_str())
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            aggregate_type,
            aggregate_id: aggregate_id.to_string(),
            version: row.try_get::<i64, _>("version")? as u64,
            event_id: row
                .try_get::<String, _>("event_id")?
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("a snapshot's event id: {e}")))?,
            state_schema: row.try_get::<i32, _>("state_schema")? as u32,
            state: row.try_get("state")?,
            origin_correlation_id: row.try_get("origin_correlation_id")?,
            origin_trace_id: row.try_get("origin_trace_id")?,
            taken_at: row.try_get("taken_at")?,
        }))
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let schema = i32::try_from(snapshot.state_schema)
            .map_err(|_| StoreError::Corrupt("a state schema beyond 2^31".into()))?;
        sqlx::query(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, version, event_id, \
             state_schema, state, origin_correlation_id, origin_trace_id, taken_at) \
             VALUES ($1, $2, $3, $4::uuid, $5, $6::json, $7, $8, $9) \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
             version = excluded.version, event_id = excluded.event_id, \
             state_schema = excluded.state_schema, state = excluded.state, \
             origin_correlation_id = excluded.origin_correlation_id, \
             origin_trace_id = excluded.origin_trace_id, taken_at = excluded.taken_at",
        )
        .bind(snapshot.aggregate_type.as_str())
        .bind(&snapshot.aggregate_id)
        .bind(snapshot.version as i64)
        .bind(snapshot.event_id.to_string())
        .bind(schema)
        .bind(&snapshot.state)
        .bind(&snapshot.origin_correlation_id)
        .bind(&snapshot.origin_trace_id)
        .bind(truncate(snapshot.taken_at)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
