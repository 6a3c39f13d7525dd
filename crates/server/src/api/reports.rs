//! The reporting service's queries (read models only, never the event store): stock,
//! sales figures; and the projections' status and rebuild.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use cornershop_readmodels::projection::{self, ProjectionStatus};
use cornershop_readmodels::{
    GroupBy, InventoryReadModel, ReadModelError, RebuildReport, SalesQuery, SalesReport,
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, Problem};
use super::extract::{Path, Query};
use super::AppState;

/// A read-model failure as a problem.
pub(super) fn read_model_error(error: ReadModelError) -> ApiError {
    match error {
        ReadModelError::UnknownProjection(_) => ApiError::not_found(error.to_string()),
        ReadModelError::RebuildRunning { .. } => {
            ApiError::new(StatusCode::CONFLICT, "rebuild-running", error.to_string())
        }
        ReadModelError::RebuildFailed(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rebuild-failed",
            format!(
                "{error}; the rebuild's lease is released, so it can be started again \
                 (GET /api/projections shows the failure until a rebuild succeeds)"
            ),
        ),
        _ if error.unavailability().is_some() => {
            ApiError::unavailable(error.unavailability(), &error)
        }
        _ => {
            tracing::error!(error = %error, "read-model request failed inside the server");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server could not complete the request; it has been logged",
            )
        }
    }
}

/// Checks an optional time window.
pub(super) fn window(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<(), ApiError> {
    match (from, to) {
        (Some(f), Some(t)) if f > t => {
            Err(ApiError::invalid(format!("from ({f}) is after to ({t})")))
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct InventoryParams {
    /// Only SKUs whose available units are at or below their low-stock threshold.
    pub low_stock: Option<bool>,
}

/// Stock per SKU from the read models: available, reserved, and the low-stock flag.
#[utoipa::path(get, path = "/api/inventory", tag = "reports",
    params(InventoryParams),
    responses(
        (status = 200, body = [InventoryReadModel]),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn inventory(
    State(state): State<AppState>,
    Query(params): Query<InventoryParams>,
) -> Result<Json<Vec<InventoryReadModel>>, ApiError> {
    let stock = state
        .read_models
        .inventory(params.low_stock.unwrap_or(false))
        .await
        .map_err(read_model_error)?;
    Ok(Json(stock))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SalesParams {
    /// Orders created at or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Orders created at or before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// `hour` or `day` (UTC); default `day`.
    pub group_by: Option<String>,
    /// How many top products, 1 to 100; default 5.
    pub top: Option<u32>,
}

/// Sales figures of the orders created in [from, to], in total and per hour or day:
/// orders, revenue (the totals of confirmed, shipped and delivered orders), average order
/// value, cancellation rate, payment failure rate, and the top products by units sold.
#[utoipa::path(get, path = "/api/reports/sales", tag = "reports",
    params(SalesParams),
    responses(
        (status = 200, body = SalesReport),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn sales(
    State(state): State<AppState>,
    Query(params): Query<SalesParams>,
) -> Result<Json<SalesReport>, ApiError> {
    window(params.from, params.to)?;
    let group_by = match params.group_by.as_deref() {
        None | Some("day") => GroupBy::Day,
        Some("hour") => GroupBy::Hour,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "groupBy must be 'hour' or 'day', got '{other}'"
            )))
        }
    };
    let top = params.top.unwrap_or(5);
    if !(1..=100).contains(&top) {
        return Err(ApiError::invalid(format!(
            "top must be between 1 and 100, got {top}"
        )));
    }
    let report = state
        .read_models
        .sales_report(&SalesQuery {
            from: params.from,
            to: params.to,
            group_by,
            top,
        })
        .await
        .map_err(read_model_error)?;
    Ok(Json(report))
}

/// Each projection: its checkpoint, its lag behind the head of the event log, and when it
/// last changed the read models.
#[utoipa::path(get, path = "/api/projections", tag = "reports",
    responses((status = 200, body = [ProjectionStatus])))]
pub(super) async fn projections(
    State(state): State<AppState>,
) -> Result<Json<Vec<ProjectionStatus>>, ApiError> {
    let all = projection::status(
        state.read_models.as_ref(),
        state.bus.store().as_ref(),
        &state.stalls,
    )
    .await
    .map_err(read_model_error)?;
    Ok(Json(all))
}

/// Rebuild a projection from the event store: shadow tables are filled from the log and
/// swapped in atomically; queries keep answering from the current read models meanwhile.
/// Answers when the swap is done (this route has no request deadline: a rebuild takes as
/// long as the log is long); a client that hangs up does not stop it.
#[utoipa::path(post, path = "/api/projections/{name}/rebuild", tag = "reports",
    params(("name" = String, Path, description = "reporting-service")),
    responses(
        (status = 200, body = RebuildReport),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "a rebuild is running", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn rebuild(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RebuildReport>, ApiError> {
    tracing::info!(projection = %name, "rebuild requested");
    // A task of its own: a client that hangs up does not stop a rebuild halfway.
    let (read_models, store, projection) = (
        state.read_models.clone(),
        state.bus.store().clone(),
        name.clone(),
    );
    let report = tokio::spawn(async move {
        read_models
            .rebuild(&projection, store.as_ref(), &|_| {})
            .await
    })
    .await
    .map_err(|e| {
        tracing::error!(projection = %name, error = %e, "the rebuild task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not complete the request; it has been logged",
        )
    })?
    .map_err(read_model_error)?;
    tracing::info!(projection = %name, events = report.events_read, position = report.position, generation = report.generation, "rebuild swapped in");
    Ok(Json(report))
}
