//! `Backups` on the MongoDB backend: the log's tables (events, idempotency replies,
//! applied-command keys) from MongoDB, the others from the SQLite part.
//!
//! The cut: the SQLite part is read first, in its one read transaction (held in memory:
//! these tables are small beside the log), then the settled head of the log is the cut's
//! position. Everything the SQLite part holds was written after the events it names (a
//! dead letter, a checkpoint, a notification come after their event), so they are at or
//! below that head. The events are those of the append documents up to it (a prefix of
//! the log: nothing can appear below the settled head), with the idempotency replies and
//! applied-command keys those documents hold: the same append wrote them, so they agree.
//!
//! The import: into an empty store only. Events are inserted one document each (a gap
//! between restored positions gets its tombstones at once), restored replies and keys go
//! to `records`; the SQLite part's rows go to its own import, in its one transaction.
//! Without `End`, or when the SQLite part fails, the MongoDB rows written are deleted
//! again (the store was empty), so nothing stays; a crash during the import leaves rows,
//! which the next restore refuses (`tables_with_rows`).

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use tokio::sync::mpsc;

use super::log::{int, opt_int, opt_text, text};
use super::MongoEventStore;
use crate::backup::{
    export_rows, import_abandoned, not_empty, table, Backups, Cell, Cut, ExportItem, ImportItem,
    Row, BATCH, EVENTS, TABLES,
};
use crate::StoreError;

const IDEMPOTENCY_KEYS: &str = "idempotency_keys";
const APPLIED_COMMANDS: &str = "applied_commands";

/// Whether MongoDB holds the table (else the SQLite part does).
fn in_mongo(name: &str) -> bool {
    name == EVENTS.name || name == IDEMPOTENCY_KEYS || name == APPLIED_COMMANDS
}

fn gone() -> StoreError {
    StoreError::Refused("the backup's writer stopped reading".into())
}

fn opt_cell(value: Option<String>, cell: fn(String) -> Cell) -> Cell {
    value.map_or(Cell::Null, cell)
}

fn event_row(e: &Document, aggregate_type: &str, aggregate_id: &str) -> Result<Row, StoreError> {
    Ok(vec![
        Cell::Int(int(e, "position")?),
        Cell::Uuid(text(e, "eventId")?),
        Cell::Text(text(e, "eventType")?),
        Cell::Text(aggregate_id.to_string()),
        Cell::Text(aggregate_type.to_string()),
        Cell::Time(int(e, "timestamp")?),
        Cell::Int(int(e, "version")?),
        Cell::Int(int(e, "schemaVersion")?),
        Cell::Json(text(e, "data")?),
        Cell::Json(text(e, "metadata")?),
        Cell::Text(text(e, "correlationId")?),
        Cell::Text(text(e, "causationId")?),
        opt_cell(opt_text(e, "traceId")?, Cell::Text),
        opt_cell(opt_text(e, "topic")?, Cell::Text),
        opt_int(e, "partition")?.map_or(Cell::Null, Cell::Int),
        opt_int(e, "offset")?.map_or(Cell::Null, Cell::Int),
    ])
}

fn cell_text(cell: &Cell) -> Bson {
    match cell {
        Cell::Null => Bson::Null,
        Cell::Text(s) | Cell::Uuid(s) | Cell::Json(s) => Bson::String(s.clone()),
        Cell::Int(i) | Cell::Time(i) => Bson::Int64(*i),
        Cell::Blob(b) => Bson::Binary(mongodb::bson::Binary {
            subtype: mongodb::bson::spec::BinarySubtype::Generic,
            bytes: b.clone(),
        }),
    }
}

fn cell_int(cell: &Cell, what: &str) -> Result<i64, StoreError> {
    match cell {
        Cell::Int(i) | Cell::Time(i) => Ok(*i),
        other => Err(StoreError::Refused(format!(
            "{what} is not an integer: {other:?}"
        ))),
    }
}

