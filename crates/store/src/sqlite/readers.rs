//! The read-only connections reads of a SQLite file run on: opened when first needed and
//! kept, at most [`READERS`] in use at once. A read runs whole (every statement, every
//! row) on a blocking thread with one of them, so it crosses threads once, not once per
//! statement and row as through sqlx. The event store uses it, and so do the read models
//! (`cornershop-readmodels`) for their own file.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cornershop_domain::panics::panic_message;
use tokio::sync::Semaphore;

/// Most reads that run at once, each on a connection of its own.
const READERS: usize = 4;

/// How a SQLite file's one writing connection commits: `Full` makes every commit durable
/// before it returns (the event store), `Normal` in WAL mode survives a crash of the
/// process but may lose the last commits to a power loss (derived data: the read models).
#[derive(Debug, Clone, Copy)]
pub enum Durability {
    Full,
    Normal,
}

/// Opens the one writing connection of a SQLite file: WAL, the `durability` asked for,
/// foreign keys on, waiting up to `busy` for another process's lock, and up to
/// `statement_cache` statements kept prepared.
pub fn open_writing_connection(
    path: &std::path::Path,
    durability: Durability,
    busy: Duration,
    statement_cache: usize,
) -> Result<rusqlite::Connection, rusqlite::Error> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(busy)?;
    conn.set_prepared_statement_cache_capacity(statement_cache);
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch(match durability {
        Durability::Full => "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        Durability::Normal => "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    })?;
    Ok(conn)
}

/// Why a read did not run, apart from its own error.
#[derive(Debug)]
pub enum ReadRefused {
    /// [`SqliteReaders::close`] was called.
    Closed,
    /// The read panicked; the message says where.
    Panicked(String),
}

/// See the module documentation.
pub struct SqliteReaders {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    statement_cache: usize,
    idle: Mutex<Vec<rusqlite::Connection>>,
    /// One per connection; closed by `close`.
    permits: Semaphore,
}

impl SqliteReaders {
    /// Readers of the file at `path`, each keeping `statement_cache` statements prepared.
    pub fn new(path: PathBuf, statement_cache: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                path,
                statement_cache,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(READERS),
            }),
        }
    }

    /// Runs `read` on a reader connection, on a blocking thread. A read that fails inside
    /// a transaction of its own leaves no transaction open behind it.
    pub async fn read<T, E, F>(&self, read: F) -> Result<Result<T, E>, ReadRefused>
    where
        T: Send + 'static,
        E: From<rusqlite::Error> + Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
    {
        let permit = self.permit().await?;
        let inner = self.inner.clone();
        let outcome = tokio::task::spawn_blocking(move || inner.run(read)).await;
        drop(permit);
        outcome.map_err(|e| ReadRefused::Panicked(e.to_string()))
    }

    /// Runs `read` on a reader connection right here, on the caller's thread: only for a
    /// read that takes microseconds to a millisecond (rows by a key, a page of a few
    /// hundred rows at most), for which the thread hop of [`Self::read`] costs more than
    /// the read itself (BENCHMARKS.md has the runs that chose which reads: about 15% less
    /// CPU per order). Longer reads stay on [`Self::read`], so that they do not hold up
    /// the runtime's threads. A panic in `read` is caught and answered as refused.
    pub async fn read_here<T, E, F>(&self, read: F) -> Result<Result<T, E>, ReadRefused>
    where
        E: From<rusqlite::Error>,
        F: FnOnce(&rusqlite::Connection) -> Result<T, E>,
    {
        let _permit = self.permit().await?;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.run(read)))
            .map_err(|panic| ReadRefused::Panicked(panic_message(panic.as_ref())))
    }

    /// One of the [`READERS`] places, or refused once closed.
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ReadRefused> {
        self.inner
            .permits
            .acquire()
            .await
            .map_err(|_| ReadRefused::Closed)
    }

    /// Refuses reads from now on and closes the idle connections.
    pub fn close(&self) {
        self.inner.permits.close();
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl Inner {
    /// Runs `read` on an idle connection (opened if none is idle), and keeps the
    /// connection unless it cannot leave a transaction behind.
    fn run<T, E: From<rusqlite::Error>>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let outcome = read(&conn);
        if conn.is_autocommit() || conn.execute_batch("ROLLBACK").is_ok() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
        outcome
    }

    fn open(&self) -> Result<rusqlite::Connection, rusqlite::Error> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(self.statement_cache);
        Ok(conn)
    }
}
