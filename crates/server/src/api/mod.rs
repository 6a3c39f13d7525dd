//! The HTTP API: routes, shared state, and the OpenAPI document generated from the
//! handlers' annotations.

pub(crate) mod access;
mod carts;
mod contract;
pub(crate) mod customers;
mod deadletters;
pub(crate) mod error;
mod eventstore;
mod extract;
mod health;
mod inventory;
mod middleware;
mod notifications;
mod number;
mod orders;
mod reports;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use cornershop_app::{CommandBus, Reply};
use cornershop_messaging::ConsumerRegistry;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;

use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub bus: CommandBus,
    /// The payment gateway, which exchanges a checkout's token for a payment method.
    pub gateway: std::sync::Arc<dyn cornershop_services::PaymentGateway>,
    /// The consumers running in this process, for re-driving dead letters.
    pub registry: ConsumerRegistry,
    /// The reporting service's read models: what the queries read.
    pub read_models: std::sync::Arc<dyn cornershop_readmodels::ReadModelStore>,
    /// Which consumers and projections stand still behind the log head.
    pub stalls: std::sync::Arc<cornershop_messaging::StallWatch>,
    /// Checks the callers' tokens (see `auth` and `access`).
    pub auth: std::sync::Arc<crate::auth::Authenticator>,
    /// Where erasures are recorded apart from the store (`erasures`).
    pub erasures: std::sync::Arc<crate::erasures::ErasureLedger>,
    /// The operator's console (`console`): its Kafka view, history and running rebuilds.
    pub console: std::sync::Arc<crate::console::Console>,
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
        customers::export,
        customers::erase,
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
pub(crate) struct ApiDoc;

/// What one request may take of the server.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Larger bodies get 413.
    pub max_body_bytes: usize,
    /// A request still unanswered after this is abandoned and answered 503.
    pub request_timeout: Duration,
    /// Whether `/metrics` is served here (not when it has a listener of its own).
    pub metrics_here: bool,
}

/// The routes. A process without the api role serves only its health, its consumers'
/// checkpoints, dead letters and the notification log.
pub fn router(state: AppState, limits: RequestLimits, shop_api: bool) -> Router {
    let mut router = Router::new()
        .route("/api/deadletters", get(deadletters::list))
        .route("/api/deadletters/{id}/retry", post(deadletters::retry))
        .route("/api/consumers", get(deadletters::consumers))
        .route("/api/projections", get(reports::projections))
        .route("/api/notifications", get(notifications::list))
        .route("/api/openapi.json", get(openapi))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready));
    if limits.metrics_here {
        router = router.route("/metrics", get(crate::metrics::render));
    }
    if state.auth.local_issuer().is_some() {
        router = router
            .route("/.well-known/jwks.json", get(well_known_jwks))
            .route(
                "/.well-known/openid-configuration",
                get(well_known_configuration),
            );
    }
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
            .route(
                "/api/customers/{customer_id}/personal-data",
                get(customers::export).delete(customers::erase),
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
    // A rebuild takes as long as the log is long: it answers when it is done, without the
    // request deadline (it runs in a task of its own, which a deadline could not stop
    // anyway).
    let untimed = Router::new().route("/api/projections/{name}/rebuild", post(reports::rebuild));
    // Every route's caller is checked first (inside the deadline, so a slow identity
    // provider cannot hold a request past it).
    let guard = crate::auth::Guard {
        auth: state.auth.clone(),
    };
    let router = router.route_layer(axum::middleware::from_fn_with_state(
        guard.clone(),
        crate::auth::guard,
    ));
    let mut untimed = untimed.route_layer(axum::middleware::from_fn_with_state(
        guard,
        crate::auth::guard,
    ));
    // The console has a guard of its own (a session cookie, CSRF); its event streams stay
    // open, so they are untimed.
    let mut router = router;
    if shop_api {
        let (pages, streams) = crate::console::routes(&state);
        router = router.merge(pages);
        untimed = untimed.merge(streams);
    }
    common_layers(
        with_deadline(router, limits.request_timeout).merge(untimed),
        limits.max_body_bytes,
    )
    .with_state(state)
}

/// The routes of the separate metrics listener (`--metrics-listen`): the scrape and the
/// probes, all open.
pub(crate) fn metrics_router(state: AppState, limits: RequestLimits) -> Router {
    let routes = Router::new()
        .route("/metrics", get(crate::metrics::render))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready));
    with_layers(routes, limits).with_state(state)
}

/// Wraps routes in what every request goes through: the request deadline, and
/// [`common_layers`]. Public so that tests can put routes of their own (a panicking one,
/// a slow one) behind the same stack.
pub fn with_layers<S>(routes: Router<S>, limits: RequestLimits) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    common_layers(
        with_deadline(routes, limits.request_timeout),
        limits.max_body_bytes,
    )
}

/// A route still unanswered after `timeout` is abandoned (its future dropped) and
/// answered 503 problem+json.
fn with_deadline<S>(routes: Router<S>, timeout: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes
        .route_layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            timeout,
            middleware::timeout_problem,
        ))
}

/// Correlation ids and the access log, the body limit, problem+json for unknown routes
/// and methods, and per route the metrics (`track`) and a 500 problem+json for a panic.
fn common_layers<S>(routes: Router<S>, max_body_bytes: usize) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // Route layers run inside out: the last one added is the outermost. `track` sees the
    // answer of the deadline and of a caught panic, so both are counted.
    routes
        .route_layer(CatchPanicLayer::custom(middleware::panic_response))
        .route_layer(axum::middleware::from_fn(middleware::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(middleware::correlate))
}

/// The document utoipa derives, with the rules, statuses, headers and links the server
/// enforces written in (see `contract`).
async fn openapi() -> Json<&'static serde_json::Value> {
    Json(contract::document())
}

/// The embedded issuer's public keys.
async fn well_known_jwks(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let issuer = state
        .auth
        .local_issuer()
        .ok_or_else(|| ApiError::not_found("this shop does not issue tokens"))?;
    Ok(Json(issuer.jwks()))
}

/// The embedded issuer's discovery document, its `jwks_uri` on the host the client used.
async fn well_known_configuration(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let issuer = state
        .auth
        .local_issuer()
        .ok_or_else(|| ApiError::not_found("this shop does not issue tokens"))?;
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b))
        })
        .unwrap_or("localhost");
    Ok(Json(issuer.discovery(&format!("http://{host}"))))
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
