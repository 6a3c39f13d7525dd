//! Orders: queries on the reporting service's read models (one order, a filtered and
//! paged listing, a customer's history; never the event store), and the commands a person
//! sends: ship, deliver, cancel. Every event of an order carries the checkout's correlation
//! id, also those caused by these requests.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use cornershop_app::{fold_stored, AppError, CommandContext, Reply};
use cornershop_domain::ids::payment_id_for;
use cornershop_domain::{AggregateType, DomainError, Order, OrderCommand, OrderId, Payment};
use cornershop_readmodels::order_view;
use cornershop_readmodels::{OrderCursor, OrderPage, OrderQuery, OrderReadModel, ORDER_STATUSES};
use cornershop_store::{StoredEvent, TimeRange};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;

use super::error::{ApiError, Problem};
use super::extract::{Command, Ctx, Path, Query};
use super::reports::{read_model_error, window};
use super::{reply, AppState};

/// Orders per page by default, and at most.
pub(super) const DEFAULT_ORDERS_PAGE: u32 = 50;
pub(super) const MAX_ORDERS_PAGE: u32 = 500;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ShipOrder {
    pub carrier: String,
    /// Generated when absent.
    #[serde(default)]
    pub tracking_number: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CancelOrder {
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct TimelineEntry {
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
pub(super) struct Timeline {
    pub order_id: String,
    pub correlation_id: String,
    pub events: Vec<TimelineEntry>,
}

async fn load_order(
    state: &AppState,
    caller: &Caller,
    order_id: &str,
) -> Result<(Order, Vec<StoredEvent>), ApiError> {
    let events = state
        .bus
        .store()
        .load_aggregate(AggregateType::Order, order_id, TimeRange::default())
        .await?;
    if events.is_empty() {
        return Err(no_such_order(order_id));
    }
    let (order, _) = fold_stored::<Order>(&events)?;
    if !caller.may_act_for(&order.customer_id) {
        return Err(no_such_order(order_id));
    }
    Ok((order, events))
}

/// Another customer's order answers exactly as one that does not exist.
fn no_such_order(order_id: &str) -> ApiError {
    ApiError::not_found(format!(
        "order '{order_id}' does not exist (an order appears shortly after its checkout)"
    ))
}

/// An order from the read models. It appears shortly after its checkout, and follows its
/// events within moments.
#[utoipa::path(get, path = "/api/orders/{orderId}", tag = "orders",
    params(("orderId" = String, Path)),
    responses(
        (status = 200, body = OrderReadModel),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(order_id): Path<String>,
) -> Result<Json<OrderReadModel>, ApiError> {
    match state
        .read_models
        .order(&order_id)
        .await
        .map_err(read_model_error)?
    {
        Some(order) if caller.may_act_for(&order.customer_id) => Ok(Json(order)),
        _ => Err(no_such_order(&order_id)),
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct OrderListParams {
    /// One status or several, comma-separated: Created, Validated, Confirmed, Shipped,
    /// Delivered, Cancelled.
    pub status: Option<String>,
    pub customer_id: Option<String>,
    /// Orders created at or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Orders created at or before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Orders whose total is at least this amount.
    #[param(value_type = Option<String>, example = "25.00")]
    #[serde(default, deserialize_with = "cornershop_domain::money::exact_option")]
    pub min_total: Option<Decimal>,
    /// Page size, 1 to 500; default 50.
    pub limit: Option<u32>,
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CustomerOrdersParams {
    /// One status or several, comma-separated.
    pub status: Option<String>,
    /// Page size, 1 to 500; default 50.
    pub limit: Option<u32>,
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
}

fn order_query(params: OrderListParams) -> Result<OrderQuery, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_ORDERS_PAGE);
    if !(1..=MAX_ORDERS_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_ORDERS_PAGE}, got {limit}"
        )));
    }
    let statuses: Vec<String> = match &params.status {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .map(|s| {
                ORDER_STATUSES
                    .iter()
                    .find(|known| known.eq_ignore_ascii_case(s))
                    .map(|known| known.to_string())
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "'{s}' is not an order status; use {}",
                            ORDER_STATUSES.join(", ")
                        ))
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    window(params.from, params.to)?;
    if let Some(min) = params.min_total {
        cornershop_domain::money::check_amount(
            "minTotal",
            min,
            cornershop_domain::money::MAX_AMOUNT,
        )
        .map_err(ApiError::invalid)?;
    }
    if let Some(customer) = &params.customer_id {
        if customer.trim().is_empty() {
            return Err(ApiError::invalid("customerId must not be empty"));
        }
    }
    let after = params
        .cursor
        .as_deref()
        .map(|token| {
            OrderCursor::decode(token).ok_or_else(|| {
                ApiError::invalid("cursor is not one this API gave out (pass nextCursor as it is)")
            })
        })
        .transpose()?;
    Ok(OrderQuery {
        statuses,
        customer_id: params.customer_id,
        from: params.from,
        to: params.to,
        min_total: params.min_total,
        limit,
        after,
    })
}

/// Orders from the read models, newest first, filtered; keyset pagination with an opaque
/// cursor (`nextCursor`), so that pages neither skip nor repeat orders.
#[utoipa::path(get, path = "/api/orders", tag = "orders",
    params(OrderListParams),
    responses(
        (status = 200, body = OrderPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn list_orders(
    State(state): State<AppState>,
    Query(params): Query<OrderListParams>,
) -> Result<Json<OrderPage>, ApiError> {
    let query = order_query(params)?;
    let page = state
        .read_models
        .orders(&query)
        .await
        .map_err(read_model_error)?;
    Ok(Json(page))
}

/// A customer's order history from the read models, newest first, paged like `/api/orders`.
#[utoipa::path(get, path = "/api/customers/{customerId}/orders", tag = "orders",
    params(("customerId" = String, Path), CustomerOrdersParams),
    responses(
        (status = 200, body = OrderPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "another customer (a customer sees only its own orders)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn customer_orders(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer_id): Path<String>,
    Query(params): Query<CustomerOrdersParams>,
) -> Result<Json<OrderPage>, ApiError> {
    if !caller.may_act_for(&customer_id) {
        return Err(ApiError::not_found(format!(
            "customer '{customer_id}' does not exist"
        )));
    }
    let query = order_query(OrderListParams {
        status: params.status,
        customer_id: Some(customer_id),
        limit: params.limit,
        cursor: params.cursor,
        ..OrderListParams::default()
    })?;
    let page = state
        .read_models
        .orders(&query)
        .await
        .map_err(read_model_error)?;
    Ok(Json(page))
}

/// Every event of the order's business transaction (its correlation id) in causal order,
/// each with the id of what caused it.
#[utoipa::path(get, path = "/api/orders/{orderId}/timeline", tag = "orders",
    params(("orderId" = String, Path)),
    responses(
        (status = 200, body = Timeline),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(order_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, events) = load_order(&state, &caller, &order_id).await?;
    let correlation_id = events[0].envelope.metadata.correlation_id.clone();
    let all = state
        .bus
        .store()
        .events_by_correlation(&correlation_id)
        .await?;
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
    let timeline = Timeline {
        order_id,
        correlation_id,
        events,
    };
    super::customers::revealed(&state, &caller, &timeline).await
}

/// Runs an order command in the order's own business transaction (the bus gives its
/// events the order's correlation and trace ids, and refuses another customer's order as
/// one that does not exist), and answers with the order as its stream now says, read once.
async fn order_command(
    state: &AppState,
    order_id: &str,
    command: OrderCommand,
    ctx: CommandContext,
) -> Result<axum::response::Response, ApiError> {
    // A path that is no order id names no order.
    let order_id = &OrderId::parse(order_id).map_err(|_| no_such_order(order_id))?;
    // Read before the command: shipping, delivering or cancelling never changes it.
    let payment = state.bus.load::<Payment>(&payment_id_for(order_id)).await?;
    let (executed, _) = state
        .bus
        .execute_streamed::<Order>(order_id, &command, &ctx.continuing(), |_| Reply {
            status: 200,
            body: serde_json::Value::Null,
        })
        .await
        .map_err(|e| match e {
            AppError::Domain(DomainError::NotFound { .. }) => no_such_order(order_id),
            other => other.into(),
        })?;
    let view = match executed {
        Some(executed) => order_view(&executed.stream, payment)?,
        // A repeated request (its Idempotency-Key answered): the order as it is now.
        None => {
            let stream = state
                .bus
                .store()
                .load_aggregate(AggregateType::Order, order_id, TimeRange::default())
                .await?;
            if stream.is_empty() {
                return Err(no_such_order(order_id));
            }
            order_view(&stream, payment)?
        }
    };
    Ok(reply(Reply {
        status: 200,
        body: serde_json::to_value(view).expect("views serialize"),
    }))
}

/// Ship a confirmed order (OrderShipped). A tracking number is generated when none is given.
#[utoipa::path(post, path = "/api/orders/{orderId}/ship", tag = "orders",
    params(("orderId" = String, Path)),
    request_body = ShipOrder,
    responses(
        (status = 200, body = OrderReadModel),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the order is not confirmed", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn ship(
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
        (status = 200, body = OrderReadModel),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the order is not shipped", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn deliver(
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
        (status = 200, body = OrderReadModel),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the order has shipped or is cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    command: Command<CancelOrder>,
) -> Result<axum::response::Response, ApiError> {
    let cancel = OrderCommand::Cancel {
        reason: command.body.reason,
    };
    order_command(&state, &order_id, cancel, command.ctx).await
}
