//! `Backups` on the PostgreSQL backend.
//!
//! The cut. Appends run concurrently here and a position can commit after a higher one,
//! so a snapshot taken at any instant may hold event *n + 1* and not *n*. The backup
//! therefore takes its snapshot at an instant when no append is in flight: a first
//! transaction takes `LOCK TABLE events IN SHARE MODE`, which waits for every transaction
//! that has inserted events to end and keeps new ones from inserting, exports its
//! snapshot (`pg_export_snapshot()`, its first query, so taken under the lock), and a
//! second, read-only REPEATABLE READ transaction adopts that snapshot (`SET TRANSACTION
//! SNAPSHOT`), after which the first commits and writers carry on. Every event the
//! snapshot holds was committed before the lock was granted, and every event drawn
//! before it was committed or aborted by then: its events are exactly those at or below
//! its highest position. Writers wait only for the instant between the lock and the
//! export. An append that checked its version before the lock and inserts after it
//! commits after the snapshot: wholly absent, keys included.
//!
//! The import: one transaction, batches of rows inserted with `UNNEST`, identity columns
//! given (`OVERRIDING SYSTEM VALUE`) and their sequences moved past the rows at the end.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Row as _};
use tokio::sync::mpsc;

use super::PgEventStore;
use crate::backup::{
    import_abandoned, not_empty, Backups, Cell, Cut, ExportItem, ImportItem, Kind, Row, Table,
    BATCH, EVENTS, TABLES,
};
use crate::StoreError;

/// How long the backup waits for the appends in flight before it gives up.
const LOCK_TIMEOUT: &str = "30s";

fn select_list(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|c| match c.kind {
            Kind::Int => format!("{}::bigint", c.postgres),
            Kind::Uuid | Kind::Json => format!("{}::text", c.postgres),
            Kind::Text | Kind::Time | Kind::Blob => c.postgres.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn decode(table: &Table, row: &sqlx::postgres::PgRow) -> Result<Row, StoreError> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let cell = match column.kind {
                Kind::Text => row.try_get::<Option<String>, _>(i)?.map(Cell::Text),
                Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(Cell::Int),
                Kind::Time => row
                    .try_get::<Option<DateTime<Utc>>, _>(i)?
                    .map(|t| Cell::Time(t.timestamp_micros())),
                Kind::Uuid => row.try_get::<Option<String>, _>(i)?.map(Cell::Uuid),
                Kind::Json => row.try_get::<Option<String>, _>(i)?.map(Cell::Json),
                Kind::Blob => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Cell::Blob),
            };
            Ok(cell.unwrap_or(Cell::Null))
        })
        .collect()
}

async fn tables_with_rows(conn: &mut sqlx::PgConnection) -> Result<Vec<&'static str>, StoreError> {
    let mut found = Vec::new();
    for table in TABLES {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", table.name);
        let any: bool = sqlx::query_scalar(&sql).fetch_one(&mut *conn).await?;
        if any {
            found.push(table.name);
        }
    }
    Ok(found)
}

/// The rows of `table` a backup since `since` holds: the events above it, all others.
fn filter(table: &Table, since: u64) -> String {
    if table.name == EVENTS.name {
        format!(" WHERE position > {since}")
    } else {
        String::new()
    }
}

