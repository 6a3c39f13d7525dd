//! The order workflow end to end over HTTP: the seed's flow, its failure paths,
//! contention for scarce stock and cart expiry. Runs on the embedded default, and with
//! `CORNERSHOP_TEST_BACKEND=production` on PostgreSQL + Kafka in separate processes.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{spawn_app, spawn_app_with, types, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn stocked(skus: &[(&str, &str, i64)]) -> TestApp {
    let app = spawn_app().await;
    for (sku, price, quantity) in skus {
        app.stock(sku, price, *quantity).await;
    }
    app
}

#[tokio::test]
async fn a_three_line_order_runs_the_seed_flow_in_causal_order_to_delivery() {
    let app = stocked(&[("A", "1.00", 10), ("B", "2.50", 10), ("C", "10.00", 10)]).await;
    let order_id = app.order(&[("A", 1), ("B", 2), ("C", 3)], "tok_visa").await;
    let order = app
        .wait_for_order(&order_id, &["Confirmed", "Cancelled"])
        .await;
    assert_eq!(order["status"], "Confirmed", "{order}");
    assert_eq!(order["totalAmount"], "36.00");
    assert_eq!(order["paymentStatus"], "Completed");

    let shipped = app
        .post(
            &format!("/api/orders/{order_id}/ship"),
            &json!({"carrier": "DHL"}),
        )
        .await;
    assert_eq!(shipped.status(), StatusCode::OK);
    let shipped: Value = shipped.json().await.unwrap();
    assert_eq!(shipped["status"], "Shipped");
    assert!(shipped["trackingNumber"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    // The shipment takes the reserved units out of the warehouse: none stays reserved.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for (sku, left) in [("A", 9), ("B", 8), ("C", 7)] {
        while app.inventory(sku).await != (left, 0) {
            assert!(
                std::time::Instant::now() < deadline,
                "{sku} is still reserved after shipping: {:?}",
                app.inventory(sku).await
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let delivered = app
        .post(&format!("/api/orders/{order_id}/deliver"), &json!({}))
        .await;
    assert_eq!(delivered.status(), StatusCode::OK);

    let timeline = app.timeline(&order_id).await;
    assert_eq!(
        types(&timeline),
        [
            "CartCheckedOut",
            "OrderCreated",
            "StockReserved",
            "StockReserved",
            "StockReserved",
            "OrderValidated",
            "PaymentInitiated",
            "PaymentAuthorized",
            "PaymentCompleted",
            "OrderConfirmed",
            "OrderShipped",
            "StockShipped",
            "StockShipped",
            "StockShipped",
            "OrderDelivered"
        ]
    );
    // Causal order: every event's cause is an earlier event of the timeline, except the
    // checkout and the two requests (ship, deliver), which were caused by HTTP requests.
    let mut seen = HashSet::new();
    for event in &timeline {
        let cause = event["causationId"].as_str().unwrap();
        let by_request = matches!(
            event["eventType"].as_str().unwrap(),
            "CartCheckedOut" | "OrderShipped" | "OrderDelivered"
        );
        assert!(
            by_request || seen.contains(cause),
            "{} caused by {cause}, which is not an earlier event",
            event["eventType"]
        );
        seen.insert(event["eventId"].as_str().unwrap().to_string());
    }
    // The saga's steps point at the right causes.
    let id_of = |t: &str| {
        timeline
            .iter()
            .find(|e| e["eventType"] == t)
            .map(|e| e["eventId"].as_str().unwrap().to_string())
            .unwrap()
    };
    let cause_of = |t: &str| {
        timeline
            .iter()
            .find(|e| e["eventType"] == t)
            .map(|e| e["causationId"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(cause_of("OrderCreated"), id_of("CartCheckedOut"));
    assert_eq!(cause_of("StockReserved"), id_of("OrderCreated"));
    assert_eq!(cause_of("PaymentInitiated"), id_of("OrderValidated"));
    assert_eq!(cause_of("PaymentAuthorized"), id_of("PaymentInitiated"));
    assert_eq!(cause_of("PaymentCompleted"), id_of("PaymentAuthorized"));
    assert_eq!(cause_of("OrderConfirmed"), id_of("PaymentCompleted"));
    assert_eq!(cause_of("StockShipped"), id_of("OrderShipped"));

    // All share the checkout's correlation id.
    let replay = app
        .json(&format!("/api/eventstore/replay/Order/{order_id}"))
        .await;
    let correlation = order["correlationId"].as_str().unwrap();
    for event in replay["events"].as_array().unwrap() {
        assert_eq!(event["metadata"]["correlationId"], correlation);
    }
    assert_eq!(replay["state"]["status"], "Delivered");
    assert_eq!(app.inventory("C").await, (7, 0));
}

#[tokio::test]
async fn a_declined_card_releases_all_stock_and_cancels() {
    let app = stocked(&[("A", "1.00", 10), ("B", "2.00", 10)]).await;
    let order_id = app.order(&[("A", 2), ("B", 3)], "tok_chargeDeclined").await;
    let order = app
        .wait_for_order(&order_id, &["Confirmed", "Cancelled"])
        .await;
    assert_eq!(order["status"], "Cancelled");
    assert_eq!(order["paymentStatus"], "Failed");
    let reason = order["cancelReason"].as_str().unwrap();
    assert!(reason.contains("card_declined"), "{reason}");
    app.settle().await;
    assert_eq!(app.inventory("A").await, (10, 0));
    assert_eq!(app.inventory("B").await, (10, 0));
    let timeline = types(&app.timeline(&order_id).await);
    let failed = timeline.iter().position(|t| t == "PaymentFailed").unwrap();
    let cancelled = timeline.iter().position(|t| t == "OrderCancelled").unwrap();
    let released: Vec<_> = timeline
        .iter()
        .enumerate()
        .filter(|(_, t)| *t == "StockReleased")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(released.len(), 2, "{timeline:?}");
    assert!(
        released.iter().all(|&i| failed < i && i < cancelled),
        "{timeline:?}"
    );

    let insufficient = app.order(&[("A", 1)], "tok_insufficientFunds").await;
    let order = app
        .wait_for_order(&insufficient, &["Confirmed", "Cancelled"])
        .await;
    assert_eq!(order["status"], "Cancelled");
    assert!(order["cancelReason"]
        .as_str()
        .unwrap()
        .contains("insufficient_funds"));
}

#[tokio::test]
async fn an_amount_over_the_gateway_limit_is_declined() {
    let app = spawn_app_with(
        |args| args.workflow.payment_max_amount = "50".parse().unwrap(),
        Vec::new(),
    )
    .await;
    app.stock("GOLD", "30.00", 10).await;
    let order_id = app.order(&[("GOLD", 2)], "tok_visa").await;
    let order = app
        .wait_for_order(&order_id, &["Confirmed", "Cancelled"])
        .await;
    assert_eq!(order["status"], "Cancelled");
    assert!(order["cancelReason"]
        .as_str()
        .unwrap()
        .contains("amount_too_large"));
    app.settle().await;
    assert_eq!(app.inventory("GOLD").await, (10, 0));
}

#[tokio::test]
async fn an_out_of_stock_line_cancels_the_order_and_leaks_no_stock() {
    let app = stocked(&[("A", "1.00", 10), ("B", "1.00", 10), ("SCARCE", "1.00", 1)]).await;
    let order_id = app
        .order(&[("A", 4), ("B", 2), ("SCARCE", 2)], "tok_visa")
        .await;
    let order = app
        .wait_for_order(&order_id, &["Confirmed", "Cancelled"])
        .await;
    assert_eq!(order["status"], "Cancelled");
    let reason = order["cancelReason"].as_str().unwrap();
    assert!(
        reason.contains("SCARCE") && reason.contains("out of stock"),
        "{reason}"
    );
    assert_eq!(
        order["paymentId"],
        Value::Null,
        "no payment for an unreserved order"
    );
    app.settle().await;
    assert_eq!(app.inventory("A").await, (10, 0));
    assert_eq!(app.inventory("B").await, (10, 0));
    assert_eq!(app.inventory("SCARCE").await, (1, 0));
    let timeline = types(&app.timeline(&order_id).await);
    assert_eq!(
        timeline.iter().filter(|t| *t == "StockReserved").count(),
        2,
        "{timeline:?}"
    );
    assert_eq!(
        timeline.iter().filter(|t| *t == "StockReleased").count(),
        2,
        "{timeline:?}"
    );
    assert_eq!(timeline.last().unwrap(), "OrderCancelled");
}

#[tokio::test]
async fn cancelling_a_confirmed_order_refunds_and_releases() {
    let app = stocked(&[("A", "5.00", 10), ("B", "7.50", 10)]).await;
    let order_id = app.order(&[("A", 1), ("B", 2)], "tok_visa").await;
    app.wait_for_order(&order_id, &["Confirmed"]).await;
    assert_eq!(app.inventory("A").await, (9, 1));

    let response = app
        .post(
            &format!("/api/orders/{order_id}/cancel"),
            &json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    app.settle().await;
    let order = app.json(&format!("/api/orders/{order_id}")).await;
    assert_eq!(order["status"], "Cancelled");
    assert_eq!(order["cancelReason"], "changed my mind");
    assert_eq!(order["paymentStatus"], "Refunded");
    assert_eq!(app.inventory("A").await, (10, 0));
    assert_eq!(app.inventory("B").await, (10, 0));
    let timeline = types(&app.timeline(&order_id).await);
    assert_eq!(
        timeline.iter().filter(|t| *t == "PaymentRefunded").count(),
        1
    );

    // Shipping or cancelling again is refused; a shipped order cannot be cancelled.
    let again = app
        .post(
            &format!("/api/orders/{order_id}/cancel"),
            &json!({"reason": "x"}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let other = app.order(&[("A", 1)], "tok_visa").await;
    app.wait_for_order(&other, &["Confirmed"]).await;
    let early = app
        .post(&format!("/api/orders/{other}/deliver"), &json!({}))
        .await;
    assert_eq!(
        early.status(),
        StatusCode::CONFLICT,
        "delivered before shipping"
    );
    app.post(
        &format!("/api/orders/{other}/ship"),
        &json!({"carrier": "UPS", "trackingNumber": "1Z999"}),
    )
    .await;
    let late = app
        .post(
            &format!("/api/orders/{other}/cancel"),
            &json!({"reason": "too late"}),
        )
        .await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    let unknown = app
        .post("/api/orders/nope/ship", &json!({"carrier": "UPS"}))
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

/// Replays the SKU's events and returns the lowest `available` it ever had.
async fn lowest_available(app: &TestApp, sku: &str) -> i64 {
    let replay = app
        .json(&format!("/api/eventstore/replay/Inventory/{sku}"))
        .await;
    let mut available = 0i64;
    let mut lowest = i64::MAX;
    for event in replay["events"].as_array().unwrap() {
        let quantity = event["data"]["quantity"].as_i64().unwrap_or(0);
        match event["eventType"].as_str().unwrap() {
            "StockUpdated" => available = quantity,
            "StockReserved" => available -= quantity,
            "StockReleased" => available += quantity,
            _ => {}
        }
        lowest = lowest.min(available);
    }
    lowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_checkouts_compete_for_fifty_units() {
    let app = Arc::new(stocked(&[("HOT", "3.00", 50)]).await);
    let carts = futures::future::join_all((0..200).map(|i| {
        let app = app.clone();
        async move {
            let cart = app.new_cart(&format!("c{i}")).await;
            assert_eq!(app.add(&cart, "HOT", 1).await.status(), StatusCode::OK);
            cart
        }
    }))
    .await;
    let orders = futures::future::join_all(carts.iter().map(|cart| {
        let app = app.clone();
        async move { app.checkout(cart, "tok_visa").await }
    }))
    .await;

    let mut by_status = BTreeMap::<String, usize>::new();
    for order_id in &orders {
        let order = app
            .wait_for_order(order_id, &["Confirmed", "Cancelled"])
            .await;
        *by_status
            .entry(order["status"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(by_status.get("Confirmed"), Some(&50), "{by_status:?}");
    assert_eq!(by_status.get("Cancelled"), Some(&150), "{by_status:?}");
    app.settle().await;
    let (available, reserved) = app.inventory("HOT").await;
    assert_eq!((available, reserved), (0, 50));
    assert_eq!(available + reserved, 50, "stock put in");
    assert!(lowest_available(&app, "HOT").await >= 0);
}

#[tokio::test]
async fn an_idle_cart_expires_and_a_busy_one_does_not_yet() {
    let app = spawn_app_with(
        |args| args.workflow.cart_ttl = Duration::from_secs(1).into(),
        Vec::new(),
    )
    .await;
    app.stock("A", "1.00", 10).await;
    let idle = app.new_cart("idle").await;
    app.add(&idle, "A", 1).await;
    let busy = app.new_cart("busy").await;
    let checked_out = app.new_cart("done").await;
    app.add(&checked_out, "A", 1).await;
    app.checkout(&checked_out, "tok_visa").await;

    // Keep one cart busy past the first cart's deadline.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        app.add(&busy, "A", 1).await;
    }
    assert_eq!(
        app.json(&format!("/api/carts/{idle}")).await["status"],
        "Expired"
    );
    assert_eq!(
        app.json(&format!("/api/carts/{busy}")).await["status"],
        "Open"
    );
    assert_eq!(
        app.json(&format!("/api/carts/{checked_out}")).await["status"],
        "CheckedOut"
    );
    // Once left alone, the busy cart expires too.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        app.json(&format!("/api/carts/{busy}")).await["status"],
        "Expired"
    );
    let expired = app
        .json("/api/eventstore/events?eventType=CartExpired")
        .await;
    assert_eq!(expired["events"].as_array().unwrap().len(), 2);
    let refused = app.add(&idle, "A", 1).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
}

/// Who did it: every event's `metadata.userId` is the `sub` of the token whose request
/// started its chain; a customer's checkout through payment and confirmation is the
/// customer's, the shipment (and the stock it moves) the staff member's.
#[tokio::test]
async fn every_event_names_the_caller_at_the_start_of_its_chain() {
    let app = stocked(&[("U", "3.00", 10)]).await;
    let customer = app.client_as(common::Role::Customer, "cust-who");
    let staff = app.client_as(common::Role::Staff, "staff-who");
    let cart: Value = customer
        .post(app.url("/api/carts"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cart = cart["cartId"].as_str().unwrap();
    let r = customer
        .post(app.url(&format!("/api/carts/{cart}/items")))
        .json(&json!({"sku": "U", "quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let accepted: Value = customer
        .post(app.url(&format!("/api/carts/{cart}/checkout")))
        .json(
            &json!({"paymentToken": "tok_visa", "shippingAddress": common::address(),
                      "email": "who@example.com"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order = accepted["orderId"].as_str().unwrap().to_string();
    app.wait_for_order(&order, &["Confirmed"]).await;
    let r = staff
        .post(app.url(&format!("/api/orders/{order}/ship")))
        .json(&json!({"carrier": "DHL"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.settle().await;

    let timeline = app.timeline(&order).await;
    // The cart's own requests (each its own transaction).
    let cart_events = app
        .json(&format!("/api/eventstore/replay/cart/{cart}"))
        .await;
    let cart_events = cart_events["events"].as_array().unwrap();
    assert_eq!(cart_events.len(), 3, "created, item added, checked out");
    for event in cart_events {
        assert_eq!(
            event["metadata"]["userId"], "cust-who",
            "{}",
            event["eventType"]
        );
    }
    // The checkout's transaction, from the cart to the confirmation, and the shipment.
    let by_customer = [
        "CartCheckedOut",
        "OrderCreated",
        "StockReserved",
        "OrderValidated",
        "PaymentInitiated",
        "PaymentAuthorized",
        "PaymentCompleted",
        "OrderConfirmed",
    ];
    let by_staff = ["OrderShipped", "StockShipped"];
    let mut seen = HashSet::new();
    for event in &timeline {
        let kind = event["eventType"].as_str().unwrap();
        let replay = app
            .json(&format!(
                "/api/eventstore/replay/{}/{}",
                event["aggregateType"].as_str().unwrap().to_lowercase(),
                event["aggregateId"].as_str().unwrap()
            ))
            .await;
        let stored = replay["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["eventId"] == event["eventId"])
            .unwrap_or_else(|| panic!("{kind} not in its aggregate's replay"));
        let user = &stored["metadata"]["userId"];
        if by_customer.contains(&kind) {
            assert_eq!(user, "cust-who", "{kind}");
        } else if by_staff.contains(&kind) {
            assert_eq!(user, "staff-who", "{kind}");
        } else {
            panic!("an event this test does not expect: {kind}");
        }
        seen.insert(kind.to_string());
    }
    for kind in by_customer.iter().chain(&by_staff) {
        assert!(seen.contains(*kind), "no {kind} in the timeline");
    }
}
