//! `cornershop backup create|verify|restore`: backups of the event store, online, on the
//! store settings of `serve` (the format: `store::backup`, docs/backup-format.md).
//!
//! - `create` writes a consistent cut of a serving shop (`Backups::export`) to a file.
//! - `verify` checks a file: its checksums and counts (`BackupReader`), and every
//!   aggregate replayed with the write side's `evolve`, version after version.
//! - `restore` verifies the file first (a damaged file writes nothing), refuses a store
//!   that has rows, checks the master key file against the backup's, imports every row in
//!   one transaction, erases again every customer of the erasure ledgers given, and
//!   rebuilds the read models.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use cornershop_app::{CommandBus, Keyring, MasterKey, SystemClock};
use cornershop_domain::{
    Aggregate, AggregateType, Cart, Customer, CustomerCommand, DomainEvent, EventEnvelope,
    Inventory, Metadata, Order, Payment,
};
use cornershop_store::backup::{
    BackupHeader, BackupReader, BackupWriter, Cell, ExportItem, ImportItem, Manifest, ReadItem,
    Row, Table, EVENTS, FORMAT, FORMAT_VERSION,
};
use cornershop_store::EventStore;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::StoreArgs;
use crate::erasures::ErasureLedger;
use crate::startup::open_event_store;

fn bar(length: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix} [{elapsed_precise}] [{bar:40}] {pos}/{len} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `backup create`: a consistent cut of the store, written to `out`.
pub async fn create(out: &Path, since: u64, args: &StoreArgs) -> anyhow::Result<Manifest> {
    let store = open_event_store(args).await?;
    let source = args.backend_name();
    let (sink, mut items) = tokio::sync::mpsc::channel::<ExportItem>(8);
    let export = {
        let store = store.clone();
        tokio::spawn(async move { store.export(since, sink).await })
    };
    let out = out.to_path_buf();
    // The file is written on a blocking thread, as the items come.
    let written = tokio::task::spawn_blocking(move || -> anyhow::Result<Manifest> {
        let Some(ExportItem::Cut(cut)) = items.blocking_recv() else {
            anyhow::bail!("the store gave no cut");
        };
        let total: u64 = cut.rows.iter().map(|(_, n)| n).sum();
        let progress = bar(total, "backup");
        progress.set_message(format!("rows, up to position {}", cut.position));
        let header = BackupHeader {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            created_at: Utc::now(),
            source: source.into(),
            position: cut.position,
            since: cut.since,
        };
        let mut writer = BackupWriter::create(&out, header)?;
        while let Some(item) = items.blocking_recv() {
            if let ExportItem::Rows(table, rows) = item {
                writer.rows(table, &rows)?;
                progress.inc(rows.len() as u64);
            }
        }
        progress.finish_and_clear();
        Ok(writer.finish(&cut)?)
    });
    let exported = export.await.context("the export's task")?;
    let manifest = written.await.context("the writer's task")?;
    store.close().await;
    exported.context("the export failed")?;
    manifest
}

/// An aggregate's state as folded so far, whatever its kind. (Unboxed: one per aggregate
/// of the backup, each a few hundred bytes at most.)
#[allow(clippy::large_enum_variant)]
enum Folded {
    Cart(Cart),
    Order(Order),
    Payment(Payment),
    Inventory(Inventory),
    Customer(Customer),
}

impl Folded {
    fn new(kind: AggregateType) -> Self {
        match kind {
            AggregateType::Cart => Self::Cart(Cart::default()),
            AggregateType::Order => Self::Order(Order::default()),
            AggregateType::Payment => Self::Payment(Payment::default()),
            AggregateType::Inventory => Self::Inventory(Inventory::default()),
            AggregateType::Customer => Self::Customer(Customer::default()),
        }
    }

    fn evolve(self, event: &DomainEvent) -> Self {
        match self {
            Self::Cart(s) => Self::Cart(s.evolve(event)),
            Self::Order(s) => Self::Order(s.evolve(event)),
            Self::Payment(s) => Self::Payment(s.evolve(event)),
            Self::Inventory(s) => Self::Inventory(s.evolve(event)),
            Self::Customer(s) => Self::Customer(s.evolve(event)),
        }
    }
}

