//! Stored events of older schema versions load as today's shapes.
//!
//! `write_the_fixtures` (ignored; run by hand) wrote the committed fixtures of the schema
//! this build writes: a whole shop's log, exactly as the store holds it. See
//! `crates/domain/tests/fixtures/README.md`.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{address, spawn_embedded_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

impl TestApp {
    /// A cart of `customer` with these lines, checked out to `country` with `token`.
    async fn order_to(
        &self,
        customer: &str,
        lines: &[(&str, i64)],
        token: &str,
        country: &str,
    ) -> String {
        let cart = self.new_cart(customer).await;
        for (sku, quantity) in lines {
            let r = self.add(&cart, sku, *quantity).await;
            assert_eq!(r.status(), StatusCode::OK, "adding {sku}");
        }
        let mut shipping = address();
        shipping["country"] = json!(country);
        let response = self
            .post(
                &format!("/api/carts/{cart}/checkout"),
                &json!({"paymentToken": token, "shippingAddress": shipping,
                        "email": format!("{customer}@example.com"), "phone": "+44 20 7946 0000"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "checkout");
        let body: Value = response.json().await.unwrap();
        body["orderId"].as_str().unwrap().to_string()
    }
}

/// Runs a small shop's day on the embedded default and writes its log, byte for byte as
/// the store holds it, to `$CORNERSHOP_WRITE_FIXTURES/events.ndjson` (one envelope a
/// line, in log order), with the data keys (`data-keys.ndjson`) and the master key
/// (`master.key`) that open its sealed values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixtures; run by hand with CORNERSHOP_WRITE_FIXTURES=dir"]
async fn write_the_fixtures() {
    let out = std::path::PathBuf::from(
        std::env::var("CORNERSHOP_WRITE_FIXTURES").expect("CORNERSHOP_WRITE_FIXTURES=dir"),
    );
    std::fs::create_dir_all(&out).unwrap();
    let app = spawn_embedded_with(|_| {}).await;
    app.stock("MUG", "9.99", 10).await;
    app.stock("TEA", "4.50", 5).await;
    app.stock("KETTLE", "25.00", 1).await;

    // Delivered.
    let delivered = app
        .order_to("cust-ada", &[("MUG", 2), ("TEA", 1)], "tok_visa", "GB")
        .await;
    app.wait_for_order(&delivered, &["Confirmed"]).await;
    let r = app
        .post(
            &format!("/api/orders/{delivered}/ship"),
            &json!({"carrier": "Royal Mail", "trackingNumber": "RM123456789GB"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "ship");
    let r = app
        .post(&format!("/api/orders/{delivered}/deliver"), &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "deliver");

    // Declined by the gateway: cancelled, its stock released. (A lower-case country code:
    // the checkout took any two letters.)
    let declined = app
        .order_to("cust-bob", &[("MUG", 1)], "tok_chargeDeclined", "gb")
        .await;
    app.wait_for_order(&declined, &["Cancelled"]).await;

    // Confirmed and not shipped yet: in flight. Its country is two letters that name no
    // country, which the checkout took as well.
    let in_flight = app
        .order_to("cust-cy", &[("KETTLE", 1)], "tok_mastercard", "XX")
        .await;
    app.wait_for_order(&in_flight, &["Confirmed"]).await;

    // Out of stock (the one kettle is reserved): cancelled. "UK", not ISO's "GB".
    let short = app
        .order_to("cust-dee", &[("KETTLE", 1), ("TEA", 1)], "tok_visa", "UK")
        .await;
    app.wait_for_order(&short, &["Cancelled"]).await;

    // Cancelled by the customer after payment: refunded.
    let regretted = app
        .order_to("cust-eve", &[("TEA", 2)], "tok_visa", "US")
        .await;
    app.wait_for_order(&regretted, &["Confirmed"]).await;
    let r = app
        .post(
            &format!("/api/orders/{regretted}/cancel"),
            &json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "cancel");

    // An open cart: a line added, another added and removed.
    let open = app.new_cart("cust-fay").await;
    assert_eq!(app.add(&open, "TEA", 1).await.status(), StatusCode::OK);
    assert_eq!(app.add(&open, "MUG", 3).await.status(), StatusCode::OK);
    let r = app
        .client
        .delete(app.url(&format!("/api/carts/{open}/items/MUG")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "remove");

    app.settle().await;
    // The refund comes after the cancellation's StockReleased; wait for the whole log.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.settle().await;
    let data_dir = app.stop_and_wait().await;

    // The rows as stored.
    let url = format!(
        "sqlite://{}?mode=ro",
        data_dir.path().join("cornershop.db").display()
    );
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let store = cornershop_store::SqliteEventStore::open(data_dir.path())
        .await
        .unwrap();
    let events = cornershop_store::EventLog::read_log(&store, 0, 10_000)
        .await
        .unwrap();
    let mut lines = std::fs::File::create(out.join("events.ndjson")).unwrap();
    for event in &events {
        let (data, metadata): (String, String) =
            sqlx::query_as("SELECT data, metadata FROM events WHERE position = ?")
                .bind(event.position as i64)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let line = serde_json::to_string(&event.envelope).unwrap();
        // The envelope's JSON holds the stored text of both columns unchanged.
        assert_eq!(event.envelope.data.to_string(), data, "data as stored");
        assert_eq!(
            serde_json::to_string(&event.envelope.metadata).unwrap(),
            metadata,
            "metadata as stored"
        );
        assert!(line.contains(&data) && line.contains(&metadata));
        writeln!(lines, "{line}").unwrap();
    }
    let keys: Vec<(String, String, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT key_id, customer_id, wrapped_key, created_us FROM data_keys ORDER BY created_us",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut key_lines = std::fs::File::create(out.join("data-keys.ndjson")).unwrap();
    for (key_id, customer_id, wrapped, created_us) in keys {
        let hex: String = wrapped.iter().map(|b| format!("{b:02x}")).collect();
        let line = json!({"keyId": key_id, "customerId": customer_id, "wrappedKey": hex,
                          "createdUs": created_us});
        writeln!(key_lines, "{line}").unwrap();
    }
    std::fs::copy(
        data_dir.path().join("master.key"),
        out.join("master.key"),
    )
    .unwrap();
    eprintln!("{} events written to {}", events.len(), out.display());
}
