//! SIGKILL the real `cornershop` process while it acknowledges appends, restart it on the
//! same data directory, and check that every acknowledged event is there.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn start(data_dir: &std::path::Path) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_cornershop"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("CORNERSHOP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the cornershop binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status() == StatusCode::OK {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, base }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_survives_sigkill() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = start(data_dir.path()).await;
    let client = reqwest::Client::new();
    let base = server.base.clone();

    for i in 0..8 {
        let r = client
            .put(format!("{base}/api/inventory/SKU-{i}"))
            .json(&json!({"name": format!("P{i}"), "unitPrice": "1.00", "quantity": 100}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    // Eight writers create carts and add items as fast as they can; each records what
    // the server acknowledged (2xx) before it was killed.
    let acknowledged: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, base, acknowledged) = (client.clone(), base.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let Ok(r) = client
                    .post(format!("{base}/api/carts"))
                    .json(&json!({"customerId": format!("writer-{w}")}))
                    .send()
                    .await
                else {
                    return;
                };
                let Ok(body) = r.json::<Value>().await else {
                    return;
                };
                let cart = body["cartId"].as_str().unwrap().to_string();
                acknowledged.lock().unwrap().push((cart.clone(), 1));
                for i in 0..8 {
                    let Ok(r) = client
                        .post(format!("{base}/api/carts/{cart}/items"))
                        .json(&json!({"sku": format!("SKU-{i}"), "quantity": 1}))
                        .send()
                        .await
                    else {
                        return;
                    };
                    if r.status() != StatusCode::OK {
                        return;
                    }
                    let Ok(view) = r.json::<Value>().await else {
                        return;
                    };
                    let version = view["version"].as_u64().unwrap();
                    acknowledged.lock().unwrap().push((cart.clone(), version));
                }
            }
        }));
    }

    // Let them run, then kill -9 in the middle of the stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().unwrap().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
    server.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 100,
        "too few acknowledged writes: {}",
        acknowledged.len()
    );

    let server = start(data_dir.path()).await;
    let mut highest = std::collections::BTreeMap::<String, u64>::new();
    for (cart, version) in &acknowledged {
        let v = highest.entry(cart.clone()).or_default();
        *v = (*v).max(*version);
    }
    for (cart, version) in &highest {
        let replay: Value = client
            .get(format!("{}/api/eventstore/replay/Cart/{cart}", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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

    // And it serves again: writes still work after the restart.
    let r = client
        .post(format!("{}/api/carts", server.base))
        .json(&json!({"customerId": "after-restart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut child = server.child;
    child.kill().ok();
    child.wait().ok();
}
