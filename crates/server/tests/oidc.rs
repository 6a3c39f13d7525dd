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
use reqwest::StatusCode;
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

/// Polls `path` as `client` until its JSON `field` is `want` (at most 30 s).
async fn wait_for(base: &str, client: &reqwest::Client, path: &str, field: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        if r.status() == StatusCode::OK {
            let body: Value = r.json().await.unwrap();
            if body[field] == want {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} never had {field} = {want}"
        );
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
    let r = app
        .client
        .get(format!("{base}/api/inventory"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Staff stocks; a customer may not.
    let stock = json!({"name": "Mug", "unitPrice": "9.99", "quantity": 10});
    let r = alice
        .put(format!("{base}/api/inventory/KC-MUG"))
        .json(&stock)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = sam
        .put(format!("{base}/api/inventory/KC-MUG"))
        .json(&stock)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());

    // Alice shops as herself (her customer id is her token's sub).
    let r = alice
        .post(format!("{base}/api/carts"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let cart = r.json::<Value>().await.unwrap()["cartId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = alice
        .post(format!("{base}/api/carts/{cart}/items"))
        .json(&json!({"sku": "KC-MUG", "quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = bob
        .post(format!("{base}/api/carts/{cart}/checkout"))
        .json(
            &json!({"paymentToken": "tok_visa", "shippingAddress": common::address(),
                      "email": "bob@example.com"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "Bob cannot check out Alice's cart"
    );
    let r = alice
        .post(format!("{base}/api/carts/{cart}/checkout"))
        .json(
            &json!({"paymentToken": "tok_visa", "shippingAddress": common::address(),
                      "email": "alice@example.com"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let order = r.json::<Value>().await.unwrap()["orderId"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(
        &base,
        &alice,
        &format!("/api/orders/{order}"),
        "status",
        "Confirmed",
    )
    .await;
    let r = bob
        .get(format!("{base}/api/orders/{order}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "Bob cannot see Alice's order"
    );

    // Staff ships and delivers; Alice sees it; only the admin reads the event store.
    let r = sam
        .post(format!("{base}/api/orders/{order}/ship"))
        .json(&json!({"carrier": "DHL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = sam
        .post(format!("{base}/api/orders/{order}/deliver"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    wait_for(
        &base,
        &alice,
        &format!("/api/orders/{order}"),
        "status",
        "Delivered",
    )
    .await;
    let r = sam
        .get(format!("{base}/api/eventstore/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let cart_events: Value = ada
        .get(format!("{base}/api/eventstore/replay/cart/{cart}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cart_events = cart_events["events"].as_array().unwrap();
    assert_eq!(cart_events.len(), 3);
    for event in cart_events {
        assert_eq!(event["metadata"]["userId"], alice_sub.as_str());
    }
    let order_events: Value = ada
        .get(format!("{base}/api/eventstore/replay/order/{order}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
        let r = rotated
            .get(format!("{base}/api/orders/{order}"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            break true;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The old key is still published, so its tokens still pass.
    let r = alice
        .get(format!("{base}/api/orders/{order}"))
        .send()
        .await
        .unwrap();
    let old_still_passes = r.status() == StatusCode::OK;
    keycloak.remove(&provider).await;
    assert!(picked_up, "a token of the rotated key was refused for 15 s");
    assert!(old_still_passes);
    cluster.dispose().await;
}
