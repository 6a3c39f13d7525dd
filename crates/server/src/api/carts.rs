use axum::extract::State;
use axum::Json;
use cornershop_app::{AppError, Reply};
use cornershop_domain::{Cart, CartCommand, CartStatus, Inventory, ShippingAddress};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;

use super::error::{ApiError, Problem};
use super::extract::{Command, Ctx, Path};
use super::{reply, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCart {
    /// Whose cart it is. A customer opens carts only for itself: this must be its token's
    /// `sub`, or absent (then it is taken from there).
    #[serde(default)]
    pub customer_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartCreatedResponse {
    pub cart_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddItem {
    pub sku: String,
    /// 1 to 999.
    #[serde(deserialize_with = "super::number::integer")]
    pub quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkout {
    /// A payment method token, e.g. `tok_visa`.
    pub payment_token: String,
    pub shipping_address: ShippingAddress,
    pub email: String,
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutAccepted {
    pub order_id: String,
    pub cart_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartLineView {
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    #[schema(value_type = String)]
    pub unit_price: Decimal,
    #[schema(value_type = String)]
    pub line_total: Decimal,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartView {
    pub cart_id: String,
    pub customer_id: String,
    /// Open, CheckedOut or Expired.
    pub status: String,
    pub items: Vec<CartLineView>,
    #[schema(value_type = String)]
    pub total_amount: Decimal,
    pub order_id: Option<String>,
    pub version: u64,
}

impl CartView {
    fn of(cart: &Cart, version: u64) -> Self {
        Self {
            cart_id: cart.cart_id.clone(),
            customer_id: cart.customer_id.clone(),
            status: format!("{:?}", cart.status),
            items: cart
                .items
                .iter()
                .map(|l| CartLineView {
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    // Saturates like the cart's total (see `Cart::evolve`): only a line
                    // priced by an unbounded older writer can overflow.
                    line_total: l.line_total().unwrap_or(Decimal::MAX),
                })
                .collect(),
            total_amount: cart.total_amount,
            order_id: cart.order_id.clone(),
            version,
        }
    }

    fn reply(cart: &Cart, version: u64) -> Reply {
        Reply {
            status: 200,
            body: serde_json::to_value(Self::of(cart, version)).expect("views serialize"),
        }
    }
}

/// Open a cart for a customer (CartCreated).
#[utoipa::path(post, path = "/api/carts", tag = "carts", request_body = CreateCart,
    responses(
        (status = 201, body = CartCreatedResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "a customer named another customer", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_cart(
    State(state): State<AppState>,
    caller: Caller,
    command: Command<CreateCart>,
) -> Result<axum::response::Response, ApiError> {
    let customer_id = command
        .body
        .customer_id
        .unwrap_or_else(|| caller.sub.clone());
    if !caller.may_act_for(&customer_id) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "a customer opens carts only for itself: leave customerId out, or give your own",
        ));
    }
    let cart_id = Uuid::new_v4().to_string();
    let create = CartCommand::Create {
        cart_id: cart_id.clone(),
        customer_id,
    };
    let result = state
        .bus
        .execute_idempotent::<Cart>(&cart_id, &create, &command.ctx, |_| Reply {
            status: 201,
            body: serde_json::json!({ "cartId": cart_id }),
        })
        .await?;
    Ok(reply(result))
}

#[utoipa::path(get, path = "/api/carts/{cartId}", tag = "carts",
    params(("cartId" = String, Path)),
    responses(
        (status = 200, body = CartView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_cart(
    State(state): State<AppState>,
    caller: Caller,
    Path(cart_id): Path<String>,
) -> Result<Json<CartView>, ApiError> {
    let (cart, version) = state.bus.load::<Cart>(&cart_id).await?;
    if cart.status == CartStatus::New || !caller.may_act_for(&cart.customer_id) {
        return Err(no_such_cart(&cart_id));
    }
    Ok(Json(CartView::of(&cart, version)))
}

/// Another customer's cart answers as one that does not exist: whether it does is none
/// of the caller's business.
fn no_such_cart(cart_id: &str) -> ApiError {
    ApiError::not_found(format!("cart '{cart_id}' does not exist"))
}

/// Add units of a product (ItemAddedToCart); the name and unit price come from the
/// inventory.
#[utoipa::path(post, path = "/api/carts/{cartId}/items", tag = "carts",
    params(("cartId" = String, Path)),
    request_body = AddItem,
    responses(
        (status = 200, body = CartView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown cart or SKU", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the cart is checked out or expired, or the line would hold more than 999 units", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn add_item(
    State(state): State<AppState>,
    Path(cart_id): Path<String>,
    command: Command<AddItem>,
) -> Result<axum::response::Response, ApiError> {
    let AddItem { sku, quantity } = command.body;
    let (product, version) = state.bus.load::<Inventory>(&sku).await?;
    if version == 0 {
        return Err(ApiError::not_found(format!(
            "no product with SKU '{sku}' exists; add it with PUT /api/inventory/{sku} first"
        )));
    }
    let add = CartCommand::AddItem {
        sku,
        name: product.name,
        unit_price: product.unit_price,
        quantity,
    };
    let result = state
        .bus
        .execute_idempotent::<Cart>(&cart_id, &add, &command.ctx, |done| {
            CartView::reply(&done.state, done.version)
        })
        .await
        .map_err(|e| unknown_cart(e, &cart_id))?;
    Ok(reply(result))
}

/// Remove a product's line (ItemRemovedFromCart).
#[utoipa::path(delete, path = "/api/carts/{cartId}/items/{sku}", tag = "carts",
    params(("cartId" = String, Path), ("sku" = String, Path)),
    responses(
        (status = 200, body = CartView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn remove_item(
    State(state): State<AppState>,
    Path((cart_id, sku)): Path<(String, String)>,
    Ctx(ctx): Ctx,
) -> Result<axum::response::Response, ApiError> {
    let remove = CartCommand::RemoveItem { sku };
    let result = state
        .bus
        .execute_idempotent::<Cart>(&cart_id, &remove, &ctx, |done| {
            CartView::reply(&done.state, done.version)
        })
        .await
        .map_err(|e| unknown_cart(e, &cart_id))?;
    Ok(reply(result))
}

/// Check the cart out (CartCheckedOut). The order workflow runs asynchronously from
/// here, so the answer is 202 with the new order's id.
#[utoipa::path(post, path = "/api/carts/{cartId}/checkout", tag = "carts",
    params(("cartId" = String, Path)),
    request_body = Checkout,
    responses(
        (status = 202, body = CheckoutAccepted),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the cart is empty, checked out or expired", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn checkout(
    State(state): State<AppState>,
    Path(cart_id): Path<String>,
    command: Command<Checkout>,
) -> Result<axum::response::Response, ApiError> {
    let body = command.body;
    let order_id = Uuid::new_v4().to_string();
    let checkout = CartCommand::Checkout {
        order_id: order_id.clone(),
        payment_token: body.payment_token,
        shipping_address: body.shipping_address,
        email: body.email,
        phone: body.phone,
    };
    let result = state
        .bus
        .execute_idempotent::<Cart>(&cart_id, &checkout, &command.ctx, |_| Reply {
            status: 202,
            body: serde_json::json!({ "orderId": order_id, "cartId": cart_id }),
        })
        .await
        .map_err(|e| unknown_cart(e, &cart_id))?;
    Ok(reply(result))
}

/// A cart that was never created has no id in its empty state; name the one asked for.
fn unknown_cart(error: AppError, cart_id: &str) -> ApiError {
    match error {
        AppError::Domain(cornershop_domain::DomainError::NotFound { .. }) => no_such_cart(cart_id),
        other => other.into(),
    }
}
