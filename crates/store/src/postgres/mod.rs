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
//! 1. **One global order without skipping, without a global lock.** A sequence alone is
//!    not enough: an append that drew position *n* early but commits late becomes visible
//!    after *n + 1*, and a reader tailing the log by position would already have passed
//!    *n*. Until migration 0004 every append held one advisory lock through its commit,
//!    which serialized them all. Now appends run in parallel and readers stop at the
//!    **settled head**, a position below which every append has finished:
//!    - an append is one call of `cornershop_append` (the expected-version check, the
//!      idempotency and applied-command keys, the events: one prepared statement,
//!      committed on its own); before it draws a position (an identity column with
//!      `CACHE 1`, so values are handed out in time order) it *registers* by taking the
//!      transaction-scoped advisory lock (1129529680, its backend pid), which PostgreSQL
//!      releases only once its commit (or abort) is visible;
//!    - `cornershop_settled_head()` reads the last drawn position D, then lists the
//!      registered appends in `pg_locks` and waits for each, taking and releasing its
//!      lock in share mode. Every position <= D was drawn before D was read, by an append
//!      registered before it drew, so that append was listed (or had finished) and has
//!      finished now: every position <= D is visible or aborted for good. An append
//!      still registered after 5 s is stuck: the call gives up (its lock timeout), the
//!      settler names that append's backend in a warning and retries, and
//!      `head_position` answers the last settled head instead of waiting;
//!    - the store keeps the settled head in its head watch (`head.rs`); `query` and
//!      `read_log` read only `position <= head`, once the head has passed every append
//!      this process answered, so a caller reads its own writes (an append answers at its
//!      commit and asks the settler to settle past it; it does not wait).
//!
//!    An aborted append leaves a gap that never fills, which readers tolerate (they page
//!    by `position > after`, never by counting). The version check stays race-free: two
//!    appends that both passed it insert the same version, and the unique
//!    `(aggregate_type, aggregate_id, version)` constraint refuses the second once the
//!    first has committed; that refusal is reported as [`StoreError::Conflict`] with the
//!    version read again.
//! 2. **`watch_head` across processes.** A settler task settles when an append of this
//!    process waits, and once a second otherwise (which settles what a process that died
//!    between its commit and its announcement left behind); an announcer sends each new
//!    settled head with `pg_notify('cornershop_events', <position>)`, one at a time
//!    (a notifying commit takes a database-wide lock, so not once per append); a listener
//!    task with a [`PgListener`] on its own connection raises the head watch to every
//!    announced position (never lowers it). Notifications are not durable: when the
//!    listener's connection is lost, it reconnects, listens again and settles afresh.
//!
//! The files are cut as the SQLite backend's are, one per trait of the store: `log`
//! (`EventLog`: appends, reads, statistics, idempotency replies), `consumers`
//! (`ConsumerState`), `scheduling` (`Scheduling`: timers and leases), `notifications`
//! (`NotificationOutbox`) and `snapshots` (`Snapshots`); this one holds the type and
//! connecting, and `head` the settled head's tasks.
//!
//! [`PgListener`]: sqlx::postgres::PgListener

mod backup;
mod consumers;
mod head;
mod keys;
mod log;
mod notifications;
mod scheduling;
mod snapshots;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::shared::{Arg, Statement};
use crate::{sqlx_unavailability, Unavailable};
use crate::{AppendRequest, StoreError, StoredEvent};

use head::{announce, follow_head, listen, raise, settle, settled_head};

pub struct PgEventStore {
    pool: PgPool,
    /// One connection, used only by the head listener.
    listen_pool: PgPool,
    /// The settled head: readers of the log stop there.
    head: Arc<watch::Sender<u64>>,
    /// The last position an append of this process asked to see settled.
    wanted: watch::Sender<u64>,
    /// The listener, the settler and the announcer.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Whether readers stop at the settled head; false only in the test that shows the
    /// contract's no-skip check failing without it.
    bounded: bool,
}

/// How long a reader waits for this process's appends to be settled before reading below
/// them (the settler retries meanwhile; they are committed either way).
const SETTLE_WAIT: Duration = Duration::from_secs(10);

