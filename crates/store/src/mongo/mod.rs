//! The MongoDB backend: the event log in MongoDB (or FerretDB, which speaks its wire
//! protocol), without multi-document transactions or change streams, which FerretDB 1.x
//! lacks; the same design runs on a real replica set.
//!
//! **What MongoDB holds** (database of the URL, `cornershop` when it names none):
//!
//! - `log`: one document per append, its events inside, so that an append is one insert
//!   and atomic without a transaction. `_id` is the append's first global position, `n`
//!   its number of events, `last` its last position; `aggregateType`, `aggregateId`,
//!   `firstVersion`, `lastVersion`; `eventIds`, `eventTypes`, `correlationIds`, `minTime`,
//!   `maxTime` (microseconds) for the queries' filters and indexes; `events`: the envelope
//!   of each (data and metadata as their exact JSON text, timestamps in microseconds, BSON
//!   dates having only milliseconds), its trace id and where the relay published it. What
//!   must be atomic with the append is in the same document: `dedupeKey` (the applied
//!   command's key, `k:<key>`) and `idempotencyKey` (`k:<key>`, the reply in
//!   `idempotency`); an append without one gets `n:<position>`, unique too, so that the
//!   unique indexes need no sparse or partial index (which FerretDB 1.x lacks).
//! - Unique indexes: `_id` (the position: the order rule below), (aggregateType,
//!   aggregateId, firstVersion) (the expected-version check: of two appends at one
//!   version, one insert wins), `dedupeKey`, `idempotencyKey`. Indexes for the seed's
//!   queries: (eventTypes, minTime), (minTime, maxTime), correlationIds, eventIds.
//! - `counters`: `{_id: "position", next}`, the last position handed out, and `claims`:
//!   one document per position taken (`_id`: the position), which makes a position one
//!   writer's even where the counter's `findAndModify` is not atomic (FerretDB 1.x runs
//!   it as a read, then a write: FerretDB#2168). Claims are kept (pruning them is left).
//! - `records`: idempotency replies (`_id: "idem:<key>"`) and applied-command keys
//!   (`"applied:<key>"`) that belong to no append document: those of an append without
//!   events (a command that changed nothing) and those restored from a backup. Appends and
//!   lookups consult them too.
//!
//! **The global order, never skipped** (`log.rs`): a writer takes its positions from the
//! counter (`findOneAndUpdate` `$inc` by its number of events, each position then claimed)
//! and then inserts its
//! document under `_id` = its first position. Writers finish out of order, so a reader
//! keeps a settled head: the end of the contiguous run of documents from position 1. It
//! reads only up to it. When the next position is missing but a later document exists, a
//! writer is between taking its positions and inserting: the reader waits for it, up to
//! the gap's grace (5 s by default, from when this process first saw the gap); then it
//! inserts a tombstone (`gap: true`, no events) under each missing position, the same
//! unique `_id` the writer inserts under, so exactly one of them wins. A writer whose
//! insert loses takes new positions and tries again. So no event ever appears below the
//! settled head, and the head is never held back by a dead writer for longer than the
//! grace. Settledness only grows (every position at or below it is taken), so each
//! process keeps it in memory and moves it on from there.
//!
//! **The split**: the other tables stay in an embedded SQLite store (`SqliteEventStore`,
//! `cornershop.db` in the local directory given to [`MongoEventStore::connect`]):
//! checkpoints, dead letters, timers, leases, notifications, data keys and snapshots
//! (`local.rs`). They are written apart from appends, and the ones that must change
//! together (an erasure's key and its notifications, a re-drive's notification and dead
//! letter, a rotation's keys) keep their SQLite transaction. This holds for one process;
//! moving them into MongoDB too (for several processes on one database) is left to do.
//! `backup.rs` takes a backup of both parts.

mod backup;
mod local;
mod log;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, IndexModel};
use tokio::sync::{watch, Mutex, Notify};

use crate::{SqliteEventStore, StoreError};

/// How long a reader waits for a missing position before it records a gap, by default.
pub(crate) const DEFAULT_GAP_GRACE: Duration = Duration::from_secs(5);

