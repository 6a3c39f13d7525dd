//! The embedded backend: one SQLite file in WAL mode.
//!
//! All writes go through a pool of exactly one connection. SQLite admits one writer at a
//! time anyway; queueing writers in our pool instead of in SQLite's busy handler keeps
//! latency predictable, and it makes the global order trivially safe: positions are
//! assigned and committed by one transaction after another. Reads use a separate pool and,
//! thanks to WAL, never wait for the writer. Writes are group-committed: those that
//! arrive while a commit is being made durable share the next commit (and its fsync).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_domain::{AggregateType, EventEnvelope, Metadata};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};

use crate::*;

pub struct SqliteEventStore {
    writer: SqlitePool,
    reader: SqlitePool,
    head: Arc<watch::Sender<u64>>,
    /// Every write goes to the group-commit writer (see [`run_group_commit`]).
    writes: mpsc::Sender<WriteJob>,
    /// Set by the writer while writes fail for a reason of the store's own (a full disk),
    /// cleared by the next commit that succeeds.
    refusal: Arc<std::sync::Mutex<Option<String>>>,
}

const COLUMNS: &str = "position, event_id, event_type, aggregate_type, aggregate_id, version, \
    schema_version, timestamp_us, data, metadata, topic, kafka_partition, kafka_offset, trace_id";

impl SqliteEventStore {
    /// Opens (creating if needed) `cornershop.db` under `data_dir` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Corrupt(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(data_dir.join("cornershop.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it is acknowledged, so an acknowledged event
            // survives a crash of the process and of the machine.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // SQLite rolls a whole transaction back by itself on some errors (full disk, I/O
        // error, out of memory, busy). The group commit must know, or it would go on
        // releasing savepoints of a transaction that is gone (see `commit_group`): the
        // writer's connection counts every rollback of a transaction (not of a savepoint).
        let rollbacks = Arc::new(AtomicU64::new(0));
        let hook = rollbacks.clone();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .after_connect(move |conn, _| {
                let hook = hook.clone();
                Box::pin(async move {
                    conn.lock_handle().await?.set_rollback_hook(move || {
                        hook.fetch_add(1, Ordering::SeqCst);
                    });
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&reader)
            .await?;
        let head = Arc::new(watch::Sender::new(head as u64));
        let (writes, queue) = mpsc::channel(4 * GROUP_COMMIT_MAX);
        let refusal = Arc::new(std::sync::Mutex::new(None));
        let writer_state = Writer {
            pool: writer.clone(),
            rollbacks,
            refusal: refusal.clone(),
        };
        tokio::spawn(run_group_commit(writer_state, head.clone(), queue));
        Ok(Self {
            writer,
            reader,
            head,
            writes,
            refusal,
        })
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} is out of range")))
}

/// A write waiting for the group-commit writer: it runs on the writer's connection inside
/// the batch's transaction and says whether it succeeded, and what to do once the batch
/// is committed (or not).
type WriteJob =
    Box<dyn for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> BoxFuture<'c, JobOutcome> + Send>;

/// What a job's run says to the group commit: how it went, and its answer to finish.
struct JobOutcome {
    succeeded: bool,
    /// The job failed in a way that can end the whole transaction (see [`Unavailable`]):
    /// the batch must not go on.
    fatal: Option<StoreError>,
    answer: Box<dyn Finish>,
}

/// What a write does after its batch's commit: answer its caller (only now, when the
/// outcome is durable) and report the log position it reached, if it appended.
trait Finish: Send {
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>) -> Option<u64>;
}

/// The answer to one write, held until the commit.
struct Answer<T> {
    outcome: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    /// Runs on a committed success; returns the log position reached (appends).
    on_commit: fn(&T) -> Option<u64>,
}

impl<T: Send> Finish for Answer<T> {
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>) -> Option<u64> {
        let outcome = match (commit, self.outcome) {
            (Ok(()), outcome) => outcome,
            // The commit failed: nothing of the batch is stored.
            (Err(e), Ok(_)) => Err(shared_failure(e)),
            (Err(_), Err(e)) => Err(e),
        };
        let position = outcome.as_ref().ok().and_then(self.on_commit);
        let _ = self.reply.send(outcome);
        position
    }
}