/// An event row as the envelope it stores.
fn envelope_of(table: &Table, row: &Row) -> Result<EventEnvelope, String> {
    let cell = |name: &str| &row[table.column(name).expect("an events column")];
    let text = |name: &str| match cell(name) {
        Cell::Text(s) | Cell::Uuid(s) | Cell::Json(s) => Ok(s.clone()),
        other => Err(format!("{name} is {other:?}")),
    };
    let int = |name: &str| match cell(name) {
        Cell::Int(i) => Ok(*i),
        other => Err(format!("{name} is {other:?}")),
    };
    let timestamp = match cell("timestamp") {
        Cell::Time(us) => DateTime::<Utc>::from_timestamp_micros(*us)
            .ok_or_else(|| format!("timestamp {us} µs is out of range"))?,
        other => return Err(format!("timestamp is {other:?}")),
    };
    let kind = text("aggregateType")?;
    let aggregate_type =
        AggregateType::parse(&kind).ok_or_else(|| format!("{kind:?} is no aggregate type"))?;
    let metadata: Metadata = serde_json::from_str(&text("metadata")?)
        .map_err(|e| format!("its metadata is not the envelope's: {e}"))?;
    Ok(EventEnvelope {
        event_id: text("eventId")?
            .parse()
            .map_err(|e| format!("eventId: {e}"))?,
        event_type: text("eventType")?,
        aggregate_id: text("aggregateId")?,
        aggregate_type,
        timestamp,
        version: int("version")? as u64,
        schema_version: int("schemaVersion")? as u32,
        data: serde_json::from_str(&text("data")?)
            .map_err(|e| format!("its data is no JSON: {e}"))?,
        metadata,
    })
}

/// What `verify` found: the manifest, and the id of the master key the backup's data
/// keys are wrapped with, if it has any.
pub struct Verified {
    pub manifest: Manifest,
    pub master_key_id: Option<String>,
    pub header: BackupHeader,
}

