//! Test helpers: the real application on an ephemeral port with a fresh data directory.
#![allow(dead_code)]

use cornershop_server::config::ServeArgs;
use cornershop_server::startup::Application;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn spawn_app() -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let app = Application::build(ServeArgs::for_data_dir(data_dir.path()))
        .await
        .expect("the application builds");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        client: reqwest::Client::new(),
        data_dir,
        stop: Some(stop),
    }
}

pub fn address() -> Value {
    json!({
        "name": "Ada Lovelace",
        "line1": "12 Analytical Row",
        "city": "London",
        "postalCode": "N1 9GU",
        "country": "GB"
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.expect("JSON body")
    }

    pub async fn stock(&self, sku: &str, price: &str, quantity: i64) {
        let response = self
            .put(
                &format!("/api/inventory/{sku}"),
                &json!({"name": format!("Product {sku}"), "unitPrice": price, "quantity": quantity, "lowStockThreshold": 2}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "stocking {sku}");
    }

    pub async fn new_cart(&self, customer: &str) -> String {
        let response = self
            .post("/api/carts", &json!({ "customerId": customer }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["cartId"].as_str().expect("cartId").to_string()
    }

    pub async fn add(&self, cart: &str, sku: &str, quantity: i64) -> Response {
        self.post(
            &format!("/api/carts/{cart}/items"),
            &json!({ "sku": sku, "quantity": quantity }),
        )
        .await
    }

    pub async fn total_events(&self) -> u64 {
        self.json("/api/eventstore/stats").await["totalEvents"]
            .as_u64()
            .expect("totalEvents")
    }
}

/// Asserts a problem+json response with the given status and a non-empty detail;
/// returns the detail.
pub async fn assert_problem(response: Response, status: StatusCode) -> String {
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
