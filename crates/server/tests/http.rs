//! The HTTP API against the real server on an ephemeral port with a fresh data directory.

mod common;

use std::collections::BTreeSet;

use common::{address, assert_problem, spawn_app};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The README's walk-through, step by step.
#[tokio::test]
async fn readme_walkthrough_from_stock_to_checkout_and_replay() {
    let app = spawn_app().await;
    app.stock("MUG-1", "9.99", 10).await;
    app.stock("TEE-2", "15.00", 5).await;

    let product = app.json("/api/inventory/MUG-1").await;
    assert_eq!(
        product,
        json!({"sku": "MUG-1", "name": "Product MUG-1", "unitPrice": "9.99", "currency": "GBP",
               "available": 10, "reserved": 0, "lowStockThreshold": 2, "version": 1})
    );

    let cart = app.new_cart("cust-42").await;
    let response = app.add(&cart, "MUG-1", 2).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app.add(&cart, "TEE-2", 1).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["totalAmount"], "34.98");
    assert_eq!(body["currency"], "GBP");
    assert_eq!(body["items"].as_array().unwrap().len(), 2);

    let response = app
        .client
        .delete(app.url(&format!("/api/carts/{cart}/items/TEE-2")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["totalAmount"], "19.98");

    let response = app
        .post(
            &format!("/api/carts/{cart}/checkout"),
            &json!({"paymentToken": "tok_visa", "shippingAddress": address(),
                    "email": "ada@example.com", "phone": "+44 20 7946 0000"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    let order_id = accepted["orderId"].as_str().expect("orderId");
    assert!(uuid::Uuid::parse_str(order_id).is_ok());

    let cart_view = app.json(&format!("/api/carts/{cart}")).await;
    assert_eq!(cart_view["status"], "CheckedOut");
    assert_eq!(cart_view["orderId"], order_id);

    let replay = app
        .json(&format!("/api/eventstore/replay/Cart/{cart}"))
        .await;
    assert_eq!(replay["aggregateType"], "Cart");
    assert_eq!(replay["version"], 5);
    assert_eq!(replay["state"]["status"], "CheckedOut");
    assert_eq!(replay["state"]["totalAmount"], "19.98");
    let types: Vec<&str> = replay["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "CartCreated",
            "ItemAddedToCart",
            "ItemAddedToCart",
            "ItemRemovedFromCart",
            "CartCheckedOut"
        ]
    );
    let checked_out = &replay["events"][4];
    for field in [
        "eventId",
        "eventType",
        "aggregateId",
        "aggregateType",
        "timestamp",
        "version",
        "data",
        "metadata",
        "schemaVersion",
    ] {
        assert!(checked_out.get(field).is_some(), "envelope lacks {field}");
    }
    assert_eq!(
        checked_out["schemaVersion"],
        cornershop_domain::CURRENT_SCHEMA_VERSION
    );
    assert_eq!(checked_out["data"]["orderId"], order_id);
    assert_eq!(checked_out["data"]["totalAmount"], "19.98");
    assert_eq!(checked_out["data"]["currency"], "GBP");
    assert_eq!(checked_out["data"]["shippingAddress"]["countryCode"], "GB");
    assert_eq!(checked_out["metadata"]["source"], "CartService");

    // TEE-2 left the cart, so the workflow (running by now) never touches its stock.
    let inventory = app.json("/api/eventstore/replay/Inventory/TEE-2").await;
    assert_eq!(inventory["version"], 1);
    assert_eq!(inventory["state"]["available"], 5);
}

#[tokio::test]
async fn replay_to_date_returns_the_state_as_it_was() {
    let app = spawn_app().await;
    app.stock("A", "1.00", 100).await;
    app.stock("B", "2.00", 100).await;
    let cart = app.new_cart("c").await;
    assert_eq!(app.add(&cart, "A", 1).await.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    assert_eq!(app.add(&cart, "B", 3).await.status(), StatusCode::OK);

    let t = between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let then = app
        .json(&format!("/api/eventstore/replay/Cart/{cart}?toDate={t}"))
        .await;
    assert_eq!(then["version"], 2);
    assert_eq!(then["state"]["items"].as_array().unwrap().len(), 1);
    assert_eq!(then["state"]["totalAmount"], "1.00");
    assert_eq!(then["events"].as_array().unwrap().len(), 2);

    let now = app
        .json(&format!("/api/eventstore/replay/Cart/{cart}"))
        .await;
    assert_eq!(now["version"], 3);
    assert_eq!(now["state"]["totalAmount"], "7.00");

    let since = app
        .json(&format!("/api/eventstore/replay/Cart/{cart}?fromDate={t}"))
        .await;
    assert_eq!(since["version"], 3, "state is still folded from the start");
    let events = since["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["sku"], "B");
}

/// `--snapshot-every` reaches the command bus: stock set seven times with snapshots every
/// three events leaves the snapshot of version 6 in the store; replay still folds every
/// event, and a shop started again on the same store loads the SKU from it exactly.
#[tokio::test]
async fn snapshots_are_taken_as_snapshot_every_says_and_replay_stays_exact() {
    use cornershop_domain::{AggregateType, Inventory};
    use cornershop_store::{Snapshots, SqliteEventStore};

    let app = common::spawn_embedded_with(|args| args.snapshot_every = 3).await;
    for quantity in 10..17 {
        app.stock("MUG", "1.00", quantity).await;
    }
    let replayed = app.json("/api/eventstore/replay/Inventory/MUG").await;
    assert_eq!(replayed["version"], 7);
    assert_eq!(replayed["state"]["available"], 16);
    assert_eq!(replayed["events"].as_array().unwrap().len(), 7);
    let answered = app.json("/api/inventory/MUG").await;
    // The snapshot is saved after the answer, on a task of its own: wait for it.
    let url = format!(
        "sqlite://{}?mode=ro",
        app.data_dir.path().join("cornershop.db").display()
    );
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    for _ in 0..500 {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM snapshots WHERE aggregate_id = 'MUG'")
                .fetch_optional(&mut conn)
                .await
                .unwrap();
        if version == Some(6) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(conn);
    let data_dir = app.stop_and_wait().await;

    let store = SqliteEventStore::open(data_dir.path()).await.unwrap();
    let snapshot = store
        .load_snapshot(AggregateType::Inventory, "MUG")
        .await
        .unwrap()
        .expect("a snapshot of the SKU");
    assert_eq!(snapshot.version, 6);
    let state: Inventory = serde_json::from_str(&snapshot.state).unwrap();
    assert_eq!(state.available, 15);
    cornershop_store::EventLog::close(&store).await;

    let again = common::spawn_embedded_with(|args| {
        args.data_dir = data_dir.path().to_path_buf();
        args.snapshot_every = 3;
    })
    .await;
    assert_eq!(again.json("/api/inventory/MUG").await, answered);
    let replayed = again.json("/api/eventstore/replay/Inventory/MUG").await;
    assert_eq!(replayed["version"], 7);
    assert_eq!(replayed["state"]["available"], 16);
}

#[tokio::test]
async fn sixty_four_concurrent_adds_to_one_cart_all_land_with_contiguous_versions() {
    let app = spawn_app().await;
    for i in 0..64 {
        app.stock(&format!("SKU-{i}"), "1.50", 1000).await;
    }
    let cart = app.new_cart("busy").await;
    let requests = (0..64).map(|i| {
        let app = &app;
        let cart = cart.clone();
        async move { app.add(&cart, &format!("SKU-{i}"), 1).await.status() }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "statuses: {statuses:?}"
    );

    let replay = app
        .json(&format!("/api/eventstore/replay/Cart/{cart}"))
        .await;
    assert_eq!(replay["state"]["items"].as_array().unwrap().len(), 64);
    assert_eq!(replay["state"]["totalAmount"], "96.00");
    let versions: Vec<u64> = replay["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=65).collect::<Vec<_>>());
    let skus: BTreeSet<_> = replay["events"].as_array().unwrap()[1..]
        .iter()
        .map(|e| e["data"]["sku"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(skus.len(), 64);
}

#[tokio::test]
async fn bad_input_gets_a_problem_and_appends_nothing() {
    let app = spawn_app().await;
    app.stock("MUG-1", "9.99", 10).await;
    let cart = app.new_cart("c").await;
    let items = format!("/api/carts/{cart}/items");
    let before = app.total_events().await;

    let raw = |body: &'static str| {
        app.client
            .post(app.url(&items))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let detail = assert_problem(
        raw("{\"sku\": \"MUG-1\", ").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("not valid JSON"), "{detail}");

    let detail = assert_problem(
        raw(r#"{"sku": "MUG-1", "quantity": 1, "colour": "red"}"#)
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("colour"), "{detail}");

    for quantity in [0, -3, 1000] {
        let detail = assert_problem(
            app.add(&cart, "MUG-1", quantity).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(detail.contains("quantity"), "{detail}");
    }
    let detail = assert_problem(
        raw(r#"{"sku": "MUG-1", "quantity": 1.5}"#).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        detail.contains("quantity") || detail.contains("integer"),
        "{detail}"
    );

    let detail = assert_problem(app.add(&cart, "NOPE-9", 1).await, StatusCode::NOT_FOUND).await;
    assert!(detail.contains("NOPE-9"), "{detail}");

    let detail = assert_problem(
        app.add("no-such-cart", "MUG-1", 1).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(detail.contains("no-such-cart"), "{detail}");
    assert_problem(
        app.get("/api/carts/no-such-cart").await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let huge = format!(r#"{{"customerId": "{}"}}"#, "x".repeat(200 * 1024));
    let response = app
        .client
        .post(app.url("/api/carts"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    let response = app
        .client
        .post(app.url(&items))
        .header("content-type", "text/plain")
        .body(r#"{"sku": "MUG-1", "quantity": 1}"#)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let detail = assert_problem(
        app.post(
            &format!("/api/carts/{cart}/checkout"),
            &json!({"paymentToken": "tok_visa", "shippingAddress": address(), "email": "a@b.co"}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(detail.contains("empty"), "{detail}");

    // The country: an assigned ISO 3166-1 alpha-2 code, as `countryCode` or (its first
    // name) `country`, or both when they agree; anything else is a 400 naming the field,
    // before the cart's state is looked at (this cart is empty: 409 once the address is
    // right).
    let checkout_to = |address: Value| {
        let app = &app;
        let cart = cart.clone();
        async move {
            app.post(
                &format!("/api/carts/{cart}/checkout"),
                &json!({"paymentToken": "tok_visa", "shippingAddress": address, "email": "a@b.co"}),
            )
            .await
        }
    };
    let with = |fields: &[(&str, &str)]| {
        let mut a = address();
        a.as_object_mut().unwrap().remove("country");
        for (field, value) in fields {
            a[*field] = json!(value);
        }
        a
    };
    for (fields, says) in [
        (&[("country", "Narnia")][..], "shippingAddress.country"),
        (&[("country", "XX")][..], "shippingAddress.country"),
        (&[("country", "UK")][..], "shippingAddress.country"),
        (&[("countryCode", "GBR")][..], "shippingAddress.countryCode"),
        (
            &[("countryCode", "US"), ("country", "GB")][..],
            "name different countries",
        ),
        (&[][..], "shippingAddress.countryCode is required"),
    ] {
        let detail = assert_problem(checkout_to(with(fields)).await, StatusCode::BAD_REQUEST).await;
        assert!(detail.contains(says), "{fields:?}: {detail}");
    }
    for fields in [
        &[("countryCode", "GB")][..],
        &[("countryCode", "gb")][..],
        &[("country", "GB")][..],
        &[("countryCode", "FR"), ("country", "fr")][..],
    ] {
        let detail = assert_problem(checkout_to(with(fields)).await, StatusCode::CONFLICT).await;
        assert!(detail.contains("empty"), "{fields:?}: {detail}");
    }

    assert_problem(
        app.put(
            "/api/inventory/BAD SKU",
            &json!({"name": "x", "unitPrice": "1", "quantity": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        app.put(
            "/api/inventory/NEG",
            &json!({"name": "x", "unitPrice": "-1", "quantity": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        app.put(
            "/api/inventory/NEG",
            &json!({"name": "x", "unitPrice": "1", "quantity": -1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    assert_problem(
        app.get("/api/eventstore/replay/Basket/x").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        app.get("/api/eventstore/replay/Cart/unknown").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        app.get(&format!(
            "/api/eventstore/replay/Cart/{cart}?toDate=yesterday"
        ))
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        app.get("/api/eventstore/events?limit=0").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        app.get("/api/eventstore/events?eventType=Nope").await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    let response = app
        .client
        .post(app.url("/api/carts"))
        .header("x-correlation-id", "x".repeat(500))
        .json(&json!({"customerId": "c"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST).await;

    assert_eq!(
        app.total_events().await,
        before,
        "a refused request appended events"
    );
}

#[tokio::test]
async fn a_closed_cart_refuses_changes_with_409() {
    let app = spawn_app().await;
    app.stock("A", "1.00", 10).await;
    let cart = app.new_cart("c").await;
    app.add(&cart, "A", 1).await;
    let checkout =
        json!({"paymentToken": "tok_visa", "shippingAddress": address(), "email": "a@b.co"});
    assert_eq!(
        app.post(&format!("/api/carts/{cart}/checkout"), &checkout)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let url = format!("/api/eventstore/replay/Cart/{cart}");
    let before = app.json(&url).await["version"].as_u64().unwrap();
    let detail = assert_problem(app.add(&cart, "A", 1).await, StatusCode::CONFLICT).await;
    assert!(detail.contains("checked out"), "{detail}");
    assert_problem(
        app.post(&format!("/api/carts/{cart}/checkout"), &checkout)
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    let after = app.json(&url).await["version"].as_u64().unwrap();
    assert_eq!(after, before, "a refused command appended to the cart");
}

#[tokio::test]
async fn a_repeated_idempotency_key_gets_the_first_answer_and_appends_nothing() {
    let app = spawn_app().await;
    let send = |key: &'static str, customer: &'static str| {
        app.client
            .post(app.url("/api/carts"))
            .header("idempotency-key", key)
            .json(&json!({ "customerId": customer }))
            .send()
    };
    let first = send("key-1", "c1").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let after_first = app.total_events().await;

    let again = send("key-1", "c1").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(app.total_events().await, after_first);

    let reused = send("key-1", "someone-else").await.unwrap();
    assert_problem(reused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(app.total_events().await, after_first);

    // Concurrent repeats of one request: one cart, one event, one answer.
    let answers = futures::future::join_all((0..8).map(|_| send("key-2", "c2"))).await;
    let bodies: BTreeSet<String> = futures::future::join_all(
        answers
            .into_iter()
            .map(|r| async { r.unwrap().text().await.unwrap() }),
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(app.total_events().await, after_first + 1);
}

#[tokio::test]
async fn metadata_carries_correlation_user_and_source() {
    let app = spawn_app().await;
    app.stock("A", "3.00", 10).await;
    // Who did it is the token's subject; an X-User-Id header claiming someone else is
    // not believed.
    let response = app
        .client_as(common::Role::Customer, "user-7")
        .post(app.url("/api/carts"))
        .header("x-correlation-id", "corr-123")
        .header("x-user-id", "somebody-else")
        .json(&json!({"customerId": "user-7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-correlation-id"], "corr-123");
    let cart: Value = response.json().await.unwrap();
    let cart = cart["cartId"].as_str().unwrap();
    let replay = app
        .json(&format!("/api/eventstore/replay/cart/{cart}"))
        .await;
    let metadata = &replay["events"][0]["metadata"];
    assert_eq!(metadata["correlationId"], "corr-123");
    assert_eq!(metadata["userId"], "user-7");
    assert_eq!(metadata["source"], "CartService");
    assert!(metadata["causationId"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    let timestamp = replay["events"][0]["timestamp"].as_str().unwrap();
    assert!(timestamp.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(timestamp).is_ok());
}

/// A request's W3C traceparent puts its events in the client's trace; without one (or with
/// a malformed one, which is ignored, not refused) the trace id derives from the
/// correlation id.
#[tokio::test]
async fn events_join_the_trace_of_the_request() {
    let app = &spawn_app().await;
    let cart_with = |traceparent: Option<&'static str>, correlation: &'static str| {
        let mut request = app
            .client
            .post(app.url("/api/carts"))
            .header("x-correlation-id", correlation)
            .json(&json!({"customerId": "c"}));
        if let Some(value) = traceparent {
            request = request.header("traceparent", value);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let cart: Value = response.json().await.unwrap();
            let cart = cart["cartId"].as_str().unwrap().to_string();
            let replay = app
                .json(&format!("/api/eventstore/replay/cart/{cart}"))
                .await;
            replay["events"][0]["traceId"]
                .as_str()
                .expect("events carry traceId")
                .to_string()
        }
    };
    let given = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(
        cart_with(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "t-1"
        )
        .await,
        given
    );
    let derived = cornershop_store::trace::trace_id_for_correlation("t-2");
    assert_eq!(cart_with(None, "t-2").await, derived);
    let derived = cornershop_store::trace::trace_id_for_correlation("t-3");
    assert_eq!(cart_with(Some("00-zz-not-a-trace"), "t-3").await, derived);
}

#[tokio::test]
async fn the_event_log_pages_in_global_order_with_filters() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.stock(&format!("S{i}"), "1.00", 10).await;
    }
    let cart = app.new_cart("c").await;
    app.add(&cart, "S1", 1).await;
    app.add(&cart, "S2", 1).await;

    let mut positions = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .json(&format!("/api/eventstore/events?limit=3&after={after}"))
            .await;
        let events = page["events"].as_array().unwrap();
        positions.extend(events.iter().map(|e| e["position"].as_u64().unwrap()));
        match page["nextAfter"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(positions, (1..=8).collect::<Vec<_>>());

    let added = app
        .json("/api/eventstore/events?eventType=ItemAddedToCart")
        .await;
    assert_eq!(added["events"].as_array().unwrap().len(), 2);
    let carts = app.json("/api/eventstore/events?aggregateType=Cart").await;
    assert_eq!(carts["events"].as_array().unwrap().len(), 3);
    let future = app
        .json("/api/eventstore/events?from=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(future["events"].as_array().unwrap().len(), 0);

    let stats = app.json("/api/eventstore/stats").await;
    assert_eq!(stats["totalEvents"], 8);
    assert_eq!(stats["byEventType"]["StockUpdated"], 5);
    assert_eq!(stats["byAggregateType"]["Cart"], 3);
    assert!(stats["firstEventAt"].is_string() && stats["lastEventAt"].is_string());
}

#[tokio::test]
async fn health_and_openapi_answer() {
    let app = spawn_app().await;
    assert_eq!(app.json("/health/live").await["status"], "live");
    assert_eq!(app.json("/health/ready").await["status"], "ready");
    let doc = app.json("/api/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/inventory/{sku}",
        "/api/carts",
        "/api/carts/{cartId}/items",
        "/api/carts/{cartId}/checkout",
        "/api/eventstore/replay/{aggregateType}/{aggregateId}",
        "/api/eventstore/events",
        "/api/eventstore/stats",
    ] {
        assert!(paths.contains_key(path), "OpenAPI lacks {path}");
    }
}

/// What a fuzzer and a careless client found: out-of-range money, money finer than a
/// cent, control characters, dot-only SKUs, a body without a JSON Content-Type. Each gets
/// a 4xx problem that names what is wrong, and nothing is appended.
#[tokio::test]
async fn odd_values_are_refused_at_the_edge_with_a_problem_naming_the_field() {
    let app = spawn_app().await;
    app.stock("MUG-1", "9.99", 10).await;
    let cart = app.new_cart("c").await;
    let before = app.total_events().await;

    let put = async |sku: &str, body: Value| app.put(&format!("/api/inventory/{sku}"), &body).await;
    // Above the documented maximum price, as a string and as a JSON number.
    let detail = assert_problem(
        put(
            "P27",
            json!({"name": "p", "unitPrice": "1000000000000000000000000000", "quantity": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        detail.contains("unitPrice") && detail.contains("1000000.00"),
        "{detail}"
    );
    let detail = assert_problem(
        put(
            "P26",
            json!({"name": "p", "unitPrice": 1e26, "quantity": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("unitPrice"), "{detail}");
    // Finer than a cent, however it is written.
    for price in [json!(1e-300), json!("0.001"), json!(0.001)] {
        let detail = assert_problem(
            put(
                "P1",
                json!({"name": "p", "unitPrice": price, "quantity": 1}),
            )
            .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(detail.contains("unitPrice"), "{price}: {detail}");
    }
    // Control characters in names, ids and addresses; SKUs made of dots.
    let detail = assert_problem(
        put(
            "P2",
            json!({"name": "a\u{0}b", "unitPrice": "1.00", "quantity": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        detail.contains("name") && detail.contains("control"),
        "{detail}"
    );
    let detail = assert_problem(
        app.post("/api/carts", &json!({"customerId": "cust\u{1b}[31m"}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("customerId"), "{detail}");
    // (`.` and `..` cannot be sent: every client resolves them away; the domain tests them.)
    for sku in ["...", ".hidden", "-x"] {
        let detail = assert_problem(
            put(
                sku,
                json!({"name": "p", "unitPrice": "1.00", "quantity": 1}),
            )
            .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(detail.contains("SKU"), "{sku}: {detail}");
    }
    assert_problem(app.get("/api/carts/a%00b").await, StatusCode::BAD_REQUEST).await;
    let mut checkout = json!({
        "paymentToken": "tok_visa",
        "shippingAddress": address(),
        "email": "ada@example.com",
    });
    checkout["shippingAddress"]["line1"] = json!("12 Row\u{7}");
    app.add(&cart, "MUG-1", 1).await;
    let adds = app.total_events().await;
    let detail = assert_problem(
        app.post(&format!("/api/carts/{cart}/checkout"), &checkout)
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("shippingAddress.line1"), "{detail}");
    // Contact details are parsed where they enter, and the problem names the field.
    for (field, value) in [("email", "ada at example"), ("phone", "call me")] {
        let mut checkout = json!({
            "paymentToken": "tok_visa",
            "shippingAddress": address(),
            "email": "ada@example.com",
        });
        checkout[field] = json!(value);
        let detail = assert_problem(
            app.post(&format!("/api/carts/{cart}/checkout"), &checkout)
                .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            detail.starts_with(&format!("{field} '{value}'")),
            "{detail}"
        );
    }
    // So is a SKU in a body; a path that can be no cart id names no cart.
    let detail = assert_problem(
        app.post(
            &format!("/api/carts/{cart}/items"),
            &json!({"sku": "a b", "quantity": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.starts_with("sku 'a b'"), "{detail}");
    let long = "x".repeat(201);
    let detail = assert_problem(app.add(&long, "MUG-1", 1).await, StatusCode::NOT_FOUND).await;
    assert!(detail.contains("does not exist"), "{detail}");
    // A body that does not say it is JSON.
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app
            .client
            .post(app.url("/api/carts"))
            .body(r#"{"customerId": "c"}"#);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let detail = assert_problem(
            request.send().await.unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
        assert!(
            detail.contains("application/json"),
            "{content_type:?}: {detail}"
        );
    }
    // A minTotal beyond any order is refused, not overflowed.
    assert_problem(
        app.get("/api/orders?minTotal=79228162514264337593543950335")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        app.total_events().await,
        adds,
        "nothing appended by a refusal"
    );
    assert_eq!(adds, before + 1);
}

/// A price an older, unbounded writer stored (10²⁶) cannot overflow a cart line: adding
/// 999 units is refused with a problem naming unitPrice, not a panic.
#[tokio::test]
async fn a_stored_price_beyond_the_bound_is_refused_when_added_to_a_cart() {
    let app = spawn_app().await;
    app.stock("MUG-1", "9.99", 10).await;
    {
        let store: std::sync::Arc<dyn cornershop_store::EventStore> = std::sync::Arc::new(
            cornershop_store::SqliteEventStore::open(app.data_dir.path())
                .await
                .expect("open the shop's store beside it"),
        );
        let mut g = cornershop_readmodels::testkit::Generator::new(store.clone());
        g.raw(
            cornershop_domain::StockUpdated {
                sku: "HUGE".into(),
                name: "huge".into(),
                unit_price: "100000000000000000000000000".parse().unwrap(),
                currency: cornershop_domain::money::SHOP_CURRENCY,
                quantity: 1000,
                low_stock_threshold: 0,
            }
            .into(),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
        store.close().await;
    }
    let cart = app.new_cart("c").await;
    let detail = assert_problem(app.add(&cart, "HUGE", 999).await, StatusCode::BAD_REQUEST).await;
    assert!(detail.contains("unitPrice"), "{detail}");
    // The cart still works.
    assert_eq!(app.add(&cart, "MUG-1", 1).await.status(), StatusCode::OK);
}