/// A restored event row as its append document (one event).
fn event_document(row: &Row, now_us: i64) -> Result<(u64, Document), StoreError> {
    let c = |name: &str| &row[EVENTS.column(name).expect("an events column")];
    let position = cell_int(c("position"), "position")?;
    let version = cell_int(c("version"), "version")?;
    let timestamp = cell_int(c("timestamp"), "timestamp")?;
    let document = doc! {
        "_id": position,
        "n": 1_i64,
        "last": position,
        "aggregateType": cell_text(c("aggregateType")),
        "aggregateId": cell_text(c("aggregateId")),
        "firstVersion": version,
        "lastVersion": version,
        "eventIds": [cell_text(c("eventId"))],
        "eventTypes": [cell_text(c("eventType"))],
        "correlationIds": [cell_text(c("correlationId"))],
        "minTime": timestamp,
        "maxTime": timestamp,
        "events": [{
            "position": position,
            "eventId": cell_text(c("eventId")),
            "eventType": cell_text(c("eventType")),
            "version": version,
            "timestamp": timestamp,
            "schemaVersion": cell_text(c("schemaVersion")),
            "data": cell_text(c("data")),
            "metadata": cell_text(c("metadata")),
            "correlationId": cell_text(c("correlationId")),
            "causationId": cell_text(c("causationId")),
            "traceId": cell_text(c("traceId")),
            "topic": cell_text(c("topic")),
            "partition": cell_text(c("partition")),
            "offset": cell_text(c("offset")),
        }],
        "dedupeKey": format!("n:{position}"),
        "idempotencyKey": format!("n:{position}"),
        "writtenAt": now_us,
    };
    Ok((position as u64, document))
}

impl MongoEventStore {
    /// The MongoDB tables' rows of the log up to `cut`: events above `since`, the
    /// idempotency replies and the applied-command keys, each in its table's order.
    async fn log_rows(
        &self,
        cut: u64,
        since: u64,
    ) -> Result<(u64, Vec<Row>, Vec<Row>), StoreError> {
        let mut events = 0;
        let mut replies = Vec::new();
        let mut applied = Vec::new();
        let mut cursor = self
            .log
            .find(doc! { "_id": { "$lte": cut as i64 }, "gap": { "$exists": false } })
            .projection(doc! { "events": 0 })
            .sort(doc! { "_id": 1 })
            .await?;
        while let Some(d) = cursor.try_next().await? {
            let first = int(&d, "_id")? as u64;
            let last = int(&d, "last")? as u64;
            if last > since {
                events += last - first.max(since + 1) + 1;
            }
            if let Some(key) = text(&d, "idempotencyKey")?.strip_prefix("k:") {
                let reply = d
                    .get_document("idempotency")
                    .map_err(|e| StoreError::Corrupt(format!("idempotency: {e}")))?;
                replies.push(vec![
                    Cell::Text(key.to_string()),
                    Cell::Text(text(reply, "fingerprint")?),
                    Cell::Int(int(reply, "status")?),
                    Cell::Text(text(reply, "body")?),
                    Cell::Time(int(reply, "createdAt")?),
                ]);
            }
            if let Some(key) = text(&d, "dedupeKey")?.strip_prefix("k:") {
                applied.push(vec![
                    Cell::Text(key.to_string()),
                    Cell::Time(int(&d, "appliedAt")?),
                ]);
            }
        }
        let mut restored = self.records.find(doc! {}).await?;
        while let Some(r) = restored.try_next().await? {
            let id = text(&r, "_id")?;
            if let Some(key) = id.strip_prefix("idem:") {
                replies.push(vec![
                    Cell::Text(key.to_string()),
                    Cell::Text(text(&r, "fingerprint")?),
                    Cell::Int(int(&r, "status")?),
                    Cell::Text(text(&r, "body")?),
                    Cell::Time(int(&r, "createdAt")?),
                ]);
            } else if let Some(key) = id.strip_prefix("applied:") {
                applied.push(vec![
                    Cell::Text(key.to_string()),
                    Cell::Time(int(&r, "appliedAt")?),
                ]);
            }
        }
        let by_key = |a: &Row, b: &Row| match (&a[0], &b[0]) {
            (Cell::Text(a), Cell::Text(b)) => a.cmp(b),
            _ => std::cmp::Ordering::Equal,
        };
        replies.sort_by(by_key);
        applied.sort_by(by_key);
        Ok((events, replies, applied))
    }

