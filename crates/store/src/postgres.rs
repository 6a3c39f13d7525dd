//! The production backend: PostgreSQL, shared by several processes.
//!
//! The tables mirror the SQLite backend's (`migrations/postgres`), with native types:
//! `UUID` ids, `JSON` payloads (kept as written, key order included) and `TIMESTAMPTZ`
//! timestamps, which hold microseconds exactly like the SQLite backend's `*_us` columns;
//! append truncates a timestamp to the microsecond before it stores or returns it, so what
//! append returns is what a later read returns.
//!
//! Two things work differently from SQLite, because PostgreSQL runs writers concurrently
//! and several processes share one database:
//!
//! 1. **One global order without skipping.** A sequence alone is not enough: a transaction
//!    that drew position *n* early but commits late would become visible after *n + 1*, and
//!    a reader tailing the log by position would already have passed *n*. So every append
//!    takes a transaction-scoped advisory lock (`pg_advisory_xact_lock(APPEND_LOCK)`)
//!    right before it inserts its events, and holds it until it commits: positions (an
//!    identity column with the default `CACHE 1`) are drawn and committed by one append
//!    after another. PostgreSQL releases the lock only after the commit is visible, so a
//!    snapshot that sees a position also sees every position below it. An aborted append
//!    leaves a gap that never fills, which readers tolerate (they page by `position >
//!    after`, never by counting). The lock covers only the event inserts, the notify and
//!    the commit: the expected-version check runs before it, and the idempotency record and
//!    the applied-command key are inserted before it too (so that a transaction never waits
//!    for a key while holding the lock, and no two appends can deadlock). The check stays
//!    race-free: two appends that both passed it insert the same version, the unique
//!    `(aggregate_type, aggregate_id, version)` constraint refuses the second once the
//!    first has committed (it waited for the lock), and that refusal is reported as
//!    [`StoreError::Conflict`] with the version read again.
//! 2. **`watch_head` across processes.** The append transaction runs
//!    `pg_notify('cornershop_events', <last position>)`, which PostgreSQL delivers at
//!    commit, in commit order, to every session listening. Each store runs a background
//!    task with a [`PgListener`] on its own connection that raises the head watch to the
//!    notified position (never lowers it), so consumers in every process wake for every
//!    process's appends. The appending process also raises it itself right after its
//!    commit. Notifications are not durable: when the listener's connection is lost, the
//!    task reconnects, listens again, and then reads `MAX(position)` to catch up on what
//!    it missed.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::truncate_to_micros as truncate;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_domain::{AggregateType, EventEnvelope, Metadata};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::*;

/// The key of the advisory lock that serializes appends (ASCII "CSEVENTS").
const APPEND_LOCK: i64 = 0x4353_4556_454E_5453;

/// The channel on which appends announce the new head of the log.
const CHANNEL: &str = "cornershop_events";

/// The constraint that makes versions unique per aggregate (migrations/postgres).
const VERSION_CONSTRAINT: &str = "events_aggregate_version_unique";

/// Rows per INSERT statement (PostgreSQL allows at most 65535 bind parameters).
const INSERT_CHUNK: usize = 1000;

