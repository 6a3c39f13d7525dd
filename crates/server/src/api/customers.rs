//! A customer's personal data (GDPR articles 15, 17 and 20): what the shop holds about
//! them, exported decrypted; and its erasure, by destroying their data key
//! (crypto-shredding, see `cornershop_app::keyring`).
//!
//! Who: the customer itself or an admin. Staff run the shop without seeing personal data.
//!
//! Where the data is found: the customer's orders (the read models list them; each is
//! loaded from the event store, the source of truth, with its cart), and their
//! notifications.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use cornershop_app::Opened;
use cornershop_domain::{
    AggregateType, Cart, CustomerCommand, CustomerId, DomainEvent, Order, Personal, PersonalAddress,
};
use cornershop_readmodels::{OrderCursor, OrderQuery};
use cornershop_store::{NotificationQuery, StoredEvent, TimeRange};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{Ctx, Path};
use super::reports::read_model_error;
use super::AppState;
use crate::auth::{Caller, Role};

/// A page of the customer's orders read at a time.
const ORDERS_PAGE: u32 = 500;

/// Whether the caller may see this customer's personal data: the customer itself and
/// admins (staff may not).
pub(crate) fn may_see(caller: &Caller, customer_id: &str) -> bool {
    caller.has(Role::Admin) || caller.sub == customer_id
}

/// An answer as `caller` may see it: each sealed personal value inside opened for a
/// caller allowed to see that customer's data (see [`may_see`]), the erased marker where
/// the customer was erased, and left sealed otherwise.
pub(super) async fn revealed<T: Serialize>(
    state: &AppState,
    caller: &Caller,
    answer: &T,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut value = serde_json::to_value(answer).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the answer could not be written: {e}"),
        )
    })?;
    reveal_for(state, caller, &mut value).await?;
    Ok(Json(value))
}

/// Opens the sealed personal values inside `value` that `caller` may see (see
/// [`may_see`]), in place: what the API's answers and the console's pages show.
pub(crate) async fn reveal_for(
    state: &AppState,
    caller: &Caller,
    value: &mut serde_json::Value,
) -> Result<(), cornershop_app::KeyError> {
    state
        .bus
        .keyring()
        .reveal(value, &|customer| may_see(caller, customer))
        .await
}

/// A notification's personal text (recipient, body) as `caller` may see it: opened for
/// the customer and admins, `[erased]` after an erasure, `[sealed]` for anyone else.
pub(super) async fn revealed_text(
    state: &AppState,
    caller: &Caller,
    customer_id: &str,
    stored: &str,
) -> Result<String, ApiError> {
    let value = cornershop_services::notifications::stored_personal(stored);
    Ok(match state.bus.keyring().open_value(&value).await? {
        Opened::Erased => "[erased]".to_string(),
        Opened::Clear(clear) if may_see(caller, customer_id) => clear,
        Opened::Clear(_) => "[sealed]".to_string(),
    })
}

/// The customer of the path, for a caller allowed to see their data. Another customer
/// answers 404 (as everywhere: it cannot tell whether the customer exists); staff, 403.
fn customer_for(caller: &Caller, customer_id: &str) -> Result<CustomerId, ApiError> {
    let unknown = || ApiError::not_found(format!("customer '{customer_id}' does not exist"));
    let id = CustomerId::parse(customer_id).map_err(|_| unknown())?;
    if may_see(caller, customer_id) {
        return Ok(id);
    }
    if caller.has(Role::Staff) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a customer's personal data is for the customer and admins only",
        ));
    }
    Err(unknown())
}

/// A personal value as exported: its text, or `{"erased": true}` once the customer's data
/// was erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub(super) enum OpenedValue {
    Clear(String),
    Erased(ErasedMarker),
}

/// The marker of an erased value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub(super) struct ErasedMarker {
    /// Always true.
    pub erased: bool,
}

