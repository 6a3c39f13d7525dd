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
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), &buckets)
                .expect("valid buckets")
                .install_recorder()
                .expect("the metrics recorder is installed once")
        })
        .clone()
}

pub async fn render() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
}

/// Keeps `event_store_size` (the number of stored events) current; several processes may
/// append to one store, so it is read from the store rather than counted locally.
pub async fn refresh_store_size(
    store: std::sync::Arc<dyn cornershop_store::EventStore>,
    every: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        if let Ok(stats) = store.stats().await {
            metrics::gauge!("event_store_size").set(stats.total_events as f64);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
}
