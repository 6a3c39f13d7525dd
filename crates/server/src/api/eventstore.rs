//! Read access to the event store itself: replay (and time travel), the global log, and
//! statistics.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use cornershop_app::replay::Replay;
use cornershop_domain::{AggregateType, DomainEvent};
use cornershop_store::{EventQuery, StoreStats, StoredEvent, TimeRange};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::extract::{Path, Query};
use super::AppState;
use crate::auth::Caller;

pub(super) const DEFAULT_PAGE: u32 = 100;
pub(super) const MAX_PAGE: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ReplayParams {
    /// Only list events at or after this instant (RFC 3339).
    pub from_date: Option<DateTime<Utc>>,
    /// Rebuild the state as it was at this instant (RFC 3339); default now.
    pub to_date: Option<DateTime<Utc>>,
}

/// The aggregate's state rebuilt from its events, as of `toDate`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReplayResponse {
    pub aggregate_type: AggregateType,
    pub aggregate_id: String,
    pub version: u64,
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
    pub events: Vec<StoredEvent>,
}

impl From<Replay> for ReplayResponse {
    fn from(r: Replay) -> Self {
        Self {
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            version: r.version,
            state: r.state,
            events: r.events,
        }
    }
}

fn aggregate_type(name: &str) -> Result<AggregateType, ApiError> {
    AggregateType::parse(name).ok_or_else(|| {
        ApiError::invalid(format!(
            "'{name}' is not an aggregate type; use one of Cart, Order, Payment, Inventory, Customer"
        ))
    })
}

/// Rebuild an aggregate's state by folding its events up to `toDate` with the same
/// `evolve` the write side uses, and list its events in [fromDate, toDate].
#[utoipa::path(get, path = "/api/eventstore/replay/{aggregateType}/{aggregateId}", tag = "eventstore",
    params(("aggregateType" = String, Path, description = "Cart, Order, Payment, Inventory or Customer"),
           ("aggregateId" = String, Path), ReplayParams),
    responses(
        (status = 200, body = ReplayResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id)): Path<(String, String)>,
    Query(params): Query<ReplayParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let kind = aggregate_type(&kind)?;
    let replay = state
        .bus
        .replay(kind, &id, params.from_date, params.to_date)
        .await?;
    super::customers::revealed(&state, &caller, &ReplayResponse::from(replay)).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct EventsParams {
    pub aggregate_type: Option<String>,
    pub event_type: Option<String>,
    /// Only the events of this business transaction (their `metadata.correlationId`).
    pub correlation_id: Option<String>,
    /// Only events at or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only events at or before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Only events after this global position (pass the previous page's `nextAfter`).
    pub after: Option<u64>,
    /// Page size, 1 to 1000; default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventsPage {
    pub events: Vec<StoredEvent>,
    /// The `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

/// Events of the global log in commit order, filtered and paged by position.
#[utoipa::path(get, path = "/api/eventstore/events", tag = "eventstore",
    params(EventsParams),
    responses(
        (status = 200, body = EventsPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<EventsParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}, got {limit}"
        )));
    }
    if let Some(t) = &params.event_type {
        if !DomainEvent::TYPES.contains(&t.as_str()) {
            return Err(ApiError::invalid(format!("'{t}' is not an event type")));
        }
    }
    let query = EventQuery {
        aggregate_type: params
            .aggregate_type
            .as_deref()
            .map(aggregate_type)
            .transpose()?,
        event_type: params.event_type,
        correlation_id: params.correlation_id,
        range: TimeRange {
            from: params.from,
            to: params.to,
        },
        after: params.after.unwrap_or(0),
        before: None,
        limit,
    };
    let events = state.bus.store().query(&query).await?;
    let next_after = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.position))
        .flatten();
    super::customers::revealed(&state, &caller, &EventsPage { events, next_after }).await
}

/// Totals by event type and aggregate type, and the first and last timestamps.
#[utoipa::path(get, path = "/api/eventstore/stats", tag = "eventstore",
    responses((status = 200, body = StoreStats)))]
pub(super) async fn stats(State(state): State<AppState>) -> Result<Json<StoreStats>, ApiError> {
    let stats = state.bus.store().stats().await?;
    Ok(Json(stats))
}
