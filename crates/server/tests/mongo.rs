//! The shop on the MongoDB event store (`--mongodb-url`, FerretDB here): an order through
//! the whole workflow, and a restart on the same database that finds it as it was. Skipped
//! (saying why) without `CORNERSHOP_TEST_MONGODB_URL` (`scripts/stack.sh env` prints it).

mod common;

use common::TestApp;
use cornershop_server::config::ServeArgs;
use reqwest::StatusCode;
use serde_json::json;

/// `base` (mongodb://host:port/) with a database of its own.
fn fresh_database(base: &str) -> String {
    let name = format!("cs_e2e_{}", uuid::Uuid::new_v4().simple());
    format!("{}/{name}", base.trim_end_matches('/'))
}

async fn shop(data_dir: tempfile::TempDir, url: &str) -> TestApp {
    let mut args = ServeArgs::for_data_dir(data_dir.path());
    args.mongodb_url = Some(url.to_string());
    common::start_in_process(data_dir, args, Vec::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_runs_to_delivery_on_mongodb_and_survives_a_restart() {
    let Ok(base) = std::env::var("CORNERSHOP_TEST_MONGODB_URL") else {
        eprintln!("skipped: CORNERSHOP_TEST_MONGODB_URL is not set (scripts/stack.sh start)");
        return;
    };
    let url = fresh_database(&base);
    let app = shop(tempfile::tempdir().unwrap(), &url).await;
    app.stock("MG-CUP", "3.00", 10).await;
    let order = app.order(&[("MG-CUP", 2)], "tok_visa").await;
    let confirmed = app
        .wait_for_order(&order, &["Confirmed", "Cancelled"])
        .await;
    assert_eq!(confirmed["status"], "Confirmed", "{confirmed}");
    let shipped = app
        .post(
            &format!("/api/orders/{order}/ship"),
            &json!({"carrier": "DHL"}),
        )
        .await;
    assert_eq!(shipped.status(), StatusCode::OK);
    let delivered = app
        .post(&format!("/api/orders/{order}/deliver"), &json!({}))
        .await;
    assert_eq!(delivered.status(), StatusCode::OK);
    app.settle().await;
    let events = app.total_events().await;
    let timeline = common::types(&app.timeline(&order).await);
    assert_eq!(timeline.first().map(String::as_str), Some("CartCheckedOut"));
    for step in [
        "OrderConfirmed",
        "OrderShipped",
        "StockShipped",
        "OrderDelivered",
    ] {
        assert!(timeline.iter().any(|t| t == step), "{step} in {timeline:?}");
    }

    // The same database and data directory after a restart: the log, the order and the
    // stock as they were, and no effect applied twice.
    let data_dir = app.stop_and_wait().await;
    let again = shop(data_dir, &url).await;
    let order_now = again.json(&format!("/api/orders/{order}")).await;
    assert_eq!(order_now["status"], "Delivered", "{order_now}");
    assert_eq!(again.inventory("MG-CUP").await, (8, 0));
    again.settle().await;
    assert_eq!(
        again.total_events().await,
        events,
        "the restart wrote nothing"
    );
    assert_eq!(common::types(&again.timeline(&order).await), timeline);
}
