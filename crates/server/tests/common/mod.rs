//! Test helpers: the real application on an ephemeral port with a fresh data directory,
//! either in this process on the embedded default or, with
//! `CORNERSHOP_TEST_BACKEND=production`, as separate processes on PostgreSQL and Kafka.
#![allow(dead_code)]

pub(crate) mod cluster;

use cornershop_server::auth::issuer::LocalIssuer;
pub(crate) use cornershop_server::auth::Role;
use cornershop_server::config::ServeArgs;
use cornershop_server::startup::Application;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

pub(crate) struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub cluster: Option<cluster::Cluster>,
}

impl TestApp {
    /// Stops an in-process shop and waits until it has closed its stores; hands back its
    /// data directory.
    pub(crate) async fn stop_and_wait(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("the shop's task")
                .expect("the shop stops cleanly");
        }
        // `self` keeps an empty directory in its place.
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("temp dir"))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A client whose every request carries `token` as its bearer token, and fails after five
/// minutes without an answer: a shop that stopped answering fails its test with the
/// request's name instead of hanging the whole run.
pub(crate) fn client_with_token(token: &str) -> reqwest::Client {
    authorized(
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(300)),
        token,
    )
}

/// `builder`'s client, its every request carrying `token` as its bearer token.
pub(crate) fn authorized(builder: reqwest::ClientBuilder, token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .expect("a token is ASCII");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    builder
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

/// The subject of the tests' admin tokens.
pub(crate) const TEST_ADMIN: &str = "test-admin";

/// A token from the embedded issuer whose key is `key_file` (created when missing, as
/// the shop would), for `sub` with `role`, valid for an hour.
pub(crate) fn mint(key_file: &std::path::Path, role: Role, sub: &str) -> String {
    LocalIssuer::open_or_create(key_file)
        .expect("the signing key")
        .mint(
            sub,
            &[role],
            std::time::Duration::from_secs(3600),
            "cornershop",
        )
        .expect("a token")
}

/// An admin's client for a shop whose key is `key_file`.
pub(crate) fn admin_client(key_file: &std::path::Path) -> reqwest::Client {
    client_with_token(&mint(key_file, Role::Admin, TEST_ADMIN))
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}, Vec::new()).await
}

/// The application with adjusted settings and extra consumers.
pub(crate) async fn spawn_app_with(
    configure: impl FnOnce(&mut ServeArgs),
    handlers: Vec<std::sync::Arc<dyn cornershop_messaging::Handler>>,
) -> TestApp {
    spawn(configure, handlers, false).await
}

/// The application in this process on the embedded default, whatever
/// `CORNERSHOP_TEST_BACKEND` says: for tests of the HTTP layer alone.
pub(crate) async fn spawn_embedded_with(configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    spawn(configure, Vec::new(), true).await
}

async fn spawn(
    configure: impl FnOnce(&mut ServeArgs),
    handlers: Vec<std::sync::Arc<dyn cornershop_messaging::Handler>>,
    embedded_only: bool,
) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut args = ServeArgs::for_data_dir(data_dir.path());
    configure(&mut args);
    if cluster::production() && !embedded_only {
        assert!(
            handlers.is_empty(),
            "extra consumers only run in-process, on the embedded default"
        );
        let flags = cluster::workflow_flags(&args);
        let cluster =
            cluster::Cluster::start(cluster::DEFAULT_LAYOUT, &flags, data_dir.path()).await;
        return TestApp {
            base: cluster.api_base(),
            client: admin_client(&cluster.signing_key),
            data_dir,
            stop: None,
            running: None,
            cluster: Some(cluster),
        };
    }
    start_in_process(data_dir, args, handlers).await
}

/// The application in this process with exactly these settings (on whichever stores they
/// name) and extra consumers; its client is an admin's.
pub(crate) async fn start_in_process(
    data_dir: tempfile::TempDir,
    args: ServeArgs,
    handlers: Vec<std::sync::Arc<dyn cornershop_messaging::Handler>>,
) -> TestApp {
    let key_file = args.auth.signing_key_path(&args.data_dir);
    let app = Application::build_with(args, handlers)
        .await
        .expect("the application builds");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        client: admin_client(&key_file),
        data_dir,
        stop: Some(stop),
        running: Some(running),
        cluster: None,
    }
}

pub(crate) fn address() -> Value {
    json!({
        "name": "Ada Lovelace",
        "line1": "12 Analytical Row",
        "city": "London",
        "postalCode": "N1 9GU",
        "country": "GB"
    })
}

impl TestApp {
    /// The embedded issuer's key of this shop (one for all its processes).
    pub(crate) fn signing_key(&self) -> std::path::PathBuf {
        match &self.cluster {
            Some(cluster) => cluster.signing_key.clone(),
            None => self
                .data_dir
                .path()
                .join(cornershop_server::config::SIGNING_KEY_FILE),
        }
    }

    /// A token of this shop for `sub` with `role`.
    pub(crate) fn token(&self, role: Role, sub: &str) -> String {
        mint(&self.signing_key(), role, sub)
    }

