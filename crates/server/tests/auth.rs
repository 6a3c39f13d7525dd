//! Authentication and authorization on the embedded default: every route of the OpenAPI
//! document against every kind of caller (no token, forged and stale tokens, two
//! customers, staff, admin), what a customer may see of another, the limit on failed
//! authentications, and the embedded issuer with the real binary (its key, its
//! `cornershop token`, and no token in any log line). The guard and the handlers' checks
//! are the same code on both backends, so these run in-process on the embedded default
//! always; `oidc.rs` (Keycloak) and `workflow.rs` drive tokens through PostgreSQL + Kafka.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{assert_problem, cluster, spawn_embedded_with, Role, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const A: &str = "cust-a";
const B: &str = "cust-b";
const STAFF: &str = "staff-1";

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    NoToken,
    Expired,
    WrongAudience,
    WrongIssuer,
    BadSignature,
    AlgNone,
    /// HS256, keyed with the shop's public key (the classic algorithm confusion).
    Hs256WithPublicKey,
    CustomerA,
    CustomerB,
    Staff,
    Admin,
}

const EVERYONE: &[Who] = &[
    Who::NoToken,
    Who::Expired,
    Who::WrongAudience,
    Who::WrongIssuer,
    Who::BadSignature,
    Who::AlgNone,
    Who::Hs256WithPublicKey,
    Who::CustomerA,
    Who::CustomerB,
    Who::Staff,
    Who::Admin,
];

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with the shop's own key, with these claims.
fn signed(app: &TestApp, claims: Value) -> String {
    let pem = std::fs::read(app.signing_key()).expect("the shop's key");
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("a P-256 key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )
    .unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"iss": "cornershop-embedded", "aud": "cornershop", "sub": sub,
           "exp": now() + 600, "roles": ["admin"]})
}

fn token_of(app: &TestApp, who: Who) -> Option<String> {
    Some(match who {
        Who::NoToken => return None,
        Who::Expired => {
            let mut c = claims("late");
            c["exp"] = json!(now() - 120);
            signed(app, c)
        }
        Who::WrongAudience => {
            let mut c = claims("elsewhere");
            c["aud"] = json!("another-service");
            signed(app, c)
        }
        Who::WrongIssuer => {
            let mut c = claims("stranger");
            c["iss"] = json!("https://idp.example.com/realms/evil");
            signed(app, c)
        }
        Who::BadSignature => {
            // A valid admin token whose claims were changed after signing.
            let token = app.token(Role::Admin, "forger");
            let parts: Vec<&str> = token.split('.').collect();
            let mut c = claims("forger-changed");
            c["roles"] = json!(["admin"]);
            format!("{}.{}.{}", parts[0], b64(&c), parts[2])
        }
        Who::AlgNone => format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims("nobody"))
        ),
        Who::Hs256WithPublicKey => {
            let jwks: Value = app_jwks(app);
            let key = serde_json::to_vec(&jwks["keys"][0]).unwrap();
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims("confused"),
                &jsonwebtoken::EncodingKey::from_secret(&key),
            )
            .unwrap()
        }
        Who::CustomerA => app.token(Role::Customer, A),
        Who::CustomerB => app.token(Role::Customer, B),
        Who::Staff => app.token(Role::Staff, STAFF),
        Who::Admin => app.token(Role::Admin, "admin-1"),
    })
}

fn app_jwks(app: &TestApp) -> Value {
    // Read straight from the key file's issuer, the same the shop serves.
    cornershop_server::auth::issuer::LocalIssuer::open_or_create(&app.signing_key())
        .unwrap()
        .jwks()
}

