//! The projection rebuild: order histories written, scanned raw, then rebuilt into the
//! read models.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use cornershop_readmodels::testkit::{Generator, Line, OrderPlan, Outcome};
use cornershop_readmodels::{ReadModelStore, REPORTING};
use cornershop_store::{EventStore, PgEventStore, SqliteEventStore};
use rust_decimal::Decimal;
use serde_json::json;

use crate::cli::RebuildArgs;
use crate::scan::{raw_scan_postgres, raw_scan_sqlite, read_log_scan, report_scan};
use crate::{emit, round1, round3, Rng};

// ---------------------------------------------------------------- rebuild

/// The projection rebuild: writes `--orders` whole order histories (the read models'
/// test generator: the events the workflow writes, from the aggregates' own `decide`)
/// into a new store, then reads the log raw (the baseline), then rebuilds the
/// reporting-service read models from it (shadow tables, then the swap).
pub(crate) async fn rebuild(args: &RebuildArgs) -> anyhow::Result<()> {
    let orders = args.orders;
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let url = args.database_url.as_deref();
    let (store, read_models, backend): (Arc<dyn EventStore>, Arc<dyn ReadModelStore>, &str) =
        match url {
            Some(url) => (
                Arc::new(PgEventStore::connect(url).await?),
                Arc::new(cornershop_readmodels::connect_postgres(url).await?),
                "postgres",
            ),
            None => (
                Arc::new(SqliteEventStore::open(dir.path()).await?),
                Arc::new(cornershop_readmodels::open_sqlite(dir.path()).await?),
                "sqlite",
            ),
        };

    let started = Instant::now();
    let mut generator = Generator::new(store.clone());
    let at = Utc::now() - chrono::Duration::days(1);
    const SKUS: usize = 20;
    let price = |i: usize| Decimal::new(499 + 100 * i as i64, 2);
    for i in 0..SKUS {
        generator
            .stock(
                &format!("BENCH-{i:02}"),
                "Bench product",
                price(i),
                1_000_000_000,
                10,
                at,
            )
            .await?;
    }
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    for n in 0..orders {
        // One to three distinct products, one to three of each.
        let lines = (0..1 + rng.below(3))
            .map(|k| {
                let i = (n as usize + 7 * k) % SKUS;
                Line {
                    sku: format!("BENCH-{i:02}"),
                    name: "Bench product".to_string(),
                    quantity: 1 + rng.below(3) as u32,
                    unit_price: price(i),
                }
            })
            .collect();
        let outcome = match rng.below(20) {
            0 => Outcome::Declined,
            1 => Outcome::OutOfStock,
            2 => Outcome::Confirmed,
            3 => Outcome::Shipped,
            _ => Outcome::Delivered,
        };
        generator
            .order(&OrderPlan {
                order_id: format!("bench-order-{n:07}"),
                customer_id: format!("bench-customer-{}", n % 1000),
                lines,
                outcome,
                at: at + chrono::Duration::milliseconds(10 * n as i64),
                step: chrono::Duration::milliseconds(7),
            })
            .await?;
    }
    generator.flush().await?;
    emit(json!({
        "kind": "generate", "backend": backend, "orders": orders,
        "events": generator.events_written,
        "seconds": round3(started.elapsed().as_secs_f64()),
    }));

    let (events, bytes, seconds) = match url {
        Some(url) => raw_scan_postgres(url).await?,
        None => raw_scan_sqlite(dir.path()).await?,
    };
    report_scan(backend, "raw scan", events, bytes, seconds);
    let (events, seconds) = read_log_scan(store.as_ref()).await?;
    report_scan(backend, "read_log", events, 0, seconds);

    let started = Instant::now();
    let report = read_models
        .rebuild(REPORTING, store.as_ref(), &|_| {})
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    emit(json!({
        "kind": "rebuild", "backend": backend, "events": report.events_read,
        "applied": report.events_applied, "seconds": round3(seconds),
        "eventsPerSecond": round1(report.events_read as f64 / seconds),
    }));
    read_models.close().await;
    store.close().await;
    Ok(())
}
