use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200)))]
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// The process can serve: its event store answers.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200), (status = 503)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.bus.store().head_position().await {
        Ok(head) => Ok(Json(json!({ "status": "ready", "headPosition": head }))),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!("the event store does not answer: {e}"),
        )),
    }
}
