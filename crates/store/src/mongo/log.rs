//! `EventLog` on MongoDB: appends (one document each), the order rule's settled head
//! (see the module comment of `mod.rs`), reads, queries and statistics.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use cornershop_domain::{AggregateType, EventEnvelope, Metadata};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use uuid::Uuid;

use super::{MongoEventStore, Order};
use crate::shared::{expect_version, from_micros};
use crate::{
    count_stored, events_to_store, trace, AppendRequest, EventLog, EventQuery, IdempotentResponse,
    StoreError, StoreStats, StoredEvent, TimeRange,
};

/// Documents read per batch while the settled head moves on.
const SETTLE_BATCH: i64 = 512;

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn int(doc: &Document, key: &str) -> Result<i64, StoreError> {
    match doc.get(key) {
        Some(Bson::Int64(i)) => Ok(*i),
        Some(Bson::Int32(i)) => Ok(i64::from(*i)),
        Some(Bson::Double(f)) if f.fract() == 0.0 => Ok(*f as i64),
        other => Err(corrupt(key, format!("not an integer: {other:?}"))),
    }
}

pub(crate) fn opt_int(doc: &Document, key: &str) -> Result<Option<i64>, StoreError> {
    match doc.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(_) => int(doc, key).map(Some),
    }
}

pub(crate) fn text(doc: &Document, key: &str) -> Result<String, StoreError> {
    doc.get_str(key)
        .map(str::to_string)
        .map_err(|e| corrupt(key, e))
}

pub(crate) fn opt_text(doc: &Document, key: &str) -> Result<Option<String>, StoreError> {
    match doc.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(_) => text(doc, key).map(Some),
    }
}

/// The key an append document stores for an optional unique key: `k:<key>`, or
/// `n:<position>` when the append has none (unique too, and never a real key's).
fn unique_key(key: Option<&str>, position: u64) -> String {
    match key {
        Some(key) => format!("k:{key}"),
        None => format!("n:{position}"),
    }
}

/// An event as its sub-document of an append document.
fn event_document(event: &StoredEvent, data: String, metadata: String) -> Document {
    let e = &event.envelope;
    doc! {
        "position": event.position as i64,
        "eventId": e.event_id.to_string(),
        "eventType": &e.event_type,
        "version": e.version as i64,
        "timestamp": e.timestamp.timestamp_micros(),
        "schemaVersion": i64::from(e.schema_version),
        "data": data,
        "metadata": metadata,
        "correlationId": &e.metadata.correlation_id,
        "causationId": &e.metadata.causation_id,
        "traceId": &event.trace_id,
        "topic": Bson::Null,
        "partition": Bson::Null,
        "offset": Bson::Null,
    }
}

/// An append document: `events` (with their positions) and their sub-documents.
pub(crate) fn append_document(
    aggregate_type: AggregateType,
    aggregate_id: &str,
    events: &[StoredEvent],
    sub_documents: Vec<Document>,
    dedupe_key: Option<&str>,
    idempotency: Option<&IdempotentResponse>,
    now_us: i64,
) -> Document {
    let first = events[0].position;
    let last = events[events.len() - 1].position;
    let times = events
        .iter()
        .map(|e| e.envelope.timestamp.timestamp_micros());
    let mut doc = doc! {
        "_id": first as i64,
        "n": events.len() as i64,
        "last": last as i64,
        "aggregateType": aggregate_type.as_str(),
        "aggregateId": aggregate_id,
        "firstVersion": events[0].envelope.version as i64,
        "lastVersion": events[events.len() - 1].envelope.version as i64,
        "eventIds": events.iter().map(|e| e.envelope.event_id.to_string()).collect::<Vec<_>>(),
        "eventTypes": events.iter().map(|e| e.envelope.event_type.clone()).collect::<Vec<_>>(),
        "correlationIds": events.iter().map(|e| e.envelope.metadata.correlation_id.clone()).collect::<Vec<_>>(),
        "minTime": times.clone().min().unwrap_or(0),
        "maxTime": times.max().unwrap_or(0),
        "events": sub_documents,
        "dedupeKey": unique_key(dedupe_key, first),
        "idempotencyKey": unique_key(idempotency.map(|i| i.key.as_str()), first),
        "writtenAt": now_us,
    };
    if dedupe_key.is_some() {
        doc.insert("appliedAt", now_us);
    }
    if let Some(reply) = idempotency {
        doc.insert(
            "idempotency",
            doc! {
                "fingerprint": &reply.fingerprint,
                "status": i64::from(reply.status),
                "body": &reply.body,
                "createdAt": now_us,
            },
        );
    }
    doc
}

