use axum::extract::State;
use axum::Json;
use cornershop_app::Reply;
use cornershop_domain::money::{MAX_UNIT_PRICE, SHOP_CURRENCY};
use cornershop_domain::{Inventory, InventoryCommand, Money, Sku};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{Command, Path};
use super::{reply, AppState};

/// The product's details and the units available for sale.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct PutStock {
    pub name: String,
    /// At most 1000000.00, with at most two decimal places; a JSON string (`"9.99"`) or
    /// number, taken exactly as written.
    #[schema(value_type = String, example = "9.99")]
    #[serde(deserialize_with = "cornershop_domain::money::exact")]
    pub unit_price: Decimal,
    /// Units available for sale (reserved units are counted separately).
    #[serde(deserialize_with = "super::number::integer")]
    pub quantity: i64,
    /// A LowStockAlert is raised when available falls to or below this. Default 0.
    #[serde(default, deserialize_with = "super::number::integer")]
    pub low_stock_threshold: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct InventoryView {
    pub sku: String,
    pub name: String,
    #[schema(value_type = String, example = "9.99")]
    pub unit_price: Decimal,
    /// The ISO 4217 code of the unit price's currency (the shop's: GBP).
    #[schema(example = "GBP")]
    pub currency: String,
    pub available: u32,
    pub reserved: u32,
    pub low_stock_threshold: u32,
    pub version: u64,
}

impl InventoryView {
    fn of(state: &Inventory, version: u64) -> Self {
        Self {
            sku: state.sku.to_string(),
            name: state.name.clone(),
            unit_price: state.unit_price,
            currency: state
                .currency
                .map_or_else(String::new, |currency| currency.to_string()),
            available: state.available,
            reserved: state.reserved,
            low_stock_threshold: state.low_stock_threshold,
            version,
        }
    }
}

/// Set a product's stock (StockUpdated); a restock above the threshold re-arms the
/// low-stock alert. Setting what is already there changes nothing.
#[utoipa::path(put, path = "/api/inventory/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "Stock-keeping unit")),
    request_body = PutStock,
    responses(
        (status = 200, body = InventoryView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn put_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    command: Command<PutStock>,
) -> Result<axum::response::Response, ApiError> {
    let sku = Sku::parse(&sku)?;
    let body = command.body;
    let set = InventoryCommand::Set {
        sku: sku.clone(),
        name: body.name,
        unit_price: Money::parse("unitPrice", body.unit_price, MAX_UNIT_PRICE)?,
        // The shop sells in one currency; its prices are set in it.
        currency: SHOP_CURRENCY,
        quantity: body.quantity,
        low_stock_threshold: body.low_stock_threshold,
    };
    let result = state
        .bus
        .execute_idempotent::<Inventory>(&sku, &set, &command.ctx, |done| Reply {
            status: 200,
            body: serde_json::to_value(InventoryView::of(&done.state, done.version))
                .expect("views serialize"),
        })
        .await?;
    Ok(reply(result))
}

#[utoipa::path(get, path = "/api/inventory/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "Stock-keeping unit")),
    responses(
        (status = 200, body = InventoryView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn get_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<InventoryView>, ApiError> {
    let no_such_product = || ApiError::not_found(format!("no product with SKU '{sku}' exists"));
    // A path that is no SKU names no product.
    let parsed = Sku::parse(&sku).map_err(|_| no_such_product())?;
    let (inventory, version) = state.bus.load::<Inventory>(&parsed).await?;
    if version == 0 {
        return Err(no_such_product());
    }
    Ok(Json(InventoryView::of(&inventory, version)))
}
