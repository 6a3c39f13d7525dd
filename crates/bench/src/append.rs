//! Event-store appends (through the EventStore, with its expected-version check) and,
//! on SQLite, raw inserts of the same rows: the baselines.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use cornershop_domain::AggregateType;
use cornershop_store::{AppendRequest, EventStore, NewEvent, PgEventStore, SqliteEventStore};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::cli::{AppendArgs, Backend};
use crate::{emit, new_event, round1, round3, Rng};

// ---------------------------------------------------------------- measurements

/// What the clients of one case did together.
#[derive(Default)]
struct Tally {
    events: u64,
    transactions: u64,
    /// Latency of each append (or raw transaction), in microseconds.
    latencies_us: Vec<u32>,
}

impl Tally {
    /// One transaction of `events` events, begun at `started`, is committed.
    fn committed(&mut self, started: Instant, events: u64) {
        self.latencies_us.push(started.elapsed().as_micros() as u32);
        self.events += events;
        self.transactions += 1;
    }

    /// The writers' tallies together.
    async fn of_all(
        writers: Vec<tokio::task::JoinHandle<anyhow::Result<Tally>>>,
    ) -> anyhow::Result<Tally> {
        let mut total = Tally::default();
        for writer in writers {
            total.add(writer.await??);
        }
        Ok(total)
    }

    fn add(&mut self, other: Tally) {
        self.events += other.events;
        self.transactions += other.transactions;
        self.latencies_us.extend(other.latencies_us);
    }

    fn report(mut self, seconds: f64, fields: Value) -> Value {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies_us.len() as f64 * p).ceil() as usize)
                .clamp(1, self.latencies_us.len())
                - 1;
            self.latencies_us[i] as f64 / 1000.0
        };
        let mut line = json!({
            "events": self.events,
            "transactions": self.transactions,
            "seconds": round3(seconds),
            "eventsPerSecond": round1(self.events as f64 / seconds),
            "transactionsPerSecond": round1(self.transactions as f64 / seconds),
            "p50Ms": round3(pct(0.50)),
            "p99Ms": round3(pct(0.99)),
        });
        if let (Value::Object(line), Value::Object(fields)) = (&mut line, fields) {
            line.extend(fields);
        }
        line
    }
}

/// One append case: `clients` tasks, each appending `batch` events at a time with the
/// expected-version check, to aggregates drawn at random from its share of `aggregates`
/// (client k owns the aggregates i with i % clients == k, so there are no conflicts),
/// until `duration` has passed.
async fn append_case(
    store: Arc<dyn EventStore>,
    prefix: &str,
    aggregates: usize,
    batch: usize,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<(Tally, f64)> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let store = store.clone();
        let owned: Vec<String> = (0..aggregates)
            .filter(|i| i % clients == client)
            .map(|i| format!("{prefix}-{i}"))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut versions = vec![0u64; owned.len()];
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (client as u64 + 1));
            let mut tally = Tally::default();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let i = if owned.len() == 1 {
                    0
                } else {
                    rng.below(owned.len())
                };
                let events: Vec<NewEvent> = (0..batch)
                    .map(|k| new_event(&owned[i], n + k as u64))
                    .collect();
                n += batch as u64;
                let request =
                    AppendRequest::new(AggregateType::Cart, &owned[i], versions[i], events);
                let t = Instant::now();
                store.append(request).await?;
                tally.committed(t, batch as u64);
                versions[i] += batch as u64;
            }
            Ok::<Tally, anyhow::Error>(tally)
        }));
    }
    Ok((Tally::of_all(tasks).await?, started.elapsed().as_secs_f64()))
}

/// The append cases: (label, aggregates, events per append, concurrent clients).
const CASES: [(&str, usize, usize, usize); 5] = [
    ("one aggregate, 1 event/append", 1, 1, 1),
    ("10,000 aggregates, 1 event/append", 10_000, 1, 1),
    ("one aggregate, 100 events/append", 1, 100, 1),
    ("10,000 aggregates, 100 events/append", 10_000, 100, 1),
    (
        "10,000 aggregates, 1 event/append, 64 clients",
        10_000,
        1,
        64,
    ),
];

/// The raw-insert baselines: (label, rows per transaction, concurrent clients).
const RAW_CASES: [(&str, usize, usize); 3] = [
    ("raw insert, 1 row/transaction", 1, 1),
    ("raw insert, 100 rows/transaction", 100, 1),
    ("raw insert, 1 row/transaction, 64 clients", 1, 64),
];