/// The longest lease we store; a longer ttl is treated as this one.
const MAX_LEASE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub struct PgEventStore {
    pool: PgPool,
    /// One connection, used only by the head listener.
    listen_pool: PgPool,
    head: Arc<watch::Sender<u64>>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

const COLUMNS: &str = "position, event_id::text AS event_id, event_type, aggregate_type, \
    aggregate_id, version, schema_version, occurred_at, data::text AS data, \
    metadata::text AS metadata, topic, kafka_partition, kafka_offset, trace_id";

const DEAD_LETTER_COLUMNS: &str = "id, consumer, event_id::text AS event_id, position, \
    event_type, aggregate_id, error, attempts, first_failed_at, last_failed_at, status";

impl PgEventStore {
    /// Connects to `database_url` (`postgres://user:password@host:port/database`), runs the
    /// migrations, starts the head listener and reads the current head.
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        Self::connect_with(PgConnectOptions::from_str(database_url)?).await
    }

    /// [`PgEventStore::connect`] with options built in code.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let named = |name: &str| match options.get_application_name() {
            Some(_) => options.clone(),
            None => options.clone().application_name(name),
        };
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // While PostgreSQL is away the pool keeps trying to connect until this runs
            // out: long enough for a busy pool's queue, short enough that a request is
            // answered 503 (with Retry-After) within moments of an outage.
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(named("cornershop"))
            .await?;
        // sqlx takes an advisory lock while migrating: processes starting together are safe.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(named("cornershop-head-listener"))
            .await?;
        // Listen before reading the head, so that no append falls between the two.
        let listener = listen(&listen_pool).await?;
        let head = Arc::new(watch::Sender::new(read_head(&pool).await?));
        let task = tokio::spawn(follow_head(
            listener,
            listen_pool.clone(),
            pool.clone(),
            head.clone(),
        ));
        Ok(Self {
            pool,
            listen_pool,
            head,
            listener: Mutex::new(Some(task)),
        })
    }

    /// Test hook: [`EventStore::append`], but holding the transaction open for `delay`
    /// after the events are inserted and before the commit, as a slow writer would. The
    /// store contract uses it to check that a reader never skips an event.
    #[doc(hidden)]
    pub async fn append_with_delay(
        &self,
        request: AppendRequest,
        delay: Duration,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.append_inner(request, Some(delay)).await
    }

    async fn append_inner(
        &self,
        request: AppendRequest,
        delay: Option<Duration>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let actual =
            current_version(&mut *tx, request.aggregate_type, &request.aggregate_id).await?;
        if actual != request.expected_version {
            return Err(StoreError::Conflict {
                aggregate_type: request.aggregate_type,
                aggregate_id: request.aggregate_id,
                expected: request.expected_version,
                actual,
            });
        }

        // The keys go in before the append lock is taken: a second request with the same
        // key waits here for the first to finish, without holding the lock.
        if let Some(response) = &request.idempotency {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&response.key)
            .bind(&response.fingerprint)
            .bind(i32::from(response.status))
            .bind(&response.body)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await;
            crate::unless_taken(inserted, || {
                StoreError::IdempotencyKeyTaken(response.key.clone())
            })?;
        }
        if let Some(key) = &request.dedupe_key {
            let inserted = sqlx::query(
                "INSERT INTO applied_commands (dedupe_key, applied_at) VALUES ($1, $2)",
            )
            .bind(key)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await;
            crate::unless_taken(inserted, || StoreError::AlreadyApplied(key.clone()))?;
        }

        let (mut stored, rows) = crate::events_to_store(
            request.aggregate_type,
            &request.aggregate_id,
            request.expected_version,
            request.events,
        )?;

        if !stored.is_empty() {
            // From here to the commit, appends run one at a time: see the module comment.
            // (To see the contract's slow-writer check fail, comment this statement out.)
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(APPEND_LOCK)
                .execute(&mut *tx)
                .await?;
            for (chunk, chunk_rows) in stored
                .chunks_mut(INSERT_CHUNK)
                .zip(rows.chunks(INSERT_CHUNK))
            {
                let mut sql = QueryBuilder::<Postgres>::new(
                    "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, \
                     version, schema_version, occurred_at, data, metadata, correlation_id, \
                     causation_id, trace_id) ",
                );
                sql.push_values(
                    chunk.iter().zip(chunk_rows),
                    |mut row, (stored, (data, meta))| {
                        let e = &stored.envelope;
                        row.push_bind(e.event_id.to_string())
                            .push_unseparated("::uuid")
                            .push_bind(e.event_type.clone())
                            .push_bind(e.aggregate_type.as_str())
                            .push_bind(e.aggregate_id.clone())
                            .push_bind(e.version as i64)
                            .push_bind(i64::from(e.schema_version))
                            .push_bind(e.timestamp)
                            .push_bind(data.clone())
                            .push_unseparated("::json")
                            .push_bind(meta.clone())
                            .push_unseparated("::json")
                            .push_bind(e.metadata.correlation_id.clone())
                            .push_bind(e.metadata.causation_id.clone())
                            .push_bind(stored.trace_id.clone());
                    },
                );
                sql.push(" RETURNING version, position");
                let inserted = sql.build().fetch_all(&mut *tx).await;
                let inserted = match inserted {
                    Err(e) if violates(&e, VERSION_CONSTRAINT) => {
                        // Another append to this aggregate committed after our check.
                        tx.rollback().await?;
                        let actual = current_version(
                            &self.pool,
                            request.aggregate_type,
                            &request.aggregate_id,
                        )
                        .await?;
                        return Err(StoreError::Conflict {
                            aggregate_type: request.aggregate_type,
                            aggregate_id: request.aggregate_id,
                            expected: request.expected_version,
                            actual,
                        });
                    }
                    Err(e) => {
                        tx.rollback().await?;
                        return Err(e.into());
                    }
                    Ok(rows) => rows,
                };
                for row in inserted {
                    let version = row.try_get::<i64, _>("version")? as u64;
                    let position = row.try_get::<i64, _>("position")? as u64;
                    let event = chunk
                        .iter_mut()
                        .find(|e| e.envelope.version == version)
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "insert returned unknown version {version}"
                            ))
                        })?;
                    event.position = position;
                }
            }
            let last = stored.last().map_or(0, |e| e.position);
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(last.to_string())
                .execute(&mut *tx)
                .await?;
        }

        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        tx.commit().await.map_err(commit_failure)?;
        count_stored(&stored);
        if let Some(last) = stored.last() {
            raise(&self.head, last.position);
        }
        Ok(stored)
    }
}