    /// Deletes every MongoDB row (of a store that was empty before an import).
    async fn wipe(&self) -> Result<(), StoreError> {
        self.log.delete_many(doc! {}).await?;
        self.records.delete_many(doc! {}).await?;
        self.counters.delete_many(doc! {}).await?;
        self.claims.delete_many(doc! {}).await?;
        Ok(())
    }

    async fn import_log(
        &self,
        mut rows: mpsc::Receiver<ImportItem>,
        local: mpsc::Sender<ImportItem>,
    ) -> Result<(u64, u64), StoreError> {
        let mut written = 0;
        let mut head = 0u64;
        let now = chrono::Utc::now().timestamp_micros();
        loop {
            match rows.recv().await {
                None => return Err(import_abandoned()),
                Some(ImportItem::End) => {
                    local.send(ImportItem::End).await.map_err(|_| gone())?;
                    return Ok((written, head));
                }
                Some(ImportItem::Rows(t, batch)) if t.name == EVENTS.name => {
                    let mut documents = Vec::with_capacity(batch.len());
                    for row in &batch {
                        let (position, document) = event_document(row, now)?;
                        for missing in head + 1..position {
                            documents.push(super::log::tombstone(missing));
                        }
                        head = head.max(position);
                        documents.push(document);
                    }
                    if !documents.is_empty() {
                        self.log.insert_many(documents).await?;
                    }
                    written += batch.len() as u64;
                }
                Some(ImportItem::Rows(t, batch)) if t.name == IDEMPOTENCY_KEYS => {
                    let documents = batch.iter().map(|r| {
                        let key = match &r[0] {
                            Cell::Text(k) => k.clone(),
                            _ => String::new(),
                        };
                        doc! {
                            "_id": format!("idem:{key}"),
                            "fingerprint": cell_text(&r[1]),
                            "status": cell_text(&r[2]),
                            "body": cell_text(&r[3]),
                            "createdAt": cell_text(&r[4]),
                        }
                    });
                    self.records.insert_many(documents).await?;
                    written += batch.len() as u64;
                }
                Some(ImportItem::Rows(t, batch)) if t.name == APPLIED_COMMANDS => {
                    let documents = batch.iter().map(|r| {
                        let key = match &r[0] {
                            Cell::Text(k) => k.clone(),
                            _ => String::new(),
                        };
                        doc! { "_id": format!("applied:{key}"), "appliedAt": cell_text(&r[1]) }
                    });
                    self.records.insert_many(documents).await?;
                    written += batch.len() as u64;
                }
                Some(other) => local.send(other).await.map_err(|_| gone())?,
            }
        }
    }
}

