//! The read side (CQRS): the reporting service's read models, the projection that keeps
//! them, and the tools that rebuild and verify them.
//!
//! - [`OrderReadModel`] (one row per order, with the seed's fields), the customer order
//!   history (the same rows by customer), [`InventoryReadModel`] and the sales figures of
//!   [`SalesReport`], computed by SQL over the order rows.
//! - [`ReadModelStore`]: where they live, on the same backend family as the event store
//!   ([`open_sqlite`]: `readmodels.db` next to the event store's file; [`connect_postgres`]:
//!   the schema `readmodels` of the event store's database). Queries read only these tables,
//!   never the event store.
//! - [`projection::ReportingProjection`]: the consumer (group `reporting-service`). Each
//!   event's effect and the record that it was applied commit in one transaction of the
//!   read-model database, so a redelivered event changes nothing (exactly-once effect).
//!   Every effect commutes with the others: an order row is upserted with only the fields
//!   the event knows, and a status is taken from the event with the highest aggregate
//!   version, never from arrival order; so the models converge whatever the interleaving
//!   across Kafka topics (a payment event before its order's first event included).
//! - [`ReadModelStore::rebuild`]: builds shadow tables from the event store, then swaps them
//!   in within one transaction; queries keep answering from the old tables meanwhile.
//! - [`verify`]: compares every order's (and SKU's) read model with the state replayed from
//!   its events.

pub mod projection;
mod schema;
mod sql;
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod testkit;
pub mod verify;
mod view;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cornershop_domain::{AggregateType, DomainEvent, EventType};
use cornershop_store::{
    rusqlite_unavailability, sqlx_unavailability, EventLog, StoreError, StoredEvent, Unavailable,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use projection::ReportingProjection;
pub use sql::{connect_postgres, open_sqlite, SqlReadModels};
pub use view::order_view;

/// The reporting service's projection: its consumer group and its name in the API.
pub const REPORTING: &str = "reporting-service";

/// Every projection that can be rebuilt, by name.
pub const PROJECTIONS: [&str; 1] = [REPORTING];

/// Order statuses, as the order aggregate names them.
pub const ORDER_STATUSES: [&str; 6] = [
    "Created",
    "Validated",
    "Confirmed",
    "Shipped",
    "Delivered",
    "Cancelled",
];

/// The statuses whose orders count as sales (paid and not cancelled).
pub(crate) const SOLD_STATUSES: [&str; 3] = ["Confirmed", "Shipped", "Delivered"];

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    #[schema(value_type = String, example = "9.99")]
    pub unit_price: Decimal,
    #[schema(value_type = String, example = "19.98")]
    pub line_total: Decimal,
}

/// An order as the reporting service sees it: the seed's OrderReadModel, plus the cart,
/// the carrier, the cancellation and the milestones in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderReadModel {
    pub order_id: String,
    pub cart_id: String,
    pub customer_id: String,
    /// Created, Validated, Confirmed, Shipped, Delivered or Cancelled.
    pub status: String,
    #[schema(value_type = String, example = "36.00")]
    pub total_amount: Decimal,
    /// The ISO 4217 code of the total's and the lines' currency.
    #[schema(example = "GBP")]
    pub currency: String,
    pub items: Vec<OrderLine>,
    pub payment_id: Option<String>,
    /// Initiated, Authorized, Completed, Failed or Refunded; absent before the payment starts.
    pub payment_status: Option<String>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub validated_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The checkout's correlation id, shared by every event of the order.
    pub correlation_id: String,
    /// The order aggregate's version the model reflects.
    pub version: u64,
}

/// Stock of one SKU as the reporting service sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryReadModel {
    pub sku: String,
    pub name: String,
    #[schema(value_type = String, example = "9.99")]
    pub unit_price: Decimal,
    /// The ISO 4217 code of the unit price's currency.
    #[schema(example = "GBP")]
    pub currency: String,
    /// Units available for sale.
    pub available: i64,
    /// Units held by orders.
    pub reserved: i64,
    pub low_stock_threshold: i64,
    /// Whether available is at or below the threshold.
    pub low_stock: bool,
}

/// Which orders to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct OrderQuery {
    /// Any of these statuses (none: all).
    pub statuses: Vec<String>,
    pub customer_id: Option<String>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created at or before.
    pub to: Option<DateTime<Utc>>,
    pub min_total: Option<Decimal>,
    pub limit: u32,
    /// Only orders after this one in the order of the listing.
    pub after: Option<OrderCursor>,
}

/// A place in a listing: keyset pagination on (createdAt, orderId), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCursor {
    pub created_us: i64,
    pub order_id: String,
}

