//! Backups of the store: every row of its tables as of one moment, and back.
//!
//! A backup is a **consistent cut**: one snapshot of the database in which the events
//! are exactly those at or below a position (the cut's), none above and none missing
//! below, together with the other tables as that same snapshot has them. Because an
//! append writes its events, its idempotency reply and its applied-command key in one
//! transaction, and a consumer saves its checkpoint only after its effects, the rows of
//! one snapshot agree with each other: a restored store is a store that stopped at the
//! cut. How each backend takes the snapshot is in `sqlite/backup.rs` and
//! `postgres/backup.rs`.
//!
//! What is in a backup: the tables of [`TABLES`], in that order (events first, by
//! position). What is not: leases (held by running processes, meaningless elsewhere),
//! the statistics' summary (derived from the events; a restored store folds it again)
//! and anything else derived (the read models, which a restore rebuilds). The master key
//! never is: only its id, and the data keys wrapped by it.
//!
//! The rows are portable: a [`Row`] holds [`Cell`]s in the table's column order, with
//! times in microseconds and JSON columns as their exact text, so that a backup of one
//! backend restores into the other byte for byte (the file format: `format.rs`).

mod format;

pub use format::{
    event_position, AggregateSum, BackupError, BackupHeader, BackupReader, BackupWriter, Manifest,
    ReadItem, FORMAT, FORMAT_VERSION,
};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::StoreError;

/// The kind of a column's values, which says how each backend stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    /// A point in time, in microseconds since the epoch (SQLite: an integer `*_us`
    /// column; PostgreSQL: `TIMESTAMPTZ`). RFC 3339 in a backup file.
    Time,
    /// A UUID (SQLite: text; PostgreSQL: `UUID`).
    Uuid,
    /// JSON text, kept exactly as written (SQLite: text; PostgreSQL: `JSON`, not JSONB).
    Json,
    /// Bytes (SQLite: `BLOB`; PostgreSQL: `BYTEA`). Base64 in a backup file.
    Blob,
}

/// One column of a backed-up table: its name in the backup (camelCase, the envelope's
/// for events) and in each backend.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
    pub kind: Kind,
    pub nullable: bool,
}

/// A backed-up table.
#[derive(Debug)]
pub struct Table {
    /// Its name, in both backends and in the backup.
    pub name: &'static str,
    /// The columns that order its rows (its primary key).
    pub order_by: &'static str,
    /// Its PostgreSQL identity column, whose sequence a restore moves past the rows.
    pub identity: Option<&'static str>,
    pub columns: &'static [Column],
}

