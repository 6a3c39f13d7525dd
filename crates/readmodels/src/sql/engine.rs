//! How the read models' statements run on each backend: the same SQL text (`?`
//! placeholders, numbered `$n` for PostgreSQL), the same arguments, the same row decoding.
//!
//! - **SQLite**: rusqlite. Writes go through one connection behind an async mutex (SQLite
//!   admits one writer at a time), reads through the read-only connections of
//!   [`SqliteReaders`]. A live update (every statement of it, and its commit) runs as one
//!   call on a blocking thread; sqlx crossed to its worker thread for every statement and
//!   row, and that was most of the embedded shop's CPU once the event store stopped doing
//!   it (BENCHMARKS.md).
//! - **PostgreSQL**: sqlx, a pool of connections, one statement at a time.

use std::sync::Arc;

use cornershop_store::{rusqlite_is_unique_violation, ReadRefused, SqliteReaders};
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::batch::Stmt;
use super::Arg;
use crate::ReadModelError;

/// Statements each SQLite connection keeps prepared: every statement of a live update,
/// with room.
pub(super) const PREPARED_STATEMENTS: usize = 128;

/// Where the statements run.
pub(super) enum Engine {
    Sqlite {
        writer: Arc<Mutex<rusqlite::Connection>>,
        readers: SqliteReaders,
    },
    Postgres(PgPool),
}

/// The columns of a row, whichever backend read it.
pub(super) trait Cells {
    fn int(&self, column: &str) -> Result<Option<i64>, ReadModelError>;
    fn text(&self, column: &str) -> Result<Option<String>, ReadModelError>;
}

impl dyn Cells + '_ {
    /// A column that is never NULL.
    pub(super) fn int_of(&self, column: &str) -> Result<i64, ReadModelError> {
        self.int(column)?.ok_or_else(|| missing(column))
    }

    /// A column that is never NULL.
    pub(super) fn text_of(&self, column: &str) -> Result<String, ReadModelError> {
        self.text(column)?.ok_or_else(|| missing(column))
    }
}

fn missing(column: &str) -> ReadModelError {
    ReadModelError::Corrupt(format!("a read-model row without {column}"))
}

impl Cells for rusqlite::Row<'_> {
    fn int(&self, column: &str) -> Result<Option<i64>, ReadModelError> {
        Ok(self.get(column)?)
    }

    fn text(&self, column: &str) -> Result<Option<String>, ReadModelError> {
        Ok(self.get(column)?)
    }
}

impl Cells for PgRow {
    fn int(&self, column: &str) -> Result<Option<i64>, ReadModelError> {
        Ok(self.try_get(column)?)
    }

    fn text(&self, column: &str) -> Result<Option<String>, ReadModelError> {
        Ok(self.try_get(column)?)
    }
}

/// How a query's rows become values.
pub(super) type Decode<T> = fn(&dyn Cells) -> Result<T, ReadModelError>;

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Arg::I(n) => ToSqlOutput::Owned(Value::Integer(*n)),
            Arg::T(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
        })
    }
}

/// `?` placeholders numbered for PostgreSQL: `$1, $2, ...` (no statement here has a `?`
/// anywhere else).
fn numbered(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut n = 0;
    for c in text.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn bound(sql: &str, args: Vec<Arg>) -> Query<'_, Postgres, PgArguments> {
    let mut query = sqlx::query(sql);
    for arg in args {
        query = match arg {
            Arg::I(v) => query.bind(v),
            Arg::T(v) => query.bind(v),
        };
    }
    query
}

fn is_unique_violation(e: &ReadModelError) -> bool {
    match e {
        ReadModelError::Database(sqlx::Error::Database(db)) => db.is_unique_violation(),
        ReadModelError::Sqlite(e) => rusqlite_is_unique_violation(e),
        _ => false,
    }
}

fn refused(refused: ReadRefused) -> ReadModelError {
    match refused {
        ReadRefused::Closed => ReadModelError::Closed,
        ReadRefused::Panicked(e) => ReadModelError::Corrupt(format!("a read panicked: {e}")),
    }
}

/// Runs one statement on SQLite; returns the rows it changed.
fn lite_exec(
    conn: &rusqlite::Connection,
    text: &str,
    args: &[Arg],
    cached: bool,
) -> Result<u64, ReadModelError> {
    let params = rusqlite::params_from_iter(args);
    let changed = if cached {
        conn.prepare_cached(text)?.execute(params)?
    } else {
        conn.prepare(text)?.execute(params)?
    };
    Ok(changed as u64)
}