/// A shipping address, opened.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct AddressExport {
    pub name: OpenedValue,
    pub line1: OpenedValue,
    pub line2: Option<OpenedValue>,
    pub city: OpenedValue,
    pub postal_code: OpenedValue,
    /// The country's ISO 3166-1 alpha-2 code; for an order written before codes were
    /// checked whose country named none, the text as it was written.
    pub country: String,
    /// The country's ISO 3166-1 alpha-2 code; absent when an old order's country named
    /// none (then `country` holds what was written).
    pub country_code: Option<String>,
}

/// One order, with the personal data it holds.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct OrderExport {
    pub order_id: String,
    pub cart_id: String,
    pub status: String,
    pub created_at: Option<DateTime<Utc>>,
    #[schema(value_type = String, example = "36.00")]
    pub total_amount: rust_decimal::Decimal,
    /// The ISO 4217 code of the total's currency.
    #[schema(example = "GBP")]
    pub currency: Option<String>,
    pub email: OpenedValue,
    pub phone: Option<OpenedValue>,
    pub shipping_address: Option<AddressExport>,
    /// The gateway's reference of the payment method (the card token is not kept).
    pub payment_method: String,
}

/// One notification sent or to be sent to the customer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct NotificationExport {
    pub channel: String,
    pub template: String,
    pub order_id: String,
    pub recipient: OpenedValue,
    pub subject: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// What the shop holds about a customer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct PersonalDataExport {
    pub customer_id: String,
    /// Whether the customer's data was erased (their values then read `{"erased": true}`).
    pub erased: bool,
    pub erased_at: Option<DateTime<Utc>>,
    /// The id of the customer's data key (none before their first checkout).
    pub key_id: Option<String>,
    pub orders: Vec<OrderExport>,
    pub notifications: Vec<NotificationExport>,
}

/// An event an erasure could not shred: it holds the customer's data in clear (written
/// before sealing existed, schema version 1).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct UnshreddedEvent {
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub aggregate_type: AggregateType,
    pub aggregate_id: String,
    pub schema_version: u32,
}

/// The outcome of an erasure.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ErasureReport {
    pub customer_id: String,
    pub erased_at: DateTime<Utc>,
    /// The data keys destroyed (by this request or an earlier one).
    pub key_ids: Vec<String>,
    /// False when the customer had been erased before (nothing more was destroyed).
    pub destroyed_now: bool,
    /// Notifications that were still to be sent, cancelled.
    pub notifications_cancelled: u64,
    /// Stored events that hold this customer's data in clear and so could not be shredded.
    pub unshredded_events: Vec<UnshreddedEvent>,
    /// The CustomerDataErased event recorded (absent on a repeat).
    pub event_id: Option<uuid::Uuid>,
}

async fn opened(state: &AppState, value: &Personal) -> Result<OpenedValue, ApiError> {
    Ok(match state.bus.keyring().open_value(value).await? {
        Opened::Clear(clear) => OpenedValue::Clear(clear),
        Opened::Erased => OpenedValue::Erased(ErasedMarker { erased: true }),
    })
}

async fn opened_address(
    state: &AppState,
    address: &PersonalAddress,
) -> Result<AddressExport, ApiError> {
    Ok(AddressExport {
        name: opened(state, &address.name).await?,
        line1: opened(state, &address.line1).await?,
        line2: match &address.line2 {
            Some(line) => Some(opened(state, line).await?),
            None => None,
        },
        city: opened(state, &address.city).await?,
        postal_code: opened(state, &address.postal_code).await?,
        country: address
            .country_code
            .map(|code| code.to_string())
            .or_else(|| address.unrecognised_country.clone())
            .unwrap_or_default(),
        country_code: address.country_code.map(|code| code.to_string()),
    })
}

