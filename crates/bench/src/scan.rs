//! Scans of the whole log (the rebuild's baseline): raw, and through `read_log`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context};
use chrono::Utc;
use cornershop_store::{EventLog, EventStore, PgEventStore, SqliteEventStore};
use serde_json::json;
use sqlx::Row;

use crate::cli::ScanArgs;
use crate::{emit, round1, round3};

// ---------------------------------------------------------------- scan

/// Rows per page of a scan: the rebuild's page.
const PAGE: i64 = 2000;

/// A raw scan of the events table, in pages by position: every column fetched, nothing
/// decoded. Returns (events, bytes of data, metadata and ids, seconds).
pub(crate) async fn raw_scan_postgres(url: &str) -> anyhow::Result<(u64, u64, f64)> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    let started = Instant::now();
    let (mut after, mut events, mut bytes) = (0i64, 0u64, 0u64);
    loop {
        let rows = sqlx::query(
            "SELECT position, event_id::text AS event_id, event_type, aggregate_type, \
             aggregate_id, version, schema_version, occurred_at, data::text AS data, \
             metadata::text AS metadata, trace_id FROM events WHERE position > $1 \
             ORDER BY position LIMIT $2",
        )
        .bind(after)
        .bind(PAGE)
        .fetch_all(&pool)
        .await?;
        for row in &rows {
            after = row.try_get("position")?;
            let data: String = row.try_get("data")?;
            let metadata: String = row.try_get("metadata")?;
            let id: String = row.try_get("event_id")?;
            let _: chrono::DateTime<Utc> = row.try_get("occurred_at")?;
            bytes += (data.len() + metadata.len() + id.len()) as u64;
            events += 1;
        }
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    pool.close().await;
    Ok((events, bytes, seconds))
}

/// [`raw_scan_postgres`] on the embedded store's file, through rusqlite (as the store
/// reads it), on one blocking thread: what SQLite itself can scan.
pub(crate) async fn raw_scan_sqlite(data_dir: &Path) -> anyhow::Result<(u64, u64, f64)> {
    let path = data_dir.join("cornershop.db");
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .with_context(|| format!("cannot open {}", path.display()))?;
        let started = Instant::now();
        let (mut after, mut events, mut bytes) = (0i64, 0u64, 0u64);
        let mut statement = conn.prepare(
            "SELECT position, event_id, event_type, aggregate_type, aggregate_id, version, \
             schema_version, timestamp_us, data, metadata, trace_id FROM events \
             WHERE position > ?1 ORDER BY position LIMIT ?2",
        )?;
        loop {
            let mut rows = statement.query(rusqlite::params![after, PAGE])?;
            let mut read = 0;
            while let Some(row) = rows.next()? {
                after = row.get("position")?;
                let data: String = row.get("data")?;
                let metadata: String = row.get("metadata")?;
                let id: String = row.get("event_id")?;
                bytes += (data.len() + metadata.len() + id.len()) as u64;
                events += 1;
                read += 1;
            }
            if read < PAGE {
                break;
            }
        }
        Ok((events, bytes, started.elapsed().as_secs_f64()))
    })
    .await?
}

/// The store's `read_log` over the whole log (decoded into events, which is what a
/// rebuild reads through). Returns (events, seconds).
pub(crate) async fn read_log_scan(store: &dyn EventLog) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let (mut after, mut events) = (0u64, 0u64);
    loop {
        let page = store.read_log(after, PAGE as u32).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        events += page.len() as u64;
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    Ok((events, started.elapsed().as_secs_f64()))
}

pub(crate) fn report_scan(backend: &str, case: &str, events: u64, bytes: u64, seconds: f64) {
    emit(json!({
        "kind": "scan", "backend": backend, "case": case, "events": events,
        "bytes": bytes, "seconds": round3(seconds),
        "eventsPerSecond": round1(events as f64 / seconds),
    }));
}

/// Reads the whole log of an existing store twice: a raw scan and `read_log`.
pub(crate) async fn scan(args: &ScanArgs) -> anyhow::Result<()> {
    let (store, backend): (Arc<dyn EventStore>, &str) = match args.database_url.as_deref() {
        Some(url) => {
            let (events, bytes, seconds) = raw_scan_postgres(url).await?;
            report_scan("postgres", "raw scan", events, bytes, seconds);
            (Arc::new(PgEventStore::connect(url).await?), "postgres")
        }
        None => {
            let dir = args
                .data_dir
                .clone()
                .ok_or_else(|| anyhow!("scan needs --data-dir"))?;
            let (events, bytes, seconds) = raw_scan_sqlite(&dir).await?;
            report_scan("sqlite", "raw scan", events, bytes, seconds);
            (Arc::new(SqliteEventStore::open(&dir).await?), "sqlite")
        }
    };
    let (events, seconds) = read_log_scan(store.as_ref()).await?;
    report_scan(backend, "read_log", events, 0, seconds);
    store.close().await;
    Ok(())
}
