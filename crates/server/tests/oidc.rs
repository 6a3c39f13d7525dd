//! Against a real OpenID Connect provider: Keycloak, started by `scripts/stack.sh` with
//! the realm `deploy/keycloak/cornershop-realm.json`. Tokens from its token endpoint (the
//! password grant) for two customers, a staff member and an admin drive a whole order on
//! PostgreSQL + Kafka, services in separate processes; then a new signing key at the
//! provider is picked up without a restart.

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::cluster;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct Keycloak {
    issuer: String,
    admin_url: String,
    client_id: String,
    client_secret: String,
    http: reqwest::Client,
}

impl Keycloak {
    fn from_env() -> Self {
        Self {
            issuer: cluster::required_env("CORNERSHOP_TEST_OIDC_ISSUER"),
            admin_url: cluster::required_env("CORNERSHOP_TEST_OIDC_ADMIN_URL"),
            client_id: cluster::required_env("CORNERSHOP_TEST_OIDC_CLIENT_ID"),
            client_secret: cluster::required_env("CORNERSHOP_TEST_OIDC_CLIENT_SECRET"),
            http: reqwest::Client::new(),
        }
    }

    /// An access token for a user of the realm, from the token endpoint.
    async fn token(&self, user: &str) -> String {
        let password = format!("{user}-password");
        let answer = self
            .http
            .post(format!("{}/protocol/openid-connect/token", self.issuer))
            .form(&[
                ("grant_type", "password"),
                ("client_id", &self.client_id),
                ("client_secret", &self.client_secret),
                ("username", user),
                ("password", &password),
            ])
            .send()
            .await
            .expect("the token endpoint answers");
        assert_eq!(answer.status(), StatusCode::OK, "token for {user}");
        let body: Value = answer.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn admin_token(&self) -> String {
        let body: Value = self
            .http
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.admin_url
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", "admin"),
                ("password", "admin"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Adds a new RS256 signing key above every other (the rotation an operator does);
    /// returns the key provider's id.
    async fn rotate(&self) -> String {
        let admin = self.admin_token().await;
        let realm = format!("{}/admin/realms/cornershop", self.admin_url);
        let keys: Value = self
            .http
            .get(format!("{realm}/keys"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let top = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|k| k["providerPriority"].as_i64())
            .max()
            .unwrap_or(100);
        let created = self
            .http
            .post(format!("{realm}/components"))
            .bearer_auth(&admin)
            .json(&json!({
                "name": format!("rsa-test-rotation-{}", top + 100),
                "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider",
                "parentId": "cornershop",
                "config": {"priority": [format!("{}", top + 100)], "enabled": ["true"],
                           "active": ["true"], "algorithm": ["RS256"], "keySize": ["2048"]}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "a new key provider");
        let location = created.headers()["location"].to_str().unwrap().to_string();
        location.rsplit('/').next().unwrap().to_string()
    }

    /// Removes a key provider added by [`rotate`] (the realm as it was).
    async fn remove(&self, provider: &str) {
        let admin = self.admin_token().await;
        let _ = self
            .http
            .delete(format!(
                "{}/admin/realms/cornershop/components/{provider}",
                self.admin_url
            ))
            .bearer_auth(&admin)
            .send()
            .await;
    }
}

fn part(token: &str, index: usize) -> Value {
    let text = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).unwrap()).unwrap()
}

/// `method url` as `client`, with a JSON body or none: the status and the JSON answer
/// (null when it is not JSON).
async fn call(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const GET: Method = Method::GET;
const PUT: Method = Method::PUT;
const POST: Method = Method::POST;

/// Polls the order at `url` as `client` until its status is `want` (at most 30 s).
async fn wait_for(client: &reqwest::Client, url: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, order) = call(client, GET, url, None).await;
        if status == 200 && order["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never became {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_tokens_drive_an_order_on_postgres_and_kafka_and_a_new_key_is_picked_up() {
    let keycloak = Keycloak::from_env();
    let (app, cluster) = cluster::start_shop(
        cluster::DEFAULT_LAYOUT,
        &[format!("--oidc-issuer={}", keycloak.issuer)],
    )
    .await;
    let base = app.base.clone();
    let alice_token = keycloak.token("alice").await;
    let alice_sub = part(&alice_token, 1)["sub"].as_str().unwrap().to_string();
    let old_kid = part(&alice_token, 0)["kid"].as_str().unwrap().to_string();
    let alice = common::client_with_token(&alice_token);
    let bob = common::client_with_token(&keycloak.token("bob").await);
    let sam_token = keycloak.token("sam").await;
    let sam_sub = part(&sam_token, 1)["sub"].as_str().unwrap().to_string();
    let sam = common::client_with_token(&sam_token);
    let ada = common::client_with_token(&keycloak.token("ada").await);

    // The embedded issuer's tokens mean nothing to a shop on Keycloak.
    let inventory = format!("{base}/api/inventory");
    assert_eq!(call(&app.client, GET, &inventory, None).await.0, 401);

    // Staff stocks; a customer may not.
    let mug = format!("{base}/api/inventory/KC-MUG");
    let stock = json!({"name": "Mug", "unitPrice": "9.99", "quantity": 10});
    assert_eq!(call(&alice, PUT, &mug, Some(&stock)).await.0, 403);
    assert_eq!(call(&sam, PUT, &mug, Some(&stock)).await.0, 200);

    // Alice shops as herself (her customer id is her token's sub); Bob cannot touch it.
    let (status, cart) = call(&alice, POST, &format!("{base}/api/carts"), Some(&json!({}))).await;
    assert_eq!(status, 201);
    let cart = cart["cartId"].as_str().unwrap().to_string();
    let item = json!({"sku": "KC-MUG", "quantity": 2});
    let items = format!("{base}/api/carts/{cart}/items");
    assert_eq!(call(&alice, POST, &items, Some(&item)).await.0, 200);
    let checkout = format!("{base}/api/carts/{cart}/checkout");
    let body = json!({"paymentToken": "tok_visa", "shippingAddress": common::address(),
                      "email": "alice@example.com"});
    assert_eq!(call(&bob, POST, &checkout, Some(&body)).await.0, 404);
    let (status, accepted) = call(&alice, POST, &checkout, Some(&body)).await;
    assert_eq!(status, 202);
    let order = accepted["orderId"].as_str().unwrap().to_string();
    let order_url = format!("{base}/api/orders/{order}");
    wait_for(&alice, &order_url, "Confirmed").await;
    assert_eq!(
        call(&bob, GET, &order_url, None).await.0,
        404,
        "Bob cannot see it"
    );

    // Staff ships and delivers; Alice sees it; only the admin reads the event store.
    let ship = json!({"carrier": "DHL"});
    assert_eq!(
        call(&sam, POST, &format!("{order_url}/ship"), Some(&ship))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&sam, POST, &format!("{order_url}/deliver"), None)
            .await
            .0,
        200
    );
    wait_for(&alice, &order_url, "Delivered").await;
    let stats = format!("{base}/api/eventstore/stats");
    assert_eq!(call(&sam, GET, &stats, None).await.0, 403);
    assert_eq!(call(&ada, GET, &stats, None).await.0, 200);
    let replay = |kind: &str, id: &str| format!("{base}/api/eventstore/replay/{kind}/{id}");
    let (_, cart_events) = call(&ada, GET, &replay("cart", &cart), None).await;
    let cart_events = cart_events["events"].as_array().unwrap();
    assert_eq!(cart_events.len(), 3);
    for event in cart_events {
        assert_eq!(event["metadata"]["userId"], alice_sub.as_str());
    }
    let (_, order_events) = call(&ada, GET, &replay("order", &order), None).await;
    for event in order_events["events"].as_array().unwrap() {
        let want = match event["eventType"].as_str().unwrap() {
            "OrderShipped" | "OrderDelivered" => &sam_sub,
            _ => &alice_sub,
        };
        assert_eq!(
            event["metadata"]["userId"],
            want.as_str(),
            "{}",
            event["eventType"]
        );
    }

    // A key rotation at the provider: tokens signed with the new key pass at once (the
    // unknown kid fetches the keys again, at most every 5 s), with no restart.
    let provider = keycloak.rotate().await;
    let rotated = keycloak.token("alice").await;
    let new_kid = part(&rotated, 0)["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid, "the provider signs with its new key");
    let rotated = common::client_with_token(&rotated);
    let deadline = Instant::now() + Duration::from_secs(15);
    let picked_up = loop {
        match call(&rotated, GET, &order_url, None).await.0 {
            200 => break true,
            401 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            401 => break false,
            other => panic!("a token of the rotated key got {other}"),
        }
    };
    // The old key is still published, so its tokens still pass.
    let old_still_passes = call(&alice, GET, &order_url, None).await.0 == 200;
    keycloak.remove(&provider).await;
    assert!(picked_up, "a token of the rotated key was refused for 15 s");
    assert!(old_still_passes);
    cluster.dispose().await;
}