pub(crate) async fn append(args: &AppendArgs) -> anyhow::Result<()> {
    let seconds = args.seconds;
    let backend = args.store.backend.name();
    let duration = Duration::from_secs_f64(seconds);
    let (store, _dir): (Arc<dyn EventStore>, Option<tempfile::TempDir>) = match args.store.backend {
        Backend::Sqlite => {
            let dir = args.store.temp_dir()?;
            let store = SqliteEventStore::open(&dir.path().join("store")).await?;
            raw_sqlite(&dir.path().join("raw"), duration).await?;
            (Arc::new(store), Some(dir))
        }
        Backend::Postgres => {
            let url = args.store.database_url("append")?;
            (Arc::new(PgEventStore::connect(url).await?), None)
        }
    };
    for (case, (label, aggregates, batch, clients)) in CASES.iter().enumerate() {
        let prefix = format!("bench{case}-{}", Uuid::new_v4().simple());
        // A short warm-up (connections, statement caches), not counted.
        append_case(
            store.clone(),
            &format!("{prefix}-warm"),
            *aggregates,
            *batch,
            *clients,
            Duration::from_millis(200),
        )
        .await?;
        let (tally, elapsed) = append_case(
            store.clone(),
            &prefix,
            *aggregates,
            *batch,
            *clients,
            duration,
        )
        .await?;
        emit(tally.report(
            elapsed,
            json!({
                "kind": "append", "backend": backend, "case": label,
                "aggregates": aggregates, "batch": batch, "clients": clients,
            }),
        ));
    }
    store.close().await;
    Ok(())
}

/// SQLite's own limit for the same rows: the store's migrations (the same `events` table,
/// columns, indexes and constraints) in a file of its own, the same pragmas as the store's
/// writer (WAL, synchronous=FULL) on one rusqlite connection as the store has, plain
/// INSERTs (prepared once) without the version check, one transaction per row or per
/// batch. Each client is a thread of its own that takes the connection for a
/// transaction: no async runtime, no thread hop, no group commit.
async fn raw_sqlite(dir: &Path, duration: Duration) -> anyhow::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || raw_sqlite_on_threads(&dir, duration)).await?
}

fn raw_sqlite_on_threads(dir: &Path, duration: Duration) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let conn = rusqlite::Connection::open(dir.join("raw.db"))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    // Every migration of the store, in order: the same table, columns and indexes.
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/migrations/sqlite");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&migrations)
        .with_context(|| format!("cannot read {}", migrations.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "sql"))
    {
        conn.execute_batch(&std::fs::read_to_string(file)?)?;
    }
    let conn = Mutex::new(conn);
    for (case, (label, batch, clients)) in RAW_CASES.iter().enumerate() {
        let run = |prefix: String, duration: Duration| -> anyhow::Result<(Tally, f64)> {
            let started = Instant::now();
            let deadline = started + duration;
            let mut total = Tally::default();
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0..*clients)
                    .map(|client| {
                        let (conn, aggregate) = (&conn, format!("{prefix}-{client}"));
                        scope.spawn(move || raw_client(conn, &aggregate, *batch, deadline))
                    })
                    .collect();
                for thread in threads {
                    let tally = thread
                        .join()
                        .map_err(|_| anyhow::anyhow!("a raw-insert client panicked"))??;
                    total.add(tally);
                }
                Ok::<(), anyhow::Error>(())
            })?;
            Ok((total, started.elapsed().as_secs_f64()))
        };
        run(format!("raw{case}-warm"), Duration::from_millis(200))?;
        let (tally, elapsed) = run(format!("raw{case}"), duration)?;
        emit(tally.report(
            elapsed,
            json!({
                "kind": "raw-insert", "backend": "sqlite", "case": label,
                "batch": batch, "clients": clients,
            }),
        ));
    }
    Ok(())
}

/// One raw-insert client: transactions of `batch` rows until `deadline`.
fn raw_client(
    conn: &Mutex<rusqlite::Connection>,
    aggregate: &str,
    batch: usize,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut version = 0u64;
    while Instant::now() < deadline {
        let t = Instant::now();
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.prepare_cached("BEGIN")?.execute([])?;
        for _ in 0..batch {
            version += 1;
            let e = new_event(aggregate, version);
            conn.prepare_cached(
                "INSERT INTO events (event_id, event_type, aggregate_type, aggregate_id, \
                 version, schema_version, timestamp_us, data, metadata, correlation_id, \
                 causation_id, trace_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(rusqlite::params![
                e.event_id.to_string(),
                e.event_type,
                "Cart",
                aggregate,
                version as i64,
                e.schema_version as i64,
                e.timestamp.timestamp_micros(),
                e.data.to_string(),
                serde_json::to_string(&e.metadata)?,
                e.metadata.correlation_id,
                e.metadata.causation_id,
                Uuid::new_v4().simple().to_string(),
            ])?;
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        drop(conn);
        tally.committed(t, batch as u64);
    }
    Ok(tally)
}