/// The ids of every order of the customer, from the read models, newest first.
async fn order_ids_of(state: &AppState, customer_id: &str) -> Result<Vec<String>, ApiError> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .read_models
            .orders(&OrderQuery {
                statuses: Vec::new(),
                customer_id: Some(customer_id.to_string()),
                from: None,
                to: None,
                min_total: None,
                limit: ORDERS_PAGE,
                after,
            })
            .await
            .map_err(read_model_error)?;
        let last = page.orders.last().map(|o| OrderCursor {
            created_us: o.created_at.timestamp_micros(),
            order_id: o.order_id.clone(),
        });
        ids.extend(page.orders.into_iter().map(|o| o.order_id));
        match (page.next_cursor, last) {
            (Some(_), Some(cursor)) => after = Some(cursor),
            _ => return Ok(ids),
        }
    }
}

/// An aggregate's stream.
async fn stream(
    state: &AppState,
    kind: AggregateType,
    id: &str,
) -> Result<Vec<StoredEvent>, ApiError> {
    Ok(state
        .bus
        .store()
        .load_aggregate(kind, id, TimeRange::default())
        .await?)
}

/// Events of `stream` that hold personal data in clear.
fn clear_events(stream: &[StoredEvent]) -> Vec<UnshreddedEvent> {
    stream
        .iter()
        .filter(|stored| {
            stored.envelope.decode().ok().is_some_and(|mut event| {
                event
                    .personal_data_mut()
                    .is_some_and(|data| data.values.iter().any(|v| v.is_clear()))
            })
        })
        .map(|stored| UnshreddedEvent {
            event_id: stored.envelope.event_id,
            event_type: stored.envelope.event_type.clone(),
            aggregate_type: stored.envelope.aggregate_type,
            aggregate_id: stored.envelope.aggregate_id.clone(),
            schema_version: stored.envelope.schema_version,
        })
        .collect()
}

/// Export what the shop holds about a customer, decrypted (data portability). The customer
/// itself or an admin.
#[utoipa::path(get, path = "/api/customers/{customerId}/personal-data", tag = "customers", operation_id = "export_personal_data",
    params(("customerId" = String, Path)),
    responses(
        (status = 200, body = PersonalDataExport),
        (status = 403, description = "staff may not see personal data", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "another customer", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer_id): Path<String>,
) -> Result<Json<PersonalDataExport>, ApiError> {
    let customer = customer_for(&caller, &customer_id)?;
    let key = state.bus.store().data_key_of(customer.as_str()).await?;
    let mut orders = Vec::new();
    for order_id in order_ids_of(&state, customer.as_str()).await? {
        let events = stream(&state, AggregateType::Order, &order_id).await?;
        let Some(first) = events.first() else {
            continue;
        };
        let (order, _) = cornershop_app::fold_stored::<Order>(&events)?;
        if order.customer_id != customer {
            continue;
        }
        orders.push(OrderExport {
            created_at: Some(first.envelope.timestamp),
            email: opened(&state, &order.email).await?,
            phone: match &order.phone {
                Some(phone) => Some(opened(&state, phone).await?),
                None => None,
            },
            shipping_address: match &order.shipping_address {
                Some(address) => Some(opened_address(&state, address).await?),
                None => None,
            },
            order_id: order.order_id.to_string(),
            cart_id: order.cart_id.to_string(),
            status: format!("{:?}", order.status),
            total_amount: order.total_amount,
            currency: order.currency.map(|currency| currency.to_string()),
            payment_method: order.payment_method.clone(),
        });
    }
    let mut notifications = Vec::new();
    let listed = state
        .bus
        .store()
        .notifications(&NotificationQuery {
            customer_id: Some(customer.to_string()),
            limit: 1000,
            ..NotificationQuery::default()
        })
        .await?;
    for n in listed {
        let recipient = cornershop_services::notifications::stored_personal(&n.recipient);
        notifications.push(NotificationExport {
            recipient: opened(&state, &recipient).await?,
            channel: n.channel,
            template: n.template,
            order_id: n.order_id,
            subject: n.subject,
            status: n.status,
            created_at: n.created_at,
        });
    }
    Ok(Json(PersonalDataExport {
        customer_id: customer.to_string(),
        erased: key.as_ref().is_some_and(|k| k.wrapped.is_none()),
        erased_at: key.as_ref().and_then(|k| k.erased_at),
        key_id: key.map(|k| k.key_id),
        orders,
        notifications,
    }))
}

