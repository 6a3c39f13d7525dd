//! `Backups` on the SQLite backend.
//!
//! The cut: one read transaction on a reader connection. SQLite commits one transaction
//! after another and positions in order, and in WAL mode a read transaction sees the
//! database as of its first read, whatever commits after: its events are a prefix of the
//! log, and its other tables agree with them. Writers carry on meanwhile (the WAL grows
//! until the backup's read ends).
//!
//! The import: one job of the writer, so one transaction; it refuses a store with rows.

use async_trait::async_trait;
use rusqlite::types::Value;
use tokio::sync::mpsc;

use super::SqliteEventStore;
use crate::backup::{
    import_abandoned, not_empty, Backups, Cell, Cut, ExportItem, ImportItem, Kind, Row, Table,
    BATCH, EVENTS, TABLES,
};
use crate::StoreError;

fn columns(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|c| c.sqlite)
        .collect::<Vec<_>>()
        .join(", ")
}

fn decode(table: &Table, row: &rusqlite::Row<'_>) -> Result<Row, StoreError> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let cell = match column.kind {
                Kind::Text => row.get::<_, Option<String>>(i)?.map(Cell::Text),
                Kind::Int => row.get::<_, Option<i64>>(i)?.map(Cell::Int),
                Kind::Time => row.get::<_, Option<i64>>(i)?.map(Cell::Time),
                Kind::Uuid => row.get::<_, Option<String>>(i)?.map(Cell::Uuid),
                Kind::Json => row.get::<_, Option<String>>(i)?.map(Cell::Json),
                Kind::Blob => row.get::<_, Option<Vec<u8>>>(i)?.map(Cell::Blob),
            };
            Ok(cell.unwrap_or(Cell::Null))
        })
        .collect()
}

fn value(cell: &Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Text(s) | Cell::Uuid(s) | Cell::Json(s) => Value::Text(s.clone()),
        Cell::Int(i) | Cell::Time(i) => Value::Integer(*i),
        Cell::Blob(b) => Value::Blob(b.clone()),
    }
}

/// The backed-up tables of `conn` that hold rows.
fn tables_with_rows(conn: &rusqlite::Connection) -> Result<Vec<&'static str>, StoreError> {
    let mut found = Vec::new();
    for table in TABLES {
        let any: bool = conn.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM {})", table.name),
            [],
            |row| row.get(0),
        )?;
        if any {
            found.push(table.name);
        }
    }
    Ok(found)
}

fn export(
    conn: &rusqlite::Connection,
    since: u64,
    sink: &mpsc::Sender<ExportItem>,
) -> Result<Cut, StoreError> {
    let gone = || StoreError::Refused("the backup's writer stopped reading".into());
    // Rolled back when dropped: it only reads.
    let snapshot = conn.unchecked_transaction()?;
    let position: i64 =
        snapshot.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |row| {
            row.get(0)
        })?;
    let mut rows = Vec::new();
    for table in TABLES {
        let filter = if table.name == EVENTS.name {
            " WHERE position > ?1"
        } else {
            " WHERE ?1 >= 0"
        };
        let count: i64 = snapshot.query_row(
            &format!("SELECT COUNT(*) FROM {}{filter}", table.name),
            [since as i64],
            |row| row.get(0),
        )?;
        rows.push((table.name, count as u64));
    }
    let cut = Cut {
        position: position as u64,
        since,
        rows,
    };
    sink.blocking_send(ExportItem::Cut(cut.clone()))
        .map_err(|_| gone())?;
    for table in TABLES {
        let filter = if table.name == EVENTS.name {
            " WHERE position > ?1"
        } else {
            " WHERE ?1 >= 0"
        };
        let mut statement = snapshot.prepare(&format!(
            "SELECT {} FROM {}{filter} ORDER BY {}",
            columns(table),
            table.name,
            table.order_by
        ))?;
        let mut found = statement.query([since as i64])?;
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(row) = found.next()? {
            batch.push(decode(table, row)?);
            if batch.len() == BATCH {
                sink.blocking_send(ExportItem::Rows(table, std::mem::take(&mut batch)))
                    .map_err(|_| gone())?;
            }
        }
        if !batch.is_empty() {
            sink.blocking_send(ExportItem::Rows(table, batch))
                .map_err(|_| gone())?;
        }
    }
    Ok(cut)
}

/// Writes what `rows` sends until `End`; returns the rows written and the head of the log.
fn import(
    conn: &rusqlite::Connection,
    mut rows: mpsc::Receiver<ImportItem>,
) -> Result<(u64, u64), StoreError> {
    let taken = tables_with_rows(conn)?;
    if !taken.is_empty() {
        return Err(not_empty(&taken));
    }
    let mut written = 0;
    let mut head = 0;
    loop {
        match rows.blocking_recv() {
            None => return Err(import_abandoned()),
            Some(ImportItem::End) => return Ok((written, head)),
            Some(ImportItem::Rows(table, batch)) => {
                let placeholders = (1..=table.columns.len())
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut insert = conn.prepare_cached(&format!(
                    "INSERT INTO {} ({}) VALUES ({placeholders})",
                    table.name,
                    columns(table)
                ))?;
                for row in &batch {
                    insert.execute(rusqlite::params_from_iter(row.iter().map(value)))?;
                }
                if table.name == EVENTS.name {
                    if let Some(last) = batch.last() {
                        head = head.max(crate::backup::event_position(last));
                    }
                }
                written += batch.len() as u64;
            }
        }
    }
}

#[async_trait]
impl Backups for SqliteEventStore {
    async fn export(&self, since: u64, sink: mpsc::Sender<ExportItem>) -> Result<Cut, StoreError> {
        self.read(move |conn| export(conn, since, &sink)).await
    }

    async fn tables_with_rows(&self) -> Result<Vec<&'static str>, StoreError> {
        self.read(tables_with_rows).await
    }

    async fn import(&self, rows: mpsc::Receiver<ImportItem>) -> Result<u64, StoreError> {
        let (written, _) = self
            .write_then(move |conn| import(conn, rows), |(_, head)| Some(*head))
            .await?;
        Ok(written)
    }
}
