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
//!
//! The files are cut as the SQLite backend's are, one per trait of the store: `log`
//! (`EventLog`: appends, reads, statistics, idempotency replies), `consumers`
//! (`ConsumerState`), `scheduling` (`Scheduling`: timers and leases) and `notifications`
//! (`NotificationOutbox`); this one holds the type and connecting, and `head` the head
//! listener.
//!
//! [`PgListener`]: sqlx::postgres::PgListener

mod consumers;
mod head;
mod log;
mod notifications;
mod scheduling;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{sqlx_unavailability, Unavailable};
use crate::{AppendRequest, StoreError, StoredEvent};

use head::{follow_head, listen, read_head};

pub struct PgEventStore {
    pool: PgPool,
    /// One connection, used only by the head listener.
    listen_pool: PgPool,
    head: Arc<watch::Sender<u64>>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

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
}

impl Drop for PgEventStore {
    fn drop(&mut self) {
        if let Some(task) = self.listener.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
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
