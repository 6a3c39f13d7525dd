//! `cornershop simulate` against the real shop: as a library function (the report's
//! counts agree with the seed's plan and with the read side), as the binary with `--json`,
//! and against a target where nothing listens.

mod common;

use common::{spawn_app, TestApp};
use cornershop_server::config::SimulateArgs;
use cornershop_server::simulate::{self, Mix};
use serde_json::Value;

const SEED: u64 = 7;

fn args(app: &TestApp, orders: u64) -> SimulateArgs {
    let mut args = SimulateArgs::for_target(&app.base);
    args.orders = Some(orders);
    args.concurrency = 4;
    args.seed = SEED;
    args.customers = 5;
    args.skus = 4;
    args.mix = "happy=50,declined=25,outOfStock=25".parse().unwrap();
    args.no_progress = true;
    args.signing_key_file = Some(app.signing_key());
    args
}

/// Orders of the read models with this status, over every page.
async fn count_orders(app: &TestApp, status: &str) -> u64 {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/orders?status={status}&limit=500&cursor={c}"),
            None => format!("/api/orders?status={status}&limit=500"),
        };
        let page = app.json(&path).await;
        count += page["orders"].as_array().unwrap().len() as u64;
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return count,
        }
    }
}

#[tokio::test]
async fn a_seeded_run_has_the_planned_outcomes_and_the_read_side_agrees() {
    let app = spawn_app().await;
    let report = simulate::run(args(&app, 30))
        .await
        .expect("the run completes");

    assert_eq!(report.orders, 30);
    let planned = &report.planned;
    assert_eq!(planned.happy + planned.declined + planned.out_of_stock, 30);
    assert!(
        planned.happy > 0 && planned.declined > 0 && planned.out_of_stock > 0,
        "the seed plans every kind of order: {planned:?}"
    );
    // What the seed planned is what happened, without a single error.
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    let outcomes = &report.outcomes;
    assert_eq!(outcomes.confirmed, planned.happy);
    assert_eq!(outcomes.declined, planned.declined);
    assert_eq!(outcomes.out_of_stock, planned.out_of_stock);
    assert_eq!(outcomes.failed, 0);
    assert_eq!(report.completed_orders, planned.happy);
    assert_eq!(
        report.completed_orders + outcomes.declined + outcomes.out_of_stock,
        report.orders
    );

    assert!(report.events > 0 && report.events_per_second > 0.0);
    assert!(report.orders_per_second > 0.0);
    let c = &report.command_latency_ms;
    let (p50, p95, p99) = (c.p50.unwrap(), c.p95.unwrap(), c.p99.unwrap());
    assert!(p50 <= p95 && p95 <= p99, "{c:?}");
    // Stock (4 SKUs + the scarce one), a cart, its lines and a checkout per order, and a
    // ship and a deliver per confirmed order.
    assert!(c.count >= 5 + 30 * 3 + 2 * planned.happy, "{c:?}");
    let confirmed = &report.checkout_to_confirmed_ms;
    assert_eq!(confirmed.count, planned.happy);
    assert!(confirmed.p50.unwrap() <= confirmed.p99.unwrap());
    assert_eq!(report.command_latency_p50_ms, Some(p50));
    assert_eq!(report.command_latency_p95_ms, Some(p95));
    assert_eq!(report.command_latency_p99_ms, Some(p99));

    // The read side saw the same: every confirmed order delivered, the others cancelled.
    assert_eq!(count_orders(&app, "Delivered").await, outcomes.confirmed);
    assert_eq!(
        count_orders(&app, "Cancelled").await,
        outcomes.declined + outcomes.out_of_stock
    );
    // The scarce SKU was never sold: out-of-stock orders reserve nothing of it.
    let (available, reserved) = app.inventory(simulate::SCARCE_SKU).await;
    assert_eq!((available, reserved), (1, 0));

    // The same seed plans the same orders again, on a shop that already has data.
    let again = simulate::run(args(&app, 30)).await.expect("the second run");
    assert_eq!(again.planned, report.planned);
    assert_eq!(again.outcomes, report.outcomes);
    assert!(again.errors.is_empty(), "errors: {:?}", again.errors);
    assert_eq!(
        count_orders(&app, "Delivered").await,
        2 * outcomes.confirmed
    );
}

#[test]
fn plans_depend_on_the_seed_and_the_order_number_only() {
    let mix: Mix = "happy=90,declined=5,outOfStock=5".parse().unwrap();
    for n in 0..50 {
        assert_eq!(
            simulate::plan(3, n, mix, 10, 20),
            simulate::plan(3, n, mix, 10, 20)
        );
    }
    let plans = |seed| {
        (0..50)
            .map(|n| simulate::plan(seed, n, mix, 10, 20))
            .collect::<Vec<_>>()
    };
    assert_ne!(plans(3), plans(4));
    assert!("happy=1,unknown=2".parse::<Mix>().is_err());
    assert!("happy=0".parse::<Mix>().is_err());
}

#[tokio::test]
async fn the_binary_prints_one_json_object_with_the_contract_fields() {
    let app = spawn_app().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cornershop"))
        .args([
            "simulate", "--target", &app.base, "--orders", "10", "--json",
        ])
        .env("CORNERSHOP_SIMULATE_SIGNING_KEY_FILE", app.signing_key())
        .kill_on_drop(true)
        .output()
        .await
        .expect("the cornershop binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "{}\n{stdout}{stderr}",
        output.status
    );

    // Exactly one JSON value on stdout, and it is an object.
    let mut values = serde_json::Deserializer::from_str(&stdout).into_iter::<Value>();
    let report = values.next().expect("a JSON object").expect("valid JSON");
    assert!(
        values.next().is_none(),
        "more than one JSON value: {stdout}"
    );
    assert!(report.is_object(), "{report}");

    assert_eq!(report["orders"], 10);
    assert!(
        report["ordersPerSecond"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["eventsPerSecond"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    for field in [
        "commandLatencyP50Ms",
        "commandLatencyP95Ms",
        "commandLatencyP99Ms",
        "checkoutToConfirmedP50Ms",
        "checkoutToConfirmedP99Ms",
    ] {
        assert!(report[field].is_number(), "{field} in {report}");
    }
    for field in ["p50", "p95", "p99"] {
        assert!(report["commandLatencyMs"][field].is_number(), "{report}");
    }
    assert!(report["checkoutToConfirmedMs"]["p50"].is_number());
    assert!(report["checkoutToConfirmedMs"]["p99"].is_number());
    assert!(report.get("projectionLagP99").is_some(), "{report}");
    let outcomes = &report["outcomes"];
    let resolved: u64 = ["confirmed", "declined", "outOfStock"]
        .iter()
        .map(|k| outcomes[k].as_u64().unwrap())
        .sum();
    assert_eq!(resolved, 10, "{report}");
}

#[tokio::test]
async fn an_unreachable_target_fails_with_a_clear_message() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("http://127.0.0.1:{port}");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cornershop"))
        .args(["simulate", "--target", &target, "--orders", "1"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("the cornershop binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("cannot reach the shop at {target}")),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
    assert!(output.stdout.is_empty());
}