/// Reads the whole backup, checking its checksums and counts, and replays every
/// aggregate with `evolve`: each event decodes (upcast to today's shape), belongs to its
/// aggregate, and comes at the version after the one before.
pub fn verify(path: &Path, show_progress: bool) -> anyhow::Result<Verified> {
    let mut reader = BackupReader::open(path)?;
    let header = reader.header().clone();
    let progress = bar(reader.progress().1, "verify");
    if !show_progress {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    progress.set_message("compressed bytes");
    let mut states: HashMap<(AggregateType, String), (Folded, u64)> = HashMap::new();
    let mut master_key_id = None;
    let mut events = 0u64;
    let manifest = loop {
        let item = reader.next_item()?;
        progress.set_position(reader.progress().0);
        match item {
            None => anyhow::bail!("the backup ended before its manifest"),
            Some(ReadItem::Manifest(manifest)) => break manifest,
            Some(ReadItem::Row(table, row)) if table.name == EVENTS.name => {
                events += 1;
                let envelope = envelope_of(table, &row).map_err(|reason| {
                    anyhow::anyhow!("event {events} of the backup is not an event: {reason}")
                })?;
                let event = envelope.decode().map_err(|e| {
                    anyhow::anyhow!(
                        "event {} ({} v{} of {} {}) does not decode: {e}",
                        envelope.event_id,
                        envelope.event_type,
                        envelope.version,
                        envelope.aggregate_type,
                        envelope.aggregate_id
                    )
                })?;
                if event.aggregate_type() != envelope.aggregate_type
                    || event.aggregate_id() != envelope.aggregate_id
                {
                    anyhow::bail!(
                        "event {} says it is of {} {}, its payload of {} {}",
                        envelope.event_id,
                        envelope.aggregate_type,
                        envelope.aggregate_id,
                        event.aggregate_type(),
                        event.aggregate_id()
                    );
                }
                let key = (envelope.aggregate_type, envelope.aggregate_id.clone());
                // In an incremental backup an aggregate's first event may have any version.
                let (state, version) = states
                    .remove(&key)
                    .map(|(state, version)| (state, Some(version)))
                    .unwrap_or_else(|| {
                        let first = (header.since == 0).then_some(0);
                        (Folded::new(envelope.aggregate_type), first)
                    });
                let follows = version.is_none_or(|v| envelope.version == v + 1);
                let version = version.unwrap_or(0);
                if !follows {
                    anyhow::bail!(
                        "{} {} goes from version {version} to {}: an event is missing",
                        envelope.aggregate_type,
                        envelope.aggregate_id,
                        envelope.version
                    );
                }
                states.insert(key, (state.evolve(&event), envelope.version));
            }
            Some(ReadItem::Row(table, row)) if table.name == "master_key" => {
                if let Some(Cell::Text(id)) = table.column("masterKeyId").map(|i| &row[i]) {
                    master_key_id = Some(id.clone());
                }
            }
            Some(ReadItem::Row(..)) => {}
        }
    };
    progress.finish_and_clear();
    Ok(Verified {
        manifest,
        master_key_id,
        header,
    })
}

/// What a restore did.
pub struct Restored {
    pub manifest: Manifest,
    pub rows: u64,
    pub erasures_reapplied: usize,
}

/// `backup restore`: see the module comment.
pub async fn restore(
    path: &Path,
    args: &StoreArgs,
    ledgers: &[PathBuf],
) -> anyhow::Result<Restored> {
    // 1. The whole file is checked before anything is opened or written.
    let verified = verify(path, true)?;
    if verified.header.since != 0 {
        anyhow::bail!(
            "{} is an incremental backup (events after position {}): restore the full \
             backup it follows instead",
            path.display(),
            verified.header.since
        );
    }
    let entries = erasure_entries(args, ledgers)?;
    // 2. The master key must be the one the backup's data keys are wrapped with.
    let master = match &verified.master_key_id {
        None => None,
        Some(id) => {
            let key_path = args.master_key_path();
            let master = MasterKey::read(&key_path).map_err(|e| {
                anyhow::anyhow!(
                    "the backup's data keys are wrapped by master key {id}; restore with \
                     --master-key-file naming that key ({}: {e}); nothing was written",
                    key_path.display()
                )
            })?;
            if master.id() != id {
                anyhow::bail!(
                    "the backup's data keys are wrapped by master key {id}, and {} holds \
                     key {}: restore with the shop's master key file (nothing was written)",
                    key_path.display(),
                    master.id()
                );
            }
            Some(master)
        }
    };
    // 3. An empty store, and every row in one transaction.
    let store = open_event_store(args).await?;
    let taken = store.tables_with_rows().await?;
    if !taken.is_empty() {
        store.close().await;
        anyhow::bail!(
            "the store is not empty (rows in {}): a backup is restored only into an empty \
             store (nothing was written)",
            taken.join(", ")
        );
    }
    let rows = import(&store, path, &verified.manifest).await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    // 4. The erasures made since the backup was taken, again.
    let erasures_reapplied = match (master, entries.is_empty()) {
        (_, true) => 0,
        (Some(master), false) => reapply_erasures(&store, master, &entries).await?,
        (None, false) => {
            // No data key at all in the backup: nothing personal can be opened; the
            // erasures are recorded so that no key is ever made for those customers.
            let keyring = Arc::new(Keyring::ephemeral(store.clone()));
            reapply_with(&store, keyring, &entries).await?
        }
    };
    store.close().await;
    // 5. The read models, from the restored events.
    crate::projections::rebuild(None, args).await?;
    Ok(Restored {
        manifest: verified.manifest,
        rows,
        erasures_reapplied,
    })
}

/// The entries of the ledgers given, or of the data directory's ledger when none is.
fn erasure_entries(
    args: &StoreArgs,
    ledgers: &[PathBuf],
) -> anyhow::Result<Vec<crate::erasures::ErasureEntry>> {
    let default = args.data_dir.join(crate::config::ERASURE_LEDGER_FILE);
    let paths: Vec<PathBuf> = if ledgers.is_empty() {
        if default.exists() {
            vec![default]
        } else {
            eprintln!(
                "note: no erasure ledger given (--erasure-ledger) and none at {}: erasures \
                 made after this backup was taken are not applied again",
                default.display()
            );
            Vec::new()
        }
    } else {
        ledgers.to_vec()
    };
    let mut entries = Vec::new();
    for path in paths {
        entries.extend(ErasureLedger::read(&path)?);
    }
    Ok(entries)
}

/// Imports the backup's rows, read again (and checked again: a file changed since the
/// verification makes the import abandon, which writes nothing).
pub async fn import(
    store: &Arc<dyn EventStore>,
    path: &Path,
    manifest: &Manifest,
) -> anyhow::Result<u64> {
    let (sink, items) = tokio::sync::mpsc::channel::<ImportItem>(8);
    let total: u64 = manifest.rows.values().sum();
    let path = path.to_path_buf();
    let reading = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let progress = bar(total, "restore");
        progress.set_message("rows");
        let mut reader = BackupReader::open(&path)?;
        let mut batch: Option<(&'static Table, Vec<Row>)> = None;
        let send = |batch: Option<(&'static Table, Vec<Row>)>| -> anyhow::Result<()> {
            if let Some((table, rows)) = batch {
                sink.blocking_send(ImportItem::Rows(table, rows))
                    .map_err(|_| anyhow::anyhow!("the store stopped taking rows"))?;
            }
            Ok(())
        };
        // Rows until the manifest, which ends the file (and proves it whole).
        while let Some(ReadItem::Row(table, row)) = reader.next_item()? {
            progress.inc(1);
            match &mut batch {
                Some((current, rows))
                    if current.name == table.name
                        && rows.len() < cornershop_store::backup::BATCH =>
                {
                    rows.push(row)
                }
                _ => send(batch.replace((table, vec![row])))?,
            }
        }
        send(batch)?;
        sink.blocking_send(ImportItem::End)
            .map_err(|_| anyhow::anyhow!("the store stopped taking rows"))?;
        progress.finish_and_clear();
        Ok(())
    });
    let imported = store.import(items).await;
    let read = reading.await.context("the reader's task")?;
    read.context("reading the backup again failed: nothing was written")?;
    imported.context("the restore failed: nothing was written")
}

