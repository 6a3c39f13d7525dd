//! The reporting service's projection: a consumer (group `reporting-service`) that keeps
//! the read models, and its status (checkpoint, lag behind the log head, last update).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_messaging::{Handler, HandlerError};
use cornershop_store::{EventStore, StoredEvent};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{is_projected, ProjectedEvent, ReadModelError, ReadModelStore, REPORTING};

/// Keeps the read models from the events of orders, payments and stock.
pub struct ReportingProjection {
    read_models: Arc<dyn ReadModelStore>,
    store: Arc<dyn EventStore>,
    /// The highest log position this process applied (for the lag gauge).
    seen: AtomicU64,
}

impl ReportingProjection {
    pub fn new(read_models: Arc<dyn ReadModelStore>, store: Arc<dyn EventStore>) -> Self {
        Self {
            read_models,
            store,
            seen: AtomicU64::new(0),
        }
    }
}

fn handler_error(e: ReadModelError) -> HandlerError {
    match e {
        ReadModelError::BadEvent { .. } | ReadModelError::Corrupt(_) => {
            HandlerError::Permanent(e.to_string())
        }
        _ if e.unavailability().is_some() => HandlerError::Unavailable(e.to_string()),
        _ => HandlerError::Transient(e.to_string()),
    }
}

#[async_trait]
impl Handler for ReportingProjection {
    fn name(&self) -> &'static str {
        REPORTING
    }

    fn handles(&self, event_type: &str) -> bool {
        is_projected(event_type)
    }

    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        let started = Instant::now();
        let projected = self.projected(event).await?;
        let applied = self
            .read_models
            .apply(REPORTING, &projected)
            .await
            .map_err(handler_error)?;
        self.count(&projected, applied, started.elapsed().as_secs_f64());
        self.seen(projected.position);
        Ok(())
    }

    fn batches(&self) -> bool {
        true
    }

    /// The batch in one read-model transaction (`ReadModelStore::apply_all`): one commit
    /// instead of one per event.
    async fn handle_batch(&self, events: &[&StoredEvent]) -> Result<(), HandlerError> {
        let started = Instant::now();
        let mut projected = Vec::with_capacity(events.len());
        for event in events {
            projected.push(self.projected(event).await?);
        }
        let applied = self
            .read_models
            .apply_all(REPORTING, &projected)
            .await
            .map_err(handler_error)?;
        // Each event's share of the batch's transaction.
        let share = started.elapsed().as_secs_f64() / projected.len().max(1) as f64;
        for (event, applied) in projected.iter().zip(applied) {
            self.count(event, applied, share);
        }
        self.seen(projected.iter().map(|e| e.position).max().unwrap_or(0));
        Ok(())
    }
}

impl ReportingProjection {
    /// The event as the read models take it.
    async fn projected(&self, event: &StoredEvent) -> Result<ProjectedEvent, HandlerError> {
        let mut projected = ProjectedEvent::from_stored(event).map_err(handler_error)?;
        if projected.position == 0 {
            // From Kafka, a message without the relay's position header (one published
            // before the header existed): the store knows the position (for the
            // projection's checkpoint and lag only; the effect does not need it).
            if let Some(stored) = self.store.find_event(projected.event_id).await? {
                projected.position = stored.position;
            }
        }
        Ok(projected)
    }

    /// The metrics of one event's update, `seconds` long.
    fn count(&self, event: &ProjectedEvent, applied: bool, seconds: f64) {
        let event_type = event.event.event_type().to_string();
        metrics::histogram!("read_model_update_duration_seconds", "projection" => REPORTING, "event_type" => event_type.clone())
            .record(seconds);
        if applied {
            metrics::counter!("read_models_updated_total", "projection" => REPORTING, "event_type" => event_type)
                .increment(1);
        } else {
            tracing::debug!(eventId = %event.event_id, "event already applied to the read models");
        }
    }

    /// Notes the highest log position applied so far, for the lag gauge.
    fn seen(&self, position: u64) {
        let seen = self
            .seen
            .fetch_max(position, Ordering::Relaxed)
            .max(position);
        let head = *self.store.watch_head().borrow();
        metrics::gauge!("projection_lag_events", "projection" => REPORTING)
            .set(head.saturating_sub(seen) as f64);
    }
}

/// A projection as `GET /api/projections` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionStatus {
    pub name: String,
    /// The log position up to which the read models are known to be current: the highest
    /// position applied, or the consumer's own checkpoint in the event store when higher
    /// (it also passes events the projection does not use).
    pub checkpoint: u64,
    /// The head of the event log.
    pub head: u64,
    /// Events in the log after the checkpoint.
    pub lag: u64,
    pub last_update: Option<DateTime<Utc>>,
    pub events_applied: u64,
    /// How many times the read models were built (1 + rebuilds).
    pub generation: u64,
    pub rebuilt_at: Option<DateTime<Utc>>,
    /// Why the last rebuild failed (with when), until a rebuild succeeds.
    pub last_rebuild_error: Option<String>,
    /// Behind the log head and not moving for `--stall-after`: stuck, not just busy.
    pub stalled: bool,
}

/// Where each projection stands; also sets the lag gauge.
pub async fn status(
    read_models: &dyn ReadModelStore,
    store: &dyn EventStore,
    stalls: &cornershop_messaging::StallWatch,
) -> Result<Vec<ProjectionStatus>, ReadModelError> {
    let head = store.head_position().await?;
    let mut all = Vec::new();
    for name in crate::PROJECTIONS {
        let Some(state) = read_models.projection_state(name).await? else {
            continue;
        };
        let transport = store.checkpoint(name).await?;
        let checkpoint = state.position.max(transport).min(head.max(state.position));
        let lag = head.saturating_sub(checkpoint);
        metrics::gauge!("projection_lag_events", "projection" => name).set(lag as f64);
        all.push(ProjectionStatus {
            name: name.to_string(),
            checkpoint,
            head,
            lag,
            last_update: state.updated_at,
            events_applied: state.events_applied,
            generation: state.generation,
            rebuilt_at: state.rebuilt_at,
            last_rebuild_error: state.rebuild_error,
            stalled: stalls.observe(name, checkpoint, head),
        });
    }
    Ok(all)
}