impl Drop for PgEventStore {
    fn drop(&mut self) {
        if let Some(task) = self.listener.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }
}

/// Raises the head watch to `position`; never lowers it.
fn raise(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|head| {
        let newer = position > *head;
        if newer {
            *head = position;
        }
        newer
    });
}

async fn read_head(pool: &PgPool) -> Result<u64, StoreError> {
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(head as u64)
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// The head listener: raises the head watch for every append notified on [`CHANNEL`], from
/// this process or any other, until the store is closed or dropped.
async fn follow_head(
    listener: PgListener,
    listen_pool: PgPool,
    pool: PgPool,
    head: Arc<watch::Sender<u64>>,
) {
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut listener = Some(listener);
    let mut backoff = Duration::from_millis(100);
    loop {
        if listen_pool.is_closed() {
            return;
        }
        let Some(current) = listener.as_mut() else {
            match listen(&listen_pool).await {
                Ok(l) => {
                    tracing::info!("head listener reconnected");
                    listener = Some(l);
                    backoff = Duration::from_millis(100);
                    catch_up(&pool, &head).await;
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    tracing::warn!(%error, "head listener cannot reconnect; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        match current.try_recv().await {
            Ok(Some(notification)) => match notification.payload().parse::<u64>() {
                Ok(position) => raise(&head, position),
                Err(_) => {
                    tracing::warn!(payload = notification.payload(), "odd head notification");
                    catch_up(&pool, &head).await;
                }
            },
            // The connection was lost and re-established (and listens again): whatever was
            // notified meanwhile is gone, so read the head instead.
            Ok(None) => {
                tracing::info!("head listener reconnected");
                catch_up(&pool, &head).await;
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::warn!(%error, "head listener lost its connection; reconnecting");
                listener = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn catch_up(pool: &PgPool, head: &watch::Sender<u64>) {
    match read_head(pool).await {
        Ok(position) => raise(head, position),
        Err(error) => tracing::warn!(%error, "cannot read the head of the log"),
    }
}

async fn current_version<'e, E>(
    executor: E,
    aggregate_type: AggregateType,
    aggregate_id: &str,
) -> Result<u64, StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let version: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type.as_str())
    .bind(aggregate_id)
    .fetch_one(executor)
    .await?;
    Ok(version as u64)
}

fn decode_row(row: &PgRow) -> Result<StoredEvent, StoreError> {
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
            timestamp: row.try_get("occurred_at")?,
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

fn decode_dead_letter(row: &PgRow) -> Result<DeadLetter, StoreError> {
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
        first_failed_at: row.try_get("first_failed_at")?,
        last_failed_at: row.try_get("last_failed_at")?,
        status: row.try_get("status")?,
    })
}

const NOTIFICATION_COLUMNS: &str = "id, event_id::text AS event_id, event_type, channel, \
    template, order_id, customer_id, recipient, subject, body_text, body_html, status, attempts, \
    provider_message_id, last_error, next_attempt_at, created_at, updated_at, correlation_id, trace_id";

fn decode_notification(row: &PgRow) -> Result<Notification, StoreError> {
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
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn violates(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.is_unique_violation() && db.constraint() == Some(constraint))
}

fn push_range(sql: &mut QueryBuilder<'_, Postgres>, range: TimeRange) -> Result<(), StoreError> {
    if let Some(from) = range.from {
        sql.push(" AND occurred_at >= ").push_bind(truncate(from)?);
    }
    if let Some(to) = range.to {
        sql.push(" AND occurred_at <= ").push_bind(truncate(to)?);
    }
    Ok(())
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, StoreError> {
        self.append_inner(request, None).await
    }

    async fn load_aggregate(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        range: TimeRange,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {COLUMNS} FROM events WHERE aggregate_type = "
        ));
        sql.push_bind(aggregate_type.as_str())
            .push(" AND aggregate_id = ")
            .push_bind(aggregate_id);
        push_range(&mut sql, range)?;
        sql.push(" ORDER BY version");
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(decode_row).collect()
    }

    async fn load_aggregate_after(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        after_version: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             AND version > $3 ORDER BY version"
        ))
        .bind(aggregate_type.as_str())
        .bind(aggregate_id)
        .bind(after_version as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {COLUMNS} FROM events WHERE position > "
        ));
        sql.push_bind(query.after as i64);
        if let Some(t) = query.aggregate_type {
            sql.push(" AND aggregate_type = ").push_bind(t.as_str());
        }
        if let Some(t) = &query.event_type {
            sql.push(" AND event_type = ").push_bind(t.clone());
        }
        push_range(&mut sql, query.range)?;
        sql.push(" ORDER BY position LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(decode_row).collect()
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        read_head(&self.pool).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        // One snapshot for all three statements, so that the numbers agree.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut by_event_type = BTreeMap::new();
        for row in sqlx::query("SELECT event_type, COUNT(*) AS n FROM events GROUP BY event_type")
            .fetch_all(&mut *tx)
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
                .fetch_all(&mut *tx)
                .await?
        {
            by_aggregate_type.insert(
                row.try_get("aggregate_type")?,
                row.try_get::<i64, _>("n")? as u64,
            );
        }
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, COALESCE(MAX(position), 0) AS head, \
             MIN(occurred_at) AS first_at, MAX(occurred_at) AS last_at, \
             (SELECT COUNT(*) FROM events WHERE version = 1) AS aggregates FROM events",
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StoreStats {
            total_events: row.try_get::<i64, _>("total")? as u64,
            total_aggregates: row.try_get::<i64, _>("aggregates")? as u64,
            head_position: row.try_get::<i64, _>("head")? as u64,
            by_event_type,
            by_aggregate_type,
            first_event_at: row.try_get("first_at")?,
            last_event_at: row.try_get("last_at")?,
        })
    }

    async fn find_idempotent_response(
        &self,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        let row = sqlx::query(
            "SELECT key, fingerprint, status, body FROM idempotency_keys WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(IdempotentResponse {
                key: row.try_get("key")?,
                fingerprint: row.try_get("fingerprint")?,
                status: row.try_get::<i32, _>("status")? as u16,
                body: row.try_get("body")?,
            })
        })
        .transpose()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn close(&self) {
        let task = self.listener.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.listen_pool.close().await;
        self.pool.close().await;
    }

    async fn events_by_correlation(
        &self,
        correlation_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE correlation_id = $1 ORDER BY position"
        ))
        .bind(correlation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_row).collect()
    }

    async fn find_event(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE event_id = $1::uuid"
        ))
        .bind(event_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_row).transpose()
    }

    async fn is_applied(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM applied_commands WHERE dedupe_key = $1")
                .bind(dedupe_key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE consumer = $1")
                .bind(consumer)
                .fetch_optional(&self.pool)
                .await?;
        Ok(position.unwrap_or(0) as u64)
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkpoints (consumer, position, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer) DO UPDATE \
             SET position = GREATEST(checkpoints.position, excluded.position), \
             updated_at = excluded.updated_at",
        )
        .bind(consumer)
        .bind(position as i64)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows =
            sqlx::query("SELECT consumer, position, updated_at FROM checkpoints ORDER BY consumer")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(Checkpoint {
                    consumer: row.try_get("consumer")?,
                    position: row.try_get::<i64, _>("position")? as u64,
                    updated_at: row.try_get("updated_at")?,
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
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO dead_letters (consumer, event_id, position, event_type, aggregate_id, \
             error, attempts, first_failed_at, last_failed_at, status) \
             VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8, $9, 'pending') \
             ON CONFLICT (consumer, event_id) DO UPDATE SET error = excluded.error, \
             attempts = dead_letters.attempts + excluded.attempts, \
             last_failed_at = excluded.last_failed_at, status = 'pending' \
             RETURNING id",
        )
        .bind(consumer)
        .bind(event.envelope.event_id.to_string())
        .bind(event.position as i64)
        .bind(&event.envelope.event_type)
        .bind(&event.envelope.aggregate_id)
        .bind(error)
        .bind(i64::from(attempts))
        .bind(truncate(first_failed_at)?)
        .bind(Utc::now())
        .fetch_one(&self.pool)
        .await?;
        Ok(id as u64)
    }

    async fn dead_letters(&self, status: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters"
        ));
        if let Some(status) = status {
            sql.push(" WHERE status = ").push_bind(status.to_string());
        }
        sql.push(" ORDER BY id");
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(decode_dead_letter).collect()
    }

    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1"
        ))
        .bind(id as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_dead_letter).transpose()
    }

    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE dead_letters SET status = 'resolved' WHERE id = $1")
            .bind(id as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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
        rows.iter()
            .map(|row| {
                let payload: String = row.try_get("payload")?;
                Ok(Timer {
                    key: row.try_get("key")?,
                    kind: row.try_get("kind")?,
                    due_at: row.try_get("due_at")?,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| StoreError::Corrupt(format!("timer payload: {e}")))?,
                })
            })
            .collect()
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

    async fn record_publications(&self, published: &[Publication]) -> Result<(), StoreError> {
        // One statement for the whole batch (arrays unnested), not one round trip per event.
        let positions: Vec<i64> = published.iter().map(|p| p.position as i64).collect();
        let topics: Vec<&str> = published.iter().map(|p| p.topic.as_str()).collect();
        let partitions: Vec<i32> = published.iter().map(|p| p.partition).collect();
        let offsets: Vec<i64> = published.iter().map(|p| p.offset).collect();
        sqlx::query(
            "UPDATE events AS e SET topic = u.topic, kafka_partition = u.kafka_partition, \
             kafka_offset = u.kafka_offset \
             FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::bigint[]) \
             AS u(position, topic, kafka_partition, kafka_offset) \
             WHERE e.position = u.position",
        )
        .bind(&positions)
        .bind(&topics)
        .bind(&partitions)
        .bind(&offsets)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_notifications(
        &self,
        notifications: &[NewNotification],
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for n in notifications {
            let created = truncate(n.created_at)?;
            inserted += sqlx::query(
                "INSERT INTO notifications (event_id, event_type, channel, template, order_id, \
                 customer_id, recipient, subject, body_text, body_html, status, attempts, \
                 next_attempt_at, created_at, updated_at, correlation_id, trace_id) \
                 VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 0, \
                 $11, $11, $11, $12, $13) \
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
            .bind(&n.correlation_id)
            .bind(&n.trace_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await.map_err(commit_failure)?;
        Ok(inserted)
    }

    async fn due_notifications(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE channel = $1 \
             AND status IN ('pending', 'retrying') AND next_attempt_at <= $2 \
             ORDER BY next_attempt_at, id LIMIT $3"
        ))
        .bind(channel)
        .bind(truncate(now)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_notification).collect()
    }

    async fn next_notification_due(
        &self,
        channel: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let due: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM notifications WHERE channel = $1 \
             AND status IN ('pending', 'retrying')",
        )
        .bind(channel)
        .fetch_one(&self.pool)
        .await?;
        Ok(due)
    }

    async fn update_notification(&self, update: &NotificationUpdate) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE notifications SET status = $1, attempts = $2, \
             provider_message_id = COALESCE($3, provider_message_id), last_error = $4, \
             next_attempt_at = $5, updated_at = $6 \
             WHERE id = $7 AND status IN ('pending', 'retrying')",
        )
        .bind(&update.status)
        .bind(i64::from(update.attempts))
        .bind(&update.provider_message_id)
        .bind(&update.last_error)
        .bind(truncate(update.next_attempt_at)?)
        .bind(Utc::now())
        .bind(update.id as i64)
        .execute(&self.pool)
        .await?;
        Ok(changed.rows_affected() == 1)
    }

    async fn redrive_notification(
        &self,
        dead_letter_id: u64,
        event_id: Uuid,
        channel: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE dead_letters SET status = 'resolved' WHERE id = $1")
            .bind(dead_letter_id as i64)
            .execute(&mut *tx)
            .await?;
        let now = Utc::now();
        let requeued = sqlx::query(
            "UPDATE notifications SET status = 'retrying', attempts = 0, \
             next_attempt_at = $1, updated_at = $1 \
             WHERE event_id = $2::uuid AND channel = $3 AND status = 'failed'",
        )
        .bind(truncate(now)?)
        .bind(event_id.to_string())
        .bind(channel)
        .execute(&mut *tx)
        .await?;
        tx.commit().await.map_err(commit_failure)?;
        Ok(requeued.rows_affected() == 1)
    }

    async fn notifications(
        &self,
        query: &NotificationQuery,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE TRUE"
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
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(decode_notification).collect()
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

/// A COMMIT that failed because the connection broke (rather than because PostgreSQL
/// refused it, as on a full disk) may have been applied or not: it is reported as an
/// unknown outcome, never as a success and never as "nothing stored".
fn commit_failure(e: sqlx::Error) -> StoreError {
    match sqlx_unavailability(&e) {
        Some(Unavailable::Unreachable) if !matches!(e, sqlx::Error::Database(_)) => {
            StoreError::unavailable(
                Unavailable::OutcomeUnknown,
                format!("the connection broke during the commit: {e}"),
            )
        }
        _ => e.into(),
    }
}
