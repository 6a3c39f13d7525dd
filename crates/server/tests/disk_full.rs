//! A full disk loses no acknowledged write. The embedded shop runs with its data directory
//! on a small tmpfs that the test mounts (CI runs as root); writers create carts until the
//! disk is full and on past it. Every cart answered 201 must be in the log, before and after
//! a SIGKILL restart; every refusal is a 507 (or 503) problem with `Retry-After`; reads go
//! on, readiness says why writes fail; and once space is freed, writes succeed again
//! without a restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::cluster::Process;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A tmpfs mounted for the test, unmounted when dropped (also when the test fails).
struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&mount)
            .status()
            .expect("mount(8) runs");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (this test needs root, as CI has)",
            mount.display()
        );
        Self { mount, _dir: dir }
    }

    /// Bytes still free on the file system.
    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.mount)
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the free bytes")
    }

    /// Takes all but `leave` bytes of the free space with a file that can be deleted to
    /// make room again.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let filler = self.mount.join("filler");
        let size = self.available().saturating_sub(leave);
        let file = std::fs::File::create(&filler).unwrap();
        // tmpfs has no holes to speak of: write real bytes so the space is taken.
        use std::io::Write;
        let mut w = std::io::BufWriter::new(file);
        let chunk = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        w.flush().unwrap();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// What the writers saw.
#[derive(Default)]
struct Seen {
    acknowledged: Mutex<BTreeSet<String>>,
    refused: Mutex<Vec<(u16, String)>>,
    /// Anything else: a 500, a body that is not a problem, a refusal without Retry-After.
    bad: Mutex<Vec<String>>,
}

async fn create_cart(client: &reqwest::Client, base: &str, seen: &Seen, customer: &str) -> bool {
    let sent = client
        .post(format!("{base}/api/carts"))
        .json(&json!({ "customerId": customer }))
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            seen.bad
                .lock()
                .unwrap()
                .push(format!("request failed: {e}"));
            return false;
        }
    };
    let status = response.status();
    let retry_after = response.headers().get("retry-after").is_some();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match status {
        StatusCode::CREATED => {
            let id = body["cartId"].as_str().expect("cartId").to_string();
            seen.acknowledged.lock().unwrap().insert(id);
            true
        }
        StatusCode::INSUFFICIENT_STORAGE | StatusCode::SERVICE_UNAVAILABLE
            if retry_after
                && content_type == "application/problem+json"
                && body["detail"].as_str().is_some_and(|d| !d.is_empty()) =>
        {
            seen.refused.lock().unwrap().push((
                status.as_u16(),
                body["detail"].as_str().unwrap().to_string(),
            ));
            false
        }
        other => {
            seen.bad.lock().unwrap().push(format!(
                "{other} (retry-after: {retry_after}, {content_type}): {body}"
            ));
            false
        }
    }
}

/// Every cart id in the log's CartCreated events, paging through the event API.
async fn logged_carts(client: &reqwest::Client, base: &str) -> BTreeSet<String> {
    let mut carts = BTreeSet::new();
    let mut after = 0;
    loop {
        let page: Value = client
            .get(format!(
                "{base}/api/eventstore/events?after={after}&limit=1000&eventType=CartCreated"
            ))
            .send()
            .await
            .expect("GET events")
            .json()
            .await
            .expect("events JSON");
        for event in page["events"].as_array().expect("events") {
            carts.insert(event["aggregateId"].as_str().unwrap().to_string());
        }
        match page["nextAfter"].as_u64() {
            Some(next) => after = next,
            None => return carts,
        }
    }
}

/// Every acknowledged cart is in the log (counted by reading the log back).
async fn assert_all_logged(
    client: &reqwest::Client,
    base: &str,
    acknowledged: &BTreeSet<String>,
    when: &str,
) {
    let logged = logged_carts(client, base).await;
    let lost: Vec<&String> = acknowledged.difference(&logged).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged carts are not in the log ({when}), e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(3)]
    );
}

async fn start(data_dir: &Path, log: PathBuf) -> Process {
    Process::start(
        "shop",
        vec![format!("--data-dir={}", data_dir.display())],
        log,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_writes_loses_no_acknowledged_one_and_recovers_by_itself() {
    let disk = SmallDisk::mount(24);
    let data_dir = disk.mount.join("data");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let mut shop = start(&data_dir, log.clone()).await;
    let base = shop.base();
    let client = shop.client();
    let filler = disk.fill_leaving(3 << 20);

    // Eight writers until each has been refused 25 times (bounded: 60 s, 20,000 carts).
    let seen: Arc<Seen> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, base, seen) = (client.clone(), base.clone(), seen.clone());
            tokio::spawn(async move {
                let (mut refused, mut sent) = (0, 0);
                while refused < 25 && sent < 2_500 && Instant::now() < deadline {
                    sent += 1;
                    if !create_cart(&client, &base, &seen, &format!("cust-{w}-{sent}")).await {
                        refused += 1;
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let acknowledged = seen.acknowledged.lock().unwrap().clone();
    let refused = seen.refused.lock().unwrap().clone();
    let bad = seen.bad.lock().unwrap().clone();
    assert!(
        bad.is_empty(),
        "answers that are not 201 nor a 507/503 problem with Retry-After: {:?}",
        &bad[..bad.len().min(5)]
    );
    // (SQLite goes on fitting some writes into pages it already holds, so a full disk
    // refuses some writes rather than all.)
    assert!(
        refused.len() >= 20,
        "the disk never filled: {} acknowledged, {} refused ({:?}), {} bytes free now",
        acknowledged.len(),
        refused.len(),
        &refused[..refused.len().min(3)],
        disk.available()
    );
    assert!(
        refused.iter().any(|(status, _)| *status == 507),
        "a full disk answers 507 at least once: {:?}",
        &refused[..3]
    );

    assert_all_logged(&client, &base, &acknowledged, "before a restart").await;

    // While full: reads work, readiness says why writes fail.
    let some_cart = acknowledged.iter().next().expect("some cart was created");
    let read = client
        .get(format!("{base}/api/carts/{some_cart}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.status(),
        StatusCode::OK,
        "reads go on while the disk is full"
    );
    let ready: Value = client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready["writes"].as_str().is_some_and(|w| w.contains("full")),
        "readiness says why writes fail: {ready}"
    );

    // Space is made: writes succeed again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let recovered = Instant::now() + Duration::from_secs(20);
    let mut in_a_row = 0;
    while in_a_row < 50 {
        assert!(
            Instant::now() < recovered,
            "writes did not resume within 20 s of freeing space"
        );
        if create_cart(&client, &base, &seen, "after-full").await {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ready: Value = client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["status"], "ready",
        "readiness clears once writes pass: {ready}"
    );

    // And after a SIGKILL restart, every acknowledged cart is still there.
    let acknowledged = seen.acknowledged.lock().unwrap().clone();
    shop.restart().await;
    assert_all_logged(&client, &shop.base(), &acknowledged, "after a restart").await;
    shop.kill();
}
