//! `EventLog` on the SQLite backend. Appends:  the expected-version check, the events (positions
//! assigned by the inserts), the idempotency record and the applied command's key, all in
//! one job of the group-commit writer.
//!
//! Reads: an aggregate's events, pages of the global
//! log, the head, the statistics, a correlation's events and one event by id (the rows
//! decoded by `shared::decode_event`).

use async_trait::async_trait;
use chrono::Utc;
use cornershop_domain::AggregateType;
use rusqlite::{params, params_from_iter};
use tokio::sync::watch;
use uuid::Uuid;

use super::{all, all_of, first, micros, SqliteEventStore};
use crate::shared::{
    aggregate_events, decode_event, decode_idempotent_response, push_event_query, Statement,
};
use crate::stats::{self, Count, Totals};
use crate::{
    count_stored, AppendRequest, EventLog, EventQuery, IdempotentResponse, StoreError, StoreStats,
    StoredEvent, TimeRange,
};

/// One append inside the writer's transaction: the expected-version check, the events,
/// the idempotency record and the dedupe key. Positions are assigned by the inserts.
fn append_in(
    conn: &rusqlite::Connection,
    request: AppendRequest,
) -> Result<Vec<StoredEvent>, StoreError> {
    let actual: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(version), 0) FROM events \
             WHERE aggregate_type = ?1 AND aggregate_id = ?2",
        )?
        .query_row(
            params![request.aggregate_type.as_str(), request.aggregate_id],
            |row| row.get(0),
        )?;
    crate::shared::expect_version(&request, actual as u64)?;

    let (mut stored, rows) = crate::events_to_store(
        request.aggregate_type,
        &request.aggregate_id,
        request.expected_version,
        request.events,
    )?;
    // One prepared statement, stepped once per event: no thread to cross, so a
    // multi-row statement would save nothing.
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, version, \
         schema_version, timestamp_us, data, metadata, correlation_id, causation_id, \
         trace_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for (event, (data, metadata)) in stored.iter_mut().zip(&rows) {
        let envelope = &event.envelope;
        insert.execute(params![
            envelope.event_id.to_string(),
            envelope.event_type,
            envelope.aggregate_type.as_str(),
            envelope.aggregate_id,
            envelope.version as i64,
            i64::from(envelope.schema_version),
            micros(envelope.timestamp),
            data,
            metadata,
            envelope.metadata.correlation_id,
            envelope.metadata.causation_id,
            event.trace_id,
        ])?;
        // `position` is the table's INTEGER PRIMARY KEY: the row id just assigned.
        event.position = conn.last_insert_rowid() as u64;
    }

    if let Some(response) = &request.idempotency {
        let inserted = conn
            .prepare_cached(
                "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                response.key,
                response.fingerprint,
                i64::from(response.status),
                response.body,
                micros(Utc::now()),
            ]);
        crate::unless_taken(inserted, || {
            StoreError::IdempotencyKeyTaken(response.key.clone())
        })?;
    }

    if let Some(key) = &request.dedupe_key {
        let inserted = conn
            .prepare_cached(
                "INSERT INTO applied_commands (dedupe_key, applied_us) VALUES (?1, ?2)",
            )?
            .execute(params![key, micros(Utc::now())]);
        crate::unless_taken(inserted, || StoreError::AlreadyApplied(key.clone()))?;
    }

    Ok(stored)
}

/// Runs a statement built by shared code (see stats.rs) on the writer's connection; the
/// number of rows it changed.
fn run(conn: &rusqlite::Connection, statement: &Statement) -> Result<u64, StoreError> {
    // Not kept prepared: the text changes with every fold.
    Ok(conn.execute(&statement.text, params_from_iter(&statement.args))? as u64)
}

const COLUMNS: &str = "position, event_id, event_type, aggregate_type, aggregate_id, version, \
    schema_version, timestamp_us, data, metadata, topic, kafka_partition, kafka_offset, trace_id";