    /// A client of this shop acting as `sub` with `role`.
    pub(crate) fn client_as(&self, role: Role, sub: &str) -> reqwest::Client {
        client_with_token(&self.token(role, sub))
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub(crate) async fn put(&self, path: &str, body: &Value) -> Response {
        self.client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub(crate) async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.expect("JSON body")
    }

    pub(crate) async fn stock(&self, sku: &str, price: &str, quantity: i64) {
        let response = self
            .put(
                &format!("/api/inventory/{sku}"),
                &json!({"name": format!("Product {sku}"), "unitPrice": price, "quantity": quantity, "lowStockThreshold": 2}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "stocking {sku}");
    }

    pub(crate) async fn new_cart(&self, customer: &str) -> String {
        let response = self
            .post("/api/carts", &json!({ "customerId": customer }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["cartId"].as_str().expect("cartId").to_string()
    }

    pub(crate) async fn add(&self, cart: &str, sku: &str, quantity: i64) -> Response {
        self.post(
            &format!("/api/carts/{cart}/items"),
            &json!({ "sku": sku, "quantity": quantity }),
        )
        .await
    }

    pub(crate) async fn total_events(&self) -> u64 {
        self.json("/api/eventstore/stats").await["totalEvents"]
            .as_u64()
            .expect("totalEvents")
    }
}

/// Asserts a problem+json response with the given status and a non-empty detail;
/// returns the detail.
pub(crate) async fn assert_problem(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status.as_u16());
    let detail = body["detail"].as_str().unwrap_or("").to_string();
    assert!(!detail.is_empty(), "problem without detail: {body}");
    assert!(body["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("/problems/")));
    detail
}

impl TestApp {
    /// A cart with these (sku, quantity) lines, checked out with the given payment token;
    /// returns the order id.
    pub(crate) async fn order(&self, lines: &[(&str, i64)], token: &str) -> String {
        let cart = self.new_cart("cust-1").await;
        for (sku, quantity) in lines {
            let r = self.add(&cart, sku, *quantity).await;
            assert_eq!(r.status(), StatusCode::OK, "adding {sku}");
        }
        self.checkout(&cart, token).await
    }

    pub(crate) async fn checkout(&self, cart: &str, token: &str) -> String {
        let response = self
            .post(
                &format!("/api/carts/{cart}/checkout"),
                &json!({"paymentToken": token, "shippingAddress": address(),
                        "email": "ada@example.com", "phone": "+44 20 7946 0000"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        body["orderId"].as_str().unwrap().to_string()
    }

    /// Waits (at most 30 s) until the order's status is one of `statuses`.
    pub(crate) async fn wait_for_order(&self, order_id: &str, statuses: &[&str]) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let response = self.get(&format!("/api/orders/{order_id}")).await;
            if response.status() == StatusCode::OK {
                let order: Value = response.json().await.unwrap();
                if statuses.contains(&order["status"].as_str().unwrap_or("")) {
                    return order;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "order {order_id} stuck at {}",
                    order["status"]
                );
            } else {
                assert!(
                    std::time::Instant::now() < deadline,
                    "order {order_id} never appeared"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits until every consumer has processed the whole log.
    pub(crate) async fn settle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let head = self.json("/api/eventstore/stats").await["headPosition"]
                .as_u64()
                .unwrap();
            let consumers = self.json("/api/consumers").await;
            let behind = consumers
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["position"].as_u64().unwrap() < head);
            // On Kafka the consumers' progress is in the broker, not in the store: there
            // only the relay's checkpoint shows, and a quiet spell tells the rest.
            let quiet = if self.cluster.is_some() { 1500 } else { 50 };
            if !behind && !consumers.as_array().unwrap().is_empty() {
                // Quiet for a moment: nothing new was appended while we looked.
                tokio::time::sleep(std::time::Duration::from_millis(quiet)).await;
                let again = self.json("/api/eventstore/stats").await["headPosition"]
                    .as_u64()
                    .unwrap();
                if again == head {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "consumers never caught up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn timeline(&self, order_id: &str) -> Vec<Value> {
        self.json(&format!("/api/orders/{order_id}/timeline")).await["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub(crate) async fn inventory(&self, sku: &str) -> (u64, u64) {
        let v = self.json(&format!("/api/inventory/{sku}")).await;
        (
            v["available"].as_u64().unwrap(),
            v["reserved"].as_u64().unwrap(),
        )
    }
}

pub(crate) fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_string())
        .collect()
}

/// A consumer that fails on carts of the customer "poison" until it is fixed (its
/// failures are transient, so the event is retried, then dead-lettered); records the
/// customers whose carts it handled.
#[derive(Default)]
pub(crate) struct Fussy {
    pub fixed: std::sync::atomic::AtomicBool,
    pub handled: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl cornershop_messaging::Handler for Fussy {
    fn name(&self) -> &'static str {
        "fussy-test-consumer"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "CartCreated"
    }
    async fn handle(
        &self,
        event: &cornershop_store::StoredEvent,
    ) -> Result<(), cornershop_messaging::HandlerError> {
        let customer = event.envelope.data["customerId"]
            .as_str()
            .unwrap_or_default();
        if customer == "poison" && !self.fixed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(cornershop_messaging::HandlerError::Transient(
                "cannot digest customer 'poison'".into(),
            ));
        }
        self.handled.lock().unwrap().push(customer.to_string());
        Ok(())
    }
}
