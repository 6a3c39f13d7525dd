//! Backups (`cornershop backup create|verify|restore`): taken while 32 shoppers check
//! out, restored into a fresh SQLite store and a fresh PostgreSQL database (the
//! migration), byte for byte up to the cut and nothing above; the restored shop finishes
//! the orders that were in flight, exactly once. A damaged backup is refused by verify
//! and restore and writes nothing; an erasure made after a backup stays made.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{spawn_embedded_with, Role, TestApp};
use cornershop_store::backup::{export_rows, Cell, Row, EVENTS};
use cornershop_store::{EventStore, PgEventStore, SqliteEventStore};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn cornershop(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cornershop"))
        .args(args)
        .env_remove("CORNERSHOP_DATABASE_URL")
        .env("CORNERSHOP_LOG", "warn")
        .output()
        .expect("run cornershop")
}

async fn cornershop_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cornershop(&args)
    })
    .await
    .unwrap()
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Every row of a store, table by table, with the cut's position.
async fn rows_of(store: &dyn EventStore) -> (u64, Vec<(&'static str, Row)>) {
    let (cut, rows) = export_rows(store, 0).await.expect("export");
    (cut.position, rows)
}

fn events(rows: &[(&'static str, Row)]) -> Vec<Row> {
    rows.iter()
        .filter(|(t, _)| *t == "events")
        .map(|(_, r)| r.clone())
        .collect()
}

fn cell<'a>(row: &'a Row, name: &str) -> &'a Cell {
    &row[EVENTS.column(name).unwrap()]
}

fn text(row: &Row, name: &str) -> String {
    match cell(row, name) {
        Cell::Text(s) | Cell::Json(s) | Cell::Uuid(s) => s.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

/// A shopper: carts checked out one after another until `stop`.
async fn shopper(app_base: String, token: String, stop: Arc<AtomicBool>) -> u32 {
    let client = common::client_with_token(&token);
    let mut orders = 0;
    while !stop.load(Ordering::Relaxed) {
        let cart: Value = client
            .post(format!("{app_base}/api/carts"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let cart = cart["cartId"].as_str().unwrap().to_string();
        let added = client
            .post(format!("{app_base}/api/carts/{cart}/items"))
            .json(&json!({"sku": "BK-MUG", "quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), StatusCode::OK);
        let checked_out = client
            .post(format!("{app_base}/api/carts/{cart}/checkout"))
            .json(
                &json!({"paymentToken": "tok_visa", "shippingAddress": common::address(),
                         "email": "ada@example.com"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(checked_out.status(), StatusCode::ACCEPTED);
        orders += 1;
    }
    orders
}

/// What an order's events say, per checked-out cart: how many orders it made, and per
/// order the count of each event type.
fn orders_by_cart(events: &[Row]) -> BTreeMap<String, Vec<BTreeMap<String, usize>>> {
    let mut carts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut orders: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
    for row in events {
        let kind = text(row, "eventType");
        let data: Value = serde_json::from_str(&text(row, "data")).unwrap();
        if kind == "CartCheckedOut" {
            carts.entry(text(row, "aggregateId")).or_default();
        }
        if text(row, "aggregateType") == "Order" {
            let id = text(row, "aggregateId");
            if kind == "OrderCreated" {
                carts
                    .entry(data["cartId"].as_str().unwrap().to_string())
                    .or_default()
                    .push(id.clone());
            }
            *orders.entry(id).or_default().entry(kind).or_insert(0) += 1;
        }
    }
    carts
        .into_iter()
        .map(|(cart, ids)| {
            let lives = ids.iter().map(|id| orders[id].clone()).collect();
            (cart, lives)
        })
        .collect()
}

/// The store of restored data: PostgreSQL when a URL is given, else the directory's file.
async fn open_store(dir: &Path, database_url: Option<&str>) -> Arc<dyn EventStore> {
    match database_url {
        Some(url) => Arc::new(PgEventStore::connect(url).await.unwrap()),
        None => Arc::new(SqliteEventStore::open(dir).await.unwrap()),
    }
}

/// Starts a shop on restored data, lets it finish what was in flight, and checks that
/// every checked-out cart became one order that ended once.
async fn carry_on(dir: PathBuf, database_url: Option<String>, master_key: PathBuf) {
    let (data_dir, url) = (dir.clone(), database_url.clone());
    let app = spawn_embedded_with(move |args| {
        args.data_dir = data_dir;
        args.database_url = url;
        args.master_key_file = Some(master_key);
    })
    .await;
    app.settle().await;
    drop(app.stop_and_wait().await);
    let store = open_store(&dir, database_url.as_deref()).await;
    let (_, rows) = rows_of(&*store).await;
    store.close().await;
    let lives = orders_by_cart(&events(&rows));
    assert!(!lives.is_empty());
    for (cart, orders) in &lives {
        assert_eq!(orders.len(), 1, "cart {cart} made {} orders", orders.len());
        let order = &orders[0];
        let ended =
            order.get("OrderConfirmed").unwrap_or(&0) + order.get("OrderCancelled").unwrap_or(&0);
        assert_eq!(
            ended, 1,
            "the order of cart {cart} ended {ended} times: {order:?}"
        );
        for (kind, n) in order {
            assert!(
                *n == 1 || kind == "StockReserved",
                "{kind} {n} times: {order:?}"
            );
        }
    }
}

/// A fresh database on the test PostgreSQL; its URL.
async fn scratch_database() -> String {
    let admin = std::env::var("CORNERSHOP_TEST_DATABASE_URL").expect(
        "CORNERSHOP_TEST_DATABASE_URL is not set: start the stack (scripts/stack.sh start)",
    );
    let name = format!("cs_backup_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create a database");
    common::cluster::with_database(&admin, &name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_into_sqlite_and_postgresql_and_the_shop_carries_on() {
    let app = spawn_embedded_with(|_| {}).await;
    app.stock("BK-MUG", "4.00", 1_000_000).await;
    let source_dir = app.data_dir.path().to_path_buf();
    let master_key = source_dir.join("master.key");
    let stop = Arc::new(AtomicBool::new(false));
    let shoppers: Vec<_> = (0..32)
        .map(|i| {
            let token = app.token(Role::Customer, &format!("bk-shopper-{i}"));
            tokio::spawn(shopper(app.base.clone(), token, stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("shop.backup");
    let created = create_backup(&source_dir, &file).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut placed = 0;
    for s in shoppers {
        placed += s.await.unwrap();
    }
    assert!(placed > 32, "the shoppers placed {placed} orders");
    app.settle().await;
    let source_dir = app.stop_and_wait().await;

    let verified = cornershop(&["backup", "verify", &path(&file)]);
    assert!(verified.status.success(), "verify: {}", said(&verified));

    // The source as it ended, and what the cut must hold of it.
    let source: Arc<dyn EventStore> =
        Arc::new(SqliteEventStore::open(source_dir.path()).await.unwrap());
    let (_, source_rows) = rows_of(&*source).await;
    source.close().await;
    let manifest_position: u64 = {
        let out = said(&created);
        let at = out.find("up to position ").expect("the position") + "up to position ".len();
        out[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let expected: Vec<Row> = events(&source_rows)
        .into_iter()
        .filter(|row| cornershop_store::backup::event_position(row) <= manifest_position)
        .collect();
    assert!(
        expected.len() < events(&source_rows).len(),
        "the shoppers wrote after the cut"
    );

    // Into a fresh SQLite store.
    let sqlite_dir = tempfile::tempdir().unwrap();
    let restored = cornershop(&[
        "backup",
        "restore",
        &path(&file),
        &format!("--data-dir={}", path(sqlite_dir.path())),
        &format!("--master-key-file={}", path(&master_key)),
    ]);
    assert!(restored.status.success(), "restore: {}", said(&restored));
    let sqlite: Arc<dyn EventStore> =
        Arc::new(SqliteEventStore::open(sqlite_dir.path()).await.unwrap());
    let (head, sqlite_rows) = rows_of(&*sqlite).await;
    sqlite.close().await;
    assert_eq!(head, manifest_position);
    assert_eq!(
        events(&sqlite_rows),
        expected,
        "SQLite: the events up to the cut, byte for byte"
    );
    let in_flight = orders_by_cart(&expected)
        .values()
        .filter(|orders| {
            orders.first().is_none_or(|o| {
                !o.contains_key("OrderConfirmed") && !o.contains_key("OrderCancelled")
            })
        })
        .count();
    assert!(in_flight > 0, "no order was in flight at the cut");
    let verify = cornershop(&[
        "projections",
        "verify",
        &format!("--data-dir={}", path(sqlite_dir.path())),
    ]);
    assert!(
        verify.status.success(),
        "projections verify (SQLite): {}",
        said(&verify)
    );

    // Into a fresh PostgreSQL database: the migration.
    let database_url = scratch_database().await;
    let pg_dir = tempfile::tempdir().unwrap();
    let restored = cornershop(&[
        "backup",
        "restore",
        &path(&file),
        &format!("--database-url={database_url}"),
        &format!("--data-dir={}", path(pg_dir.path())),
        &format!("--master-key-file={}", path(&master_key)),
    ]);
    assert!(
        restored.status.success(),
        "restore into PostgreSQL: {}",
        said(&restored)
    );
    let pg: Arc<dyn EventStore> = Arc::new(PgEventStore::connect(&database_url).await.unwrap());
    let (head, pg_rows) = rows_of(&*pg).await;
    pg.close().await;
    assert_eq!(head, manifest_position);
    assert_eq!(
        events(&pg_rows),
        expected,
        "PostgreSQL: the events up to the cut, byte for byte"
    );
    assert_eq!(pg_rows, sqlite_rows, "both restores hold the same rows");
    let verify = cornershop(&[
        "projections",
        "verify",
        &format!("--database-url={database_url}"),
        &format!("--data-dir={}", path(pg_dir.path())),
    ]);
    assert!(
        verify.status.success(),
        "projections verify (PostgreSQL): {}",
        said(&verify)
    );

    // Each restored shop finishes the orders in flight, each exactly once.
    carry_on(sqlite_dir.path().to_path_buf(), None, master_key.clone()).await;
    carry_on(pg_dir.path().to_path_buf(), Some(database_url), master_key).await;
}

/// `cornershop backup create` of the embedded store in `data_dir`, which must succeed;
/// what it printed.
async fn create_backup(data_dir: &Path, file: &Path) -> Output {
    let created = cornershop_async(vec![
        "backup".into(),
        "create".into(),
        format!("--out={}", path(file)),
        format!("--data-dir={}", path(data_dir)),
    ])
    .await;
    assert!(
        created.status.success(),
        "backup create: {}",
        said(&created)
    );
    created
}

/// A small shop's backup: one order placed and finished.
async fn small_backup(work: &Path) -> (TestApp, PathBuf) {
    let app = spawn_embedded_with(|_| {}).await;
    app.stock("BK-CUP", "3.00", 10).await;
    let order = app.order(&[("BK-CUP", 1)], "tok_visa").await;
    app.wait_for_order(&order, &["Confirmed"]).await;
    app.settle().await;
    let file = work.join("small.backup");
    create_backup(app.data_dir.path(), &file).await;
    (app, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_is_refused_by_verify_and_restore_and_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (app, file) = small_backup(work.path()).await;
    let master_key = app.data_dir.path().join("master.key");
    let text =
        String::from_utf8(zstd::decode_all(std::fs::File::open(&file).unwrap()).unwrap()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let event_line = lines
        .iter()
        .position(|l| l.contains("\"CartCheckedOut\""))
        .unwrap();
    let recompress =
        |lines: &[String]| zstd::encode_all((lines.join("\n") + "\n").as_bytes(), 3).unwrap();
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();

    let mut flipped = owned.clone();
    // One digit of its time: nothing but the checksums can tell.
    flipped[event_line] =
        flipped[event_line].replacen("\"timestamp\":\"20", "\"timestamp\":\"21", 1);
    let mut removed = owned.clone();
    removed.remove(event_line);
    let mut compressed = std::fs::read(&file).unwrap();
    let cut_short = compressed[..compressed.len() * 2 / 3].to_vec();
    let middle = compressed.len() / 2;
    compressed[middle] ^= 0x40;
    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        (
            "a byte changed",
            recompress(&flipped),
            &["differ from those the backup was written with"],
        ),
        (
            "a line removed",
            recompress(&removed),
            &["the manifest counts"],
        ),
        ("truncated", cut_short, &["truncated"]),
        // zstd's checksum comes at the frame's end: what decodes wrong before it is
        // refused by the line it makes, or by the checksums of the lines.
        (
            "a compressed byte flipped",
            compressed,
            &[
                "line ",
                "does not match its manifest",
                "damaged or truncated",
            ],
        ),
    ];
    for (what, bytes, reasons) in cases {
        let names_it = |out: &Output| reasons.iter().any(|r| said(out).contains(r));
        let damaged = work.path().join("damaged.backup");
        std::fs::write(&damaged, bytes).unwrap();
        let verified = cornershop(&["backup", "verify", &path(&damaged)]);
        assert!(
            !verified.status.success(),
            "verify took a backup with {what}"
        );
        assert!(
            names_it(&verified),
            "{what}: verify said {}",
            said(&verified)
        );
        let target = tempfile::tempdir().unwrap();
        let restored = cornershop(&[
            "backup",
            "restore",
            &path(&damaged),
            &format!("--data-dir={}", path(target.path())),
            &format!("--master-key-file={}", path(&master_key)),
        ]);
        assert!(
            !restored.status.success(),
            "restore took a backup with {what}"
        );
        assert!(
            names_it(&restored),
            "{what}: restore said {}",
            said(&restored)
        );
        assert!(
            std::fs::read_dir(target.path()).unwrap().next().is_none(),
            "{what}: restore wrote into the data directory"
        );
    }

    // A whole one is refused over a store that has rows, which it leaves as it was.
    let before = app.total_events().await;
    let restored = cornershop(&[
        "backup",
        "restore",
        &path(&file),
        &format!("--data-dir={}", path(app.data_dir.path())),
    ]);
    assert!(!restored.status.success());
    assert!(said(&restored).contains("not empty"), "{}", said(&restored));
    assert_eq!(app.total_events().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_after_a_backup_stays_made_after_its_restore() {
    let work = tempfile::tempdir().unwrap();
    let (app, file) = small_backup(work.path()).await;
    let master_key = app.data_dir.path().join("master.key");
    let ledger = app.data_dir.path().join("erasures.ndjson");
    // The order's customer (cust-1) has their personal data erased after the backup.
    let before: Value = app.json("/api/customers/cust-1/personal-data").await;
    assert!(before.to_string().contains("ada@example.com"), "{before}");
    let erased = app
        .client
        .delete(app.url("/api/customers/cust-1/personal-data"))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), StatusCode::OK);
    assert!(std::fs::read_to_string(&ledger).unwrap().contains("cust-1"));

    for ledgers in [vec![], vec![format!("--erasure-ledger={}", path(&ledger))]] {
        let target = tempfile::tempdir().unwrap();
        let mut args = vec![
            "backup".to_string(),
            "restore".into(),
            path(&file),
            format!("--data-dir={}", path(target.path())),
            format!("--master-key-file={}", path(&master_key)),
        ];
        args.extend(ledgers.clone());
        let restored = cornershop_async(args).await;
        assert!(restored.status.success(), "restore: {}", said(&restored));
        let dir = target.path().to_path_buf();
        let key = master_key.clone();
        let shop = spawn_embedded_with(move |a| {
            a.data_dir = dir;
            a.master_key_file = Some(key);
        })
        .await;
        let data: Value = shop.json("/api/customers/cust-1/personal-data").await;
        let readable = data.to_string().contains("ada@example.com");
        // Without the ledger the backup brings the data back: what the ledger is for.
        assert_eq!(readable, ledgers.is_empty(), "ledgers {ledgers:?}: {data}");
        drop(shop.stop_and_wait().await);
    }
}

/// The rows of `table` in `rows`, each with its column names, as JSON-ish pairs.
fn table_rows<'a>(rows: &'a [(&'static str, Row)], table: &str) -> Vec<&'a Row> {
    rows.iter()
        .filter(|(t, _)| *t == table)
        .map(|(_, row)| row)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_shop_fires_a_pending_cart_expiry_once_and_sends_no_notification_again() {
    let ttl = Duration::from_secs(3);
    let app = spawn_embedded_with(move |args| args.workflow.cart_ttl = ttl.into()).await;
    app.stock("BK-PEN", "1.50", 10).await;
    // An order whose notifications are sent before the backup...
    let order = app.order(&[("BK-PEN", 1)], "tok_visa").await;
    app.wait_for_order(&order, &["Confirmed"]).await;
    app.settle().await;
    // ...and an idle cart whose expiry is still to come when the backup is taken.
    let idle = app.new_cart("cust-idle").await;
    assert_eq!(app.add(&idle, "BK-PEN", 1).await.status(), StatusCode::OK);
    app.settle().await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("timer.backup");
    create_backup(app.data_dir.path(), &file).await;
    let source_dir = app.stop_and_wait().await;
    let master_key = source_dir.path().join("master.key");

    let target = tempfile::tempdir().unwrap();
    let restored = cornershop(&[
        "backup",
        "restore",
        &path(&file),
        &format!("--data-dir={}", path(target.path())),
        &format!("--master-key-file={}", path(&master_key)),
    ]);
    assert!(restored.status.success(), "restore: {}", said(&restored));
    let store = open_store(target.path(), None).await;
    let (_, at_backup) = rows_of(&*store).await;
    store.close().await;
    let timers = table_rows(&at_backup, "timers");
    assert!(
        timers
            .iter()
            .any(|row| matches!(&row[0], Cell::Text(key) if key.contains(&idle))),
        "the idle cart's expiry is not in the backup: {timers:?}"
    );
    let sent_at_backup: Vec<&Row> = table_rows(&at_backup, "notifications");
    assert!(
        !sent_at_backup.is_empty(),
        "the order's notifications are in the backup"
    );

    let dir = target.path().to_path_buf();
    let shop = spawn_embedded_with(move |args| {
        args.data_dir = dir;
        args.master_key_file = Some(master_key);
        args.workflow.cart_ttl = ttl.into();
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let expired = shop
            .json("/api/eventstore/events?eventType=CartExpired")
            .await;
        if !expired["events"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restored expiry never fired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shop.settle().await;
    // Time for a second firing, or a second sending, to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(shop.stop_and_wait().await);
    let store = open_store(target.path(), None).await;
    let (_, after) = rows_of(&*store).await;
    store.close().await;
    let expired: Vec<Row> = events(&after)
        .into_iter()
        .filter(|row| text(row, "eventType") == "CartExpired")
        .collect();
    assert_eq!(expired.len(), 1, "the cart expired {} times", expired.len());
    assert_eq!(text(&expired[0], "aggregateId"), idle);
    // Every notification of the backup is exactly as it was: none was sent again.
    let now: Vec<&Row> = table_rows(&after, "notifications");
    for row in &sent_at_backup {
        assert!(
            now.contains(row),
            "a notification changed after the restore: {row:?}"
        );
    }
}