/// The tombstone of a position whose writer did not insert in time: it takes the
/// position's `_id` (and keys no append can have), holds no event.
pub(crate) fn tombstone(position: u64) -> Document {
    let p = position as i64;
    doc! {
        "_id": p,
        "n": 1_i64,
        "last": p,
        "gap": true,
        "aggregateType": "$gap",
        "aggregateId": p.to_string(),
        "firstVersion": 0_i64,
        "lastVersion": 0_i64,
        "eventIds": [],
        "eventTypes": [],
        "correlationIds": [],
        "minTime": 0_i64,
        "maxTime": 0_i64,
        "events": [],
        "dedupeKey": format!("n:{p}"),
        "idempotencyKey": format!("n:{p}"),
        "writtenAt": Utc::now().timestamp_micros(),
    }
}

/// The events of an append document.
pub(crate) fn decode_events(doc: &Document) -> Result<Vec<StoredEvent>, StoreError> {
    let aggregate_type = text(doc, "aggregateType")?;
    let aggregate_type = AggregateType::parse(&aggregate_type)
        .ok_or_else(|| corrupt("aggregateType", &aggregate_type))?;
    let aggregate_id = text(doc, "aggregateId")?;
    let events = doc.get_array("events").map_err(|e| corrupt("events", e))?;
    events
        .iter()
        .map(|e| {
            let e = e
                .as_document()
                .ok_or_else(|| corrupt("events", "not a document"))?;
            decode_event(aggregate_type, &aggregate_id, e)
        })
        .collect()
}

fn decode_event(
    aggregate_type: AggregateType,
    aggregate_id: &str,
    e: &Document,
) -> Result<StoredEvent, StoreError> {
    let metadata: Metadata =
        serde_json::from_str(&text(e, "metadata")?).map_err(|x| corrupt("metadata", x))?;
    let event_id = text(e, "eventId")?;
    let trace_id = opt_text(e, "traceId")?
        .unwrap_or_else(|| trace::trace_id_for_correlation(&metadata.correlation_id));
    Ok(StoredEvent {
        position: int(e, "position")? as u64,
        envelope: EventEnvelope {
            event_id: Uuid::parse_str(&event_id).map_err(|x| corrupt("eventId", x))?,
            event_type: text(e, "eventType")?,
            aggregate_id: aggregate_id.to_string(),
            aggregate_type,
            timestamp: from_micros(int(e, "timestamp")?)?,
            version: int(e, "version")? as u64,
            schema_version: int(e, "schemaVersion")? as u32,
            data: serde_json::from_str(&text(e, "data")?).map_err(|x| corrupt("data", x))?,
            metadata,
        },
        topic: opt_text(e, "topic")?,
        partition: opt_int(e, "partition")?.map(|p| p as i32),
        offset: opt_int(e, "offset")?,
        trace_id,
    })
}

fn time_filter(filter: &mut Document, range: TimeRange) {
    if let Some(from) = range.from {
        filter.insert("maxTime", doc! { "$gte": from.timestamp_micros() });
    }
    if let Some(to) = range.to {
        filter.insert("minTime", doc! { "$lte": to.timestamp_micros() });
    }
}

impl Order {
    fn grace(&self) -> Duration {
        *self.grace.read().expect("grace lock")
    }

