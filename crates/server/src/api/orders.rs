//! Orders: read access (replayed from the order's events for now) and the commands a
//! person sends: ship, deliver, cancel. Every event of an order carries the checkout's
//! correlation id, also those caused by these requests.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use cornershop_app::{fold_stored, CommandContext, Reply};
use cornershop_domain::{AggregateType, Order, OrderCommand, Payment};
use cornershop_services::payment_id_for;
use cornershop_store::{StoredEvent, TimeRange};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::carts::CartLineView;
use super::error::{ApiError, Problem};
use super::extract::{Command, Ctx, Path};
use super::{reply, AppState};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub order_id: String,
    pub cart_id: String,
    pub customer_id: String,
    /// Created, Validated, Confirmed, Shipped, Delivered or Cancelled.
    pub status: String,
    #[schema(value_type = String)]
    pub total_amount: Decimal,
    pub items: Vec<CartLineView>,
    pub payment_id: Option<String>,
    pub payment_status: Option<String>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub cancel_reason: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub validated_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The checkout's correlation id, shared by every event of the order.
    pub correlation_id: String,
    pub version: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShipOrder {
    pub carrier: String,
    /// Generated when absent.
    #[serde(default)]
    pub tracking_number: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelOrder {
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub position: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_type: AggregateType,
    pub aggregate_id: String,
    pub version: u64,
    pub timestamp: DateTime<Utc>,
    /// The event (or request) that caused this event.
    pub causation_id: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub order_id: String,
    pub correlation_id: String,
    pub events: Vec<TimelineEntry>,
}

async fn load_order(
    state: &AppState,
    order_id: &str,
) -> Result<(Order, Vec<StoredEvent>), ApiError> {
    let events = state
        .bus
        .store()
        .load_aggregate(AggregateType::Order, order_id, TimeRange::default())
        .await
        .map_err(cornershop_app::AppError::from)?;
    if events.is_empty() {
        return Err(ApiError::not_found(format!(
            "order '{order_id}' does not exist (an order appears shortly after its checkout)"
        )));
    }
    let (order, _) = fold_stored::<Order>(&events)?;
    Ok((order, events))
}

fn when(events: &[StoredEvent], event_type: &str) -> Option<DateTime<Utc>> {
    events
        .iter()
        .find(|e| e.envelope.event_type == event_type)
        .map(|e| e.envelope.timestamp)
}

async fn view(state: &AppState, order_id: &str) -> Result<OrderView, ApiError> {
    let (order, events) = load_order(state, order_id).await?;
    let payment_id = payment_id_for(order_id);
    let (payment, payment_version) = state.bus.load::<Payment>(&payment_id).await?;
    let lines = order
        .items
        .iter()
        .map(|l| CartLineView {
            sku: l.sku.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price,
            line_total: l.line_total(),
        })
        .collect();
    Ok(OrderView {
        order_id: order.order_id.clone(),
        cart_id: order.cart_id.clone(),
        customer_id: order.customer_id.clone(),
        status: format!("{:?}", order.status),
        total_amount: order.total_amount,
        items: lines,
        payment_id: (payment_version > 0).then_some(payment_id),
        payment_status: (payment_version > 0).then(|| format!("{:?}", payment.status)),
        carrier: order.carrier.clone(),
        tracking_number: order.tracking_number.clone(),
        cancel_reason: order.cancel_reason.clone(),
        created_at: when(&events, "OrderCreated"),
        validated_at: when(&events, "OrderValidated"),
        confirmed_at: when(&events, "OrderConfirmed"),
        shipped_at: when(&events, "OrderShipped"),
        delivered_at: when(&events, "OrderDelivered"),
        cancelled_at: when(&events, "OrderCancelled"),
        correlation_id: events[0].envelope.metadata.correlation_id.clone(),
        version: events.last().map_or(0, |e| e.envelope.version),
    })
}

#[utoipa::path(get, path = "/api/orders/{orderId}", tag = "orders",
    params(("orderId" = String, Path)),
    responses(
        (status = 200, body = OrderView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_order(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(view(&state, &order_id).await?))
}

/// Every event of the order's business transaction (its correlation id) in causal order,
/// each with the id of what caused it.
#[utoipa::path(get, path = "/api/orders/{orderId}/timeline", tag = "orders",
    params(("orderId" = String, Path)),
    responses(
        (status = 200, body = Timeline),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn timeline(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Json<Timeline>, ApiError> {
    let (_, events) = load_order(&state, &order_id).await?;
    let correlation_id = events[0].envelope.metadata.correlation_id.clone();
    let all = state
        .bus
        .store()
        .events_by_correlation(&correlation_id)
        .await
        .map_err(cornershop_app::AppError::from)?;
    let events = all
        .into_iter()
        .map(|e| TimelineEntry {
            position: e.position,
            event_id: e.envelope.event_id,
            event_type: e.envelope.event_type,
            aggregate_type: e.envelope.aggregate_type,
            aggregate_id: e.envelope.aggregate_id,
            version: e.envelope.version,
            timestamp: e.envelope.timestamp,
            causation_id: e.envelope.metadata.causation_id,
            data: e.envelope.data,
        })
        .collect();
    Ok(Json(Timeline {
        order_id,
        correlation_id,
        events,
    }))
}

/// Runs an order command in the order's own business transaction.
async fn order_command(
    state: &AppState,
    order_id: &str,
    command: OrderCommand,
    mut ctx: CommandContext,
) -> Result<axum::response::Response, ApiError> {
    let (_, events) = load_order(state, order_id).await?;
    ctx.correlation_id = events[0].envelope.metadata.correlation_id.clone();
    state
        .bus
        .execute_idempotent::<Order>(order_id, &command, &ctx, |_| Reply {
            status: 200,
            body: serde_json::Value::Null,
        })
        .await?;
    Ok(reply(Reply {
        status: 200,
        body: serde_json::to_value(view(state, order_id).await?).expect("views serialize"),
    }))
}

/// Ship a confirmed order (OrderShipped). A tracking number is generated when none is given.
#[utoipa::path(post, path = "/api/orders/{orderId}/ship", tag = "orders",
    params(("orderId" = String, Path)),
    request_body = ShipOrder,
    responses(
        (status = 200, body = OrderView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the order is not confirmed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn ship(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    command: Command<ShipOrder>,
) -> Result<axum::response::Response, ApiError> {
    let tracking_number = command.body.tracking_number.unwrap_or_else(|| {
        format!(
            "CS{}",
            Uuid::new_v4().simple().to_string()[..12].to_uppercase()
        )
    });
    let ship = OrderCommand::Ship {
        carrier: command.body.carrier,
        tracking_number,
    };
    order_command(&state, &order_id, ship, command.ctx).await
}

/// Mark a shipped order delivered (OrderDelivered).
#[utoipa::path(post, path = "/api/orders/{orderId}/deliver", tag = "orders",
    params(("orderId" = String, Path)),
    responses(
        (status = 200, body = OrderView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the order is not shipped", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn deliver(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    Ctx(ctx): Ctx,
) -> Result<axum::response::Response, ApiError> {
    order_command(&state, &order_id, OrderCommand::Deliver, ctx).await
}

/// Cancel an order before it ships (OrderCancelled). Its stock is released and a
/// completed payment refunded (StockReleased, PaymentRefunded) by the services.
#[utoipa::path(post, path = "/api/orders/{orderId}/cancel", tag = "orders",
    params(("orderId" = String, Path)),
    request_body = CancelOrder,
    responses(
        (status = 200, body = OrderView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the order has shipped or is cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    command: Command<CancelOrder>,
) -> Result<axum::response::Response, ApiError> {
    let cancel = OrderCommand::Cancel {
        reason: command.body.reason,
    };
    order_command(&state, &order_id, cancel, command.ctx).await
}
