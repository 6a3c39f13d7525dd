use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, RETRY_AFTER_SECONDS};
use super::AppState;

/// How long readiness waits for the event store: a database that is away makes the
/// store's pool wait for a connection far longer than a probe should.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200)))]
pub(super) async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// The process can serve: its event store answers (within 2 s).
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200), (status = 503)))]
pub(super) async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let detail = match tokio::time::timeout(READY_TIMEOUT, state.bus.store().head_position()).await
    {
        // Reads work while writes are refused (a full disk): the process still serves,
        // and says why its writes fail.
        // A stalled consumer is reported too, but readiness stays about serving: it
        // answers 200, since this process can still take requests.
        Ok(Ok(head)) => {
            let mut body = json!({ "status": "ready", "headPosition": head });
            if let Some(why) = state.bus.store().write_refusal() {
                body["status"] = json!("degraded");
                body["writes"] = json!(format!("refused: {why}"));
            }
            let stalled = state.stalls.stalled();
            if !stalled.is_empty() {
                body["stalled"] = json!(stalled);
            }
            return Ok(Json(body));
        }
        Ok(Err(e)) => format!("the event store does not answer: {e}"),
        Err(_) => format!(
            "the event store did not answer within {}",
            humantime::format_duration(READY_TIMEOUT)
        ),
    };
    let mut problem = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", detail);
    problem.retry_after = Some(RETRY_AFTER_SECONDS);
    Err(problem)
}
