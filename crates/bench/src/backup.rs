//! `cornershop backup` against its baselines, on one store of `--events` events: creating
//! a backup beside a raw scan of the events table, and restoring it (the import alone,
//! and verification) beside raw inserts of the same rows in one transaction.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cornershop_domain::AggregateType;
use cornershop_server::config::StoreArgs as ShopStore;
use cornershop_store::backup::{export_rows, Cell, Row, EVENTS};
use cornershop_store::{AppendRequest, EventStore, PgEventStore, SqliteEventStore};
use serde_json::json;

use crate::cli::{Backend, BackupArgs};
use crate::scan::{raw_scan_postgres, raw_scan_sqlite};
use crate::{emit, new_event, round1, round3};

/// Events per append, and the carts they go to.
const BATCH: u64 = 100;
const CARTS: u64 = 1_000;

fn report(backend: &str, case: &str, events: u64, seconds: f64) {
    emit(json!({
        "kind": "backup", "backend": backend, "case": case, "events": events,
        "seconds": round3(seconds), "eventsPerSecond": round1(events as f64 / seconds),
    }));
}

fn shop_store(dir: &Path, database_url: Option<&str>) -> ShopStore {
    ShopStore {
        data_dir: dir.to_path_buf(),
        database_url: database_url.map(String::from),
        mongodb_url: None,
        master_key_file: None,
    }
}

async fn open(dir: &Path, database_url: Option<&str>) -> anyhow::Result<Arc<dyn EventStore>> {
    Ok(match database_url {
        Some(url) => Arc::new(PgEventStore::connect(url).await?),
        None => Arc::new(SqliteEventStore::open(dir).await?),
    })
}

/// The events of `store`'s export, in memory (the raw insert's input).
async fn exported_events(store: &dyn EventStore) -> anyhow::Result<Vec<Row>> {
    let (_, rows) = export_rows(store, 0).await?;
    Ok(rows
        .into_iter()
        .filter(|(table, _)| *table == EVENTS.name)
        .map(|(_, row)| row)
        .collect())
}

/// Inserts `rows` into the events table of the SQLite file under `dir`, one prepared
/// INSERT per row, in one transaction: what SQLite itself takes.
async fn raw_insert_sqlite(dir: &Path, rows: Vec<Row>) -> anyhow::Result<f64> {
    let path = dir.join("cornershop.db");
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let mut conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL")?;
        let columns: Vec<&str> = EVENTS.columns.iter().map(|c| c.sqlite).collect();
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO events ({}) VALUES ({})",
            columns.join(", "),
            placeholders.join(", ")
        );
        let started = Instant::now();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(&sql)?;
            for row in &rows {
                insert.execute(rusqlite::params_from_iter(row.iter().map(
                    |cell| match cell {
                        Cell::Null => rusqlite::types::Value::Null,
                        Cell::Text(s) | Cell::Uuid(s) | Cell::Json(s) => {
                            rusqlite::types::Value::Text(s.clone())
                        }
                        Cell::Int(i) | Cell::Time(i) => rusqlite::types::Value::Integer(*i),
                        Cell::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
                    },
                )))?;
            }
        }
        tx.commit()?;
        Ok(started.elapsed().as_secs_f64())
    })
    .await?
}

/// Inserts `rows` into the events table of PostgreSQL with one `COPY ... FROM STDIN`
/// (text format), in one transaction: the fastest way in.
async fn raw_insert_postgres(url: &str, rows: Vec<Row>) -> anyhow::Result<f64> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
    let columns: Vec<&str> = EVENTS.columns.iter().map(|c| c.postgres).collect();
    let escape = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    };
    let mut text = String::new();
    for row in &rows {
        let fields: Vec<String> = row
            .iter()
            .map(|cell| match cell {
                Cell::Null => "\\N".to_string(),
                Cell::Text(s) | Cell::Uuid(s) | Cell::Json(s) => escape(s),
                Cell::Int(i) => i.to_string(),
                Cell::Time(us) => chrono::DateTime::<chrono::Utc>::from_timestamp_micros(*us)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                Cell::Blob(_) => "\\N".to_string(),
            })
            .collect();
        text.push_str(&fields.join("\t"));
        text.push('\n');
    }
    let started = Instant::now();
    let mut tx = sqlx::Connection::begin(&mut conn).await?;
    let mut copy = tx
        .copy_in_raw(&format!("COPY events ({}) FROM STDIN", columns.join(", ")))
        .await?;
    copy.send(text.into_bytes()).await?;
    copy.finish().await?;
    tx.commit().await?;
    Ok(started.elapsed().as_secs_f64())
}

pub(crate) async fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    let backend = args.store.backend;
    let work = args.store.temp_dir()?;
    let (source_url, target_url, raw_url) = match backend {
        Backend::Sqlite => (None, None, None),
        Backend::Postgres => (
            Some(args.store.database_url("backup")?.to_string()),
            Some(args.target_database_url.clone().ok_or_else(|| {
                anyhow::anyhow!("backup --backend postgres needs --target-database-url")
            })?),
            Some(args.raw_database_url.clone().ok_or_else(|| {
                anyhow::anyhow!("backup --backend postgres needs --raw-database-url")
            })?),
        ),
    };
    let (source_dir, target_dir, raw_dir) = (
        work.path().join("source"),
        work.path().join("target"),
        work.path().join("raw"),
    );
    // The source: --events ItemAddedToCart events, 100 per append, over 1,000 carts.
    let source = open(&source_dir, source_url.as_deref()).await?;
    let mut versions = vec![0u64; CARTS as usize];
    let mut done = 0;
    while done < args.events {
        let cart = (done / BATCH) % CARTS;
        let id = format!("bk-{cart}");
        let n = BATCH.min(args.events - done);
        let events = (0..n).map(|k| new_event(&id, done + k)).collect();
        source
            .append(AppendRequest::new(
                AggregateType::Cart,
                &id,
                versions[cart as usize],
                events,
            ))
            .await?;
        versions[cart as usize] += n;
        done += n;
    }
    let rows = exported_events(source.as_ref()).await?;
    source.close().await;
    let name = backend.name();

    let (events, _, seconds) = match &source_url {
        Some(url) => raw_scan_postgres(url).await?,
        None => raw_scan_sqlite(&source_dir).await?,
    };
    report(name, "raw scan of the events", events, seconds);

    let file = work.path().join("bench.backup");
    let started = Instant::now();
    let manifest = cornershop_server::backup::create(
        &file,
        0,
        &shop_store(&source_dir, source_url.as_deref()),
    )
    .await?;
    report(name, "backup create", done, started.elapsed().as_secs_f64());

    let started = Instant::now();
    cornershop_server::backup::verify(&file, false)?;
    report(name, "backup verify", done, started.elapsed().as_secs_f64());

    let target = open(&target_dir, target_url.as_deref()).await?;
    let started = Instant::now();
    cornershop_server::backup::import(&target, &file, &manifest).await?;
    report(
        name,
        "backup restore (the import)",
        done,
        started.elapsed().as_secs_f64(),
    );
    target.close().await;

    // The raw insert goes into a store whose tables a store's opening has made.
    open(&raw_dir, raw_url.as_deref()).await?.close().await;
    let seconds = match &raw_url {
        Some(url) => raw_insert_postgres(url, rows).await?,
        None => raw_insert_sqlite(&raw_dir, rows).await?,
    };
    report(name, "raw insert of the same events", done, seconds);
    emit(json!({
        "kind": "backup-file", "backend": name, "events": done,
        "bytes": std::fs::metadata(&file)?.len(),
    }));
    Ok(())
}
