//! Prometheus metrics: the `metrics` facade everywhere in the code, rendered in the
//! Prometheus text format at `GET /metrics` by every process.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide recorder once; later calls return the same handle (tests
/// build several applications in one process).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Latency histograms in seconds, from a millisecond to ten seconds.
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), &buckets)
                .expect("valid buckets")
                .install_recorder()
                .expect("the metrics recorder is installed once");
            start_counters_at_zero();
            handle
        })
        .clone()
}

/// Counters whose series would otherwise only appear with their first increment start at
/// 0: `rate()` and `increase()` then see that first increment (a series born at 1 counts
/// as no increase), and an error counter that never counted reads 0 rather than "no
/// data". Event types are a known set; the error counters' labels are not, so they start
/// as one series without labels.
fn start_counters_at_zero() {
    for event_type in cornershop_domain::DomainEvent::TYPES {
        metrics::counter!("events_stored_total", "event_type" => *event_type).increment(0);
    }
    for name in [
        "events_publish_errors_total",
        "events_consume_errors_total",
        "notification_send_errors_total",
        "dead_letters_total",
        "revenue_cents_total",
        "refunds_cents_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for status in cornershop_app::business_metrics::ORDER_STATUSES {
        metrics::counter!("orders_total", "status" => *status).increment(0);
    }
    for reason in crate::auth::Reason::ALL {
        metrics::counter!("auth_failures_total", "reason" => reason.as_str()).increment(0);
    }
}

pub async fn render() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
}

/// Keeps the gauges read from the store current: `event_store_size` (the number of stored
/// events) and `dead_letters_pending{consumer_group}` (dead letters not yet resolved by a
/// retry). Several processes share one store, so these are read from it rather than
/// counted locally (every process reports the same value: aggregate with `max`).
pub(crate) async fn refresh_store_size(
    store: std::sync::Arc<dyn cornershop_store::EventStore>,
    every: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // Groups reported before: a group whose dead letters were all resolved goes to 0.
    let mut groups = std::collections::BTreeSet::<String>::new();
    while !*shutdown.borrow() {
        if let Ok(stats) = store.stats().await {
            metrics::gauge!("event_store_size").set(stats.total_events as f64);
        }
        if let Ok(pending) = store.dead_letters(Some("pending")).await {
            let mut counts: std::collections::BTreeMap<String, u64> =
                groups.iter().map(|g| (g.clone(), 0)).collect();
            for letter in pending {
                *counts.entry(letter.consumer).or_default() += 1;
            }
            for (group, count) in &counts {
                metrics::gauge!("dead_letters_pending", "consumer_group" => group.clone())
                    .set(*count as f64);
            }
            groups = counts.into_keys().collect();
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
}

/// Looks at every consumer's checkpoint and every projection every few seconds, so that
/// the `consumer_stalled` gauge (and the alert on it) knows a stuck one even when nobody
/// asks the API.
pub(crate) async fn watch_stalls(
    store: std::sync::Arc<dyn cornershop_store::EventStore>,
    read_models: std::sync::Arc<dyn cornershop_readmodels::ReadModelStore>,
    stalls: std::sync::Arc<cornershop_messaging::StallWatch>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let every = (stalls.after() / 4).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(5),
    );
    while !*shutdown.borrow() {
        if let (Ok(head), Ok(checkpoints)) =
            (store.head_position().await, store.checkpoints().await)
        {
            for checkpoint in &checkpoints {
                stalls.observe(&checkpoint.consumer, checkpoint.position, head);
            }
        }
        // Observes each projection as a side effect.
        let _ = cornershop_readmodels::projection::status(
            read_models.as_ref(),
            store.as_ref(),
            &stalls,
        )
        .await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
}
