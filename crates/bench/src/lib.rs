//! The measuring half of `bench/run.sh`: event-store appends and their raw-insert
//! baselines, scans of the log (the rebuild's baseline), loading events for the relay
//! benchmark and timing the relay, and the cost of a token check with its baselines. Each
//! measurement prints one JSON line on stdout; `bench/run.py` gathers them into the table.
//! Figures are reported, never asserted.
//!
//! Run through cargo (release profile):
//!
//! ```sh
//! cargo bench -p cornershop-bench -- append --backend sqlite --seconds 5
//! cargo bench -p cornershop-bench -- append --backend postgres --database-url postgres://... --seconds 5
//! cargo bench -p cornershop-bench -- scan --data-dir ./data
//! cargo bench -p cornershop-bench -- rebuild --orders 20000
//! cargo bench -p cornershop-bench -- load --database-url postgres://... --events 100000
//! cargo bench -p cornershop-bench -- relay-wait --database-url postgres://... --events 100000
//! cargo bench -p cornershop-bench -- auth --seconds 3
//! ```

mod auth;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use cornershop_domain::{AggregateType, Metadata, CURRENT_SCHEMA_VERSION};
use cornershop_readmodels::testkit::{Generator, Line, OrderPlan, Outcome};
use cornershop_readmodels::{ReadModelStore, REPORTING};
use cornershop_store::{AppendRequest, EventStore, NewEvent, PgEventStore, SqliteEventStore};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;
use uuid::Uuid;

/// The command line: a command and `--name value` options (`--bench`, added by
/// `cargo bench`, is ignored).
struct Args {
    command: String,
    options: HashMap<String, String>,
}

impl Args {
    fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let mut command = None;
        let mut options = HashMap::new();
        let mut args = args.into_iter().peekable();
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue;
            }
            if let Some(name) = arg.strip_prefix("--") {
                let (name, value) = match name.split_once('=') {
                    Some((n, v)) => (n.to_string(), v.to_string()),
                    None => {
                        let value = args
                            .next_if(|v| !v.starts_with("--"))
                            .unwrap_or_else(|| "true".to_string());
                        (name.to_string(), value)
                    }
                };
                options.insert(name, value);
            } else if command.is_none() {
                command = Some(arg);
            } else {
                bail!("unexpected argument '{arg}'");
            }
        }
        Ok(Self {
            command: command.unwrap_or_else(|| "help".to_string()),
            options,
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    fn require(&self, name: &str) -> anyhow::Result<&str> {
        self.get(name)
            .ok_or_else(|| anyhow!("{} needs --{name}", self.command))
    }

    fn number<T: FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| anyhow!("--{name} {v}: {e}")),
        }
    }
}

const USAGE: &str = "usage: cargo bench -p cornershop-bench -- COMMAND [OPTIONS]
  append --backend sqlite|postgres [--database-url URL] [--dir DIR] [--seconds S]
      appends through the EventStore (expected-version check) and, on SQLite, raw inserts
      of the same rows; one JSON line per case
  scan (--data-dir DIR | --database-url URL)
      reads the whole log: a raw scan of the events table and the store's read_log
  rebuild [--database-url URL] [--dir DIR] [--orders N]
      writes N order histories into a new store, scans them raw, rebuilds the read models
  load --database-url URL --events N [--aggregates A] [--batch B]
      appends N events (for the relay benchmark); prints the average record sizes
  relay-wait --database-url URL --events N [--timeout-seconds S]
      waits until N events carry a Kafka offset; prints the relay's rate
  auth [--seconds S] [--rounds R]
      verifications/s of an ES256 token through Authenticator::verify (one task), beside
      jsonwebtoken's decode without the signature check and ring's raw P-256 verify";

/// Entry point of the bench binary.
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let args = Args::parse(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.command.as_str() {
            "append" => append(&args).await,
            "scan" => scan(&args).await,
            "load" => load(&args).await,
            "relay-wait" => relay_wait(&args).await,
            "rebuild" => rebuild(&args).await,
            "auth" => auth::auth(&args).await,
            "help" => {
                println!("{USAGE}");
                Ok(())
            }
            other => bail!("unknown command '{other}'\n{USAGE}"),
        }
    })
}

fn emit(line: Value) {
    println!("{line}");
}

// ---------------------------------------------------------------- events

/// A realistic event: an ItemAddedToCart with its metadata, as the API would append it.
fn new_event(cart_id: &str, n: u64) -> NewEvent {
    let correlation = Uuid::new_v4().to_string();
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "ItemAddedToCart".to_string(),
        schema_version: CURRENT_SCHEMA_VERSION,
        timestamp: Utc::now(),
        data: json!({
            "cartId": cart_id,
            "sku": format!("SKU-{:04}", n % 1000),
            "name": "Enamel mug, 350 ml",
            "quantity": 1 + n % 3,
            "unitPrice": "9.99",
        }),
        metadata: Metadata {
            correlation_id: correlation.clone(),
            causation_id: correlation,
            user_id: None,
            source: "CartService".to_string(),
        },
        // Derived from the correlation id by the store, as for a request without a
        // traceparent.
        trace_id: None,
    }
}