fn lite_fetch<T>(
    conn: &rusqlite::Connection,
    text: &str,
    args: &[Arg],
    decode: Decode<T>,
) -> Result<Vec<T>, ReadModelError> {
    let mut statement = conn.prepare_cached(text)?;
    let mut rows = statement.query(rusqlite::params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn lite_all(
    conn: &rusqlite::Connection,
    statements: Vec<Stmt>,
    cached: bool,
) -> Result<(), ReadModelError> {
    for (text, args) in statements.into_iter().map(Stmt::into_parts) {
        lite_exec(conn, &text, &args, cached)?;
    }
    Ok(())
}

/// The SQLite writer, held: a transaction left open when it is let go (an error, a
/// cancelled request) is rolled back, so the next holder starts clean.
pub(super) struct Held(OwnedMutexGuard<rusqlite::Connection>);

impl Drop for Held {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            if let Err(e) = self.0.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "cannot roll back a read-model transaction");
            }
        }
    }
}

/// A transaction on the writing side.
pub(super) enum Tx {
    /// `None` once an operation on it panicked (the connection rolled back and let go).
    Sqlite(Option<Held>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Engine {
    /// Every row of a read, decoded.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        text: &str,
        args: Vec<Arg>,
        decode: Decode<T>,
    ) -> Result<Vec<T>, ReadModelError> {
        match self {
            Self::Sqlite { readers, .. } => {
                let text = text.to_string();
                readers
                    .read(move |conn| lite_fetch(conn, &text, &args, decode))
                    .await
                    .map_err(refused)?
            }
            Self::Postgres(pool) => {
                let sql = numbered(text);
                let rows = bound(&sql, args).fetch_all(pool).await?;
                rows.iter().map(|row| decode(row)).collect()
            }
        }
    }

    pub(super) async fn begin(&self) -> Result<Tx, ReadModelError> {
        match self {
            Self::Sqlite { writer, .. } => {
                let mut tx = Tx::Sqlite(Some(Held(writer.clone().lock_owned().await)));
                // IMMEDIATE: the write lock is taken now, not at the first write.
                tx.on_lite(|conn| Ok(conn.execute_batch("BEGIN IMMEDIATE")?))
                    .await?;
                Ok(tx)
            }
            Self::Postgres(pool) => Ok(Tx::Postgres(pool.begin().await?)),
        }
    }

    /// Runs `statements` in one transaction and commits them; if one of them violates a
    /// unique key, rolls all of them back and answers false. On SQLite the whole
    /// transaction is one call on a blocking thread.
    pub(super) async fn all_or_nothing(
        &self,
        statements: Vec<Stmt>,
    ) -> Result<bool, ReadModelError> {
        let outcome = match self {
            Self::Sqlite { writer, .. } => {
                let held = Held(writer.clone().lock_owned().await);
                let mut tx = Tx::Sqlite(Some(held));
                tx.on_lite(move |conn| {
                    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
                    lite_all(conn, statements, true)?;
                    conn.prepare_cached("COMMIT")?.execute([])?;
                    Ok(())
                })
                .await
            }
            Self::Postgres(pool) => {
                let mut tx = Tx::Postgres(pool.begin().await?);
                match tx.execute_all(statements, true).await {
                    Ok(()) => tx.commit().await,
                    Err(e) => Err(e),
                }
            }
        };
        // A failed transaction is rolled back when its connection is let go (dropped).
        match outcome {
            Ok(()) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`all_or_nothing`](Self::all_or_nothing) for several groups of statements in one
    /// transaction: each group under a savepoint of its own, so that a group that
    /// violates a unique key (a repeat) is undone alone and answers false, while every
    /// other error fails the whole transaction (nothing of it is kept).
    pub(super) async fn each_all_or_nothing(
        &self,
        groups: Vec<Vec<Stmt>>,
    ) -> Result<Vec<bool>, ReadModelError> {
        match self {
            Self::Sqlite { writer, .. } => {
                let held = Held(writer.clone().lock_owned().await);
                let mut tx = Tx::Sqlite(Some(held));
                tx.on_lite(move |conn| {
                    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
                    let mut applied = Vec::with_capacity(groups.len());
                    for statements in groups {
                        conn.prepare_cached("SAVEPOINT one_event")?.execute([])?;
                        match lite_all(conn, statements, true) {
                            Ok(()) => applied.push(true),
                            Err(e) if is_unique_violation(&e) => {
                                conn.prepare_cached("ROLLBACK TO one_event")?.execute([])?;
                                applied.push(false);
                            }
                            Err(e) => return Err(e),
                        }
                        conn.prepare_cached("RELEASE one_event")?.execute([])?;
                    }
                    conn.prepare_cached("COMMIT")?.execute([])?;
                    Ok(applied)
                })
                .await
            }
            Self::Postgres(pool) => {
                let mut tx = Tx::Postgres(pool.begin().await?);
                let mut applied = Vec::with_capacity(groups.len());
                for statements in groups {
                    tx.exec("SAVEPOINT one_event", Vec::new()).await?;
                    match tx.execute_all(statements, true).await {
                        Ok(()) => applied.push(true),
                        Err(e) if is_unique_violation(&e) => {
                            tx.exec("ROLLBACK TO SAVEPOINT one_event", Vec::new())
                                .await?;
                            applied.push(false);
                        }
                        Err(e) => return Err(e),
                    }
                    tx.exec("RELEASE SAVEPOINT one_event", Vec::new()).await?;
                }
                tx.commit().await?;
                Ok(applied)
            }
        }
    }

    pub(super) async fn close(&self) {
        match self {
            Self::Sqlite { readers, .. } => readers.close(),
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

impl Tx {
    /// Runs `op` on the SQLite connection, on a blocking thread.
    async fn on_lite<T: Send + 'static>(
        &mut self,
        op: impl FnOnce(&rusqlite::Connection) -> Result<T, ReadModelError> + Send + 'static,
    ) -> Result<T, ReadModelError> {
        let Tx::Sqlite(slot) = self else {
            return Err(ReadModelError::Corrupt(
                "a SQLite operation on a PostgreSQL transaction".into(),
            ));
        };
        let held = slot.take().ok_or_else(|| {
            ReadModelError::Corrupt("this read-model transaction was abandoned".into())
        })?;
        let (held, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = op(&held.0);
            (held, outcome)
        })
        .await
        .map_err(|e| ReadModelError::Corrupt(format!("a read-model write panicked: {e}")))?;
        *slot = Some(held);
        outcome
    }

    /// Runs one statement; returns the rows it changed.
    pub(super) async fn exec(&mut self, text: &str, args: Vec<Arg>) -> Result<u64, ReadModelError> {
        match self {
            Tx::Sqlite(_) => {
                let text = text.to_string();
                self.on_lite(move |conn| lite_exec(conn, &text, &args, true))
                    .await
            }
            Tx::Postgres(tx) => {
                let sql = numbered(text);
                Ok(bound(&sql, args).execute(&mut **tx).await?.rows_affected())
            }
        }
    }

    pub(super) async fn fetch<T: Send + 'static>(
        &mut self,
        text: &str,
        args: Vec<Arg>,
        decode: Decode<T>,
    ) -> Result<Vec<T>, ReadModelError> {
        match self {
            Tx::Sqlite(_) => {
                let text = text.to_string();
                self.on_lite(move |conn| lite_fetch(conn, &text, &args, decode))
                    .await
            }
            Tx::Postgres(tx) => {
                let sql = numbered(text);
                let rows = bound(&sql, args).fetch_all(&mut **tx).await?;
                rows.iter().map(|row| decode(row)).collect()
            }
        }
    }

    /// Runs statements in order: on SQLite in one call on a blocking thread, on
    /// PostgreSQL one by one. `cached`: keep them prepared (the few texts of live
    /// updates), or not (a rebuild's multi-row statements, each of its own length).
    pub(super) async fn execute_all(
        &mut self,
        statements: Vec<Stmt>,
        cached: bool,
    ) -> Result<(), ReadModelError> {
        match self {
            Tx::Sqlite(_) => {
                self.on_lite(move |conn| lite_all(conn, statements, cached))
                    .await
            }
            Tx::Postgres(tx) => {
                for (text, args) in statements.into_iter().map(Stmt::into_parts) {
                    let sql = numbered(&text);
                    bound(&sql, args)
                        .persistent(cached)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }
        }
    }

    pub(super) async fn commit(mut self) -> Result<(), ReadModelError> {
        match self {
            Tx::Sqlite(_) => self.on_lite(|conn| Ok(conn.execute_batch("COMMIT")?)).await,
            Tx::Postgres(tx) => Ok(tx.commit().await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered("UPDATE t SET a = ?, b = ? WHERE c = ?"),
            "UPDATE t SET a = $1, b = $2 WHERE c = $3"
        );
    }
}