/// Events per INSERT statement (12 parameters each; SQLite allows 32,766 per statement).
const INSERT_CHUNK: usize = 1000;

/// Most writes one commit takes: bounds the latency a commit adds to the first of them.
const GROUP_COMMIT_MAX: usize = 256;

impl SqliteEventStore {
    /// Runs `write` in the writer's next group commit and answers once that commit is
    /// durable (or failed).
    async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        self.write_then(write, |_| None).await
    }

    async fn write_then<T, F>(
        &self,
        write: F,
        on_commit: fn(&T) -> Option<u64>,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            Box::pin(async move {
                let outcome = write(conn).await;
                let succeeded = outcome.is_ok();
                let fatal = match &outcome {
                    Err(e) => e
                        .unavailability()
                        .map(|kind| StoreError::unavailable(kind, e.to_string())),
                    Ok(_) => None,
                };
                JobOutcome {
                    succeeded,
                    fatal,
                    answer: Box::new(Answer {
                        outcome,
                        reply,
                        on_commit,
                    }),
                }
            })
        });
        self.writes
            .send(job)
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }
}

/// The group-commit writer's connection pool (one connection) and the count of the
/// transaction rollbacks SQLite made on it, by itself or asked.
struct Writer {
    pool: SqlitePool,
    rollbacks: Arc<AtomicU64>,
    refusal: Arc<std::sync::Mutex<Option<String>>>,
}