/// The role each route needs, written here independently of the server's table: the
/// document must say the same, and the server must enforce it.
fn role_of(method: &str, path: &str) -> Option<&'static str> {
    Some(match (method, path) {
        ("get", "/health/live") | ("get", "/health/ready") => return None,
        ("post", "/api/carts")
        | ("get", "/api/carts/{cartId}")
        | ("post", "/api/carts/{cartId}/items")
        | ("delete", "/api/carts/{cartId}/items/{sku}")
        | ("post", "/api/carts/{cartId}/checkout")
        | ("get", "/api/orders/{orderId}")
        | ("get", "/api/orders/{orderId}/timeline")
        | ("post", "/api/orders/{orderId}/cancel")
        | ("get", "/api/customers/{customerId}/orders")
        | ("get", "/api/customers/{customerId}/personal-data")
        | ("delete", "/api/customers/{customerId}/personal-data")
        | ("get", "/api/notifications")
        | ("get", "/api/inventory/{sku}")
        | ("get", "/api/inventory") => "customer",
        ("put", "/api/inventory/{sku}")
        | ("post", "/api/orders/{orderId}/ship")
        | ("post", "/api/orders/{orderId}/deliver")
        | ("get", "/api/orders")
        | ("get", "/api/reports/sales")
        | ("get", "/api/deadletters") => "staff",
        ("post", "/api/deadletters/{id}/retry")
        | ("get", "/api/consumers")
        | ("get", "/api/projections")
        | ("post", "/api/projections/{name}/rebuild")
        | ("get", "/api/eventstore/replay/{aggregateType}/{aggregateId}")
        | ("get", "/api/eventstore/events")
        | ("get", "/api/eventstore/stats") => "admin",
        _ => panic!("{method} {path}: a route this test does not know; add it to role_of"),
    })
}

/// Whether the route's resource belongs to customer A (another customer gets 404).
fn owned_by_a(path: &str) -> bool {
    path.contains("{cartId}") || path.contains("{orderId}") || path.contains("{customerId}")
}

/// What each caller must get from a route needing `role`.
fn expected(who: Who, role: Option<&str>, owned: bool, success: u16) -> u16 {
    let Some(role) = role else {
        return success;
    };
    let rank = match who {
        Who::CustomerA | Who::CustomerB => 1,
        Who::Staff => 2,
        Who::Admin => 3,
        _ => return 401,
    };
    let needed = match role {
        "customer" => 1,
        "staff" => 2,
        _ => 3,
    };
    if rank < needed {
        403
    } else if who == Who::CustomerB && owned {
        404
    } else {
        success
    }
}

/// Shop state the calls act on: A's stocked product, open cart, order.
struct Fixtures {
    sku: String,
    cart: String,
    order: String,
}

impl Fixtures {
    async fn new(app: &TestApp) -> Self {
        app.stock("AUTH-1", "4.00", 100_000).await;
        let a = app.client_as(Role::Customer, A);
        let cart = cart_of_a(app, &a, true).await;
        let order = order_of_a(app, &a).await;
        Self {
            sku: "AUTH-1".into(),
            cart,
            order,
        }
    }
}