impl PgEventStore {
    /// Connects to `database_url` (`postgres://user:password@host:port/database`), runs the
    /// migrations, starts the head's tasks and settles the head.
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
        // Listen before settling the head, so that no announcement falls between the two.
        let listener = listen(&listen_pool).await?;
        let head = Arc::new(watch::Sender::new(settled_head(&pool).await?));
        let (wanted, wanted_rx) = watch::channel(0);
        let (found, found_rx) = watch::channel(0);
        let tasks = vec![
            tokio::spawn(follow_head(
                listener,
                listen_pool.clone(),
                pool.clone(),
                head.clone(),
            )),
            tokio::spawn(settle(pool.clone(), head.clone(), wanted_rx, found)),
            tokio::spawn(announce(pool.clone(), found_rx)),
        ];
        Ok(Self {
            pool,
            listen_pool,
            head,
            wanted,
            tasks: Mutex::new(tasks),
            bounded: true,
        })
    }

    /// Asks the settler to settle the head past `position`, an appended event's. The
    /// append does not wait for it: its events are committed (durable) already, and this
    /// process's readers wait for it instead (`readable`).
    fn settle_past(&self, position: u64) {
        if !self.bounded {
            raise(&self.head, position);
            return;
        }
        self.wanted.send_if_modified(|wanted| {
            let newer = position > *wanted;
            if newer {
                *wanted = position;
            }
            newer
        });
    }

    /// The highest position a reader may read up to: the settled head, once it has passed
    /// every append this process has answered (so that a caller reads its own writes;
    /// waiting at most [`SETTLE_WAIT`]).
    async fn readable(&self) -> i64 {
        if !self.bounded {
            return i64::MAX;
        }
        let appended = *self.wanted.borrow();
        let mut head = self.head.subscribe();
        // `wait_for` answers with a read guard of the watch: it must be gone before the
        // watch is borrowed again, or a rise of the head queued in between (a writer
        // waiting for the guard) blocks that borrow, and with it the whole runtime.
        let settled = matches!(
            tokio::time::timeout(SETTLE_WAIT, head.wait_for(|h| *h >= appended)).await,
            Ok(Ok(_))
        );
        if !settled {
            tracing::warn!(
                position = appended,
                "the head of the log is not settled past this process's appends; reading below"
            );
        }
        let readable = *self.head.borrow();
        readable as i64
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

    /// Test hook: this store with a broken visibility rule, whose readers do not stop at
    /// the settled head. The contract shows its no-skip check failing against it.
    #[doc(hidden)]
    pub fn reading_past_the_settled_head(mut self) -> Self {
        self.bounded = false;
        self
    }
}

impl Drop for PgEventStore {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.drain(..).for_each(|task| task.abort());
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

/// A statement built by shared code (`shared::Statement`), bound for PostgreSQL.
fn bound(
    statement: &Statement,
) -> Result<sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    let mut query = sqlx::query(&statement.text);
    for arg in &statement.args {
        query = match arg {
            Arg::Int(n) => query.bind(*n),
            Arg::Text(text) => query.bind(text.as_str()),
            Arg::Time(t) => query.bind(t.map(crate::truncate_to_micros).transpose()?),
        };
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readers asking for the readable head while the head keeps rising never block each
    /// other or the rise. (A reader that held the head watch's read guard from `wait_for`
    /// while it borrowed the watch again deadlocked the whole runtime as soon as a rise
    /// queued between the two reads: the lock lets no new reader in while a writer waits.)
    /// The runtime runs on a thread of its own, so that a deadlock fails the test instead
    /// of hanging it.
    #[test]
    fn readers_and_a_rising_head_never_deadlock() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(read_while_the_head_rises());
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(120))
            .expect("the readers deadlocked with the head's rise");
    }

    async fn read_while_the_head_rises() {
        let pool = PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        let (wanted, _) = watch::channel(0);
        let store = Arc::new(PgEventStore {
            pool: pool.clone(),
            listen_pool: pool,
            head: Arc::new(watch::Sender::new(0)),
            wanted,
            tasks: Mutex::new(Vec::new()),
            bounded: true,
        });
        let rising = {
            let head = store.head.clone();
            std::thread::spawn(move || {
                for position in 1..=2_000_000 {
                    raise(&head, position);
                }
            })
        };
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut last = 0;
                    for _ in 0..200_000 {
                        let readable = store.readable().await;
                        assert!(readable >= last);
                        last = readable;
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.await.unwrap();
        }
        rising.join().unwrap();
    }
}