impl Table {
    /// The index of the column named `name` (in the backup's naming).
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

const fn col(
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
    kind: Kind,
    nullable: bool,
) -> Column {
    Column {
        name,
        sqlite,
        postgres,
        kind,
        nullable,
    }
}

use Kind::{Blob, Int, Json, Text, Time, Uuid};

/// The events: the seed's envelope (eventId ... metadata, with `schemaVersion`), its
/// position and trace id, and where the relay published it.
pub const EVENTS: Table = Table {
    name: "events",
    order_by: "position",
    identity: Some("position"),
    columns: &[
        col("position", "position", "position", Int, false),
        col("eventId", "event_id", "event_id", Uuid, false),
        col("eventType", "event_type", "event_type", Text, false),
        col("aggregateId", "aggregate_id", "aggregate_id", Text, false),
        col(
            "aggregateType",
            "aggregate_type",
            "aggregate_type",
            Text,
            false,
        ),
        col("timestamp", "timestamp_us", "occurred_at", Time, false),
        col("version", "version", "version", Int, false),
        col(
            "schemaVersion",
            "schema_version",
            "schema_version",
            Int,
            false,
        ),
        col("data", "data", "data", Json, false),
        col("metadata", "metadata", "metadata", Json, false),
        col(
            "correlationId",
            "correlation_id",
            "correlation_id",
            Text,
            false,
        ),
        col("causationId", "causation_id", "causation_id", Text, false),
        col("traceId", "trace_id", "trace_id", Text, true),
        col("topic", "topic", "topic", Text, true),
        col("partition", "kafka_partition", "kafka_partition", Int, true),
        col("offset", "kafka_offset", "kafka_offset", Int, true),
    ],
};

/// Every backed-up table, in the order a backup holds them: the events first.
pub static TABLES: &[Table] = &[
    EVENTS,
    Table {
        name: "idempotency_keys",
        order_by: "key",
        identity: None,
        columns: &[
            col("key", "key", "key", Text, false),
            col("fingerprint", "fingerprint", "fingerprint", Text, false),
            col("status", "status", "status", Int, false),
            col("body", "body", "body", Text, false),
            col("createdAt", "created_us", "created_at", Time, false),
        ],
    },
    Table {
        name: "applied_commands",
        order_by: "dedupe_key",
        identity: None,
        columns: &[
            col("dedupeKey", "dedupe_key", "dedupe_key", Text, false),
            col("appliedAt", "applied_us", "applied_at", Time, false),
        ],
    },
    Table {
        name: "checkpoints",
        order_by: "consumer",
        identity: None,
        columns: &[
            col("consumer", "consumer", "consumer", Text, false),
            col("position", "position", "position", Int, false),
            col("updatedAt", "updated_us", "updated_at", Time, false),
        ],
    },
    Table {
        name: "dead_letters",
        order_by: "id",
        identity: Some("id"),
        columns: &[
            col("id", "id", "id", Int, false),
            col("consumer", "consumer", "consumer", Text, false),
            col("eventId", "event_id", "event_id", Uuid, false),
            col("position", "position", "position", Int, false),
            col("eventType", "event_type", "event_type", Text, false),
            col("aggregateId", "aggregate_id", "aggregate_id", Text, false),
            col("error", "error", "error", Text, false),
            col("attempts", "attempts", "attempts", Int, false),
            col(
                "firstFailedAt",
                "first_failed_us",
                "first_failed_at",
                Time,
                false,
            ),
            col(
                "lastFailedAt",
                "last_failed_us",
                "last_failed_at",
                Time,
                false,
            ),
            col("status", "status", "status", Text, false),
        ],
    },
    Table {
        name: "timers",
        order_by: "key",
        identity: None,
        columns: &[
            col("key", "key", "key", Text, false),
            col("kind", "kind", "kind", Text, false),
            col("dueAt", "due_us", "due_at", Time, false),
            col("payload", "payload", "payload", Json, false),
        ],
    },
    Table {
        name: "notifications",
        order_by: "id",
        identity: Some("id"),
        columns: &[
            col("id", "id", "id", Int, false),
            col("eventId", "event_id", "event_id", Uuid, false),
            col("eventType", "event_type", "event_type", Text, false),
            col("channel", "channel", "channel", Text, false),
            col("template", "template", "template", Text, false),
            col("orderId", "order_id", "order_id", Text, false),
            col("customerId", "customer_id", "customer_id", Text, false),
            col("recipient", "recipient", "recipient", Text, false),
            col("subject", "subject", "subject", Text, false),
            col("bodyText", "body_text", "body_text", Text, false),
            col("bodyHtml", "body_html", "body_html", Text, true),
            col("status", "status", "status", Text, false),
            col("attempts", "attempts", "attempts", Int, false),
            col(
                "providerMessageId",
                "provider_message_id",
                "provider_message_id",
                Text,
                true,
            ),
            col("lastError", "last_error", "last_error", Text, true),
            col(
                "nextAttemptAt",
                "next_attempt_us",
                "next_attempt_at",
                Time,
                false,
            ),
            col("createdAt", "created_us", "created_at", Time, false),
            col("updatedAt", "updated_us", "updated_at", Time, false),
            col(
                "correlationId",
                "correlation_id",
                "correlation_id",
                Text,
                true,
            ),
            col("traceId", "trace_id", "trace_id", Text, true),
        ],
    },
    Table {
        name: "data_keys",
        order_by: "key_id",
        identity: None,
        columns: &[
            col("keyId", "key_id", "key_id", Text, false),
            col("customerId", "customer_id", "customer_id", Text, false),
            // Wrapped by the master key; none once the customer is erased.
            col("wrappedKey", "wrapped_key", "wrapped_key", Blob, true),
            col("createdAt", "created_us", "created_at", Time, false),
            col("erasedAt", "erased_us", "erased_at", Time, true),
        ],
    },
    Table {
        name: "master_key",
        order_by: "id",
        identity: None,
        columns: &[
            col("id", "id", "id", Int, false),
            // The id of the master key (a digest), never the key.
            col("masterKeyId", "master_key_id", "master_key_id", Text, false),
        ],
    },
];

/// The table named `name`.
pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    /// Microseconds since the epoch.
    Time(i64),
    Uuid(String),
    /// The exact JSON text.
    Json(String),
    Blob(Vec<u8>),
}

