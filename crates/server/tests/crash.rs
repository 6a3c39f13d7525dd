//! SIGKILL the real `cornershop` process, restart it on the same data directory, and
//! check what survived: every acknowledged event; orders caught mid-workflow finish
//! exactly once with no stock leaked; a cart whose expiry deadline passed while the
//! process was down still expires (once). And SIGTERM / SIGINT: a graceful stop that cuts
//! no request short.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::cluster::Process;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Starts `cornershop serve` on the embedded default in `data_dir` with `extra` flags and
/// waits until it is ready; its log goes to `server.log` in the data directory.
async fn start(data_dir: &Path, extra: &[&str]) -> Process {
    let mut args = vec![format!("--data-dir={}", data_dir.display())];
    args.extend(extra.iter().map(|flag| flag.to_string()));
    Process::start("shop", args, data_dir.join("server.log")).await
}

/// Stocks SKU-0..SKU-7 with 100 units each.
async fn stock_eight(client: &reqwest::Client, base: &str) {
    for i in 0..8 {
        let r = client
            .put(format!("{base}/api/inventory/SKU-{i}"))
            .json(&json!({"name": format!("P{i}"), "unitPrice": "1.00", "quantity": 100}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}

/// What a stream of writers saw: every write the server acknowledged, as (cart, version)
/// with version 1 for the cart's creation; and every answer that was neither a success nor
/// a refused or broken connection (a 5xx, a cut-off body).
#[derive(Default)]
struct Writes {
    acknowledged: Mutex<Vec<(String, u64)>>,
    bad_answers: Mutex<Vec<String>>,
    /// Item additions sent on a connection that closed without an answer (the cart, and
    /// its last acknowledged version): HTTP keep-alive's race, a request sent on a
    /// connection the server is closing as idle. Such a request must not have been
    /// applied (a server that stops gracefully answers what it takes).
    unanswered: Mutex<Vec<(String, u64)>>,
}

/// `count` writers create carts and add items as fast as they can until the server stops
/// answering.
fn spawn_writers(
    client: &reqwest::Client,
    base: &str,
    count: usize,
) -> (Arc<Writes>, Vec<tokio::task::JoinHandle<()>>) {
    let writes: Arc<Writes> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..count {
        let (client, base, writes) = (client.clone(), base.to_string(), writes.clone());
        writers.push(tokio::spawn(async move {
            let bad = |what: String| writes.bad_answers.lock().unwrap().push(what);
            loop {
                let r = match client
                    .post(format!("{base}/api/carts"))
                    .json(&json!({"customerId": format!("writer-{w}")}))
                    .send()
                    .await
                {
                    Ok(r) => r,
                    Err(_) => return,
                };
                if r.status() != StatusCode::CREATED {
                    return bad(format!("create cart: {}", r.status()));
                }
                let Ok(body) = r.json::<Value>().await else {
                    return bad("create cart: the body was cut off".into());
                };
                let cart = body["cartId"].as_str().unwrap().to_string();
                writes.acknowledged.lock().unwrap().push((cart.clone(), 1));
                let mut version = 1;
                for i in 0..8 {
                    let r = match client
                        .post(format!("{base}/api/carts/{cart}/items"))
                        .json(&json!({"sku": format!("SKU-{i}"), "quantity": 1}))
                        .send()
                        .await
                    {
                        Ok(r) => r,
                        Err(e) => {
                            if !e.is_connect() {
                                writes.unanswered.lock().unwrap().push((cart, version));
                            }
                            return;
                        }
                    };
                    if r.status() != StatusCode::OK {
                        return bad(format!("add item: {}", r.status()));
                    }
                    let Ok(view) = r.json::<Value>().await else {
                        return bad("add item: the body was cut off".into());
                    };
                    version = view["version"].as_u64().unwrap();
                    writes
                        .acknowledged
                        .lock()
                        .unwrap()
                        .push((cart.clone(), version));
                }
            }
        }));
    }
    (writes, writers)
}

/// A fresh shop with eight SKUs in stock and eight writers running, once they have 300
/// acknowledged writes (or 20 s have passed).
struct ShopUnderWrites {
    data_dir: tempfile::TempDir,
    server: Process,
    client: reqwest::Client,
    writes: Arc<Writes>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl ShopUnderWrites {
    async fn start() -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let server = start(data_dir.path(), &[]).await;
        let client = server.client();
        stock_eight(&client, &server.base()).await;
        let (writes, writers) = spawn_writers(&client, &server.base(), 8);
        let deadline = Instant::now() + Duration::from_secs(20);
        while writes.acknowledged.lock().unwrap().len() < 300 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            data_dir,
            server,
            client,
            writes,
            writers,
        }
    }

    /// Once the server is gone: waits for the writers, restarts the server on the same
    /// data, and checks that every acknowledged write is there.
    async fn restart_and_check(self) -> (Process, reqwest::Client, Arc<Writes>, tempfile::TempDir) {
        for w in self.writers {
            w.await.unwrap();
        }
        let server = start(self.data_dir.path(), &[]).await;
        assert_every_acknowledged_write_is_there(&self.client, &server.base(), &self.writes).await;
        (server, self.client, self.writes, self.data_dir)
    }
}

/// A cart as replayed from the store.
async fn replay_cart(client: &reqwest::Client, base: &str, cart: &str) -> Value {
    client
        .get(format!("{base}/api/eventstore/replay/Cart/{cart}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every acknowledged write is in the store the server at `base` reads, each cart's
/// versions contiguous; and the server takes writes again.
async fn assert_every_acknowledged_write_is_there(
    client: &reqwest::Client,
    base: &str,
    writes: &Writes,
) {
    let acknowledged = writes.acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 100,
        "too few acknowledged writes: {}",
        acknowledged.len()
    );
    let mut highest = BTreeMap::<String, u64>::new();
    for (cart, version) in &acknowledged {
        let v = highest.entry(cart.clone()).or_default();
        *v = (*v).max(*version);
    }
    for (cart, version) in &highest {
        let replay = replay_cart(client, base, cart).await;
        let stored = replay["version"].as_u64().unwrap_or(0);
        assert!(
            stored >= *version,
            "cart {cart}: version {version} was acknowledged but only {stored} survived"
        );
        let versions: Vec<u64> = replay["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect();
        assert_eq!(versions, (1..=stored).collect::<Vec<_>>());
    }
    let r = client
        .post(format!("{base}/api/carts"))
        .json(&json!({"customerId": "after-restart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_survives_sigkill() {
    // Kill -9 in the middle of the writers' stream.
    let mut shop = ShopUnderWrites::start().await;
    shop.server.kill();
    let (mut server, _client, _writes, _data) = shop.restart_and_check().await;
    server.kill();
}

/// The (position, event id) of every event a reader saw, in the order it saw them.
type Tailed = Arc<Mutex<Vec<(u64, String)>>>;

/// A reader tailing the global log through the API until the server stops answering.
fn spawn_tail(client: &reqwest::Client, base: &str) -> (Tailed, tokio::task::JoinHandle<()>) {
    let seen: Tailed = Arc::default();
    let (client, base, tail) = (client.clone(), base.to_string(), seen.clone());
    let task = tokio::spawn(async move {
        let mut after = 0;
        loop {
            let url = format!("{base}/api/eventstore/events?after={after}&limit=1000");
            let Ok(r) = client.get(url).send().await else {
                return;
            };
            let Ok(page) = r.json::<Value>().await else {
                return;
            };
            let Some(events) = page["events"].as_array() else {
                return;
            };
            for e in events {
                let position = e["position"].as_u64().expect("position");
                assert!(
                    position > after,
                    "the log went back from {after} to {position}"
                );
                after = position;
                let id = e["eventId"].as_str().expect("eventId").to_string();
                tail.lock().unwrap().push((position, id));
            }
            if events.is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    (seen, task)
}

/// 64 writers and a reader tailing the log, until 600 writes are acknowledged (or 30 s
/// have passed); then `crash` kills the server and starts it again on the same store, and
/// the server it returns must hold every acknowledged write, and no event below the last
/// position the reader passed that the reader did not see (no gap it passed was filled).
async fn sixty_four_writers_survive_sigkill<F, Fut>(client: reqwest::Client, base: String, crash: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let (writes, writers) = spawn_writers(&client, &base, 64);
    let (tailed, tail) = spawn_tail(&client, &base);
    let deadline = Instant::now() + Duration::from_secs(30);
    while writes.acknowledged.lock().unwrap().len() < 600 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let base = crash().await;
    for w in writers {
        w.await.unwrap();
    }
    tail.await.expect("the tailing reader saw the log in order");
    assert_every_acknowledged_write_is_there(&client, &base, &writes).await;
    let tailed = tailed.lock().unwrap().clone();
    let passed = tailed.last().map_or(0, |(position, _)| *position);
    assert!(passed > 0, "the reader saw no event before the crash");
    let seen: BTreeSet<String> = tailed.into_iter().map(|(_, id)| id).collect();
    let below: Vec<(u64, String)> = all_events(&client, &base)
        .await
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["eventId"].as_str().unwrap().to_string(),
            )
        })
        .filter(|(position, _)| *position <= passed)
        .collect();
    let filled: Vec<u64> = below
        .iter()
        .filter(|(_, id)| !seen.contains(id))
        .map(|(position, _)| *position)
        .collect();
    assert!(
        filled.is_empty(),
        "the reader passed position {passed}, and after the restart events are at \
         positions {filled:?} below it that it never saw"
    );
    assert_eq!(below.len(), seen.len(), "the reader saw each event once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_writers_lose_nothing_to_sigkill_on_sqlite() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = start(data_dir.path(), &[]).await;
    let (client, base) = (server.client(), server.base());
    stock_eight(&client, &base).await;
    let mut restarted = None;
    sixty_four_writers_survive_sigkill(client, base, || async {
        server.kill();
        let again = start(data_dir.path(), &[]).await;
        let base = again.base();
        restarted = Some(again);
        base
    })
    .await;
    if let Some(mut server) = restarted {
        server.kill();
    }
}

/// The same on PostgreSQL (the API process of a production layout, appending in parallel
/// without a global lock), killed and restarted on the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_writers_lose_nothing_to_sigkill_on_postgresql() {
    let logs = tempfile::tempdir().unwrap();
    let mut cluster = common::cluster::Cluster::start(&[&["api"]], &[], logs.path()).await;
    let process = cluster.process("api");
    let (client, base) = (process.client(), process.base());
    stock_eight(&client, &base).await;
    sixty_four_writers_survive_sigkill(client, base, || async {
        process.restart().await;
        process.base()
    })
    .await;
    cluster.dispose().await;
}

/// SIGTERM and SIGINT (Ctrl-C) in the middle of a stream of writes: the server stops
/// taking connections, answers the requests it has, stops its consumers and exits 0. No
/// request gets a 5xx or a cut-off answer, and after a restart every acknowledged write
/// is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_and_ctrl_c_shut_down_gracefully_and_lose_nothing() {
    for (signal, said) in [
        ("TERM", "SIGTERM received; shutting down"),
        ("INT", "Ctrl-C received; shutting down"),
    ] {
        let mut shop = ShopUnderWrites::start().await;
        let status = shop
            .server
            .signal_and_wait(signal, Duration::from_secs(30))
            .await;
        assert!(
            status.success(),
            "SIG{signal}: the server exited with {status}"
        );
        let messages: Vec<String> = shop
            .server
            .messages_since_start()
            .iter()
            .filter_map(|m| m["message"].as_str().map(str::to_string))
            .collect();
        let said_at = messages.iter().position(|m| m == said);
        let stopped_at = messages.iter().position(|m| m == "cornershop stopped");
        assert!(
            said_at.is_some() && stopped_at > said_at,
            "SIG{signal}: no '{said}' followed by 'cornershop stopped' in {messages:#?}"
        );

        let (mut server, client, writes, _data) = shop.restart_and_check().await;
        let bad = writes.bad_answers.lock().unwrap().clone();
        assert!(bad.is_empty(), "SIG{signal}: answers cut short: {bad:?}");
        // What went unanswered was not applied: nothing was done and left unsaid.
        let unanswered = writes.unanswered.lock().unwrap().clone();
        for (cart, acknowledged) in &unanswered {
            let replay = replay_cart(&client, &server.base(), cart).await;
            assert_eq!(
                replay["version"].as_u64(),
                Some(*acknowledged),
                "SIG{signal}: cart {cart} has an item added that was never answered"
            );
        }
        eprintln!(
            "SIG{signal}: {} writes acknowledged, {} unanswered and not applied",
            writes.acknowledged.lock().unwrap().len(),
            unanswered.len()
        );
        server.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Helpers for the workflow tests.

/// A small deterministic generator (xorshift64*), so that a failing run can be repeated
/// with CRASH_SEED=<the printed seed>.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> (Self, u64) {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("after 1970")
                    .as_nanos() as u64
            });
        (Self(seed | 1), seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let r = client.get(url).send().await.expect("GET sent");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ok_json(client: &reqwest::Client, url: &str) -> Value {
    let (status, body) = get_json(client, url).await;
    assert_eq!(status, StatusCode::OK, "GET {url}: {body}");
    body
}

/// The whole global log, paged.
async fn all_events(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = ok_json(
            client,
            &format!("{base}/api/eventstore/events?after={after}&limit=1000"),
        )
        .await;
        events.extend(page["events"].as_array().expect("events").iter().cloned());
        match page["nextAfter"].as_u64() {
            Some(next) => after = next,
            None => return events,
        }
    }
}

const CONSUMERS: [&str; 4] = [
    "cart-expiry",
    "inventory-service",
    "order-saga",
    "payment-service",
];

/// Waits until every consumer has processed the whole log and the log stopped growing.
async fn wait_until_quiet(client: &reqwest::Client, base: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last_head = None;
    loop {
        let head = ok_json(client, &format!("{base}/health/ready")).await["headPosition"]
            .as_u64()
            .expect("headPosition");
        let checkpoints = ok_json(client, &format!("{base}/api/consumers")).await;
        let positions: BTreeMap<String, u64> = checkpoints
            .as_array()
            .expect("checkpoints")
            .iter()
            .map(|c| {
                (
                    c["consumer"].as_str().unwrap().to_string(),
                    c["position"].as_u64().unwrap(),
                )
            })
            .collect();
        let caught_up = CONSUMERS
            .iter()
            .all(|name| positions.get(*name) == Some(&head));
        if caught_up && last_head == Some(head) {
            return;
        }
        last_head = caught_up.then_some(head);
        assert!(
            Instant::now() < deadline,
            "the consumers did not catch up with the log (head {head}) within {limit:?}: {positions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn address() -> Value {
    json!({
        "name": "Ada Lovelace",
        "line1": "12 Analytical Row",
        "city": "London",
        "postalCode": "N1 9GU",
        "country": "GB"
    })
}

async fn new_cart(client: &reqwest::Client, base: &str, customer: &str) -> String {
    let r = client
        .post(format!("{base}/api/carts"))
        .json(&json!({ "customerId": customer }))
        .send()
        .await
        .expect("create cart sent");
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("JSON body");
    body["cartId"].as_str().expect("cartId").to_string()
}

async fn add_item(client: &reqwest::Client, base: &str, cart: &str, sku: &str, quantity: u64) {
    let r = client
        .post(format!("{base}/api/carts/{cart}/items"))
        .json(&json!({ "sku": sku, "quantity": quantity }))
        .send()
        .await
        .expect("add item sent");
    let status = r.status();
    assert_eq!(
        status,
        StatusCode::OK,
        "adding {sku} to {cart}: {:?}",
        r.text().await
    );
}

/// Checks the cart out; returns the order id of the 202.
async fn checkout(client: &reqwest::Client, base: &str, cart: &str, token: &str) -> String {
    let r = client
        .post(format!("{base}/api/carts/{cart}/checkout"))
        .json(&json!({
            "paymentToken": token,
            "shippingAddress": address(),
            "email": "ada@example.com",
        }))
        .send()
        .await
        .expect("checkout sent");
    let status = r.status();
    let body: Value = r.json().await.expect("JSON body");
    assert_eq!(status, StatusCode::ACCEPTED, "checkout of {cart}: {body}");
    body["orderId"].as_str().expect("orderId").to_string()
}

fn count_of(events: &[Value], event_type: &str, aggregate_id: &str) -> usize {
    events
        .iter()
        .filter(|e| e["eventType"] == event_type && e["aggregateId"] == aggregate_id)
        .count()
}

// ---------------------------------------------------------------------------------------

/// (SKU, unit price, units stocked). The lamp is scarce: most orders that want one are
/// cancelled for stock.
const SKUS: [(&str, &str, u64); 3] = [
    ("CRASH-MUG", "4.50", 1000),
    ("CRASH-TEA", "2.25", 1000),
    ("CRASH-LAMP", "30.00", 20),
];
const SCARCE: &str = "CRASH-LAMP";
const ORDERS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_in_flight_survive_sigkill() {
    let started = Instant::now();
    let (mut rng, seed) = Rng::from_env_or_clock();
    eprintln!("orders_in_flight_survive_sigkill: CRASH_SEED={seed}");
    // A slow gateway keeps the payment step busy, so that the kill finds orders at every
    // stage of the workflow.
    let flags = ["--payment-latency", "5ms"];
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = start(data_dir.path(), &flags).await;
    let client = server.client();
    let base = server.base();

    for (sku, price, quantity) in SKUS {
        let r = client
            .put(format!("{base}/api/inventory/{sku}"))
            .json(&json!({"name": sku, "unitPrice": price, "quantity": quantity, "lowStockThreshold": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    // The plan: 1 to 3 distinct SKUs of 1 to 3 units each; every tenth order pays with a
    // declined card and wants only plentiful SKUs, so that it can only fail for its card.
    let plans: Vec<(Vec<(&'static str, u64)>, bool)> = (0..ORDERS)
        .map(|i| {
            let declined = i % 10 == 3;
            let mut skus: Vec<&'static str> = SKUS
                .iter()
                .map(|s| s.0)
                .filter(|s| !(declined && *s == SCARCE))
                .collect();
            for k in (1..skus.len()).rev() {
                skus.swap(k, rng.below(k as u64 + 1) as usize);
            }
            let n = 1 + rng.below(skus.len() as u64) as usize;
            let lines = skus[..n].iter().map(|s| (*s, 1 + rng.below(3))).collect();
            (lines, declined)
        })
        .collect();

    // Fill the carts concurrently, then check them all out at once.
    let fills = plans.iter().enumerate().map(|(i, (lines, _))| {
        let (client, base, lines) = (client.clone(), base.clone(), lines.clone());
        tokio::spawn(async move {
            let cart = new_cart(&client, &base, &format!("customer-{i}")).await;
            for (sku, quantity) in lines {
                add_item(&client, &base, &cart, sku, quantity).await;
            }
            cart
        })
    });
    let carts: Vec<String> = futures::future::join_all(fills)
        .await
        .into_iter()
        .map(|r| r.expect("a cart is filled"))
        .collect();
    let checkouts = plans.iter().zip(&carts).map(|((_, declined), cart)| {
        let (client, base, cart) = (client.clone(), base.clone(), cart.clone());
        let token = if *declined {
            "tok_chargeDeclined"
        } else {
            "tok_visa"
        };
        tokio::spawn(async move { checkout(&client, &base, &cart, token).await })
    });
    let order_ids: Vec<String> = futures::future::join_all(checkouts)
        .await
        .into_iter()
        .map(|r| r.expect("a checkout is acknowledged"))
        .collect();

    // Kill -9 while the workflow runs, at a random point between the last acknowledgement
    // and the moment half of the orders have finished.
    let target = rng.below(ORDERS as u64 / 2);
    let count = |stats: &Value, t: &str| stats["byEventType"][t].as_u64().unwrap_or(0);
    let finished = |stats: &Value| count(stats, "OrderConfirmed") + count(stats, "OrderCancelled");
    let acknowledged = Instant::now();
    let stats = loop {
        let stats = ok_json(&client, &format!("{base}/api/eventstore/stats")).await;
        if finished(&stats) >= target || acknowledged.elapsed() > Duration::from_secs(30) {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    server.kill();
    eprintln!(
        "killed {:?} after the last checkout (target {target} finished): {} orders created, \
         {} validated, {} payments completed, {} finished of {ORDERS}",
        acknowledged.elapsed(),
        count(&stats, "OrderCreated"),
        count(&stats, "OrderValidated"),
        count(&stats, "PaymentCompleted"),
        finished(&stats),
    );
    assert!(
        finished(&stats) < ORDERS as u64,
        "every order had finished before the kill, so the crash tested nothing"
    );

    let mut server = start(data_dir.path(), &flags).await;
    let base = server.base();

    // (a) Every acknowledged order reaches Confirmed or Cancelled, in bounded time.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let urls: Vec<String> = order_ids
            .iter()
            .map(|id| format!("{base}/api/orders/{id}"))
            .collect();
        let views = futures::future::join_all(urls.iter().map(|url| get_json(&client, url))).await;
        let unfinished: Vec<String> = views
            .iter()
            .zip(&order_ids)
            .filter(|((status, view), _)| {
                *status != StatusCode::OK
                    || !matches!(view["status"].as_str(), Some("Confirmed" | "Cancelled"))
            })
            .map(|((status, view), id)| format!("{id}: {status} {}", view["status"]))
            .collect();
        if unfinished.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let dead = ok_json(&client, &format!("{base}/api/deadletters")).await;
            panic!(
                "{} of {ORDERS} orders did not finish within 60 s after the restart, e.g. {:?}; \
                 dead letters: {dead}",
                unfinished.len(),
                &unfinished[..unfinished.len().min(5)]
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Let the consumers drain, so that a late duplicate would be in the log we check.
    wait_until_quiet(&client, &base, Duration::from_secs(30)).await;
    let dead = ok_json(&client, &format!("{base}/api/deadletters")).await;
    assert_eq!(dead, json!([]), "no event should be dead-lettered");

    let mut orders = Vec::new();
    for id in &order_ids {
        orders.push(ok_json(&client, &format!("{base}/api/orders/{id}")).await);
    }
    let events = all_events(&client, &base).await;

    // (b) No cause acted twice: (causationId, aggregateId, eventType) is unique.
    let mut seen: HashMap<(String, String, String), u64> = HashMap::new();
    let mut duplicates = Vec::new();
    for e in &events {
        let key = (
            e["metadata"]["causationId"]
                .as_str()
                .expect("causationId")
                .to_string(),
            e["aggregateId"].as_str().expect("aggregateId").to_string(),
            e["eventType"].as_str().expect("eventType").to_string(),
        );
        let position = e["position"].as_u64().expect("position");
        if let Some(first) = seen.insert(key.clone(), position) {
            duplicates.push(format!("{key:?} at positions {first} and {position}"));
        }
    }
    assert!(
        duplicates.is_empty(),
        "{} events were caused twice by the same cause: {:#?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(10)]
    );

    let mut confirmed_units: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut confirmed, mut out_of_stock) = (0, 0);
    for ((order, (lines, declined)), id) in orders.iter().zip(&plans).zip(&order_ids) {
        let status = order["status"].as_str().unwrap();
        let reason = order["cancelReason"].as_str().unwrap_or("");
        // The order carries exactly the cart's lines.
        let items: BTreeSet<(String, u64)> = order["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["sku"].as_str().unwrap().to_string(),
                    l["quantity"].as_u64().unwrap(),
                )
            })
            .collect();
        let planned: BTreeSet<(String, u64)> =
            lines.iter().map(|(s, q)| (s.to_string(), *q)).collect();
        assert_eq!(items, planned, "order {id} has other lines than its cart");
        // Each order was created once and finished once.
        assert_eq!(count_of(&events, "OrderCreated", id), 1, "order {id}");
        assert_eq!(
            count_of(&events, "OrderConfirmed", id) + count_of(&events, "OrderCancelled", id),
            1,
            "order {id} should have exactly one Confirmed or Cancelled event"
        );
        let wants_scarce = lines.iter().any(|(s, _)| *s == SCARCE);
        match status {
            "Confirmed" => {
                confirmed += 1;
                assert!(!declined, "order {id} with a declined card was confirmed");
                assert_eq!(order["paymentStatus"], "Completed", "order {id}: {order}");
                for (sku, quantity) in lines {
                    *confirmed_units.entry(sku).or_default() += quantity;
                }
            }
            "Cancelled" if *declined => {
                // (d) A declined card cancels the order, for its card.
                assert!(
                    reason.contains("card_declined"),
                    "declined order {id} cancelled for another reason: {reason}"
                );
                assert_eq!(order["paymentStatus"], "Failed", "order {id}: {order}");
            }
            "Cancelled" => {
                out_of_stock += 1;
                assert!(
                    wants_scarce && reason.starts_with("out of stock"),
                    "order {id} paid by a good card was cancelled: {reason} ({lines:?})"
                );
                assert!(
                    order["paymentStatus"].is_null(),
                    "order {id} was cancelled for stock after its payment started: {order}"
                );
            }
            other => panic!("order {id} is {other}, neither Confirmed nor Cancelled"),
        }
        // (d) Every declined-card order is cancelled.
        if *declined {
            assert_eq!(status, "Cancelled", "declined order {id}");
        }
    }
    assert!(confirmed > 0, "no order was confirmed");
    assert!(out_of_stock > 0, "no order was cancelled for stock");

    // (c) No stock leaked: what is not available is reserved, and what is reserved is held
    // by confirmed orders, exactly.
    for (sku, _, stocked) in SKUS {
        let stock = ok_json(&client, &format!("{base}/api/inventory/{sku}")).await;
        let available = stock["available"].as_u64().unwrap();
        let reserved = stock["reserved"].as_u64().unwrap();
        assert_eq!(
            available + reserved,
            stocked,
            "{sku}: available {available} + reserved {reserved} != stocked {stocked}"
        );
        let held = confirmed_units.get(sku).copied().unwrap_or(0);
        assert_eq!(
            reserved, held,
            "{sku}: {reserved} units reserved, but confirmed orders hold {held}"
        );
        // The log agrees: reservations less releases.
        let sum = |t: &str| -> i64 {
            events
                .iter()
                .filter(|e| e["eventType"] == t && e["aggregateId"] == sku)
                .map(|e| e["data"]["quantity"].as_i64().unwrap())
                .sum()
        };
        assert_eq!(
            sum("StockReserved") - sum("StockReleased"),
            reserved as i64,
            "{sku}"
        );
    }
    eprintln!(
        "orders_in_flight_survive_sigkill: {confirmed} confirmed, {out_of_stock} out of stock, \
         {} declined, {} events, in {:?}",
        ORDERS - confirmed - out_of_stock,
        events.len(),
        started.elapsed()
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_expires_after_a_restart_between_last_add_and_deadline() {
    let started = Instant::now();
    let ttl = Duration::from_secs(1);
    let flags = ["--cart-ttl", "1s"];
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = start(data_dir.path(), &flags).await;
    let client = server.client();
    let base = server.base();
    let r = client
        .put(format!("{base}/api/inventory/CRASH-MUG"))
        .json(&json!({"name": "Mug", "unitPrice": "4.50", "quantity": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A cart checked out before its deadline ...
    let paid = new_cart(&client, &base, "quick").await;
    add_item(&client, &base, &paid, "CRASH-MUG", 1).await;
    checkout(&client, &base, &paid, "tok_visa").await;

    // ... and one left idle: its last change is stamped no earlier than `sent`, so its
    // deadline is no earlier than sent + ttl, and no later than acknowledged + ttl.
    let idle = new_cart(&client, &base, "idle").await;
    let sent = Instant::now();
    add_item(&client, &base, &idle, "CRASH-MUG", 2).await;
    let acknowledged = Instant::now();
    let view = ok_json(&client, &format!("{base}/api/carts/{idle}")).await;
    assert_eq!(view["status"], "Open");
    server.kill();
    let killed_at = chrono::Utc::now();
    assert!(
        sent.elapsed() < ttl,
        "the kill came {:?} after the add, not before the deadline",
        sent.elapsed()
    );

    // Stay down until the deadline has passed, then come back with the same TTL.
    tokio::time::sleep(
        (acknowledged + ttl + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
    )
    .await;
    let restarting_at = chrono::Utc::now();
    let mut server = start(data_dir.path(), &flags).await;
    let base = server.base();
    let restarted = Instant::now();
    loop {
        let view = ok_json(&client, &format!("{base}/api/carts/{idle}")).await;
        if view["status"] == "Expired" {
            break;
        }
        assert_eq!(view["status"], "Open", "{view}");
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "the idle cart did not expire within 10 s after the restart: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired_after = restarted.elapsed();

    // Give the timer runner time for a second (wrong) firing before counting.
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    wait_until_quiet(&client, &base, Duration::from_secs(10)).await;
    let events = all_events(&client, &base).await;
    // By the server's own clock: killed before the idle cart's deadline, restarted after.
    let last_add = events
        .iter()
        .rfind(|e| e["eventType"] == "ItemAddedToCart" && e["aggregateId"] == idle.as_str())
        .expect("the add survived the kill");
    let deadline = chrono::DateTime::parse_from_rfc3339(last_add["timestamp"].as_str().unwrap())
        .expect("an RFC 3339 timestamp")
        .with_timezone(&chrono::Utc)
        + chrono::Duration::from_std(ttl).unwrap();
    assert!(
        killed_at < deadline && deadline < restarting_at,
        "expected kill ({killed_at}) < deadline ({deadline}) < restart ({restarting_at})"
    );
    assert_eq!(
        count_of(&events, "CartExpired", &idle),
        1,
        "the idle cart should expire exactly once"
    );
    let view = ok_json(&client, &format!("{base}/api/carts/{idle}")).await;
    assert_eq!(view["status"], "Expired");
    assert_eq!(view["version"], 3, "created, item added, expired: {view}");

    // The cart checked out in time never expires, though its deadline passed too.
    assert_eq!(count_of(&events, "CartExpired", &paid), 0);
    let view = ok_json(&client, &format!("{base}/api/carts/{paid}")).await;
    assert_eq!(view["status"], "CheckedOut", "{view}");
    eprintln!(
        "cart_expires_after_a_restart_between_last_add_and_deadline: expired {expired_after:?} \
         after the restart; test took {:?}",
        started.elapsed()
    );
    server.kill();
}