/// Group commit: every write (appends, checkpoints, timers, notifications, leases, ...)
/// queues here while the previous commit is being made durable, and the next commit takes
/// all of them (up to [`GROUP_COMMIT_MAX`]) in one transaction, so that they share one
/// fsync. Each runs under its own savepoint: one that fails (a version conflict, a used
/// idempotency or dedupe key) is rolled back alone and answered with its error; the
/// others commit. Nobody is answered before the commit is durable.
///
/// A failure that can end the transaction (a full disk, an I/O error, out of memory, a
/// busy database: see [`Unavailable`]) fails the whole batch: every job of it is answered
/// with that error and none with success, because SQLite may have rolled back everything
/// before it. The writer then carries on with the next batch, so writes succeed again by
/// themselves once the cause (a full disk) is gone.
async fn run_group_commit(
    writer: Writer,
    head: Arc<watch::Sender<u64>>,
    mut queue: mpsc::Receiver<WriteJob>,
) {
    let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
    while queue.recv_many(&mut batch, GROUP_COMMIT_MAX).await > 0 {
        let jobs = std::mem::take(&mut batch);
        let mut answers = Vec::with_capacity(jobs.len());
        let committed = commit_group(&writer, jobs, &mut answers).await;
        let refusal = match &committed {
            Err(e) => {
                tracing::error!(error = %e, writes = answers.len(), "a group commit failed; none of its writes is stored");
                e.unavailability().map(|_| {
                    format!(
                        "since {}: {e}",
                        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                })
            }
            Ok(()) => None,
        };
        {
            let mut current = writer.refusal.lock().unwrap_or_else(|p| p.into_inner());
            match (refusal, current.is_some()) {
                (Some(why), false) => *current = Some(why),
                (None, true) if committed.is_ok() => {
                    tracing::info!("the store takes writes again");
                    *current = None;
                }
                _ => {}
            }
        }
        let mut last_position = None;
        for answer in answers {
            if let Some(position) = answer.finish(committed.as_ref().map(|_| ())) {
                last_position = Some(position);
            }
        }
        if let Some(position) = last_position {
            head.send_if_modified(|head| {
                let newer = position > *head;
                if newer {
                    *head = position;
                }
                newer
            });
        }
    }
}

/// The error each write of a batch gets when the batch as a whole failed (sqlx errors are
/// not `Clone`). Its kind says whether the store is unavailable (a full disk, say), so
/// that the caller can answer 507 or 503 rather than 500.
fn shared_failure(e: &StoreError) -> StoreError {
    let detail = format!("the commit of this write's batch failed, nothing of it is stored: {e}");
    match e.unavailability() {
        Some(kind) => StoreError::unavailable(kind, detail),
        None => StoreError::Database(sqlx::Error::Io(std::io::Error::other(detail))),
    }
}

/// Runs each job under a savepoint of one transaction and commits it. Any error returned
/// here fails every job of the batch (the transaction rolls back when dropped).
///
/// After a failed batch the connection is closed, not reused: when SQLite has rolled the
/// transaction back by itself, sqlx's own ROLLBACK fails and its count of open
/// transactions and savepoints no longer matches SQLite's, so its next BEGIN, COMMIT or
/// RELEASE would not mean what it says. A new connection starts from a known state.
async fn commit_group(
    writer: &Writer,
    jobs: Vec<WriteJob>,
    answers: &mut Vec<Box<dyn Finish>>,
) -> Result<(), StoreError> {
    let mut conn = writer.pool.acquire().await?;
    let committed = commit_group_on(&mut conn, writer, jobs, answers).await;
    if committed.is_err() {
        conn.close_on_drop();
    }
    committed
}

async fn commit_group_on(
    conn: &mut sqlx::pool::PoolConnection<Sqlite>,
    writer: &Writer,
    jobs: Vec<WriteJob>,
    answers: &mut Vec<Box<dyn Finish>>,
) -> Result<(), StoreError> {
    let mut tx = sqlx::Connection::begin(&mut **conn).await?;
    let rollbacks_before = writer.rollbacks.load(Ordering::SeqCst);
    // Whether SQLite has rolled the batch's transaction back by itself: then the
    // savepoints released so far are gone, and a later SAVEPOINT would silently start a
    // new transaction.
    let transaction_lost = || writer.rollbacks.load(Ordering::SeqCst) != rollbacks_before;
    for job in jobs {
        let mut savepoint = match sqlx::Connection::begin(&mut *tx).await {
            Ok(savepoint) => savepoint,
            // Without a savepoint the job cannot run alone: fail the batch (the jobs not
            // run yet are dropped, and their callers get an error).
            Err(e) => return Err(e.into()),
        };
        let JobOutcome {
            succeeded,
            fatal,
            answer,
        } = job(&mut savepoint).await;
        answers.push(answer);
        if let Some(e) = fatal {
            return Err(e);
        }
        if succeeded {
            // A savepoint that cannot be released leaves the transaction in doubt.
            savepoint.commit().await?;
        }
        // (A failed job's savepoint is rolled back, and only it, when dropped.)
        if transaction_lost() {
            return Err(StoreError::unavailable(
                Unavailable::Unreachable,
                "SQLite rolled the transaction back by itself",
            ));
        }
    }
    tx.commit().await.map_err(StoreError::from)
}

/// One append inside the writer's transaction: the expected-version check, the events,
/// the idempotency record and the dedupe key. Positions are assigned by the inserts.
async fn append_in(
    conn: &mut sqlx::SqliteConnection,
    request: AppendRequest,
) -> Result<Vec<StoredEvent>, StoreError> {
    let actual: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_type = ? AND aggregate_id = ?",
        )
        .bind(request.aggregate_type.as_str())
        .bind(&request.aggregate_id)
        .fetch_one(&mut *conn)
        .await?;
    if actual as u64 != request.expected_version {
        return Err(StoreError::Conflict {
            aggregate_type: request.aggregate_type,
            aggregate_id: request.aggregate_id,
            expected: request.expected_version,
            actual: actual as u64,
        });
    }

    let (mut stored, rows) = crate::events_to_store(
        request.aggregate_type,
        &request.aggregate_id,
        request.expected_version,
        request.events,
    )?;
    // One multi-row INSERT per chunk: a batch of events is one statement, not one per
    // event (each statement is a round trip to sqlx's SQLite worker thread).
    for (chunk, chunk_rows) in stored
        .chunks_mut(INSERT_CHUNK)
        .zip(rows.chunks(INSERT_CHUNK))
    {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, version, \
             schema_version, timestamp_us, data, metadata, correlation_id, causation_id, \
             trace_id) ",
        );
        sql.push_values(
            chunk.iter().zip(chunk_rows),
            |mut row, (e, (data, meta))| {
                let envelope = &e.envelope;
                row.push_bind(envelope.event_id.to_string())
                    .push_bind(envelope.event_type.clone())
                    .push_bind(envelope.aggregate_type.as_str())
                    .push_bind(envelope.aggregate_id.clone())
                    .push_bind(envelope.version as i64)
                    .push_bind(i64::from(envelope.schema_version))
                    .push_bind(micros(envelope.timestamp))
                    .push_bind(data.clone())
                    .push_bind(meta.clone())
                    .push_bind(envelope.metadata.correlation_id.clone())
                    .push_bind(envelope.metadata.causation_id.clone())
                    .push_bind(e.trace_id.clone());
            },
        );
        // RETURNING's row order is not promised: match the positions by version.
        sql.push(" RETURNING version, position");
        let inserted = sql.build().fetch_all(&mut *conn).await?;
        let first_version = chunk[0].envelope.version;
        for row in inserted {
            let version: i64 = row.try_get("version")?;
            let position: i64 = row.try_get("position")?;
            chunk[(version as u64 - first_version) as usize].position = position as u64;
        }
    }

    if let Some(response) = &request.idempotency {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_us) \
                 VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&response.key)
        .bind(&response.fingerprint)
        .bind(response.status as i64)
        .bind(&response.body)
        .bind(micros(Utc::now()))
        .execute(&mut *conn)
        .await;
        crate::unless_taken(inserted, || {
            StoreError::IdempotencyKeyTaken(response.key.clone())
        })?;
    }

    if let Some(key) = &request.dedupe_key {
        let inserted =
            sqlx::query("INSERT INTO applied_commands (dedupe_key, applied_us) VALUES (?, ?)")
                .bind(key)
                .bind(micros(Utc::now()))
                .execute(&mut *conn)
                .await;
        crate::unless_taken(inserted, || StoreError::AlreadyApplied(key.clone()))?;
    }

    Ok(stored)
}

