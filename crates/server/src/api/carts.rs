use axum::extract::State;
use axum::Json;
use cornershop_app::{AppError, Reply};
use cornershop_domain::money::MAX_UNIT_PRICE;
use cornershop_domain::{
    Cart, CartCommand, CartId, CartStatus, CountryCode, CustomerId, Email, Inventory, Money,
    OrderId, Phone, Quantity, Sku,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;

use super::error::{ApiError, Problem};
use super::extract::{Command, Ctx, Path};
use super::{reply, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CreateCart {
    /// Whose cart it is. A customer opens carts only for itself: this must be its token's
    /// `sub`, or absent (then it is taken from there).
    #[serde(default)]
    pub customer_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CartCreatedResponse {
    pub cart_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct AddItem {
    pub sku: String,
    /// 1 to 999.
    #[serde(deserialize_with = "super::number::integer")]
    pub quantity: i64,
}

/// Where the order ships. The country is an ISO 3166-1 alpha-2 code (`GB`, `US`; either
/// case), given as `countryCode` or as `country` (the field's first name, still taken),
/// or both when they agree.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ShippingAddress {
    pub name: String,
    pub line1: String,
    #[serde(default)]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// The country's ISO 3166-1 alpha-2 code (as `countryCode` says).
    #[serde(default)]
    pub country: Option<String>,
    /// The country's ISO 3166-1 alpha-2 code.
    #[serde(default)]
    pub country_code: Option<String>,
}

impl ShippingAddress {
    /// The address as the domain takes it: its country parsed from whichever field gave
    /// it (a 400 naming the field when it is no assigned code, or when the two disagree).
    fn parse(self) -> Result<cornershop_domain::ShippingAddress, ApiError> {
        let country_code = match (&self.country_code, &self.country) {
            (Some(code), country) => {
                let code = CountryCode::parse("shippingAddress.countryCode", code)?;
                if let Some(country) = country {
                    let same = CountryCode::parse("shippingAddress.country", country)?;
                    if same != code {
                        return Err(ApiError::invalid(format!(
                            "shippingAddress.country ({same}) and shippingAddress.countryCode \
                             ({code}) name different countries; give one of them"
                        )));
                    }
                }
                code
            }
            (None, Some(country)) => CountryCode::parse("shippingAddress.country", country)?,
            (None, None) => {
                return Err(ApiError::invalid(
                    "shippingAddress.countryCode is required: the country's ISO 3166-1 \
                     alpha-2 code, such as GB or US",
                ))
            }
        };
        Ok(cornershop_domain::ShippingAddress {
            name: self.name,
            line1: self.line1,
            line2: self.line2,
            city: self.city,
            postal_code: self.postal_code,
            country_code,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Checkout {
    /// A payment method token, e.g. `tok_visa`.
    pub payment_token: String,
    pub shipping_address: ShippingAddress,
    pub email: String,
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CheckoutAccepted {
    pub order_id: String,
    pub cart_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CartLineView {
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
pub(super) struct CartView {
    pub cart_id: String,
    pub customer_id: String,
    /// Open, CheckedOut or Expired.
    pub status: String,
    pub items: Vec<CartLineView>,
    #[schema(value_type = String)]
    pub total_amount: Decimal,
    /// The ISO 4217 code of the lines' and the total's currency; absent while the cart has
    /// no line.
    #[schema(example = "GBP")]
    pub currency: Option<String>,
    pub order_id: Option<String>,
    pub version: u64,
}

impl CartView {
    fn of(cart: &Cart, version: u64) -> Self {
        Self {
            cart_id: cart.cart_id.to_string(),
            customer_id: cart.customer_id.to_string(),
            status: format!("{:?}", cart.status),
            items: cart
                .items
                .iter()
                .map(|l| CartLineView {
                    sku: l.sku.to_string(),
                    name: l.name.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    // Saturates like the cart's total (see `Cart::evolve`): only a line
                    // priced by an unbounded older writer can overflow.
                    line_total: l.line_total().unwrap_or(Decimal::MAX),
                })
                .collect(),
            total_amount: cart.total_amount,
            currency: cart.currency.map(|currency| currency.to_string()),
            order_id: cart.order_id.as_ref().map(ToString::to_string),
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
pub(super) async fn create_cart(
    State(state): State<AppState>,
    caller: Caller,
    command: Command<CreateCart>,
) -> Result<axum::response::Response, ApiError> {
    let customer_id = CustomerId::parse(
        command
            .body
            .customer_id
            .as_deref()
            .unwrap_or(caller.sub.as_str()),
    )?;
    if !caller.may_act_for(&customer_id) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "a customer opens carts only for itself: leave customerId out, or give your own",
        ));
    }
    let cart_id = CartId::new_random();
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
pub(super) async fn get_cart(
    State(state): State<AppState>,
    caller: Caller,
    Path(cart_id): Path<String>,
) -> Result<Json<CartView>, ApiError> {
    let cart_id = path_cart_id(&cart_id)?;
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

/// The cart a URL names. A path that is no cart id names no cart: 404, as for an id that
/// parses but was never opened.
fn path_cart_id(raw: &str) -> Result<CartId, ApiError> {
    CartId::parse(raw).map_err(|_| no_such_cart(raw))
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
pub(super) async fn add_item(
    State(state): State<AppState>,
    Path(cart_id): Path<String>,
    command: Command<AddItem>,
) -> Result<axum::response::Response, ApiError> {
    let cart_id = path_cart_id(&cart_id)?;
    let AddItem { sku, quantity } = command.body;
    let sku = Sku::parse(&sku)?;
    let quantity = Quantity::parse(quantity)?;
    let (product, version) = state.bus.load::<Inventory>(&sku).await?;
    if version == 0 {
        return Err(ApiError::not_found(format!(
            "no product with SKU '{sku}' exists; add it with PUT /api/inventory/{sku} first"
        )));
    }
    // The inventory's price, as its events hold it: an older writer may have stored one
    // this shop no longer takes.
    let unit_price = Money::parse("unitPrice", product.unit_price, MAX_UNIT_PRICE)?;
    let currency = product.currency.ok_or_else(|| {
        ApiError::not_found(format!("the product with SKU '{sku}' has no price yet"))
    })?;
    let add = CartCommand::AddItem {
        sku,
        name: product.name,
        unit_price,
        currency,
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
pub(super) async fn remove_item(
    State(state): State<AppState>,
    Path((cart_id, sku)): Path<(String, String)>,
    Ctx(ctx): Ctx,
) -> Result<axum::response::Response, ApiError> {
    let cart_id = path_cart_id(&cart_id)?;
    // A path that is no SKU names no line of the cart.
    let sku = Sku::parse(&sku)
        .map_err(|_| ApiError::not_found(format!("item '{sku}' is not in cart '{cart_id}'")))?;
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
pub(super) async fn checkout(
    State(state): State<AppState>,
    Path(cart_id): Path<String>,
    command: Command<Checkout>,
) -> Result<axum::response::Response, ApiError> {
    let cart_id = path_cart_id(&cart_id)?;
    let body = command.body;
    let order_id = OrderId::new_random();
    // The token is the gateway's to keep: it is exchanged for a payment method here, once,
    // and only the method's reference is stored.
    cornershop_domain::values::required_text("paymentToken", &body.payment_token, 200)
        .map_err(ApiError::invalid)?;
    let payment_method = state
        .gateway
        .register_payment_method(body.payment_token.trim())
        .await
        .map_err(gateway_refusal)?;
    let checkout = CartCommand::Checkout {
        order_id: order_id.clone(),
        payment_method,
        shipping_address: body.shipping_address.parse()?,
        email: Email::parse(&body.email)?,
        phone: body.phone.as_deref().map(Phone::parse).transpose()?,
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

/// The gateway's answer to a token it will not take, or no answer.
fn gateway_refusal(error: cornershop_services::GatewayError) -> ApiError {
    match error {
        cornershop_services::GatewayError::Declined { code, message } => ApiError::new(
            axum::http::StatusCode::PAYMENT_REQUIRED,
            "payment-method-refused",
            format!("the payment token was refused ({code}): {message}"),
        ),
        cornershop_services::GatewayError::Unavailable(reason) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "payment-gateway-unavailable",
            format!("the payment gateway cannot take the token now ({reason}); try again"),
        ),
    }
}

/// A cart that was never created has no id in its empty state; name the one asked for.
fn unknown_cart(error: AppError, cart_id: &str) -> ApiError {
    match error {
        AppError::Domain(cornershop_domain::DomainError::NotFound { .. }) => no_such_cart(cart_id),
        other => other.into(),
    }
}