/// Erase a customer's personal data (right to erasure): their data key is destroyed, so
/// every sealed copy of their data, in the store, on Kafka, in dead letters and backups,
/// can no longer be read; their notifications still to be sent are cancelled; a
/// `CustomerDataErased` event records it. Orders, totals and reports stay. Repeating it is
/// harmless. The customer itself or an admin.
#[utoipa::path(delete, path = "/api/customers/{customerId}/personal-data", tag = "customers", operation_id = "erase_personal_data",
    params(("customerId" = String, Path)),
    responses(
        (status = 200, body = ErasureReport),
        (status = 403, description = "staff may not erase personal data", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "another customer", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer_id): Path<String>,
    Ctx(ctx): Ctx,
) -> Result<Json<ErasureReport>, ApiError> {
    let customer = customer_for(&caller, &customer_id)?;
    // What cannot be shredded is found first: the customer's orders and their carts.
    let mut unshredded = Vec::new();
    for order_id in order_ids_of(&state, customer.as_str()).await? {
        let order_events = stream(&state, AggregateType::Order, &order_id).await?;
        let cart_id = order_events
            .iter()
            .find_map(|stored| match stored.envelope.decode() {
                Ok(DomainEvent::OrderCreated(created)) if created.customer_id == customer => {
                    Some(created.cart_id.to_string())
                }
                _ => None,
            });
        let Some(cart_id) = cart_id else {
            continue;
        };
        unshredded.extend(clear_events(&order_events));
        let cart_events = stream(&state, AggregateType::Cart, &cart_id).await?;
        if cornershop_app::fold_stored::<Cart>(&cart_events)
            .is_ok_and(|(cart, _)| cart.customer_id == customer)
        {
            unshredded.extend(clear_events(&cart_events));
        }
    }
    let erasure = state.bus.keyring().erase(customer.as_str()).await?;
    let record = CustomerCommand::RecordErasure {
        customer_id: customer.clone(),
        key_ids: vec![erasure.key.key_id.clone()],
        unshredded_event_ids: unshredded.iter().map(|e| e.event_id).collect(),
    };
    let recorded = state
        .bus
        .execute::<cornershop_domain::Customer>(customer.as_str(), &record, &ctx)
        .await?;
    // Recorded apart from the store before it is answered, so that a restore of an
    // older backup erases the customer again (`erasures`).
    let erased_at = erasure.key.erased_at.unwrap_or_else(Utc::now);
    let entry = crate::erasures::ErasureEntry {
        customer_id: customer.to_string(),
        erased_at,
    };
    if let Err(e) = state.erasures.record(&entry).await {
        tracing::error!(
            error = %e,
            ledger = %state.erasures.path().display(),
            "cannot record an erasure in the erasure ledger"
        );
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "the personal data was erased, but the erasure could not be recorded in the \
             erasure ledger that restores read; repeat the request (a repeat is harmless)",
        ));
    }
    tracing::info!(
        customerId = %customer,
        keyId = %erasure.key.key_id,
        destroyedNow = erasure.destroyed_now,
        notificationsCancelled = erasure.notifications_cancelled,
        unshredded = unshredded.len(),
        "customer's personal data erased"
    );
    Ok(Json(ErasureReport {
        customer_id: customer.to_string(),
        erased_at,
        key_ids: vec![erasure.key.key_id],
        destroyed_now: erasure.destroyed_now,
        notifications_cancelled: erasure.notifications_cancelled,
        unshredded_events: unshredded,
        event_id: recorded.events.first().map(|e| e.envelope.event_id),
    }))
}