fn decode_row(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    let aggregate_type: String = row.try_get("aggregate_type")?;
    let event_id: String = row.try_get("event_id")?;
    let data: String = row.try_get("data")?;
    let metadata: String = row.try_get("metadata")?;
    let metadata: Metadata =
        serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", &e))?;
    Ok(StoredEvent {
        trace_id: crate::stored_trace_id(row.try_get("trace_id")?, &metadata),
        position: row.try_get::<i64, _>("position")? as u64,
        envelope: EventEnvelope {
            event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt("event_id", &e))?,
            event_type: row.try_get("event_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            aggregate_type: AggregateType::parse(&aggregate_type)
                .ok_or_else(|| corrupt("aggregate_type", &aggregate_type))?,
            timestamp: from_micros(row.try_get("timestamp_us")?)?,
            version: row.try_get::<i64, _>("version")? as u64,
            schema_version: row.try_get::<i64, _>("schema_version")? as u32,
            data: serde_json::from_str(&data).map_err(|e| corrupt("data", &e))?,
            metadata,
        },
        topic: row.try_get("topic")?,
        partition: row.try_get("kafka_partition")?,
        offset: row.try_get("kafka_offset")?,
    })
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, StoreError> {
        self.write_then(
            move |conn| Box::pin(append_in(conn, request)),
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
        let mut sql = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {COLUMNS} FROM events WHERE aggregate_type = "
        ));
        sql.push_bind(aggregate_type.as_str())
            .push(" AND aggregate_id = ")
            .push_bind(aggregate_id);
        push_range(&mut sql, range);
        sql.push(" ORDER BY version");
        let rows = sql.build().fetch_all(&self.reader).await?;
        rows.iter().map(decode_row).collect()
    }

    async fn load_aggregate_after(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        after_version: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE aggregate_type = ? AND aggregate_id = ? \
             AND version > ? ORDER BY version"
        ))
        .bind(aggregate_type.as_str())
        .bind(aggregate_id)
        .bind(after_version as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let mut sql =
            QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM events WHERE position > "));
        sql.push_bind(query.after as i64);
        if let Some(t) = query.aggregate_type {
            sql.push(" AND aggregate_type = ").push_bind(t.as_str());
        }
        if let Some(t) = &query.event_type {
            sql.push(" AND event_type = ").push_bind(t.clone());
        }
        push_range(&mut sql, query.range);
        sql.push(" ORDER BY position LIMIT ")
            .push_bind(query.limit as i64);
        let rows = sql.build().fetch_all(&self.reader).await?;
        rows.iter().map(decode_row).collect()
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&self.reader)
            .await?;
        Ok(head as u64)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut by_event_type = BTreeMap::new();
        for row in sqlx::query("SELECT event_type, COUNT(*) AS n FROM events GROUP BY event_type")
            .fetch_all(&self.reader)
            .await?
        {
            by_event_type.insert(
                row.try_get("event_type")?,
                row.try_get::<i64, _>("n")? as u64,
            );
        }
        let mut by_aggregate_type = BTreeMap::new();
        for row in
            sqlx::query("SELECT aggregate_type, COUNT(*) AS n FROM events GROUP BY aggregate_type")
                .fetch_all(&self.reader)
                .await?
        {
            by_aggregate_type.insert(
                row.try_get("aggregate_type")?,
                row.try_get::<i64, _>("n")? as u64,
            );
        }
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, COALESCE(MAX(position), 0) AS head, \
             MIN(timestamp_us) AS first_us, MAX(timestamp_us) AS last_us, \
             (SELECT COUNT(*) FROM events WHERE version = 1) AS aggregates FROM events",
        )
        .fetch_one(&self.reader)
        .await?;
        let first: Option<i64> = row.try_get("first_us")?;
        let last: Option<i64> = row.try_get("last_us")?;
        Ok(StoreStats {
            total_events: row.try_get::<i64, _>("total")? as u64,
            total_aggregates: row.try_get::<i64, _>("aggregates")? as u64,
            head_position: row.try_get::<i64, _>("head")? as u64,
            by_event_type,
            by_aggregate_type,
            first_event_at: first.map(from_micros).transpose()?,
            last_event_at: last.map(from_micros).transpose()?,
        })
    }

    async fn find_idempotent_response(
        &self,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        let row = sqlx::query(
            "SELECT key, fingerprint, status, body FROM idempotency_keys WHERE key = ?",
        )
        .bind(key)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok(IdempotentResponse {
                key: row.try_get("key")?,
                fingerprint: row.try_get("fingerprint")?,
                status: row.try_get::<i64, _>("status")? as u16,
                body: row.try_get("body")?,
            })
        })
        .transpose()
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
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn events_by_correlation(
        &self,
        correlation_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE correlation_id = ? ORDER BY position"
        ))
        .bind(correlation_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    async fn find_event(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM events WHERE event_id = ?"))
            .bind(event_id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(decode_row).transpose()
    }

    async fn is_applied(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM applied_commands WHERE dedupe_key = ?")
                .bind(dedupe_key)
                .fetch_optional(&self.reader)
                .await?;
        Ok(found.is_some())
    }

    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE consumer = ?")
                .bind(consumer)
                .fetch_optional(&self.reader)
                .await?;
        Ok(position.unwrap_or(0) as u64)
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<(), StoreError> {
        let consumer = consumer.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO checkpoints (consumer, position, updated_us) VALUES (?, ?, ?) \
                     ON CONFLICT (consumer) DO UPDATE SET \
                     position = MAX(position, excluded.position), updated_us = excluded.updated_us",
                )
                .bind(consumer)
                .bind(position as i64)
                .bind(micros(Utc::now()))
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows =
            sqlx::query("SELECT consumer, position, updated_us FROM checkpoints ORDER BY consumer")
                .fetch_all(&self.reader)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(Checkpoint {
                    consumer: row.try_get("consumer")?,
                    position: row.try_get::<i64, _>("position")? as u64,
                    updated_at: from_micros(row.try_get("updated_us")?)?,
                })
            })
            .collect()
    }

    async fn record_dead_letter(
        &self,
        consumer: &str,
        event: &StoredEvent,
        error: &str,
        attempts: u32,
        first_failed_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let consumer = consumer.to_string();
        let event_id = event.envelope.event_id.to_string();
        let position = event.position as i64;
        let event_type = event.envelope.event_type.clone();
        let aggregate_id = event.envelope.aggregate_id.clone();
        let error = error.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let id: i64 = sqlx::query_scalar(
            "INSERT INTO dead_letters (consumer, event_id, position, event_type, aggregate_id, \
             error, attempts, first_failed_us, last_failed_us, status) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending') \
             ON CONFLICT (consumer, event_id) DO UPDATE SET error = excluded.error, \
             attempts = dead_letters.attempts + excluded.attempts, \
             last_failed_us = excluded.last_failed_us, status = 'pending' \
             RETURNING id",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(position)
        .bind(event_type)
        .bind(aggregate_id)
        .bind(error)
        .bind(attempts as i64)
        .bind(micros(first_failed_at))
        .bind(micros(Utc::now()))
        .fetch_one(&mut *conn)
        .await?;
                Ok(id as u64)
            })
        })
        .await
    }

    async fn dead_letters(&self, status: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT id, consumer, event_id, position, event_type, aggregate_id, error, attempts, \
             first_failed_us, last_failed_us, status FROM dead_letters",
        );
        if let Some(status) = status {
            sql.push(" WHERE status = ").push_bind(status.to_string());
        }
        sql.push(" ORDER BY id");
        let rows = sql.build().fetch_all(&self.reader).await?;
        rows.iter().map(decode_dead_letter).collect()
    }

    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(
            "SELECT id, consumer, event_id, position, event_type, aggregate_id, error, attempts, \
             first_failed_us, last_failed_us, status FROM dead_letters WHERE id = ?",
        )
        .bind(id as i64)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(decode_dead_letter).transpose()
    }

    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query("UPDATE dead_letters SET status = 'resolved' WHERE id = ?")
                    .bind(id as i64)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

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
        rows.iter()
            .map(|row| {
                let payload: String = row.try_get("payload")?;
                Ok(Timer {
                    key: row.try_get("key")?,
                    kind: row.try_get("kind")?,
                    due_at: from_micros(row.try_get("due_us")?)?,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| StoreError::Corrupt(format!("timer payload: {e}")))?,
                })
            })
            .collect()
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

    async fn record_publications(&self, published: &[Publication]) -> Result<(), StoreError> {
        let published = published.to_vec();
        self.write(move |conn| {
            Box::pin(async move {
        for p in &published {
            sqlx::query(
                "UPDATE events SET topic = ?, kafka_partition = ?, kafka_offset = ? WHERE position = ?",
            )
            .bind(&p.topic)
            .bind(p.partition)
            .bind(p.offset)
            .bind(p.position as i64)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
            })
        })
        .await
    }

    async fn record_notifications(
        &self,
        notifications: &[NewNotification],
    ) -> Result<u64, StoreError> {
        let notifications = notifications.to_vec();
        self.write(move |conn| {
            Box::pin(async move {
                let mut inserted = 0;
                for n in &notifications {
                    let created = micros(n.created_at);
                    inserted += sqlx::query(
                "INSERT INTO notifications (event_id, event_type, channel, template, order_id, \
                 customer_id, recipient, subject, body_text, body_html, status, attempts, \
                 next_attempt_us, created_us, updated_us, correlation_id, trace_id) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?) \
                 ON CONFLICT (event_id, channel) DO NOTHING",
            )
            .bind(n.event_id.to_string())
            .bind(&n.event_type)
            .bind(&n.channel)
            .bind(&n.template)
            .bind(&n.order_id)
            .bind(&n.customer_id)
            .bind(&n.recipient)
            .bind(&n.subject)
            .bind(&n.body_text)
            .bind(&n.body_html)
            .bind(created)
            .bind(created)
            .bind(created)
            .bind(&n.correlation_id)
            .bind(&n.trace_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
                }
                Ok(inserted)
            })
        })
        .await
    }

    async fn due_notifications(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE channel = ? \
             AND status IN ('pending', 'retrying') AND next_attempt_us <= ? \
             ORDER BY next_attempt_us, id LIMIT ?"
        ))
        .bind(channel)
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_notification).collect()
    }

    async fn next_notification_due(
        &self,
        channel: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_us) FROM notifications WHERE channel = ? \
             AND status IN ('pending', 'retrying')",
        )
        .bind(channel)
        .fetch_one(&self.reader)
        .await?;
        due.map(from_micros).transpose()
    }

    async fn update_notification(&self, update: &NotificationUpdate) -> Result<bool, StoreError> {
        let update = update.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let changed = sqlx::query(
                    "UPDATE notifications SET status = ?, attempts = ?, \
             provider_message_id = COALESCE(?, provider_message_id), last_error = ?, \
             next_attempt_us = ?, updated_us = ? \
             WHERE id = ? AND status IN ('pending', 'retrying')",
                )
                .bind(&update.status)
                .bind(i64::from(update.attempts))
                .bind(&update.provider_message_id)
                .bind(&update.last_error)
                .bind(micros(update.next_attempt_at))
                .bind(micros(Utc::now()))
                .bind(update.id as i64)
                .execute(&mut *conn)
                .await?;
                Ok(changed.rows_affected() == 1)
            })
        })
        .await
    }

    async fn redrive_notification(
        &self,
        dead_letter_id: u64,
        event_id: Uuid,
        channel: &str,
    ) -> Result<bool, StoreError> {
        let channel = channel.to_string();
        self.write(move |conn| {
            Box::pin(async move {
                let now = micros(Utc::now());
                sqlx::query("UPDATE dead_letters SET status = 'resolved' WHERE id = ?")
                    .bind(dead_letter_id as i64)
                    .execute(&mut *conn)
                    .await?;
                let requeued = sqlx::query(
                    "UPDATE notifications SET status = 'retrying', attempts = 0, \
                     next_attempt_us = ?, updated_us = ? \
                     WHERE event_id = ? AND channel = ? AND status = 'failed'",
                )
                .bind(now)
                .bind(now)
                .bind(event_id.to_string())
                .bind(channel)
                .execute(&mut *conn)
                .await?;
                Ok(requeued.rows_affected() == 1)
            })
        })
        .await
    }

    async fn notifications(
        &self,
        query: &NotificationQuery,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE 1 = 1"
        ));
        for (column, value) in [
            ("order_id", &query.order_id),
            ("customer_id", &query.customer_id),
            ("channel", &query.channel),
            ("status", &query.status),
        ] {
            if let Some(value) = value {
                sql.push(format!(" AND {column} = "))
                    .push_bind(value.clone());
            }
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows = sql.build().fetch_all(&self.reader).await?;
        rows.iter().map(decode_notification).collect()
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

fn decode_dead_letter(row: &SqliteRow) -> Result<DeadLetter, StoreError> {
    let event_id: String = row.try_get("event_id")?;
    Ok(DeadLetter {
        id: row.try_get::<i64, _>("id")? as u64,
        consumer: row.try_get("consumer")?,
        event_id: Uuid::parse_str(&event_id)
            .map_err(|e| StoreError::Corrupt(format!("dead letter event_id: {e}")))?,
        position: row.try_get::<i64, _>("position")? as u64,
        event_type: row.try_get("event_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        error: row.try_get("error")?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        first_failed_at: from_micros(row.try_get("first_failed_us")?)?,
        last_failed_at: from_micros(row.try_get("last_failed_us")?)?,
        status: row.try_get("status")?,
    })
}

const NOTIFICATION_COLUMNS: &str = "id, event_id, event_type, channel, template, order_id, \
    customer_id, recipient, subject, body_text, body_html, status, attempts, \
    provider_message_id, last_error, next_attempt_us, created_us, updated_us, correlation_id, trace_id";

fn decode_notification(row: &SqliteRow) -> Result<Notification, StoreError> {
    let event_id: String = row.try_get("event_id")?;
    Ok(Notification {
        id: row.try_get::<i64, _>("id")? as u64,
        event_id: Uuid::parse_str(&event_id)
            .map_err(|e| StoreError::Corrupt(format!("notification event_id: {e}")))?,
        event_type: row.try_get("event_type")?,
        channel: row.try_get("channel")?,
        template: row.try_get("template")?,
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        recipient: row.try_get("recipient")?,
        subject: row.try_get("subject")?,
        body_text: row.try_get("body_text")?,
        body_html: row.try_get("body_html")?,
        correlation_id: row.try_get("correlation_id")?,
        trace_id: row.try_get("trace_id")?,
        status: row.try_get("status")?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        provider_message_id: row.try_get("provider_message_id")?,
        last_error: row.try_get("last_error")?,
        next_attempt_at: from_micros(row.try_get("next_attempt_us")?)?,
        created_at: from_micros(row.try_get("created_us")?)?,
        updated_at: from_micros(row.try_get("updated_us")?)?,
    })
}

fn push_range(sql: &mut QueryBuilder<'_, Sqlite>, range: TimeRange) {
    if let Some(from) = range.from {
        sql.push(" AND timestamp_us >= ").push_bind(micros(from));
    }
    if let Some(to) = range.to {
        sql.push(" AND timestamp_us <= ").push_bind(micros(to));
    }
}