    /// Moves the settled head on as far as the log is contiguous, recording the gaps whose
    /// grace has passed; returns it.
    pub(crate) async fn advance(&self) -> Result<u64, StoreError> {
        let mut settled = self.settled.lock().await;
        'reading: loop {
            let docs: Vec<Document> = self
                .log
                .find(doc! { "_id": { "$gt": settled.position as i64 } })
                .projection(doc! { "_id": 1, "n": 1 })
                .sort(doc! { "_id": 1 })
                .limit(SETTLE_BATCH)
                .await?
                .try_collect()
                .await?;
            if docs.is_empty() {
                break;
            }
            for d in &docs {
                let id = int(d, "_id")? as u64;
                let n = int(d, "n")? as u64;
                if id == settled.position + 1 {
                    settled.position = id + n - 1;
                    settled.gap = None;
                    continue;
                }
                // Positions settled.position + 1 .. id are taken by writers that have not
                // inserted yet (or never will).
                let start = settled.position + 1;
                let noticed = match settled.gap {
                    Some((gap, at)) if gap == start => at,
                    _ => {
                        let now = Instant::now();
                        settled.gap = Some((start, now));
                        now
                    }
                };
                if noticed.elapsed() < self.grace() {
                    break 'reading;
                }
                let tombstones: Vec<Document> = (start..id).map(tombstone).collect();
                tracing::warn!(
                    from = start,
                    to = id - 1,
                    "recording a gap in the log: its writer did not insert in time"
                );
                match self.log.insert_many(tombstones).ordered(false).await {
                    Ok(_) => {}
                    // A writer inserted first: its document is read next.
                    Err(e) if crate::mongo_is_duplicate_key(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                continue 'reading;
            }
            if (docs.len() as i64) < SETTLE_BATCH {
                break;
            }
        }
        let position = settled.position;
        drop(settled);
        self.head.send_if_modified(|head| {
            let moved = position > *head;
            *head = (*head).max(position);
            moved
        });
        Ok(position)
    }

    /// The highest position a reader may read up to.
    async fn readable(&self) -> Result<u64, StoreError> {
        if self
            .unsettled_reads
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(i64::MAX as u64);
        }
        self.advance().await
    }
}

/// Moves the settled head on after appends and every 100 ms (appends of other processes,
/// gaps whose grace passes), until the store is dropped.
pub(crate) async fn run_settler(order: Weak<Order>) {
    loop {
        let Some(o) = order.upgrade() else { return };
        if let Err(e) = o.advance().await {
            tracing::debug!(error = %e, "the settled head could not move on");
        }
        let woken = async {
            let _ = tokio::time::timeout(Duration::from_millis(100), o.appended.notified()).await;
        };
        woken.await;
    }
}

impl MongoEventStore {
    /// Test hook: [`EventLog::append`], but waiting `delay` between taking the positions
    /// and inserting, as a slow writer would. The contract uses it to check that a reader
    /// never skips an event, and (a delay past the gap's grace, or a task aborted during
    /// it) that a late or dead writer's positions become a gap.
    #[doc(hidden)]
    pub async fn append_with_delay(
        &self,
        request: AppendRequest,
        delay: Duration,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.append_inner(request, Some(delay)).await
    }

    /// The aggregate's version: its last append's last version (0 when it has none).
    async fn version_of(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
    ) -> Result<u64, StoreError> {
        let last = self
            .log
            .find_one(
                doc! { "aggregateType": aggregate_type.as_str(), "aggregateId": aggregate_id },
            )
            .sort(doc! { "firstVersion": -1 })
            .projection(doc! { "lastVersion": 1 })
            .await?;
        Ok(match last {
            Some(d) => int(&d, "lastVersion")? as u64,
            None => 0,
        })
    }