/// Inserts one batch of `table`'s rows.
async fn insert(
    tx: &mut sqlx::PgConnection,
    table: &Table,
    rows: &[Row],
) -> Result<(), StoreError> {
    let columns = table
        .columns
        .iter()
        .map(|c| c.postgres)
        .collect::<Vec<_>>()
        .join(", ");
    let arrays = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let n = i + 1;
            match c.kind {
                Kind::Text => format!("${n}::text[]"),
                Kind::Int => format!("${n}::bigint[]"),
                Kind::Time => format!("${n}::timestamptz[]"),
                Kind::Uuid => format!("${n}::text[]::uuid[]"),
                Kind::Json => format!("${n}::text[]::json[]"),
                Kind::Blob => format!("${n}::bytea[]"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let overriding = if table.identity.is_some() {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO {} ({columns}){overriding} SELECT * FROM UNNEST({arrays})",
        table.name
    );
    let mut query = sqlx::query::<Postgres>(&sql);
    for (i, column) in table.columns.iter().enumerate() {
        let cells = rows.iter().map(|row| &row[i]);
        query = match column.kind {
            Kind::Text | Kind::Uuid | Kind::Json => query.bind(
                cells
                    .map(|c| match c {
                        Cell::Text(s) | Cell::Uuid(s) | Cell::Json(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            Kind::Int => query.bind(
                cells
                    .map(|c| match c {
                        Cell::Int(i) => Some(*i),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            Kind::Time => query.bind(
                cells
                    .map(|c| match c {
                        Cell::Time(us) => DateTime::<Utc>::from_timestamp_micros(*us),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            Kind::Blob => query.bind(
                cells
                    .map(|c| match c {
                        Cell::Blob(b) => Some(b.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
        };
    }
    query.execute(&mut *tx).await?;
    Ok(())
}

#[async_trait]
impl Backups for PgEventStore {
    async fn export(&self, since: u64, sink: mpsc::Sender<ExportItem>) -> Result<Cut, StoreError> {
        let gone = || StoreError::Refused("the backup's writer stopped reading".into());
        // None of SET, LOCK and SET TRANSACTION takes the transaction's snapshot: the
        // locker's is taken by its first query, once the lock is granted.
        // A transaction each: dropped on an error, they roll back. The reader's connection
        // is taken first: once the lock is requested, appends queue behind it holding
        // their connections, and the pool might have none left to adopt the snapshot.
        let mut reader = self.pool.begin().await?;
        let mut locker = self.pool.begin().await?;
        let lock_timeout = format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'");
        for statement in [
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            &lock_timeout,
            "LOCK TABLE events IN SHARE MODE",
        ] {
            sqlx::query(statement).execute(&mut *locker).await?;
        }
        let exported: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut *locker)
            .await?;
        let adopt = format!("SET TRANSACTION SNAPSHOT '{}'", exported.replace('\'', ""));
        let mut adopted = Ok(());
        for statement in [
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            &adopt,
        ] {
            if let Err(e) = sqlx::query(statement).execute(&mut *reader).await {
                adopted = Err(e);
                break;
            }
        }
        // The writers go on as soon as the snapshot is adopted (or failed to be).
        locker.commit().await?;
        adopted?;

        let position: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&mut *reader)
            .await?;
        let mut rows = Vec::new();
        for table in TABLES {
            let sql = format!(
                "SELECT COUNT(*) FROM {}{}",
                table.name,
                filter(table, since)
            );
            let count: i64 = sqlx::query_scalar(&sql).fetch_one(&mut *reader).await?;
            rows.push((table.name, count as u64));
        }
        let cut = Cut {
            position: position as u64,
            since,
            rows,
        };
        sink.send(ExportItem::Cut(cut.clone()))
            .await
            .map_err(|_| gone())?;
        for table in TABLES {
            // A cursor of the snapshot, read a batch at a time.
            // A cursor of its own per table: a statement is prepared once per text, with
            // the columns of the cursor it first read.
            let declare = format!(
                "DECLARE backup_{} NO SCROLL CURSOR FOR SELECT {} FROM {}{} ORDER BY {}",
                table.name,
                select_list(table),
                table.name,
                filter(table, since),
                table.order_by
            );
            sqlx::query(&declare).execute(&mut *reader).await?;
            let fetch = format!("FETCH {BATCH} FROM backup_{}", table.name);
            loop {
                let found = sqlx::query(&fetch).fetch_all(&mut *reader).await?;
                if found.is_empty() {
                    break;
                }
                let batch = found
                    .iter()
                    .map(|row| decode(table, row))
                    .collect::<Result<Vec<_>, _>>()?;
                sink.send(ExportItem::Rows(table, batch))
                    .await
                    .map_err(|_| gone())?;
            }
            let close = format!("CLOSE backup_{}", table.name);
            sqlx::query(&close).execute(&mut *reader).await?;
        }
        reader.rollback().await?;
        Ok(cut)
    }

    async fn tables_with_rows(&self) -> Result<Vec<&'static str>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        tables_with_rows(&mut conn).await
    }

    async fn import(&self, mut rows: mpsc::Receiver<ImportItem>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let taken = tables_with_rows(&mut tx).await?;
        if !taken.is_empty() {
            return Err(not_empty(&taken));
        }
        let mut written = 0;
        loop {
            match rows.recv().await {
                // Dropping the transaction rolls it back: nothing is written.
                None => return Err(import_abandoned()),
                Some(ImportItem::Rows(table, batch)) => {
                    insert(&mut tx, table, &batch).await?;
                    written += batch.len() as u64;
                }
                Some(ImportItem::End) => break,
            }
        }
        for table in TABLES {
            if let Some(identity) = table.identity {
                // The next value drawn follows the highest row restored; the settled head
                // reads the sequence's last value, which is then that row's.
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', '{1}'), MAX({1})) \
                     FROM {0} HAVING MAX({1}) IS NOT NULL",
                    table.name, identity
                );
                sqlx::query(&sql).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        let head = super::head::settled_head(&self.pool).await?;
        super::head::raise(&self.head, head);
        Ok(written)
    }
}