pub(super) async fn query(
    store: &SqliteEventStore,
    query: &EventQuery,
) -> Result<Vec<StoredEvent>, StoreError> {
    let head = *store.head.borrow();
    let after = stats::time_start(store, query, head, |start| {
        store.read_here(move |conn| {
            let pair = conn
                .prepare_cached(&start.text)?
                .query_row(params_from_iter(&start.args), |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            Ok(pair)
        })
    })
    .await?;
    let mut sql = Statement::new(format!("SELECT {COLUMNS} FROM events WHERE position > "));
    push_event_query(&mut sql, after, query, "timestamp_us");
    let read = move |conn: &rusqlite::Connection| all_of(conn, &sql, |row| decode_event(row));
    // A consumer's batch near the head (a few events, at most a batch's worth) is read
    // right here; a longer page (a rebuild's, an API listing) on a blocking thread.
    if query.limit <= READ_HERE_MAX_EVENTS {
        store.read_here(read).await
    } else {
        store.read(read).await
    }
}

/// Most events a read may ask for and still run on the caller's thread (see
/// `SqliteReaders::read_here`): an embedded consumer's batch.
const READ_HERE_MAX_EVENTS: u32 = 256;

#[async_trait]
impl EventLog for SqliteEventStore {
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, StoreError> {
        self.write_then(
            move |conn| append_in(conn, request),
            |stored: &Vec<StoredEvent>| {
                count_stored(stored);
                stored.last().map(|e| e.position)
            },
        )
        .await
    }

    async fn load_aggregate(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        range: TimeRange,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = aggregate_events(COLUMNS, aggregate_type, aggregate_id, range, "timestamp_us");
        self.read(move |conn| all_of(conn, &sql, |row| decode_event(row)))
            .await
    }

    async fn load_aggregate_after(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        after_version: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let aggregate_id = aggregate_id.to_string();
        self.read_here(move |conn| {
            all(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM events WHERE aggregate_type = ?1 \
                     AND aggregate_id = ?2 AND version > ?3 ORDER BY version"
                ),
                params![aggregate_type.as_str(), aggregate_id, after_version as i64],
                |row| decode_event(row),
            )
        })
        .await
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self::query(self, query).await
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        self.read_here(|conn| {
            let head: i64 = conn
                .prepare_cached("SELECT COALESCE(MAX(position), 0) FROM events")?
                .query_row([], |row| row.get(0))?;
            Ok(head as u64)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        // One read transaction for the summary and the delta, so that they add up. The
        // delta runs to the end of the log: SQLite commits positions in order.
        let merged = self
            .read(|conn| {
                let snapshot = conn.unchecked_transaction()?;
                let [totals, counts] = stats::summary_reads("us");
                let summary = first(conn, &totals, [], |row| {
                    Totals::decode(row, "counted_through")
                })?
                .ok_or_else(|| StoreError::Corrupt("event_totals has no row".into()))?;
                let mut all_counts = all(conn, &counts, [], |row| Count::decode(row))?;
                let [totals, counts] =
                    stats::delta_reads(summary.through, u64::MAX, "timestamp_us", "us");
                // Not kept prepared: their text changes with every call.
                let delta =
                    conn.query_row(&totals, [], |row| Ok(Totals::decode(row, "head")))??;
                let mut rows = conn.prepare(&counts)?;
                let mut rows = rows.query([])?;
                while let Some(row) = rows.next()? {
                    all_counts.push(Count::decode(row)?);
                }
                drop(rows);
                snapshot.commit()?;
                stats::merge(summary, delta, all_counts)
            })
            .await?;
        let stats = merged.stats.clone();
        if merged.fold {
            // The statistics are right either way; a failed fold is retried by the next call.
            let fold = stats::fold(&merged, "timestamp_us", "us");
            let folded = self
                .write(move |conn| {
                    if run(conn, &fold.totals)? == 1 {
                        for statement in &fold.then {
                            run(conn, statement)?;
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(error) = folded {
                tracing::warn!(%error, "cannot fold the log's statistics");
            }
        }
        Ok(stats)
    }

    async fn find_idempotent_response(
        &self,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        let key = key.to_string();
        self.read_here(move |conn| {
            first(
                conn,
                "SELECT key, fingerprint, status, body FROM idempotency_keys WHERE key = ?1",
                [key],
                |row| decode_idempotent_response(row),
            )
        })
        .await
    }

    fn write_refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn close(&self) {
        self.close_writer().await;
        self.readers.close();
    }

    async fn events_by_correlation(
        &self,
        correlation_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let correlation_id = correlation_id.to_string();
        self.read(move |conn| {
            all(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM events WHERE correlation_id = ?1 ORDER BY position"
                ),
                [correlation_id],
                |row| decode_event(row),
            )
        })
        .await
    }

    async fn find_event(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        self.read_here(move |conn| {
            first(
                conn,
                &format!("SELECT {COLUMNS} FROM events WHERE event_id = ?1"),
                [event_id.to_string()],
                |row| decode_event(row),
            )
        })
        .await
    }
}
