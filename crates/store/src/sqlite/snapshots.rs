//! `Snapshots` on the SQLite backend: one row per aggregate, read by its key on the
//! caller's thread, written by the group-commit writer like every other write (in a job of
//! its own, under its own savepoint: never inside an append's job).

use async_trait::async_trait;
use cornershop_domain::AggregateType;
use rusqlite::params;

use super::{first, micros, SqliteEventStore};
use crate::shared::from_micros;
use crate::{Snapshot, Snapshots, StoreError};

#[async_trait]
impl Snapshots for SqliteEventStore {
    async fn load_snapshot(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let aggregate_id = aggregate_id.to_string();
        self.read_here(move |conn| {
            first(
                conn,
                "SELECT version, event_id, state_schema, state, origin_correlation_id, \
                 origin_trace_id, taken_us FROM snapshots \
                 WHERE aggregate_type = ?1 AND aggregate_id = ?2",
                params![aggregate_type.as_str(), aggregate_id],
                |row| {
                    let event_id: String = row.get(1)?;
                    Ok(Snapshot {
                        aggregate_type,
                        aggregate_id: aggregate_id.clone(),
                        version: row.get::<_, i64>(0)? as u64,
                        event_id: event_id.parse().map_err(|e| {
                            StoreError::Corrupt(format!("a snapshot's event id: {e}"))
                        })?,
                        state_schema: row.get(2)?,
                        state: row.get(3)?,
                        origin_correlation_id: row.get(4)?,
                        origin_trace_id: row.get(5)?,
                        taken_at: from_micros(row.get(6)?)?,
                    })
                },
            )
        })
        .await
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let snapshot = snapshot.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, version, event_id, \
                 state_schema, state, origin_correlation_id, origin_trace_id, taken_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
                 version = excluded.version, event_id = excluded.event_id, \
                 state_schema = excluded.state_schema, state = excluded.state, \
                 origin_correlation_id = excluded.origin_correlation_id, \
                 origin_trace_id = excluded.origin_trace_id, taken_us = excluded.taken_us",
            )?
            .execute(params![
                snapshot.aggregate_type.as_str(),
                snapshot.aggregate_id,
                snapshot.version as i64,
                snapshot.event_id.to_string(),
                snapshot.state_schema,
                snapshot.state,
                snapshot.origin_correlation_id,
                snapshot.origin_trace_id,
                micros(snapshot.taken_at),
            ])?;
            Ok(())
        })
        .await
    }
}