/// A small, fast, deterministic generator (xorshift64*), one per client task.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

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
    fn merge(&mut self, other: Tally) {
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

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
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
                tally.latencies_us.push(t.elapsed().as_micros() as u32);
                versions[i] += batch as u64;
                tally.events += batch as u64;
                tally.transactions += 1;
            }
            Ok::<Tally, anyhow::Error>(tally)
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await??);
    }
    Ok((total, started.elapsed().as_secs_f64()))
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

async fn append(args: &Args) -> anyhow::Result<()> {
    let seconds: f64 = args.number("seconds", 5.0)?;
    let duration = Duration::from_secs_f64(seconds);
    let backend = args.require("backend")?;
    let (store, _dir): (Arc<dyn EventStore>, Option<tempfile::TempDir>) = match backend {
        "sqlite" => {
            let dir = match args.get("dir") {
                Some(d) => tempfile::tempdir_in(d)?,
                None => tempfile::tempdir()?,
            };
            let store = SqliteEventStore::open(&dir.path().join("store")).await?;
            raw_sqlite(&dir.path().join("raw"), duration).await?;
            (Arc::new(store), Some(dir))
        }
        "postgres" => {
            let url = args.require("database-url")?;
            (Arc::new(PgEventStore::connect(url).await?), None)
        }
        other => bail!("--backend {other}: sqlite or postgres"),
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
/// columns, indexes and constraints) in a file of its own, the same pragmas as the store (WAL,
/// synchronous=FULL) and the same one-connection writer pool, plain INSERTs without the
/// version check, one transaction per row or per batch.
async fn raw_sqlite(dir: &Path, duration: Duration) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(dir.join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await?;
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
        sqlx::raw_sql(&std::fs::read_to_string(file)?)
            .execute(&pool)
            .await?;
    }
    for (case, (label, batch, clients)) in RAW_CASES.iter().enumerate() {
        let run = |prefix: String, duration: Duration| {
            let pool = pool.clone();
            let (batch, clients) = (*batch, *clients);
            async move {
                let started = Instant::now();
                let deadline = started + duration;
                let mut tasks = Vec::new();
                for client in 0..clients {
                    let pool = pool.clone();
                    let aggregate = format!("{prefix}-{client}");
                    tasks.push(tokio::spawn(async move {
                        let mut tally = Tally::default();
                        let mut version = 0u64;
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            let mut tx = pool.begin().await?;
                            for _ in 0..batch {
                                version += 1;
                                let e = new_event(&aggregate, version);
                                sqlx::query(
                                    "INSERT INTO events (event_id, event_type, aggregate_type, \
                                     aggregate_id, version, schema_version, timestamp_us, data, \
                                     metadata, correlation_id, causation_id, trace_id) \
                                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                )
                                .bind(e.event_id.to_string())
                                .bind(&e.event_type)
                                .bind("Cart")
                                .bind(&aggregate)
                                .bind(version as i64)
                                .bind(e.schema_version as i64)
                                .bind(e.timestamp.timestamp_micros())
                                .bind(e.data.to_string())
                                .bind(serde_json::to_string(&e.metadata)?)
                                .bind(&e.metadata.correlation_id)
                                .bind(&e.metadata.causation_id)
                                .bind(Uuid::new_v4().simple().to_string())
                                .execute(&mut *tx)
                                .await?;
                            }
                            tx.commit().await?;
                            tally.latencies_us.push(t.elapsed().as_micros() as u32);
                            tally.events += batch as u64;
                            tally.transactions += 1;
                        }
                        Ok::<Tally, anyhow::Error>(tally)
                    }));
                }
                let mut total = Tally::default();
                for task in tasks {
                    total.merge(task.await??);
                }
                Ok::<(Tally, f64), anyhow::Error>((total, started.elapsed().as_secs_f64()))
            }
        };
        run(format!("raw{case}-warm"), Duration::from_millis(200)).await?;
        let (tally, elapsed) = run(format!("raw{case}"), duration).await?;
        emit(tally.report(
            elapsed,
            json!({
                "kind": "raw-insert", "backend": "sqlite", "case": label,
                "batch": batch, "clients": clients,
            }),
        ));
    }
    pool.close().await;
    Ok(())
}

// ---------------------------------------------------------------- scan

/// Rows per page of a scan: the rebuild's page.
const PAGE: i64 = 2000;

/// A raw scan of the events table, in pages by position: every column fetched, nothing
/// decoded. Returns (events, bytes of data, metadata and ids, seconds).
async fn raw_scan_postgres(url: &str) -> anyhow::Result<(u64, u64, f64)> {
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

/// [`raw_scan_postgres`] on the embedded store's file.
async fn raw_scan_sqlite(data_dir: &Path) -> anyhow::Result<(u64, u64, f64)> {
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(data_dir.join("cornershop.db"))
        .read_only(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open {}", data_dir.display()))?;
    let started = Instant::now();
    let (mut after, mut events, mut bytes) = (0i64, 0u64, 0u64);
    loop {
        let rows = sqlx::query(
            "SELECT position, event_id, event_type, aggregate_type, aggregate_id, version, \
             schema_version, timestamp_us, data, metadata, trace_id FROM events \
             WHERE position > ? ORDER BY position LIMIT ?",
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

/// The store's `read_log` over the whole log (decoded into events, which is what a
/// rebuild reads through). Returns (events, seconds).
async fn read_log_scan(store: &dyn EventStore) -> anyhow::Result<(u64, f64)> {
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

fn report_scan(backend: &str, case: &str, events: u64, bytes: u64, seconds: f64) {
    emit(json!({
        "kind": "scan", "backend": backend, "case": case, "events": events,
        "bytes": bytes, "seconds": round3(seconds),
        "eventsPerSecond": round1(events as f64 / seconds),
    }));
}

/// Reads the whole log of an existing store twice: a raw scan and `read_log`.
async fn scan(args: &Args) -> anyhow::Result<()> {
    let (store, backend): (Arc<dyn EventStore>, &str) = match args.get("database-url") {
        Some(url) => {
            let (events, bytes, seconds) = raw_scan_postgres(url).await?;
            report_scan("postgres", "raw scan", events, bytes, seconds);
            (Arc::new(PgEventStore::connect(url).await?), "postgres")
        }
        None => {
            let dir = PathBuf::from(args.require("data-dir")?);
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

// ---------------------------------------------------------------- rebuild

/// The projection rebuild: writes `--orders` whole order histories (the read models'
/// test generator: the events the workflow writes, from the aggregates' own `decide`)
/// into a new store, then reads the log raw (the baseline), then rebuilds the
/// reporting-service read models from it (shadow tables, then the swap).
async fn rebuild(args: &Args) -> anyhow::Result<()> {
    let orders: u64 = args.number("orders", 20_000)?;
    let dir = match args.get("dir") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let url = args.get("database-url");
    let (store, read_models, backend): (Arc<dyn EventStore>, Arc<dyn ReadModelStore>, &str) =
        match url {
            Some(url) => (
                Arc::new(PgEventStore::connect(url).await?),
                Arc::new(cornershop_readmodels::connect_postgres(url).await?),
                "postgres",
            ),
            None => (
                Arc::new(SqliteEventStore::open(dir.path()).await?),
                Arc::new(cornershop_readmodels::open_sqlite(dir.path()).await?),
                "sqlite",
            ),
        };

    let started = Instant::now();
    let mut generator = Generator::new(store.clone());
    let at = Utc::now() - chrono::Duration::days(1);
    const SKUS: usize = 20;
    let price = |i: usize| Decimal::new(499 + 100 * i as i64, 2);
    for i in 0..SKUS {
        generator
            .stock(
                &format!("BENCH-{i:02}"),
                "Bench product",
                price(i),
                1_000_000_000,
                10,
                at,
            )
            .await?;
    }
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    for n in 0..orders {
        // One to three distinct products, one to three of each.
        let lines = (0..1 + rng.below(3))
            .map(|k| {
                let i = (n as usize + 7 * k) % SKUS;
                Line {
                    sku: format!("BENCH-{i:02}"),
                    name: "Bench product".to_string(),
                    quantity: 1 + rng.below(3) as u32,
                    unit_price: price(i),
                }
            })
            .collect();
        let outcome = match rng.below(20) {
            0 => Outcome::Declined,
            1 => Outcome::OutOfStock,
            2 => Outcome::Confirmed,
            3 => Outcome::Shipped,
            _ => Outcome::Delivered,
        };
        generator
            .order(&OrderPlan {
                order_id: format!("bench-order-{n:07}"),
                customer_id: format!("bench-customer-{}", n % 1000),
                lines,
                outcome,
                at: at + chrono::Duration::milliseconds(10 * n as i64),
                step: chrono::Duration::milliseconds(7),
            })
            .await?;
    }
    generator.flush().await?;
    emit(json!({
        "kind": "generate", "backend": backend, "orders": orders,
        "events": generator.events_written,
        "seconds": round3(started.elapsed().as_secs_f64()),
    }));

    let (events, bytes, seconds) = match url {
        Some(url) => raw_scan_postgres(url).await?,
        None => raw_scan_sqlite(dir.path()).await?,
    };
    report_scan(backend, "raw scan", events, bytes, seconds);
    let (events, seconds) = read_log_scan(store.as_ref()).await?;
    report_scan(backend, "read_log", events, 0, seconds);

    let started = Instant::now();
    let report = read_models
        .rebuild(REPORTING, store.as_ref(), &|_| {})
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    emit(json!({
        "kind": "rebuild", "backend": backend, "events": report.events_read,
        "applied": report.events_applied, "seconds": round3(seconds),
        "eventsPerSecond": round1(report.events_read as f64 / seconds),
    }));
    read_models.close().await;
    store.close().await;
    Ok(())
}

// ---------------------------------------------------------------- relay

/// Appends `--events` events (batches of `--batch` to `--aggregates` carts) into the
/// PostgreSQL store, unpublished, and prints the average sizes of the records the relay
/// will produce: the envelope JSON (the payload), the key and the headers.
async fn load(args: &Args) -> anyhow::Result<()> {
    let url = args.require("database-url")?;
    let total: u64 = args.number("events", 100_000)?;
    let aggregates: usize = args.number("aggregates", 1000)?;
    let batch: usize = args.number("batch", 100)?;
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::connect(url).await?);
    let started = Instant::now();
    let prefix = format!("relay-{}", Uuid::new_v4().simple());
    let mut versions = vec![0u64; aggregates];
    let (mut done, mut payload, mut key, mut headers) = (0u64, 0u64, 0u64, 0u64);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    while done < total {
        let i = rng.below(aggregates);
        let aggregate = format!("{prefix}-{i}");
        let n = (batch as u64).min(total - done);
        let events = (0..n).map(|k| new_event(&aggregate, done + k)).collect();
        let stored = store
            .append(AppendRequest::new(
                AggregateType::Cart,
                &aggregate,
                versions[i],
                events,
            ))
            .await?;
        versions[i] += n;
        done += n;
        for e in &stored {
            let m = &e.envelope.metadata;
            payload += serde_json::to_vec(&e.envelope)?.len() as u64;
            key += e.envelope.aggregate_id.len() as u64;
            // eventType, correlationId, causationId and a 55-character traceparent.
            headers += ("eventType".len() + e.envelope.event_type.len()) as u64
                + ("correlationId".len() + m.correlation_id.len()) as u64
                + ("causationId".len() + m.causation_id.len()) as u64
                + ("traceparent".len() + 55) as u64;
        }
    }
    emit(json!({
        "kind": "load", "backend": "postgres", "events": done,
        "seconds": round3(started.elapsed().as_secs_f64()),
        "avgPayloadBytes": payload / done.max(1),
        "avgKeyBytes": key / done.max(1),
        "avgHeaderBytes": headers / done.max(1),
    }));
    store.close().await;
    Ok(())
}

/// Polls the relay's checkpoint until the last `--events` events have their Kafka offset
/// recorded (the relay's checkpoint has reached the head). The
/// rate counts from the first poll that saw a published event (the relay's start-up, topic
/// creation and lease are not in it) to the last; `totalSeconds` counts from this
/// command's start.
async fn relay_wait(args: &Args) -> anyhow::Result<()> {
    let url = args.require("database-url")?;
    let total: i64 = args.number("events", 100_000)?;
    let timeout = Duration::from_secs_f64(args.number("timeout-seconds", 300.0)?);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    // The relay saves its checkpoint (the last position published) after it recorded the
    // batch's offsets: polling it is cheap, where counting rows would compete for the CPU.
    let (min, head): (i64, i64) =
        sqlx::query_as("SELECT COALESCE(MIN(position), 0), COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&pool)
            .await?;
    if head - min + 1 < total {
        bail!(
            "the store holds {} events, fewer than {total}",
            head - min + 1
        );
    }
    let started = Instant::now();
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let checkpoint: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE consumer = 'outbox-relay'")
                .fetch_optional(&pool)
                .await?;
        let published = checkpoint.map_or(0, |c| c - min + 1);
        let now = Instant::now();
        if published > 0 && first.is_none() {
            first = Some((now, published));
        }
        if published >= total {
            let (t0, n0) = first.expect("set above");
            let seconds = (now - t0).as_secs_f64();
            emit(json!({
                "kind": "relay", "backend": "postgres", "events": published,
                "firstSeen": n0, "seconds": round3(seconds),
                "eventsPerSecond": round1((published - n0) as f64 / seconds.max(1e-3)),
                "totalSeconds": round3((now - started).as_secs_f64()),
            }));
            break;
        }
        if now - started > timeout {
            bail!("only {published} of {total} events published after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.close().await;
    Ok(())
}