/// One row of a table, its cells in the table's column order.
pub type Row = Vec<Cell>;

/// What an export sends, in order: the cut first, then every table's rows (events first,
/// by position), in batches.
#[derive(Debug)]
pub enum ExportItem {
    Cut(Cut),
    Rows(&'static Table, Vec<Row>),
}

/// The moment a backup holds: its position and how many rows of each table it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Every event at or below it is in the backup (above `since`), none above.
    pub position: u64,
    /// An incremental backup holds the events above this position only (0: all).
    pub since: u64,
    /// Rows per table, in [`TABLES`] order.
    pub rows: Vec<(&'static str, u64)>,
}

/// What an import is sent, in order: batches of rows, then `End`. An import that sees its
/// sender go away without `End` (the file turned out to be corrupt) writes nothing.
#[derive(Debug)]
pub enum ImportItem {
    Rows(&'static Table, Vec<Row>),
    End,
}

/// Rows per batch of an export or an import.
pub const BATCH: usize = 1_000;

/// Export and import of every backed-up table (see the module comment).
#[async_trait]
pub trait Backups: Send + Sync + 'static {
    /// Sends a consistent cut of the store to `sink`: first [`ExportItem::Cut`], then the
    /// rows of [`TABLES`] in order (events above `since` only). Writers carry on
    /// meanwhile (PostgreSQL stops them for the instant it takes the snapshot).
    async fn export(&self, since: u64, sink: mpsc::Sender<ExportItem>) -> Result<Cut, StoreError>;

    /// The tables of [`TABLES`] that hold rows: none for a store a backup may be
    /// restored into.
    async fn tables_with_rows(&self) -> Result<Vec<&'static str>, StoreError>;

    /// Writes every row sent, in one transaction, into an empty store; refuses a store
    /// with rows (nothing is written), and writes nothing unless [`ImportItem::End`]
    /// arrives. Returns the number of rows written.
    async fn import(&self, rows: mpsc::Receiver<ImportItem>) -> Result<u64, StoreError>;
}

/// The refusal of an import into a store that has rows.
pub(crate) fn not_empty(tables: &[&str]) -> StoreError {
    StoreError::Refused(format!(
        "the store is not empty (rows in {}): a backup is restored only into an empty store",
        tables.join(", ")
    ))
}

/// An import whose sender went away before `End`.
pub(crate) fn import_abandoned() -> StoreError {
    StoreError::Refused("the restore was abandoned before its end: nothing was written".into())
}

/// Every row of an export, in memory, with the cut: for tests and benchmarks (a backup
/// streams them to its file instead).
pub async fn export_rows(
    store: &dyn Backups,
    since: u64,
) -> Result<(Cut, Vec<(&'static str, Row)>), StoreError> {
    let (sink, mut items) = mpsc::channel(8);
    let collect = tokio::spawn(async move {
        let mut rows = Vec::new();
        while let Some(item) = items.recv().await {
            if let ExportItem::Rows(table, batch) = item {
                rows.extend(batch.into_iter().map(|row| (table.name, row)));
            }
        }
        rows
    });
    let cut = store.export(since, sink).await?;
    let rows = collect
        .await
        .map_err(|e| StoreError::Refused(format!("the export's collector failed: {e}")))?;
    Ok((cut, rows))
}
