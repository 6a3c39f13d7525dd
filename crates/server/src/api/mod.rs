//! The HTTP API: routes, shared state, and the OpenAPI document generated from the
//! handlers' annotations.

pub mod carts;
pub mod deadletters;
pub mod error;
pub mod eventstore;
pub mod extract;
pub mod health;
pub mod inventory;
pub mod middleware;
pub mod notifications;
pub mod orders;
pub mod reports;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use cornershop_app::{CommandBus, Reply};
use cornershop_messaging::ConsumerRegistry;
use utoipa::OpenApi;

use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub bus: CommandBus,
    /// The consumers running in this process, for re-driving dead letters.
    pub registry: ConsumerRegistry,
    /// The reporting service's read models: what the queries read.
    pub read_models: std::sync::Arc<dyn cornershop_readmodels::ReadModelStore>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CornerShop",
        description = "An event-sourced shop: carts, orders, payments and inventory."
    ),
    paths(
        inventory::put_stock,
        inventory::get_stock,
        carts::create_cart,
        carts::get_cart,
        carts::add_item,
        carts::remove_item,
        carts::checkout,
        orders::get_order,
        orders::list_orders,
        orders::customer_orders,
        reports::inventory,
        reports::sales,
        reports::projections,
        reports::rebuild,
        orders::timeline,
        orders::ship,
        orders::deliver,
        orders::cancel,
        deadletters::list,
        deadletters::retry,
        deadletters::consumers,
        notifications::list,
        eventstore::replay,
        eventstore::events,
        eventstore::stats,
        health::live,
        health::ready,
    ),
    components(schemas(error::Problem))
)]
pub struct ApiDoc;

/// The routes. A process without the api role serves only its health, its consumers'
/// checkpoints, dead letters and the notification log.
pub fn router(state: AppState, max_body_bytes: usize, shop_api: bool) -> Router {
    let mut router = Router::new()
        .route("/api/deadletters", get(deadletters::list))
        .route("/api/deadletters/{id}/retry", post(deadletters::retry))
        .route("/api/consumers", get(deadletters::consumers))
        .route("/api/projections", get(reports::projections))
        .route("/api/projections/{name}/rebuild", post(reports::rebuild))
        .route("/api/notifications", get(notifications::list))
        .route("/api/openapi.json", get(openapi))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(crate::metrics::render));
    if shop_api {
        router = router
            .route(
                "/api/inventory/{sku}",
                put(inventory::put_stock).get(inventory::get_stock),
            )
            .route("/api/carts", post(carts::create_cart))
            .route("/api/carts/{cart_id}", get(carts::get_cart))
            .route("/api/carts/{cart_id}/items", post(carts::add_item))
            .route(
                "/api/carts/{cart_id}/items/{sku}",
                delete(carts::remove_item),
            )
            .route("/api/carts/{cart_id}/checkout", post(carts::checkout))
            .route("/api/orders", get(orders::list_orders))
            .route("/api/orders/{order_id}", get(orders::get_order))
            .route(
                "/api/customers/{customer_id}/orders",
                get(orders::customer_orders),
            )
            .route("/api/inventory", get(reports::inventory))
            .route("/api/reports/sales", get(reports::sales))
            .route("/api/orders/{order_id}/timeline", get(orders::timeline))
            .route("/api/orders/{order_id}/ship", post(orders::ship))
            .route("/api/orders/{order_id}/deliver", post(orders::deliver))
            .route("/api/orders/{order_id}/cancel", post(orders::cancel))
            .route(
                "/api/eventstore/replay/{aggregate_type}/{aggregate_id}",
                get(eventstore::replay),
            )
            .route("/api/eventstore/events", get(eventstore::events))
            .route("/api/eventstore/stats", get(eventstore::stats));
    }
    router
        .route_layer(axum::middleware::from_fn(middleware::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(middleware::correlate))
        .with_state(state)
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /api/openapi.json for the API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not accept that method; see /api/openapi.json",
    )
}

/// A command's reply, as stored for idempotent repeats.
pub fn reply(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    (status, Json(reply.body)).into_response()
}
