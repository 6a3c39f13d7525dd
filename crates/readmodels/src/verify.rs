//! Verification: every order's read model against the state replayed from its events
//! (the Order and Payment aggregates folded with the write side's own `evolve`, and the
//! events' timestamps), and every SKU's against its Inventory aggregate.

use std::collections::BTreeSet;
use std::time::Duration;

use cornershop_app::{AppError, CommandBus};
use cornershop_domain::ids::payment_id_for;
use cornershop_domain::{AggregateType, Inventory, OrderId, Payment};
use cornershop_store::{EventQuery, TimeRange};
use futures::StreamExt;
use serde::Serialize;

use crate::{two_places, InventoryReadModel, OrderReadModel, ReadModelError, ReadModelStore};

/// How many aggregates are checked at a time.
const CONCURRENCY: usize = 8;

/// The read model an order should have: replayed from its events (None: no such order).
pub(crate) async fn replay_order(
    bus: &CommandBus,
    order_id: &str,
) -> Result<Option<OrderReadModel>, AppError> {
    // An id that is not an order id names no order.
    let Ok(order_id) = OrderId::parse(order_id) else {
        return Ok(None);
    };
    let events = bus
        .store()
        .load_aggregate(AggregateType::Order, &order_id, TimeRange::default())
        .await?;
    if events.is_empty() {
        return Ok(None);
    }
    let payment = bus.load::<Payment>(&payment_id_for(&order_id)).await?;
    crate::order_view(&events, payment).map(Some)
}

/// The read model a SKU should have (None: no such product).
pub(crate) async fn replay_inventory(
    bus: &CommandBus,
    sku: &str,
) -> Result<Option<InventoryReadModel>, AppError> {
    let (stock, version) = bus.load::<Inventory>(sku).await?;
    if version == 0 || !stock.exists {
        return Ok(None);
    }
    let available = i64::from(stock.available);
    let threshold = i64::from(stock.low_stock_threshold);
    Ok(Some(InventoryReadModel {
        sku: stock.sku.to_string(),
        name: stock.name,
        unit_price: two_places(stock.unit_price),
        currency: stock
            .currency
            .map_or_else(String::new, |currency| currency.to_string()),
        available,
        reserved: i64::from(stock.reserved),
        low_stock_threshold: threshold,
        low_stock: available <= threshold,
    }))
}

/// One difference between a read model and the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mismatch {
    /// `order` or `inventory`.
    pub kind: String,
    pub id: String,
    /// What differs, field by field: `status: read model "Confirmed", events "Cancelled"`.
    pub problems: Vec<String>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.id, self.problems.join("; "))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub orders_checked: u64,
    pub skus_checked: u64,
    pub mismatches: Vec<Mismatch>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
}

/// The fields that differ, with both values.
fn differences<T: Serialize>(read_model: Option<&T>, replayed: Option<&T>) -> Vec<String> {
    match (read_model, replayed) {
        (None, None) => vec![],
        (None, Some(_)) => vec!["missing from the read models".to_string()],
        (Some(_), None) => vec!["in the read models, but not in the events".to_string()],
        (Some(a), Some(b)) => {
            let a = serde_json::to_value(a).expect("read models serialize");
            let b = serde_json::to_value(b).expect("read models serialize");
            let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
                return vec![];
            };
            a.keys()
                .chain(b.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .map(|k| {
                    format!(
                        "{k}: read model {}, events {}",
                        a.get(k).unwrap_or(&serde_json::Value::Null),
                        b.get(k).unwrap_or(&serde_json::Value::Null)
                    )
                })
                .collect()
        }
    }
}

async fn check_order(
    bus: &CommandBus,
    read_models: &dyn ReadModelStore,
    id: &str,
) -> Result<Option<Mismatch>, VerifyError> {
    let replayed = replay_order(bus, id).await?;
    let stored = read_models.order(id).await?;
    let problems = if stored.is_none() && replayed.is_none() {
        // The id came from a read-model row still waiting for its OrderCreated (a payment
        // event came first), but the events have no such order.
        vec!["the read models have a row for it, the events have no such order".to_string()]
    } else {
        differences(stored.as_ref(), replayed.as_ref())
    };
    Ok((!problems.is_empty()).then(|| Mismatch {
        kind: "order".into(),
        id: id.to_string(),
        problems,
    }))
}

async fn check_sku(
    bus: &CommandBus,
    stored: Option<&InventoryReadModel>,
    sku: &str,
) -> Result<Option<Mismatch>, VerifyError> {
    let replayed = replay_inventory(bus, sku).await?;
    let problems = differences(stored, replayed.as_ref());
    Ok((!problems.is_empty()).then(|| Mismatch {
        kind: "inventory".into(),
        id: sku.to_string(),
        problems,
    }))
}

/// The ids of every aggregate that has an event of `event_type`.
async fn ids_with(bus: &CommandBus, event_type: &str) -> Result<BTreeSet<String>, VerifyError> {
    let mut ids = BTreeSet::new();
    let mut after = 0;
    loop {
        let page = bus
            .store()
            .query(&EventQuery {
                event_type: Some(event_type.to_string()),
                after,
                limit: 1000,
                ..EventQuery::default()
            })
            .await
            .map_err(AppError::from)?;
        let Some(last) = page.last() else { break };
        after = last.position;
        ids.extend(page.into_iter().map(|e| e.envelope.aggregate_id));
    }
    Ok(ids)
}

/// Compares every order's and every SKU's read model with the events. A mismatch is
/// checked again `rechecks` times, `pause` apart, before it is reported, so that a
/// projection still catching up with the last events is not mistaken for a wrong one.
pub async fn verify(
    bus: &CommandBus,
    read_models: &dyn ReadModelStore,
    rechecks: u32,
    pause: Duration,
) -> Result<VerifyReport, VerifyError> {
    let mut orders = ids_with(bus, "OrderCreated").await?;
    let mut after: Option<String> = None;
    loop {
        let page = read_models.order_ids(after.as_deref(), 1000).await?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        orders.extend(page);
        after = Some(last);
    }
    let mut skus = ids_with(bus, "StockUpdated").await?;
    skus.extend(
        read_models
            .inventory(false)
            .await?
            .into_iter()
            .map(|s| s.sku),
    );

    let mut report = VerifyReport {
        orders_checked: orders.len() as u64,
        skus_checked: skus.len() as u64,
        mismatches: Vec::new(),
    };
    let mut order_ids: Vec<String> = orders.into_iter().collect();
    let mut sku_ids: Vec<String> = skus.into_iter().collect();
    for round in 0..=rechecks {
        if round > 0 {
            tokio::time::sleep(pause).await;
        }
        let mut mismatches = Vec::new();
        let results: Vec<_> = futures::stream::iter(order_ids.iter())
            .map(|id| check_order(bus, read_models, id))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for result in results {
            mismatches.extend(result?);
        }
        let stock = read_models.inventory(false).await?;
        for sku in &sku_ids {
            let stored = stock.iter().find(|s| &s.sku == sku);
            mismatches.extend(check_sku(bus, stored, sku).await?);
        }
        mismatches.sort_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
        order_ids = mismatches
            .iter()
            .filter(|m| m.kind == "order")
            .map(|m| m.id.clone())
            .collect();
        sku_ids = mismatches
            .iter()
            .filter(|m| m.kind == "inventory")
            .map(|m| m.id.clone())
            .collect();
        report.mismatches = mismatches;
        if report.mismatches.is_empty() {
            break;
        }
    }
    Ok(report)
}
