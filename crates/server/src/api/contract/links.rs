//! The links between operations (create a cart -> add an item -> check out -> the order),
//! so that a client, or a fuzzer, can follow a cart to its order.

use serde_json::{json, Map, Value};

use super::*;

// ---- Links -----------------------------------------------------------------------------

/// `(from operation, its status, link name, to operation, parameters)`, the parameters
/// as runtime expressions on the answer.
pub(super) type Link = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

pub(super) const CART_OF_ANSWER: &[(&str, &str)] = &[("cartId", "$response.body#/cartId")];
pub(super) const ORDER_OF_ANSWER: &[(&str, &str)] = &[("orderId", "$response.body#/orderId")];

pub(super) const LINKS: &[Link] = &[
    // A product, and the cart that buys it.
    (
        "put_stock",
        "200",
        "GetStock",
        "get_stock",
        &[("sku", "$response.body#/sku")],
    ),
    (
        "inventory",
        "200",
        "GetStock",
        "get_stock",
        &[("sku", "$response.body#/0/sku")],
    ),
    ("create_cart", "201", "GetCart", "get_cart", CART_OF_ANSWER),
    ("create_cart", "201", "AddItem", "add_item", CART_OF_ANSWER),
    ("create_cart", "201", "Checkout", "checkout", CART_OF_ANSWER),
    ("get_cart", "200", "AddItem", "add_item", CART_OF_ANSWER),
    ("get_cart", "200", "Checkout", "checkout", CART_OF_ANSWER),
    ("add_item", "200", "GetCart", "get_cart", CART_OF_ANSWER),
    ("add_item", "200", "AddItem", "add_item", CART_OF_ANSWER),
    (
        "add_item",
        "200",
        "RemoveItem",
        "remove_item",
        &[
            ("cartId", "$response.body#/cartId"),
            ("sku", "$response.body#/items/0/sku"),
        ],
    ),
    ("add_item", "200", "Checkout", "checkout", CART_OF_ANSWER),
    ("remove_item", "200", "GetCart", "get_cart", CART_OF_ANSWER),
    ("remove_item", "200", "AddItem", "add_item", CART_OF_ANSWER),
    // The checkout's order: it appears moments later (the workflow is asynchronous).
    ("checkout", "202", "GetCart", "get_cart", CART_OF_ANSWER),
    ("checkout", "202", "GetOrder", "get_order", ORDER_OF_ANSWER),
    ("checkout", "202", "Timeline", "timeline", ORDER_OF_ANSWER),
    ("checkout", "202", "Ship", "ship", ORDER_OF_ANSWER),
    ("checkout", "202", "Cancel", "cancel", ORDER_OF_ANSWER),
    ("get_order", "200", "Timeline", "timeline", ORDER_OF_ANSWER),
    ("get_order", "200", "Ship", "ship", ORDER_OF_ANSWER),
    ("get_order", "200", "Deliver", "deliver", ORDER_OF_ANSWER),
    ("get_order", "200", "Cancel", "cancel", ORDER_OF_ANSWER),
    ("get_order", "200", "GetCart", "get_cart", CART_OF_ANSWER),
    (
        "get_order",
        "200",
        "CustomerOrders",
        "customer_orders",
        &[("customerId", "$response.body#/customerId")],
    ),
    (
        "list_orders",
        "200",
        "GetOrder",
        "get_order",
        &[("orderId", "$response.body#/orders/0/orderId")],
    ),
    (
        "customer_orders",
        "200",
        "GetOrder",
        "get_order",
        &[("orderId", "$response.body#/orders/0/orderId")],
    ),
    ("ship", "200", "Deliver", "deliver", ORDER_OF_ANSWER),
    ("ship", "200", "GetOrder", "get_order", ORDER_OF_ANSWER),
    ("deliver", "200", "GetOrder", "get_order", ORDER_OF_ANSWER),
    ("cancel", "200", "GetOrder", "get_order", ORDER_OF_ANSWER),
    ("cancel", "200", "Timeline", "timeline", ORDER_OF_ANSWER),
    // The event store, dead letters, projections.
    (
        "events",
        "200",
        "Replay",
        "replay",
        &[
            ("aggregateType", "$response.body#/events/0/aggregateType"),
            ("aggregateId", "$response.body#/events/0/aggregateId"),
        ],
    ),
    (
        "list_dead_letters",
        "200",
        "Retry",
        "retry",
        &[("id", "$response.body#/0/id")],
    ),
    (
        "projections",
        "200",
        "Rebuild",
        "rebuild",
        &[("name", "$response.body#/0/name")],
    ),
];

/// Each link also carries the answer's `X-Correlation-Id` into the next request: a
/// client that follows the links stays in one business transaction (and the follow-up's
/// parameters all come from the answer).
pub(super) fn links(doc: &mut Value) {
    for (from, status, name, to, parameters) in LINKS {
        operation(doc, to);
        let mut parameters: Map<String, Value> = parameters
            .iter()
            .map(|(name, expression)| (name.to_string(), json!(expression)))
            .collect();
        parameters.insert(
            "header.X-Correlation-Id".into(),
            json!("$response.header.X-Correlation-Id"),
        );
        let response = operation(doc, from)
            .get_mut("responses")
            .and_then(|r| r.get_mut(*status))
            .unwrap_or_else(|| panic!("operation {from} has no {status} answer"));
        response
            .as_object_mut()
            .expect("a response")
            .entry("links")
            .or_insert_with(|| json!({}))[*name] = json!({
            "operationId": to,
            "parameters": parameters,
        });
    }
}