pub struct MongoEventStore {
    log: Collection<Document>,
    counters: Collection<Document>,
    claims: Collection<Document>,
    records: Collection<Document>,
    order: Arc<Order>,
    /// The tables kept in SQLite (see the module comment).
    local: SqliteEventStore,
    client: Client,
    settler: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The reader's side of the order rule: the settled head and the gap being waited for.
pub(crate) struct Order {
    log: Collection<Document>,
    settled: Mutex<Settled>,
    grace: std::sync::RwLock<Duration>,
    head: watch::Sender<u64>,
    /// Wakes the settler after an append.
    appended: Notify,
    /// Test hook: readers read past the settled head (a broken rule).
    unsettled_reads: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
pub(crate) struct Settled {
    /// Every position at or below it is taken (by an append or a tombstone).
    position: u64,
    /// The first missing position above it, and when this process first saw it missing.
    gap: Option<(u64, Instant)>,
}

impl MongoEventStore {
    /// Connects to `url` (its database, `cornershop` when it names none), creating the
    /// indexes, and opens the SQLite part in `local_dir`.
    pub async fn connect(url: &str, local_dir: &Path) -> Result<Self, StoreError> {
        let client = Client::with_uri_str(url).await?;
        let db = client
            .default_database()
            .unwrap_or_else(|| client.database("cornershop"));
        let log: Collection<Document> = db.collection("log");
        let counters: Collection<Document> = db.collection("counters");
        let records = db.collection("records");
        let claims = db.collection("claims");
        let unique = |name: &str, keys: Document| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_string())
                        .unique(true)
                        .build(),
                )
                .build()
        };
        let plain = |name: &str, keys: Document| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_string()).build())
                .build()
        };
        let indexes = [
            unique(
                "aggregate_version",
                doc! { "aggregateType": 1, "aggregateId": 1, "firstVersion": 1 },
            ),
            unique("dedupe_key", doc! { "dedupeKey": 1 }),
            unique("idempotency_key", doc! { "idempotencyKey": 1 }),
            plain("event_type_time", doc! { "eventTypes": 1, "minTime": 1 }),
            plain("time_range", doc! { "minTime": 1, "maxTime": 1 }),
            plain("correlation", doc! { "correlationIds": 1 }),
            plain("event_id", doc! { "eventIds": 1 }),
        ];
        // Only the indexes the log lacks, and the counter only when it is not there: a
        // second connect to a database (a restart) asking FerretDB 1.24 to create what
        // exists, or answering a duplicate key there, ended the connection (its handler
        // panicked: "slice bounds out of range"), seen on every restart.
        let existing = log.list_index_names().await.unwrap_or_default();
        let missing: Vec<IndexModel> = indexes
            .into_iter()
            .filter(|index| {
                index
                    .options
                    .as_ref()
                    .and_then(|o| o.name.as_ref())
                    .is_none_or(|name| !existing.contains(name))
            })
            .collect();
        if !missing.is_empty() {
            log.create_indexes(missing).await?;
        }
        if counters
            .find_one(doc! { "_id": "position" })
            .await?
            .is_none()
        {
            let made = counters
                .insert_one(doc! { "_id": "position", "next": 0_i64 })
                .await;
            if let Err(e) = made {
                if !crate::mongo_is_duplicate_key(&e) {
                    return Err(e.into());
                }
            }
        }
        let local = SqliteEventStore::open(local_dir).await?;
        let order = Arc::new(Order {
            log: log.clone(),
            settled: Mutex::new(Settled::default()),
            grace: std::sync::RwLock::new(DEFAULT_GAP_GRACE),
            head: watch::Sender::new(0),
            appended: Notify::new(),
            unsettled_reads: Default::default(),
        });
        order.advance().await?;
        let settler = tokio::spawn(log::run_settler(Arc::downgrade(&order)));
        Ok(Self {
            log,
            counters,
            claims,
            records,
            order,
            local,
            client,
            settler: std::sync::Mutex::new(Some(settler)),
        })
    }

    /// How long a reader waits for a missing position (a writer between taking it and
    /// inserting) before it records the gap for good.
    pub fn with_gap_grace(self, grace: Duration) -> Self {
        *self.order.grace.write().expect("grace lock") = grace;
        self
    }

    /// Test hook: this store with a broken visibility rule, whose readers do not stop at
    /// the settled head. The contract shows its no-skip check failing against it.
    #[doc(hidden)]
    pub fn reading_past_the_settled_head(self) -> Self {
        self.order
            .unsettled_reads
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self
    }
}

impl Drop for MongoEventStore {
    fn drop(&mut self) {
        if let Some(settler) = self.settler.lock().expect("settler lock").take() {
            settler.abort();
        }
    }
}
