//! Replay: rebuild an aggregate's state from its events, as of any instant.

use chrono::{DateTime, Utc};
use cornershop_domain::{
    Aggregate, AggregateType, Cart, Customer, DomainError, Inventory, Order, Payment,
};
use cornershop_store::{StoredEvent, TimeRange};
use serde::Serialize;

use crate::{fold_stored, AppError, CommandBus};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replay {
    pub aggregate_type: AggregateType,
    pub aggregate_id: String,
    /// The version of the last event folded (0 when none was before `toDate`).
    pub version: u64,
    /// The state rebuilt by folding every event up to `toDate`.
    pub state: serde_json::Value,
    /// The events in [fromDate, toDate].
    pub events: Vec<StoredEvent>,
}

fn state_of<A: Aggregate>(events: &[StoredEvent]) -> Result<(serde_json::Value, u64), AppError> {
    let (state, version) = fold_stored::<A>(events)?;
    let state = serde_json::to_value(state).expect("aggregate states serialize");
    Ok((state, version))
}

impl CommandBus {
    /// Replays an aggregate up to `to` (default: now) and lists its events in
    /// [`from`, `to`]. An aggregate with no events at all is not found.
    pub async fn replay(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Replay, AppError> {
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(AppError::Invalid(format!(
                    "fromDate ({f}) is after toDate ({t})"
                )));
            }
        }
        let upto = TimeRange { from: None, to };
        let events = self
            .store()
            .load_aggregate(aggregate_type, aggregate_id, upto)
            .await?;
        if events.is_empty() {
            let any = self
                .store()
                .load_aggregate(aggregate_type, aggregate_id, TimeRange::default())
                .await?;
            if any.is_empty() {
                return Err(DomainError::NotFound {
                    aggregate: aggregate_type,
                    id: aggregate_id.to_string(),
                }
                .into());
            }
        }
        let (state, version) = match aggregate_type {
            AggregateType::Cart => state_of::<Cart>(&events)?,
            AggregateType::Order => state_of::<Order>(&events)?,
            AggregateType::Payment => state_of::<Payment>(&events)?,
            AggregateType::Inventory => state_of::<Inventory>(&events)?,
            AggregateType::Customer => state_of::<Customer>(&events)?,
        };
        let window = TimeRange { from, to };
        let events = events
            .into_iter()
            .filter(|e| window.contains(e.envelope.timestamp))
            .collect();
        Ok(Replay {
            aggregate_type,
            aggregate_id: aggregate_id.to_string(),
            version,
            state,
            events,
        })
    }
}