impl OrderCursor {
    /// An opaque token (hex of the key), so that clients do not build cursors themselves.
    pub fn encode(&self) -> String {
        format!("v1:{}:{}", self.created_us, self.order_id)
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn decode(token: &str) -> Option<Self> {
        if (token.len() & 1) == 1 || token.len() > 1024 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
            .collect();
        let text = String::from_utf8(bytes?).ok()?;
        let rest = text.strip_prefix("v1:")?;
        let (created, order_id) = rest.split_once(':')?;
        Some(Self {
            created_us: created.parse().ok()?,
            order_id: order_id.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    pub orders: Vec<OrderReadModel>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Hour,
    Day,
}

impl GroupBy {
    pub fn micros(self) -> i64 {
        match self {
            Self::Hour => 3_600_000_000,
            Self::Day => 86_400_000_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SalesQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub group_by: GroupBy,
    /// How many products in `topProducts`.
    pub top: u32,
}

/// The sales figures of a set of orders (by when they were created).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesFigures {
    /// Orders created.
    pub orders: u64,
    /// Orders sold: confirmed, shipped or delivered (paid and not cancelled).
    pub sold_orders: u64,
    /// The total of the sold orders.
    #[schema(value_type = String, example = "1234.50")]
    pub revenue: Decimal,
    /// Revenue per sold order (0.00 when none).
    #[schema(value_type = String, example = "41.15")]
    pub average_order_value: Decimal,
    pub cancelled_orders: u64,
    /// Cancelled orders / orders (0 when none).
    pub cancellation_rate: f64,
    /// Orders whose payment started.
    pub payments_attempted: u64,
    pub payments_failed: u64,
    /// Failed payments / payments attempted (0 when none).
    pub payment_failure_rate: f64,
}

impl SalesFigures {
    fn add(&mut self, other: &SalesFigures) {
        self.orders += other.orders;
        self.sold_orders += other.sold_orders;
        self.revenue += other.revenue;
        self.cancelled_orders += other.cancelled_orders;
        self.payments_attempted += other.payments_attempted;
        self.payments_failed += other.payments_failed;
    }

    /// Fills in the ratios from the counts.
    fn finish(mut self) -> Self {
        let ratio = |n: u64, d: u64| {
            if d == 0 {
                0.0
            } else {
                ((n as f64 / d as f64) * 10_000.0).round() / 10_000.0
            }
        };
        self.average_order_value = if self.sold_orders == 0 {
            Decimal::new(0, 2)
        } else {
            let mut v = (self.revenue / Decimal::from(self.sold_orders)).round_dp(2);
            v.rescale(2);
            v
        };
        self.cancellation_rate = ratio(self.cancelled_orders, self.orders);
        self.payment_failure_rate = ratio(self.payments_failed, self.payments_attempted);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesBucket {
    /// The start of the hour or day (UTC).
    pub start: DateTime<Utc>,
    #[serde(flatten)]
    pub figures: SalesFigures,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopProduct {
    pub sku: String,
    pub name: String,
    /// Units in sold orders.
    pub quantity: u64,
    #[schema(value_type = String, example = "99.90")]
    pub revenue: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesReport {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub group_by: GroupBy,
    pub totals: SalesFigures,
    /// Only the hours or days that had orders, oldest first.
    pub buckets: Vec<SalesBucket>,
    /// By units sold, then revenue.
    pub top_products: Vec<TopProduct>,
}

/// Where a projection stands, as recorded with its updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionState {
    pub name: String,
    /// The highest log position whose effect is committed in the read models.
    pub position: u64,
    pub events_applied: u64,
    pub updated_at: Option<DateTime<Utc>>,
    /// Incremented by every rebuild's swap.
    pub generation: u64,
    pub rebuilt_at: Option<DateTime<Utc>>,
    /// Why the last rebuild failed (with when), until one succeeds.
    pub rebuild_error: Option<String>,
}

/// Progress of a rebuild: the log position reached and the head when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    pub position: u64,
    pub head: u64,
    pub events: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildReport {
    pub name: String,
    /// Events read from the log.
    pub events_read: u64,
    /// Events that changed the read models.
    pub events_applied: u64,
    /// The log position the new read models reflect.
    pub position: u64,
    pub generation: u64,
    pub duration_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    #[error("read-model database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("read-model database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the read models are closed")]
    Closed,
    #[error("read-model migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("event {event_id} ({event_type}) cannot be projected: {reason}")]
    BadEvent {
        event_id: Uuid,
        event_type: String,
        reason: String,
    },
    #[error("stored read model is corrupt: {0}")]
    Corrupt(String),
    #[error("no projection named '{0}'; the projections are: reporting-service")]
    UnknownProjection(String),
    #[error("a rebuild of '{name}' is already running ({holder})")]
    RebuildRunning { name: String, holder: String },
    #[error("{0}")]
    RebuildFailed(String),
}

impl ReadModelError {
    /// Whether (and why) this error means that the read models' database (or the event
    /// store behind a rebuild) cannot take work now, as opposed to a bad event or a bug.
    pub fn unavailability(&self) -> Option<Unavailable> {
        match self {
            Self::Database(e) => sqlx_unavailability(e),
            Self::Sqlite(e) => rusqlite_unavailability(e),
            Self::Store(e) => e.unavailability(),
            Self::Closed => Some(Unavailable::Unreachable),
            _ => None,
        }
    }
}

/// An event ready to be projected: decoded, with what the envelope says about it.
#[derive(Debug, Clone)]
pub struct ProjectedEvent {
    pub event_id: Uuid,
    /// The global log position (0 when unknown).
    pub position: u64,
    /// The aggregate's version: orders the events of one aggregate whatever their arrival.
    pub version: u64,
    pub timestamp: DateTime<Utc>,
    pub correlation_id: String,
    pub event: DomainEvent,
}

/// Whether the reporting projection uses events of this type.
pub fn is_projected(event_type: &str) -> bool {
    EventType::parse(event_type).is_some_and(|t| {
        matches!(
            t.aggregate_type(),
            AggregateType::Order | AggregateType::Payment
        ) || matches!(
            t,
            EventType::StockUpdated
                | EventType::StockReserved
                | EventType::StockReleased
                | EventType::StockShipped
        )
    })
}

impl ProjectedEvent {
    pub fn from_stored(stored: &StoredEvent) -> Result<Self, ReadModelError> {
        let envelope = &stored.envelope;
        let event = envelope.decode().map_err(|e| ReadModelError::BadEvent {
            event_id: envelope.event_id,
            event_type: envelope.event_type.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            event_id: envelope.event_id,
            position: stored.position,
            version: envelope.version,
            timestamp: envelope.timestamp,
            correlation_id: envelope.metadata.correlation_id.clone(),
            event,
        })
    }
}

/// Money in cents (`None` for an amount that is not a whole number of cents or does not
/// fit: checked, never a panic).
pub(crate) use cornershop_domain::money::to_cents as cents;

pub(crate) fn money(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// An amount as the read models show it: two decimal places.
pub(crate) fn two_places(amount: Decimal) -> Decimal {
    let mut v = amount.round_dp(2);
    v.rescale(2);
    v
}

/// Lines as the read models show them.
pub(crate) fn lines_of(items: &[cornershop_domain::LineItem]) -> Vec<OrderLine> {
    items
        .iter()
        .map(|l| OrderLine {
            sku: l.sku.to_string(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: two_places(l.unit_price),
            line_total: two_places(l.line_total().unwrap_or(Decimal::MAX)),
        })
        .collect()
}

/// Where the read models live, and everything done with them.
#[async_trait]
pub trait ReadModelStore: Send + Sync + 'static {
    /// Applies one event to the live read models of `projection`, exactly once: the
    /// effect and the record of the event id commit together. Returns false (and changes
    /// nothing) when the event was applied before.
    async fn apply(&self, projection: &str, event: &ProjectedEvent)
        -> Result<bool, ReadModelError>;

    /// Applies several events in one transaction, each exactly once as
    /// [`apply`](Self::apply) would (whether each was applied now, in order); an error
    /// applies none of them. The live projection's way through a consumer's batch: one
    /// commit for the batch instead of one per event.
    async fn apply_all(
        &self,
        projection: &str,
        events: &[ProjectedEvent],
    ) -> Result<Vec<bool>, ReadModelError>;

    /// An order, once its OrderCreated has been projected.
    async fn order(&self, order_id: &str) -> Result<Option<OrderReadModel>, ReadModelError>;

    /// Orders, newest first, filtered and paged.
    async fn orders(&self, query: &OrderQuery) -> Result<OrderPage, ReadModelError>;

    /// Every order id with a row, including rows still waiting for their OrderCreated
    /// (ascending, after `after`).
    async fn order_ids(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, ReadModelError>;

    /// Stock per SKU (only those at or below their threshold when `low_stock_only`).
    /// How many orders are in each status (Created, Validated, ...), statuses without
    /// orders left out: the console's overview.
    async fn order_status_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, ReadModelError>;

    async fn inventory(
        &self,
        low_stock_only: bool,
    ) -> Result<Vec<InventoryReadModel>, ReadModelError>;

    async fn sales_report(&self, query: &SalesQuery) -> Result<SalesReport, ReadModelError>;

    async fn projection_state(&self, name: &str)
        -> Result<Option<ProjectionState>, ReadModelError>;

    /// Rebuilds a projection from the event store into shadow tables and swaps them in
    /// atomically; queries keep answering from the current tables until the swap.
    async fn rebuild(
        &self,
        name: &str,
        source: &dyn EventLog,
        progress: &(dyn Fn(RebuildProgress) + Send + Sync),
    ) -> Result<RebuildReport, ReadModelError>;

    async fn close(&self) {}
}
