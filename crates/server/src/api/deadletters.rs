//! Dead letters: events a consumer gave up on, and re-driving them once the cause is fixed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cornershop_messaging::RedriveError;
use cornershop_store::{Checkpoint, DeadLetter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::extract::{Path, Query};
use super::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct DeadLetterParams {
    /// `pending` or `resolved`; all when absent.
    pub status: Option<String>,
}

#[utoipa::path(get, path = "/api/deadletters", tag = "deadletters", operation_id = "list_dead_letters",
    params(DeadLetterParams),
    responses((status = 200, body = [DeadLetter])))]
pub(super) async fn list(
    State(state): State<AppState>,
    Query(params): Query<DeadLetterParams>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    if let Some(status) = &params.status {
        if status != "pending" && status != "resolved" {
            return Err(ApiError::invalid(format!(
                "status must be 'pending' or 'resolved', got '{status}'"
            )));
        }
    }
    let letters = state
        .bus
        .store()
        .dead_letters(params.status.as_deref())
        .await?;
    Ok(Json(letters))
}

/// Run the event through its consumer once more. 200 with the resolved dead letter when
/// it succeeds; 409 with the new error when it fails again (the dead letter stays pending).
/// A failed notification (`notification-service:<channel>`) is queued to be sent again and
/// its dead letter resolved (200); should the send fail again, the dead letter is pending
/// once more.
#[utoipa::path(post, path = "/api/deadletters/{id}/retry", tag = "deadletters",
    params(("id" = u64, Path)),
    responses(
        (status = 200, body = DeadLetter),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<DeadLetter>, ApiError> {
    match state.registry.redrive(state.bus.store().as_ref(), id).await {
        Ok(letter) => Ok(Json(letter)),
        Err(e @ (RedriveError::NotFound(_) | RedriveError::EventMissing(_))) => {
            Err(ApiError::not_found(e.to_string()))
        }
        Err(e @ RedriveError::FailedAgain(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "retry-failed",
            e.to_string(),
        )),
        Err(e @ RedriveError::NoSuchConsumer { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "consumer-not-here",
            e.to_string(),
        )),
        Err(RedriveError::Store(e)) => Err(e.into()),
    }
}

/// A consumer's checkpoint, how far behind the log head it is, and whether it is stuck.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConsumerState {
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    /// Events in the log after the checkpoint.
    pub lag: u64,
    /// Behind the log head and not moving for `--stall-after`.
    pub stalled: bool,
}

/// Each consumer's checkpoint: how far it has processed the log, its lag, and whether it
/// is stalled.
#[utoipa::path(get, path = "/api/consumers", tag = "deadletters",
    responses((status = 200, body = [ConsumerState])))]
pub(super) async fn consumers(
    State(state): State<AppState>,
) -> Result<Json<Vec<ConsumerState>>, ApiError> {
    Ok(Json(consumer_states(&state).await?))
}

/// Every consumer with a checkpoint in the store, as [`ConsumerState`]s.
pub(super) async fn consumer_states(state: &AppState) -> Result<Vec<ConsumerState>, ApiError> {
    let store = state.bus.store();
    let head = store.head_position().await?;
    let checkpoints = store.checkpoints().await?;
    Ok(checkpoints
        .into_iter()
        .map(|checkpoint| ConsumerState {
            lag: head.saturating_sub(checkpoint.position),
            stalled: state
                .stalls
                .observe(&checkpoint.consumer, checkpoint.position, head),
            checkpoint,
        })
        .collect())
}