async fn reapply_erasures(
    store: &Arc<dyn EventStore>,
    master: MasterKey,
    entries: &[crate::erasures::ErasureEntry],
) -> anyhow::Result<usize> {
    let keyring = Arc::new(Keyring::open(store.clone(), master).await?);
    reapply_with(store, keyring, entries).await
}

/// Erases each customer again (destroying the restored key) and records the erasure, as
/// the API does; a customer the restored log already shows erased records nothing new.
async fn reapply_with(
    store: &Arc<dyn EventStore>,
    keyring: Arc<Keyring>,
    entries: &[crate::erasures::ErasureEntry],
) -> anyhow::Result<usize> {
    let bus = CommandBus::new(store.clone(), Arc::new(SystemClock), keyring.clone());
    let mut customers: Vec<&str> = entries.iter().map(|e| e.customer_id.as_str()).collect();
    customers.sort_unstable();
    customers.dedup();
    for customer in &customers {
        let Ok(customer_id) = cornershop_domain::CustomerId::parse(customer) else {
            anyhow::bail!("the erasure ledger names {customer:?}, which is no customer id");
        };
        let erasure = keyring.erase(customer).await?;
        let record = CustomerCommand::RecordErasure {
            customer_id,
            key_ids: vec![erasure.key.key_id.clone()],
            unshredded_event_ids: Vec::new(),
        };
        bus.execute::<Customer>(
            customer,
            &record,
            &cornershop_app::CommandContext {
                user_id: Some("cornershop backup restore".into()),
                ..cornershop_app::CommandContext::new_root()
            },
        )
        .await
        .with_context(|| format!("recording the erasure of {customer} again"))?;
    }
    Ok(customers.len())
}
