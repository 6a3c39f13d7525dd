//! The store's error, and what counts as the store being unavailable (rather than a
//! request refused or data corrupt), on both backends.

use cornershop_domain::AggregateType;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{aggregate_type} '{aggregate_id}' is at version {actual}, not the expected {expected}"
    )]
    Conflict {
        aggregate_type: AggregateType,
        aggregate_id: String,
        expected: u64,
        actual: u64,
    },
    #[error("idempotency key '{0}' has already been used")]
    IdempotencyKeyTaken(String),
    #[error("the command '{0}' has already been applied")]
    AlreadyApplied(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store refuses what was asked of it as it stands (a restore into a store that
    /// has rows, say); nothing was written.
    #[error("{0}")]
    Refused(String),
    // The driver's error is told in the message and not again as the source, so that a
    // chain of causes (`domain::causes`, the logs' `errorChain`) says it once.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// An error of the embedded backend's own SQLite connections (its writer thread).
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// An error of the MongoDB backend's driver.
    #[error("database error: {0}")]
    Mongo(Box<mongodb::error::Error>),
    #[error("migration failed: {0}")]
    Migration(sqlx::migrate::MigrateError),
    /// The store could not take the write (or cannot be reached): nothing of it is
    /// stored, or, for [`Unavailable::OutcomeUnknown`], it cannot be told whether it was.
    #[error("{detail}")]
    Unavailable { kind: Unavailable, detail: String },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        Self::Mongo(Box::new(e))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migration(e)
    }
}

/// Why the store cannot serve a request right now. Each is temporary: the same request
/// may succeed later without anything being fixed in the request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The disk (or the database's quota) is full: writes fail, reads still work.
    DiskFull,
    /// The database cannot be reached, or is shutting down, or its connection broke
    /// before the statement ran.
    Unreachable,
    /// The connection broke during a commit: the write may or may not be stored.
    OutcomeUnknown,
}

impl StoreError {
    pub fn unavailable(kind: Unavailable, detail: impl Into<String>) -> Self {
        Self::Unavailable {
            kind,
            detail: detail.into(),
        }
    }

    /// Whether (and why) this error means "the store is unavailable", as opposed to a
    /// refusal of this request (a conflict) or a bug (corrupt data).
    pub fn unavailability(&self) -> Option<Unavailable> {
        match self {
            Self::Unavailable { kind, .. } => Some(*kind),
            Self::Database(e) => sqlx_unavailability(e),
            Self::Sqlite(e) => rusqlite_unavailability(e),
            Self::Mongo(e) => mongo_unavailability(e),
            _ => None,
        }
    }

    /// Whether this error is a unique-key violation (an insert of a key that is taken).
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(db)) => db.is_unique_violation(),
            Self::Sqlite(e) => rusqlite_is_unique_violation(e),
            Self::Mongo(e) => mongo_is_duplicate_key(e),
            _ => false,
        }
    }
}

/// Whether a database error means that the database cannot take work now (not that the
/// statement is wrong): SQLite's primary result codes (the low byte of an extended code)
/// and PostgreSQL's SQLSTATE classes, and the connection's own failures.
pub fn sqlx_unavailability(e: &sqlx::Error) -> Option<Unavailable> {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code()?;
            if let Ok(sqlite) = code.parse::<i32>() {
                return sqlite_unavailability(sqlite);
            }
            match code.as_ref() {
                // disk_full, insufficient_resources, out_of_memory, too_many_connections
                "53100" => Some(Unavailable::DiskFull),
                c if c.starts_with("53") => Some(Unavailable::Unreachable),
                // connection exceptions; admin/crash shutdown, cannot connect now
                c if c.starts_with("08") || c.starts_with("57P") => Some(Unavailable::Unreachable),
                _ => None,
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Some(Unavailable::Unreachable),
        _ => None,
    }
}

/// Whether a MongoDB error is a duplicate key (code 11000) of a write, a bulk write or a
/// command.
pub fn mongo_is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|w| w.code == 11000)),
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

/// Whether a MongoDB error means that the server cannot take work now: it cannot be
/// reached (no server selected, I/O, a broken connection), or it is shutting down or out
/// of space; a write whose connection broke may have been applied.
pub fn mongo_unavailability(e: &mongodb::error::Error) -> Option<Unavailable> {
    use mongodb::error::ErrorKind;
    if e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
        && matches!(&*e.kind, ErrorKind::Io(_))
    {
        return Some(Unavailable::OutcomeUnknown);
    }
    match &*e.kind {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::Shutdown => Some(Unavailable::Unreachable),
        // OutOfDiskSpace
        ErrorKind::Command(c) if c.code == 14031 => Some(Unavailable::DiskFull),
        // ShutdownInProgress, InterruptedAtShutdown, NotWritablePrimary and the like
        ErrorKind::Command(c) if matches!(c.code, 91 | 11600 | 10107 | 13435 | 189) => {
            Some(Unavailable::Unreachable)
        }
        _ => None,
    }
}

/// Whether a SQLite error (through rusqlite) is a unique-key violation:
/// SQLITE_CONSTRAINT_UNIQUE (2067) or SQLITE_CONSTRAINT_PRIMARYKEY (1555).
pub fn rusqlite_is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(e, _) if matches!(e.extended_code, 2067 | 1555))
}

/// Whether a SQLite error (through rusqlite) means that the database cannot take work now:
/// see [`sqlite_unavailability`].
pub fn rusqlite_unavailability(e: &rusqlite::Error) -> Option<Unavailable> {
    match e {
        rusqlite::Error::SqliteFailure(e, _) => sqlite_unavailability(e.extended_code),
        _ => None,
    }
}

/// What a SQLite result code says about the store's availability: SQLITE_FULL (13) a full
/// disk; SQLITE_IOERR (10), SQLITE_NOMEM (7), SQLITE_BUSY (5), SQLITE_CANTOPEN (14) and
/// SQLITE_READONLY (8, a file system remounted read-only) that it cannot take work now;
/// each with its extended variants (the primary code is the low byte).
fn sqlite_unavailability(code: i32) -> Option<Unavailable> {
    match code & 0xff {
        13 => Some(Unavailable::DiskFull),
        5 | 7 | 8 | 10 | 14 => Some(Unavailable::Unreachable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_tells_its_cause_once() {
        let error = StoreError::from(sqlx::Error::RowNotFound);
        let told = cornershop_domain::causes::with_causes(&error);
        let cause = sqlx::Error::RowNotFound.to_string();
        assert_eq!(told, format!("database error: {cause}"));
        assert_eq!(cornershop_domain::causes::causes(&error).count(), 0);
    }
}