    pub(crate) async fn applied_key_exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .log
            .find_one(doc! { "dedupeKey": format!("k:{key}") })
            .projection(doc! { "_id": 1 })
            .await?
            .is_some()
            || self
                .records
                .find_one(doc! { "_id": format!("applied:{key}") })
                .await?
                .is_some())
    }

    async fn idempotency_key_exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.find_idempotent_response(key).await?.is_some())
    }

    /// Why an append's insert hit a unique key: a stale version, a used key, or (`None`)
    /// its position, taken by a tombstone.
    async fn why_taken(&self, request: &AppendRequest) -> Result<Option<StoreError>, StoreError> {
        let actual = self
            .version_of(request.aggregate_type, &request.aggregate_id)
            .await?;
        if let Err(conflict) = expect_version(request, actual) {
            return Ok(Some(conflict));
        }
        if let Some(key) = &request.dedupe_key {
            if self.applied_key_exists(key).await? {
                return Ok(Some(StoreError::AlreadyApplied(key.clone())));
            }
        }
        if let Some(reply) = &request.idempotency {
            if self.idempotency_key_exists(&reply.key).await? {
                return Ok(Some(StoreError::IdempotencyKeyTaken(reply.key.clone())));
            }
        }
        Ok(None)
    }

    /// An append without events: only its keys, kept in `records` (no append document
    /// holds them; the key with no events and the reply are two inserts).
    async fn append_nothing(
        &self,
        request: &AppendRequest,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if let Some(taken) = self.why_taken(request).await? {
            return Err(taken);
        }
        let now = Utc::now().timestamp_micros();
        if let Some(reply) = &request.idempotency {
            let inserted = self
                .records
                .insert_one(doc! {
                    "_id": format!("idem:{}", reply.key),
                    "fingerprint": &reply.fingerprint,
                    "status": i64::from(reply.status),
                    "body": &reply.body,
                    "createdAt": now,
                })
                .await;
            crate::unless_taken(inserted, || {
                StoreError::IdempotencyKeyTaken(reply.key.clone())
            })?;
        }
        if let Some(key) = &request.dedupe_key {
            let inserted = self
                .records
                .insert_one(doc! { "_id": format!("applied:{key}"), "appliedAt": now })
                .await;
            crate::unless_taken(inserted, || StoreError::AlreadyApplied(key.clone()))?;
        }
        Ok(Vec::new())
    }

    /// Takes `n` positions: the first of them. The counter (`findOneAndUpdate` `$inc`)
    /// proposes them; a claim per position (`claims`, unique `_id`) makes them ours. On
    /// MongoDB the counter alone would do, but FerretDB 1.x runs `findAndModify` as a read
    /// and then a write (FerretDB#2168), so two writers can be handed overlapping ranges:
    /// the claims let only one have each position. Positions claimed by a writer whose
    /// other claims lost are given up at once, as tombstones.
    pub(crate) async fn take_positions(&self, n: u64) -> Result<u64, StoreError> {
        loop {
            let counter = self
                .counters
                .find_one_and_update(
                    doc! { "_id": "position" },
                    doc! { "$inc": { "next": n as i64 } },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            let first = match counter {
                Ok(Some(counter)) => int(&counter, "next")? as u64 - n + 1,
                Ok(None) => return Err(corrupt("counters", "no position counter after an upsert")),
                // Two first upserts raced: the counter exists now.
                Err(e) if crate::mongo_is_duplicate_key(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let claims = (first..first + n).map(|p| doc! { "_id": p as i64 });
            match self.claims.insert_many(claims).ordered(false).await {
                Ok(_) => return Ok(first),
                Err(e) if crate::mongo_is_duplicate_key(&e) => {
                    let lost: std::collections::HashSet<u64> = match &*e.kind {
                        mongodb::error::ErrorKind::InsertMany(m) => m
                            .write_errors
                            .iter()
                            .flatten()
                            .map(|w| first + w.index as u64)
                            .collect(),
                        _ => (first..first + n).collect(),
                    };
                    let ours: Vec<Document> = (first..first + n)
                        .filter(|p| !lost.contains(p))
                        .map(tombstone)
                        .collect();
                    if !ours.is_empty() {
                        match self.log.insert_many(ours).ordered(false).await {
                            Ok(_) => {}
                            Err(e) if crate::mongo_is_duplicate_key(&e) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    tracing::debug!(
                        first,
                        n,
                        "positions claimed by another writer; taking new ones"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn append_inner(
        &self,
        request: AppendRequest,
        delay: Option<Duration>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if request.events.is_empty() {
            return self.append_nothing(&request).await;
        }
        let (mut stored, rows) = events_to_store(
            request.aggregate_type,
            &request.aggregate_id,
            request.expected_version,
            request.events.clone(),
        )?;
        // Checks before the insert: the unique indexes decide the races, these give the
        // error of an append that was doomed anyway (and event ids, which no unique index
        // guards: they are fresh UUIDs, a repeat is a replayed event).
        if let Some(taken) = self.why_taken(&request).await? {
            return Err(taken);
        }
        let ids: Vec<String> = stored
            .iter()
            .map(|e| e.envelope.event_id.to_string())
            .collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        if distinct.len() != ids.len()
            || self
                .log
                .find_one(doc! { "eventIds": { "$in": &ids } })
                .projection(doc! { "_id": 1 })
                .await?
                .is_some()
        {
            return Err(StoreError::Refused(format!(
                "an event id of the append to {} '{}' is already stored",
                request.aggregate_type, request.aggregate_id
            )));
        }
        loop {
            let first = self.take_positions(stored.len() as u64).await?;
            for (i, event) in stored.iter_mut().enumerate() {
                event.position = first + i as u64;
            }
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let sub_documents = stored
                .iter()
                .zip(&rows)
                .map(|(e, (data, metadata))| event_document(e, data.clone(), metadata.clone()))
                .collect();
            let document = append_document(
                request.aggregate_type,
                &request.aggregate_id,
                &stored,
                sub_documents,
                request.dedupe_key.as_deref(),
                request.idempotency.as_ref(),
                Utc::now().timestamp_micros(),
            );
            match self.log.insert_one(document).await {
                Ok(_) => break,
                Err(e) if crate::mongo_is_duplicate_key(&e) => {
                    if let Some(taken) = self.why_taken(&request).await? {
                        return Err(taken);
                    }
                    // A reader recorded our positions as a gap: take new ones.
                    tracing::debug!(position = first, "append lost its positions; retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.order.appended.notify_one();
        count_stored(&stored);
        Ok(stored)
    }

    /// Append documents of the readable log matching `filter`, in `_id` order (`-1`:
    /// newest first), each with the events it holds that `keep` keeps, until `limit`.
    async fn collect_events(
        &self,
        filter: Document,
        direction: i32,
        limit: usize,
        keep: impl Fn(&StoredEvent) -> bool,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut cursor = self
            .log
            .find(filter)
            .sort(doc! { "_id": direction })
            .batch_size(64)
            .await?;
        while let Some(d) = cursor.try_next().await? {
            if d.get_bool("gap").unwrap_or(false) {
                continue;
            }
            let mut events = decode_events(&d)?;
            if direction < 0 {
                events.reverse();
            }
            for e in events {
                if keep(&e) {
                    out.push(e);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn count_by(&self, pipeline: Vec<Document>) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut out = BTreeMap::new();
        let mut cursor = self.log.aggregate(pipeline).await?;
        while let Some(d) = cursor.try_next().await? {
            out.insert(text(&d, "_id")?, int(&d, "count")? as u64);
        }
        Ok(out)
    }
}

impl MongoEventStore {
    /// The events of the append documents matching `filter` (one aggregate's), in version
    /// order, those that `keep` holds of.
    async fn aggregate_events(
        &self,
        filter: Document,
        keep: impl Fn(&StoredEvent) -> bool,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let docs: Vec<Document> = self
            .log
            .find(filter)
            .sort(doc! { "firstVersion": 1 })
            .await?
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for d in &docs {
            out.extend(decode_events(d)?.into_iter().filter(|e| keep(e)));
        }
        Ok(out)
    }
}

#[async_trait]
impl EventLog for MongoEventStore {
    async fn append(&self, request: AppendRequest) -> Result<Vec<StoredEvent>, StoreError> {
        self.append_inner(request, None).await
    }

    async fn load_aggregate(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        range: TimeRange,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut filter =
            doc! { "aggregateType": aggregate_type.as_str(), "aggregateId": aggregate_id };
        time_filter(&mut filter, range);
        self.aggregate_events(filter, |e| range.contains(e.envelope.timestamp))
            .await
    }

    async fn load_aggregate_after(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        after_version: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let filter = doc! {
            "aggregateType": aggregate_type.as_str(),
            "aggregateId": aggregate_id,
            "lastVersion": { "$gt": after_version as i64 },
        };
        self.aggregate_events(filter, |e| e.envelope.version > after_version)
            .await
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let readable = self.order.readable().await?;
        let mut filter = Document::new();
        if let Some(t) = query.aggregate_type {
            filter.insert("aggregateType", t.as_str());
        }
        if let Some(t) = &query.event_type {
            filter.insert("eventTypes", t.as_str());
        }
        if let Some(c) = &query.correlation_id {
            filter.insert("correlationIds", c.as_str());
        }
        time_filter(&mut filter, query.range);
        let after = query.after;
        let before = query.before.unwrap_or(u64::MAX);
        let keep = |e: &StoredEvent| {
            e.position > after
                && e.position < before
                && e.position <= readable
                && query
                    .event_type
                    .as_ref()
                    .is_none_or(|t| &e.envelope.event_type == t)
                && query
                    .correlation_id
                    .as_ref()
                    .is_none_or(|c| &e.envelope.metadata.correlation_id == c)
                && query.range.contains(e.envelope.timestamp)
        };
        let limit = query.limit as usize;
        let cap = readable.min(i64::MAX as u64) as i64;
        match query.before {
            None => {
                // The document holding position after + 1 may start at or below `after`.
                let mut out = Vec::new();
                if after > 0 {
                    let mut straddling = filter.clone();
                    straddling.insert("_id", doc! { "$lte": after.min(i64::MAX as u64) as i64 });
                    straddling.insert("last", doc! { "$gt": after.min(i64::MAX as u64) as i64 });
                    out = self.collect_events(straddling, 1, limit, keep).await?;
                }
                if out.len() < limit {
                    let mut rest = filter;
                    rest.insert(
                        "_id",
                        doc! { "$gt": after.min(i64::MAX as u64) as i64, "$lte": cap },
                    );
                    out.extend(
                        self.collect_events(rest, 1, limit - out.len(), keep)
                            .await?,
                    );
                }
                Ok(out)
            }
            Some(_) => {
                let below = before.min(i64::MAX as u64) as i64;
                filter.insert("_id", doc! { "$lt": below, "$lte": cap });
                filter.insert("last", doc! { "$gt": after.min(i64::MAX as u64) as i64 });
                self.collect_events(filter, -1, limit, keep).await
            }
        }
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        self.order.advance().await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let head_position = self.order.advance().await?;
        let events = doc! { "$match": { "gap": { "$exists": false } } };
        let by_event_type = self
            .count_by(vec![
                events.clone(),
                doc! { "$unwind": "$events" },
                doc! { "$group": { "_id": "$events.eventType", "count": { "$sum": 1 } } },
            ])
            .await?;
        let by_aggregate_type = self
            .count_by(vec![
                events.clone(),
                doc! { "$group": { "_id": "$aggregateType", "count": { "$sum": "$n" } } },
            ])
            .await?;
        let mut aggregates = self
            .log
            .aggregate(vec![
                events,
                doc! { "$group": { "_id": { "t": "$aggregateType", "i": "$aggregateId" } } },
                doc! { "$count": "count" },
            ])
            .await?;
        let total_aggregates = match aggregates.try_next().await? {
            Some(d) => int(&d, "count")? as u64,
            None => 0,
        };
        // The first and the last event's times: by the time index (FerretDB 1.x has no
        // $min or $max accumulator).
        let edge = |key: &'static str, direction: i32| {
            self.log
                .find_one(doc! { "gap": { "$exists": false } })
                .sort(doc! { key: direction })
                .projection(doc! { key: 1 })
        };
        let first_event_at = match edge("minTime", 1).await? {
            Some(d) => Some(from_micros(int(&d, "minTime")?)?),
            None => None,
        };
        let last_event_at = match edge("maxTime", -1).await? {
            Some(d) => Some(from_micros(int(&d, "maxTime")?)?),
            None => None,
        };
        Ok(StoreStats {
            total_events: by_aggregate_type.values().sum(),
            total_aggregates,
            head_position,
            by_event_type,
            by_aggregate_type,
            first_event_at,
            last_event_at,
        })
    }

    async fn find_idempotent_response(
        &self,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        let found = self
            .log
            .find_one(doc! { "idempotencyKey": format!("k:{key}") })
            .projection(doc! { "idempotency": 1 })
            .await?;
        let reply = match found {
            Some(d) => Some(
                d.get_document("idempotency")
                    .map_err(|e| corrupt("idempotency", e))?
                    .clone(),
            ),
            None => {
                self.records
                    .find_one(doc! { "_id": format!("idem:{key}") })
                    .await?
            }
        };
        reply
            .map(|r| {
                Ok(IdempotentResponse {
                    key: key.to_string(),
                    fingerprint: text(&r, "fingerprint")?,
                    status: int(&r, "status")? as u16,
                    body: text(&r, "body")?,
                })
            })
            .transpose()
    }

    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.order.head.subscribe()
    }

    async fn events_by_correlation(
        &self,
        correlation_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let readable = self.order.readable().await?;
        self.collect_events(
            doc! { "correlationIds": correlation_id, "_id": { "$lte": readable.min(i64::MAX as u64) as i64 } },
            1,
            usize::MAX,
            |e| e.envelope.metadata.correlation_id == correlation_id,
        )
        .await
    }

    async fn find_event(&self, event_id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let id = event_id.to_string();
        let found = self.log.find_one(doc! { "eventIds": &id }).await?;
        Ok(match found {
            Some(d) => decode_events(&d)?
                .into_iter()
                .find(|e| e.envelope.event_id == event_id),
            None => None,
        })
    }

    async fn close(&self) {
        if let Some(settler) = self.settler.lock().expect("settler lock").take() {
            settler.abort();
        }
        self.local.close().await;
        self.client.clone().shutdown().await;
    }
}
