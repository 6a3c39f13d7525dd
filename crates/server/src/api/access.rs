//! Who may call which route: one table, read by the guard on every request
//! (`auth::guard`) and by the OpenAPI document (`contract`), so the two cannot disagree.
//! A route missing here is refused (fail closed).
//!
//! Roles include the ones below them (admin ⊃ staff ⊃ customer). What a customer may
//! reach on a `customer` route is narrowed further by the handler to its own carts,
//! orders and notifications (`Caller::may_act_for`): another's answer 404.

use axum::http::Method;

use crate::auth::{Access, Role};

use Access::{Needs, Open};
use Role::{Admin, Customer, Staff};

/// (method, route as the router names it, access).
pub(crate) const ROUTES: &[(&str, &str, Access)] = &[
    // Open: probes, scrapes, the API's description, the embedded issuer's keys.
    ("GET", "/health/live", Open),
    ("GET", "/health/ready", Open),
    ("GET", "/metrics", Open),
    ("GET", "/api/openapi.json", Open),
    ("GET", "/.well-known/jwks.json", Open),
    ("GET", "/.well-known/openid-configuration", Open),
    // A customer's own business (staff: anyone's).
    ("POST", "/api/carts", Needs(Customer)),
    ("GET", "/api/carts/{cart_id}", Needs(Customer)),
    ("POST", "/api/carts/{cart_id}/items", Needs(Customer)),
    (
        "DELETE",
        "/api/carts/{cart_id}/items/{sku}",
        Needs(Customer),
    ),
    ("POST", "/api/carts/{cart_id}/checkout", Needs(Customer)),
    ("GET", "/api/orders/{order_id}", Needs(Customer)),
    ("GET", "/api/orders/{order_id}/timeline", Needs(Customer)),
    ("POST", "/api/orders/{order_id}/cancel", Needs(Customer)),
    (
        "GET",
        "/api/customers/{customer_id}/orders",
        Needs(Customer),
    ),
    ("GET", "/api/notifications", Needs(Customer)),
    // A customer's personal data: the customer itself or an admin (the handler refuses
    // staff, and answers another customer 404).
    (
        "GET",
        "/api/customers/{customer_id}/personal-data",
        Needs(Customer),
    ),
    (
        "DELETE",
        "/api/customers/{customer_id}/personal-data",
        Needs(Customer),
    ),
    // The catalogue a customer shops from.
    ("GET", "/api/inventory/{sku}", Needs(Customer)),
    ("GET", "/api/inventory", Needs(Customer)),
    // The shop's staff.
    ("PUT", "/api/inventory/{sku}", Needs(Staff)),
    ("POST", "/api/orders/{order_id}/ship", Needs(Staff)),
    ("POST", "/api/orders/{order_id}/deliver", Needs(Staff)),
    ("GET", "/api/orders", Needs(Staff)),
    ("GET", "/api/reports/sales", Needs(Staff)),
    ("GET", "/api/deadletters", Needs(Staff)),
    // The operators.
    ("POST", "/api/deadletters/{id}/retry", Needs(Admin)),
    ("GET", "/api/consumers", Needs(Admin)),
    ("GET", "/api/projections", Needs(Admin)),
    ("POST", "/api/projections/{name}/rebuild", Needs(Admin)),
    (
        "GET",
        "/api/eventstore/replay/{aggregate_type}/{aggregate_id}",
        Needs(Admin),
    ),
    ("GET", "/api/eventstore/events", Needs(Admin)),
    ("GET", "/api/eventstore/stats", Needs(Admin)),
];

/// The access of a route, by its method and its router path (`/api/carts/{cart_id}`).
/// HEAD is GET's.
pub(crate) fn required(method: &Method, route: &str) -> Option<Access> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES
        .iter()
        .find(|(m, path, _)| *m == method && *path == route)
        .map(|(_, _, access)| *access)
}

/// Whether the route is in the table with some method.
pub(crate) fn is_listed(route: &str) -> bool {
    ROUTES.iter().any(|(_, path, _)| *path == route)
}

/// The same, for a path as the OpenAPI document spells it (`/api/carts/{cartId}`):
/// parameters compare by position, not name.
pub(crate) fn required_for_document(method: &str, path: &str) -> Option<Access> {
    let shape = |p: &str| {
        p.split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "{}"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    let wanted = shape(path);
    ROUTES
        .iter()
        .find(|(m, route, _)| m.eq_ignore_ascii_case(method) && shape(route) == wanted)
        .map(|(_, _, access)| *access)
}