#[async_trait]
impl Backups for MongoEventStore {
    async fn export(&self, since: u64, sink: mpsc::Sender<ExportItem>) -> Result<Cut, StoreError> {
        let (_, local_rows) = export_rows(&self.local, 0).await?;
        let position = self.order.advance().await?;
        let (events, replies, applied) = self.log_rows(position, since).await?;
        let rows = TABLES
            .iter()
            .map(|t| {
                let count = match t.name {
                    n if n == EVENTS.name => events,
                    IDEMPOTENCY_KEYS => replies.len() as u64,
                    APPLIED_COMMANDS => applied.len() as u64,
                    n => local_rows.iter().filter(|(name, _)| *name == n).count() as u64,
                };
                (t.name, count)
            })
            .collect();
        let cut = Cut {
            position,
            since,
            rows,
        };
        sink.send(ExportItem::Cut(cut.clone()))
            .await
            .map_err(|_| gone())?;
        // The events, a batch at a time.
        let mut cursor = self
            .log
            .find(doc! {
                "_id": { "$lte": position as i64 },
                "last": { "$gt": since as i64 },
                "gap": { "$exists": false },
            })
            .sort(doc! { "_id": 1 })
            .batch_size(256)
            .await?;
        let events_table = table(EVENTS.name).expect("the events table");
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(d) = cursor.try_next().await? {
            let aggregate_type = text(&d, "aggregateType")?;
            let aggregate_id = text(&d, "aggregateId")?;
            for e in d
                .get_array("events")
                .map_err(|e| StoreError::Corrupt(format!("events: {e}")))?
            {
                let e = e
                    .as_document()
                    .ok_or_else(|| StoreError::Corrupt("events: not a document".into()))?;
                if int(e, "position")? as u64 <= since {
                    continue;
                }
                batch.push(event_row(e, &aggregate_type, &aggregate_id)?);
                if batch.len() == BATCH {
                    sink.send(ExportItem::Rows(events_table, std::mem::take(&mut batch)))
                        .await
                        .map_err(|_| gone())?;
                }
            }
        }
        if !batch.is_empty() {
            sink.send(ExportItem::Rows(events_table, batch))
                .await
                .map_err(|_| gone())?;
        }
        for (name, rows) in [(IDEMPOTENCY_KEYS, replies), (APPLIED_COMMANDS, applied)] {
            let t = table(name).expect("a backed-up table");
            for chunk in rows.chunks(BATCH) {
                sink.send(ExportItem::Rows(t, chunk.to_vec()))
                    .await
                    .map_err(|_| gone())?;
            }
        }
        for t in TABLES.iter().filter(|t| !in_mongo(t.name)) {
            let rows: Vec<Row> = local_rows
                .iter()
                .filter(|(name, _)| *name == t.name)
                .map(|(_, row)| row.clone())
                .collect();
            for chunk in rows.chunks(BATCH) {
                sink.send(ExportItem::Rows(t, chunk.to_vec()))
                    .await
                    .map_err(|_| gone())?;
            }
        }
        Ok(cut)
    }

    async fn tables_with_rows(&self) -> Result<Vec<&'static str>, StoreError> {
        let local = self.local.tables_with_rows().await?;
        let mut found = Vec::new();
        for t in TABLES {
            let any = match t.name {
                n if n == EVENTS.name => self.log.find_one(doc! {}).await?.is_some(),
                IDEMPOTENCY_KEYS => {
                    self.log
                        .find_one(doc! { "idempotency": { "$exists": true } })
                        .await?
                        .is_some()
                        || self
                            .records
                            .find_one(doc! { "fingerprint": { "$exists": true } })
                            .await?
                            .is_some()
                }
                APPLIED_COMMANDS => {
                    self.log
                        .find_one(doc! { "appliedAt": { "$exists": true } })
                        .await?
                        .is_some()
                        || self
                            .records
                            .find_one(doc! { "appliedAt": { "$exists": true } })
                            .await?
                            .is_some()
                }
                n => local.contains(&n),
            };
            if any {
                found.push(t.name);
            }
        }
        Ok(found)
    }

    async fn import(&self, rows: mpsc::Receiver<ImportItem>) -> Result<u64, StoreError> {
        let taken = self.tables_with_rows().await?;
        if !taken.is_empty() {
            return Err(not_empty(&taken));
        }
        let (to_local, local_rows) = mpsc::channel(8);
        let local = self.local.import(local_rows);
        let log = self.import_log(rows, to_local);
        let (local, log) = tokio::join!(local, log);
        match (local, log) {
            (Ok(local_written), Ok((written, head))) => {
                self.counters
                    .update_one(
                        doc! { "_id": "position" },
                        doc! { "$set": { "next": head as i64 } },
                    )
                    .upsert(true)
                    .await?;
                if head > 0 {
                    let claims = (1..=head).map(|p| doc! { "_id": p as i64 });
                    self.claims.insert_many(claims).await?;
                }
                self.order.advance().await?;
                Ok(written + local_written)
            }
            (local, log) => {
                self.wipe().await?;
                Err(log.err().or(local.err()).unwrap_or_else(import_abandoned))
            }
        }
    }
}