async fn cart_of_a(app: &TestApp, a: &reqwest::Client, with_item: bool) -> String {
    let r = a
        .post(app.url("/api/carts"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let cart = r.json::<Value>().await.unwrap()["cartId"]
        .as_str()
        .unwrap()
        .to_string();
    if with_item {
        let r = a
            .post(app.url(&format!("/api/carts/{cart}/items")))
            .json(&json!({"sku": "AUTH-1", "quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    cart
}

/// A checked-out order of A's, once the read models show it.
async fn order_of_a(app: &TestApp, a: &reqwest::Client) -> String {
    let cart = cart_of_a(app, a, true).await;
    let r = a
        .post(app.url(&format!("/api/carts/{cart}/checkout")))
        .json(&checkout_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let order = r.json::<Value>().await.unwrap()["orderId"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_for_order(&order, &["Confirmed"]).await;
    order
}

fn checkout_body() -> Value {
    json!({"paymentToken": "tok_visa", "shippingAddress": common::address(),
           "email": "a@example.com", "phone": "+44 20 7946 0000"})
}

/// A concrete request for an operation: its path, and its body. `fresh` prepares state
/// the call consumes (a cart to check out, an order to ship), since a successful call
/// cannot be repeated on the same one.
async fn request_for(
    app: &TestApp,
    f: &Fixtures,
    method: &str,
    path: &str,
    fresh: bool,
) -> (String, Option<Value>, u16) {
    let a = app.client_as(Role::Customer, A);
    let staff = app.client_as(Role::Staff, STAFF);
    let cart = |with_item| async move {
        if fresh {
            cart_of_a(app, &app.client_as(Role::Customer, A), with_item).await
        } else {
            f.cart.clone()
        }
    };
    let order = || async {
        if fresh {
            order_of_a(app, &a).await
        } else {
            f.order.clone()
        }
    };
    match (method, path) {
        ("post", "/api/carts") => ("/api/carts".into(), Some(json!({})), 201),
        ("get", "/api/carts/{cartId}") => (format!("/api/carts/{}", f.cart), None, 200),
        ("post", "/api/carts/{cartId}/items") => (
            format!("/api/carts/{}/items", f.cart),
            Some(json!({"sku": f.sku, "quantity": 1})),
            200,
        ),
        ("delete", "/api/carts/{cartId}/items/{sku}") => (
            format!("/api/carts/{}/items/{}", cart(true).await, f.sku),
            None,
            200,
        ),
        ("post", "/api/carts/{cartId}/checkout") => (
            format!("/api/carts/{}/checkout", cart(true).await),
            Some(checkout_body()),
            202,
        ),
        ("get", "/api/orders/{orderId}") => (format!("/api/orders/{}", f.order), None, 200),
        ("get", "/api/orders/{orderId}/timeline") => {
            (format!("/api/orders/{}/timeline", f.order), None, 200)
        }
        ("post", "/api/orders/{orderId}/cancel") => (
            format!("/api/orders/{}/cancel", order().await),
            Some(json!({"reason": "changed my mind"})),
            200,
        ),
        ("post", "/api/orders/{orderId}/ship") => (
            format!("/api/orders/{}/ship", order().await),
            Some(json!({"carrier": "DHL"})),
            200,
        ),
        ("post", "/api/orders/{orderId}/deliver") => {
            let order = order().await;
            if fresh {
                let r = staff
                    .post(app.url(&format!("/api/orders/{order}/ship")))
                    .json(&json!({"carrier": "DHL"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            }
            (format!("/api/orders/{order}/deliver"), None, 200)
        }
        ("get", "/api/customers/{customerId}/orders") => {
            (format!("/api/customers/{A}/orders"), None, 200)
        }
        ("get", "/api/customers/{customerId}/personal-data")
        | ("delete", "/api/customers/{customerId}/personal-data") => {
            (format!("/api/customers/{A}/personal-data"), None, 200)
        }
        ("get", "/api/inventory/{sku}") => (format!("/api/inventory/{}", f.sku), None, 200),
        ("put", "/api/inventory/{sku}") => (
            format!("/api/inventory/{}", f.sku),
            Some(json!({"name": "Auth mug", "unitPrice": "4.00", "quantity": 100000})),
            200,
        ),
        ("post", "/api/deadletters/{id}/retry") => {
            // No dead letter exists: an admin is told so; everyone else is refused first.
            ("/api/deadletters/987654321/retry".into(), None, 404)
        }
        ("post", "/api/projections/{name}/rebuild") => (
            "/api/projections/reporting-service/rebuild".into(),
            None,
            200,
        ),
        ("get", "/api/eventstore/replay/{aggregateType}/{aggregateId}") => {
            (format!("/api/eventstore/replay/cart/{}", f.cart), None, 200)
        }
        ("get", p) => (p.to_string(), None, 200),
        (m, p) => panic!("no request for {m} {p}"),
    }
}

async fn send(
    app: &TestApp,
    who: Who,
    method: &str,
    path: &str,
    body: &Option<Value>,
) -> reqwest::Response {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = reqwest::Client::new().request(method, app.url(path));
    if let Some(token) = token_of(app, who) {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("request sent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_kind_of_caller_as_its_role_and_owner_say() {
    let app = spawn_embedded_with(|args| args.auth.auth_failure_limit = 0).await;
    let fixtures = Fixtures::new(&app).await;
    let doc = app.json("/api/openapi.json").await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let role = role_of(method, path);
            assert_eq!(
                op["x-required-role"].as_str(),
                role,
                "{method} {path}: the document's role"
            );
            for &who in EVERYONE {
                let (_, _, success) = request_for(&app, &fixtures, method, path, false).await;
                // Personal data is the customer's and the admins': staff are refused.
                let want = if path.ends_with("/personal-data") && who == Who::Staff {
                    403
                } else {
                    expected(who, role, owned_by_a(path), success)
                };
                let allowed = (200..300).contains(&want) || (want == 404 && role == Some("admin"));
                let (concrete, body, _) = request_for(&app, &fixtures, method, path, allowed).await;
                if !allowed {
                    // The workflow of an earlier order may still be appending.
                    app.settle().await;
                }
                let before = app.total_events().await;
                let response = send(&app, who, method, path_or(&concrete), &body).await;
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let text = response.text().await.unwrap_or_default();
                assert_eq!(
                    status, want,
                    "{who:?} {method} {concrete}: expected {want}, got {status}: {text}"
                );
                if status == 401 {
                    let challenge = headers["www-authenticate"].to_str().unwrap();
                    assert!(
                        challenge.starts_with("Bearer ")
                            && challenge.contains("error=\"invalid_token\"")
                            && challenge.contains("error_description="),
                        "{who:?} {method} {path}: {challenge}"
                    );
                }
                if matches!(status, 401 | 403 | 404) {
                    assert_eq!(
                        headers["content-type"], "application/problem+json",
                        "{who:?} {method} {path}"
                    );
                    assert_eq!(
                        app.total_events().await,
                        before,
                        "{who:?} {method} {concrete} was refused ({status}) yet appended"
                    );
                }
                checked += 1;
            }
        }
    }
    // Every operation of the document (29 today), by every kind of caller.
    assert!(checked >= 29 * EVERYONE.len(), "only {checked} calls");
}

fn path_or(path: &str) -> &str {
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_b_cannot_see_or_touch_what_is_customer_as() {
    let app = spawn_embedded_with(|_| {}).await;
    app.stock("AUTH-1", "4.00", 1000).await;
    let a = app.client_as(Role::Customer, A);
    let b = app.client_as(Role::Customer, B);
    let order = order_of_a(&app, &a).await;
    app.settle().await;

    // A's order and a made-up one answer B alike: nothing tells B that A's exists.
    let made_up = "00000000-0000-4000-8000-000000000000";
    for (path_of, what) in [
        (
            Box::new(|o: &str| format!("/api/orders/{o}")) as Box<dyn Fn(&str) -> String>,
            "order",
        ),
        (
            Box::new(|o: &str| format!("/api/orders/{o}/timeline")),
            "timeline",
        ),
    ] {
        let theirs = b.get(app.url(&path_of(&order))).send().await.unwrap();
        let none = b.get(app.url(&path_of(made_up))).send().await.unwrap();
        assert_eq!(theirs.status(), StatusCode::NOT_FOUND, "{what}");
        assert_eq!(none.status(), StatusCode::NOT_FOUND, "{what}");
        let theirs = theirs.text().await.unwrap().replace(&order, "ID");
        let none = none.text().await.unwrap().replace(made_up, "ID");
        assert_eq!(theirs, none, "{what}: B can tell A's order from none");
    }
    let r = b
        .post(app.url(&format!("/api/orders/{order}/cancel")))
        .json(&json!({"reason": "not mine"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::NOT_FOUND).await;
    assert_eq!(
        app.wait_for_order(&order, &["Confirmed"]).await["status"],
        "Confirmed"
    );

    // Notifications: A has some; B sees none of them, even asking for A's by name.
    let of = |client: &reqwest::Client, query: &'static str| {
        let request = client.get(app.url(&format!("/api/notifications{query}")));
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Vec<Value>>().await.unwrap()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while of(&a, "").await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "A never got a notification"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(of(&a, "").await.iter().all(|n| n["customerId"] == A));
    assert!(of(&b, "").await.is_empty());
    assert!(of(&b, "?customerId=cust-a").await.is_empty());
    assert!(!of(&app.client, "?customerId=cust-a").await.is_empty());

    // A customer cannot open a cart in another's name; omitting the id opens its own.
    let r = b
        .post(app.url("/api/carts"))
        .json(&json!({"customerId": A}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::FORBIDDEN).await;
    let r = b
        .get(app.url(&format!("/api/customers/{A}/orders")))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::NOT_FOUND).await;
    let mine = b
        .get(app.url(&format!("/api/customers/{B}/orders")))
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), StatusCode::OK);

    // The same Idempotency-Key from two customers is two requests.
    let open = |client: &reqwest::Client| {
        client
            .post(app.url("/api/carts"))
            .header("idempotency-key", "same-key")
            .json(&json!({}))
            .send()
    };
    let first: Value = open(&a).await.unwrap().json().await.unwrap();
    let second: Value = open(&b).await.unwrap().json().await.unwrap();
    assert_ne!(first["cartId"], second["cartId"]);
    let r = b
        .get(app.url(&format!(
            "/api/carts/{}",
            second["cartId"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["customerId"], B);
}

#[tokio::test]
async fn failed_authentications_from_one_address_are_limited_and_counted() {
    let app = spawn_embedded_with(|args| args.auth.auth_failure_limit = 5).await;
    let bad = reqwest::Client::new();
    for n in 0..5 {
        let r = bad
            .get(app.url("/api/inventory"))
            .bearer_auth(format!("not-a-token-{n}"))
            .send()
            .await
            .unwrap();
        assert_problem(r, StatusCode::UNAUTHORIZED).await;
    }
    let r = bad
        .get(app.url("/api/inventory"))
        .bearer_auth("not-a-token-6")
        .send()
        .await
        .unwrap();
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let detail = assert_problem(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(
        detail.contains("too many failed authentications"),
        "{detail}"
    );
    // A valid token from the same address still passes.
    let r = app
        .client
        .get(app.url("/api/inventory"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("auth_failures_total{reason=\"malformed\"}")),
        "{metrics}"
    );
}

/// `cornershop token` with the real binary.
fn mint_with_binary(data_dir: &std::path::Path, role: &str, sub: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cornershop"))
        .args(["token", "--role", role, "--sub", sub, "--ttl", "10m"])
        .arg(format!("--data-dir={}", data_dir.display()))
        .env_remove("CORNERSHOP_SIGNING_KEY_FILE")
        .output()
        .expect("cornershop token runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_shop_issues_its_own_tokens_and_never_logs_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("shop.log");
    let shop = cluster::Process::start(
        "embedded",
        vec![
            format!("--data-dir={}", data.display()),
            // The data directory's own key, as `serve` makes it on first start.
            format!(
                "--signing-key-file={}",
                data.join(cornershop_server::config::SIGNING_KEY_FILE)
                    .display()
            ),
            "--log=debug,librdkafka=warn,sqlx=warn,hyper=info".to_string(),
        ],
        log.clone(),
    )
    .await;
    let base = shop.base();
    let key = data.join("signing-key.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Its keys and discovery are public.
    let jwks: Value = reqwest::get(format!("{base}/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    let discovery: Value = reqwest::get(format!("{base}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], "cornershop-embedded");
    assert!(discovery["jwks_uri"]
        .as_str()
        .unwrap()
        .ends_with("/.well-known/jwks.json"));

    let staff = mint_with_binary(&data, "staff", "staff-42");
    let customer = mint_with_binary(&data, "customer", "cust-42");
    let http = reqwest::Client::new();
    // The README's walk-through: without a token it is refused, nothing is stored.
    let r = http
        .put(format!("{base}/api/inventory/MUG-1"))
        .json(&json!({"name": "Mug", "unitPrice": "9.99", "quantity": 10}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
    let r = http
        .post(format!("{base}/api/carts"))
        .json(&json!({"customerId": "cust-42"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;
    // With them it passes.
    let r = http
        .put(format!("{base}/api/inventory/MUG-1"))
        .bearer_auth(&staff)
        .json(&json!({"name": "Mug", "unitPrice": "9.99", "quantity": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .post(format!("{base}/api/carts"))
        .bearer_auth(&customer)
        .json(&json!({"customerId": "cust-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let cart = r.json::<Value>().await.unwrap()["cartId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http
        .post(format!("{base}/api/carts/{cart}/items"))
        .bearer_auth(&customer)
        .json(&json!({"sku": "MUG-1", "quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .post(format!("{base}/api/carts/{cart}/checkout"))
        .bearer_auth(&customer)
        .json(&checkout_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let order = r.json::<Value>().await.unwrap()["orderId"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = http
            .get(format!("{base}/api/orders/{order}"))
            .bearer_auth(&customer)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK && r.json::<Value>().await.unwrap()["status"] == "Confirmed"
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never confirmed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A forged and a stale token are refused, and logged by reason only.
    let forged = format!("{}x", &customer[..customer.len() - 1]);
    let r = http
        .get(format!("{base}/api/orders/{order}"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNAUTHORIZED).await;

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("authentication failed"),
        "the refusals are logged"
    );
    for token in [&staff, &customer, &forged] {
        let signature = token.rsplit('.').next().unwrap();
        for (number, line) in text.lines().enumerate() {
            assert!(
                !line.contains(token.as_str()) && !line.contains(signature),
                "log line {number} holds a token: {line}"
            );
        }
    }
    drop(shop);
}

#[tokio::test]
async fn a_method_a_route_does_not_take_answers_405_to_anyone() {
    let app = spawn_embedded_with(|_| {}).await;
    for client in [reqwest::Client::new(), app.client.clone()] {
        let r = client
            .patch(app.url("/api/carts"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_off_trusts_every_caller_and_says_so_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("shop.log");
    let shop = cluster::Process::start(
        "auth-off",
        vec![
            format!("--data-dir={}", dir.path().join("data").display()),
            "--auth=off".to_string(),
        ],
        log.clone(),
    )
    .await;
    let base = shop.base();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/carts"))
        .header("x-user-id", "experimenter")
        .json(&json!({"customerId": "cust-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let cart = r.json::<Value>().await.unwrap()["cartId"]
        .as_str()
        .unwrap()
        .to_string();
    let replay: Value = http
        .get(format!("{base}/api/eventstore/replay/cart/{cart}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replay["events"][0]["metadata"]["userId"], "experimenter");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("authentication is OFF")),
        "no warning at start:\n{text}"
    );
    drop(shop);
}

/// `--metrics-listen`: the scrape and the probes on a port of their own, open; the API's
/// port no longer serves /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_listen_apart_from_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let shop = cluster::Process::start(
        "metrics-apart",
        vec![
            format!("--data-dir={}", dir.path().join("data").display()),
            "--metrics-listen=127.0.0.1:0".to_string(),
        ],
        dir.path().join("shop.log"),
    )
    .await;
    let address = shop
        .messages_since_start()
        .iter()
        .find(|m| m["message"] == "serving /metrics")
        .and_then(|m| m["address"].as_str().map(str::to_string))
        .expect("the metrics address is logged");
    let r = reqwest::get(format!("{}/api/inventory", shop.base()))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let scrape = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap();
    assert_eq!(scrape.status(), StatusCode::OK);
    let text = scrape.text().await.unwrap();
    assert!(text.contains("auth_failures_total"), "{text}");
    let ready = reqwest::get(format!("http://{address}/health/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let r = reqwest::get(format!("{}/metrics", shop.base()))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    drop(shop);
}
