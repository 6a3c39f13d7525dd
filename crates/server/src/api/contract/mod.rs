//! The OpenAPI document as the server enforces it (`GET /api/openapi.json`).
//!
//! utoipa derives the shapes from the types and the handlers' annotations (the success
//! answers and the 404s and 409s particular to a route). What the server checks beyond
//! the types is written here, in one place, from the constants the checks use:
//!
//! - the rules on fields and parameters (lengths, patterns, bounds, enums) that the
//!   domain and the handlers enforce;
//! - the statuses every route can answer because of what it goes through: the
//!   correlation middleware (400), the request deadline and the store (503), the body
//!   extractor (413, 415), the command bus (409, 422, 507), a panic (500); every error is
//!   `application/problem+json` with the `Problem` schema, and 503 and 507 carry
//!   `Retry-After`;
//! - the request headers the server reads (`X-Correlation-Id`, `Idempotency-Key`);
//! - who may call each route: the bearer scheme, and per operation its `security` and
//!   `x-required-role` from `access::ROUTES` (the table the guard enforces), with the
//!   401, 403 and 429 answers of the guard;
//! - the links between operations (create a cart -> add an item -> check out -> the
//!   order), so that a client, or a fuzzer, can follow a cart to its order.
//!
//! A rule that names something the document lacks panics: the test below builds the
//! document, so a renamed field or route cannot leave a stale rule behind.
//!
//! `patterns` holds the rules of text and money, `fields` those of bodies and parameters,
//! `answers` the statuses, headers and security of every route, `links` the links; this
//! file applies them.

use std::sync::LazyLock;

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

mod answers;
mod fields;
mod links;
mod patterns;

use answers::*;
use fields::*;
use links::*;
use patterns::*;

/// The document, built once.
pub(super) fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(build);
    &DOCUMENT
}

fn build() -> Value {
    let mut doc =
        serde_json::to_value(super::ApiDoc::openapi()).expect("the OpenAPI document serializes");
    optional_parameters_are_not_null(&mut doc);
    body_rules(&mut doc);
    parameter_rules(&mut doc);
    for (operation, traits) in ROUTES {
        route_rules(&mut doc, operation, traits);
    }
    every_route_is_listed(&doc);
    security(&mut doc);
    health_answers(&mut doc);
    links(&mut doc);
    doc
}

// ---- Applying rules --------------------------------------------------------------------

/// The value at a JSON pointer; a rule naming something that is not there is a bug.
pub(super) fn at<'a>(doc: &'a mut Value, pointer: &str) -> &'a mut Value {
    doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("the OpenAPI document has nothing at {pointer}"))
}

/// A rule with an example value: what the examples in the document show, and what a
/// client (or a fuzzer) tries first. The examples fit together: the product `SKU-1` is
/// what the cart buys, and `tok_visa` is a card the simulated gateway takes.
pub(super) fn example(mut rule: Value, value: Value) -> Value {
    rule["examples"] = json!([value]);
    rule
}

/// Adds (or replaces) the keys of `rule` in `target`.
pub(super) fn merge(target: &mut Value, rule: Value) {
    let target = target.as_object_mut().expect("a schema is an object");
    let Value::Object(rule) = rule else {
        panic!("a rule is an object");
    };
    target.extend(rule);
}

/// A property of a component schema (`Checkout/email`).
pub(super) fn property(doc: &mut Value, schema_and_property: &str, rule: Value) {
    let (schema, name) = schema_and_property
        .split_once('/')
        .expect("schema/property");
    merge(
        at(
            doc,
            &format!("/components/schemas/{schema}/properties/{name}"),
        ),
        rule,
    );
}

/// A property replaced by a schema of its own (money: a string or a number).
pub(super) fn replace_property(doc: &mut Value, schema_and_property: &str, rule: Value) {
    let (schema, name) = schema_and_property
        .split_once('/')
        .expect("schema/property");
    let target = at(
        doc,
        &format!("/components/schemas/{schema}/properties/{name}"),
    );
    let description = target.get("description").cloned();
    *target = rule;
    if let Some(description) = description {
        target["description"] = description;
    }
}

/// Every operation, with its method and path.
pub(super) fn operations(doc: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    doc["paths"]
        .as_object_mut()
        .expect("paths")
        .values_mut()
        .flat_map(|item| item.as_object_mut().expect("a path item").values_mut())
        .filter_map(Value::as_object_mut)
}

pub(super) fn operation<'a>(doc: &'a mut Value, id: &str) -> &'a mut Map<String, Value> {
    operations(doc)
        .find(|op| op.get("operationId").and_then(Value::as_str) == Some(id))
        .unwrap_or_else(|| panic!("the OpenAPI document has no operation {id}"))
}

/// A parameter of an operation, named `operationId/name`.
fn parameter_of<'a>(doc: &'a mut Value, operation_and_name: &str) -> &'a mut Value {
    let (id, name) = operation_and_name
        .split_once('/')
        .expect("operation/parameter");
    operation(doc, id)
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
        .and_then(|all| all.iter_mut().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("operation {id} has no parameter {name}"))
}

/// The schema of a parameter of an operation.
pub(super) fn parameter(doc: &mut Value, operation_and_name: &str, rule: Value) {
    merge(&mut parameter_of(doc, operation_and_name)["schema"], rule);
}

/// Adds a sentence to a parameter's description: a rule JSON Schema cannot state.
pub(super) fn describe(doc: &mut Value, operation_and_name: &str, sentence: &str) {
    let parameter = parameter_of(doc, operation_and_name);
    let description = parameter["description"].as_str().unwrap_or("").trim_end();
    parameter["description"] = json!(format!("{description} {sentence}").trim_start());
}

/// A parameter that may be left out is never `null` on the wire: `Option` in the
/// parameter structs means "optional", which `required: false` already says.
pub(super) fn optional_parameters_are_not_null(doc: &mut Value) {
    for op in operations(doc) {
        for parameter in op
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(Value::Array(types)) = parameter["schema"].get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types[0].clone();
                    parameter["schema"]["type"] = only;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_builds_and_names_only_what_exists() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap())
            .collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "operation ids are unique");
        assert_eq!(ids.len(), ROUTES.len(), "every row of ROUTES is a route");
    }

    #[test]
    fn every_operation_declares_who_may_call_it() {
        let doc = document();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let open = path.starts_with("/health/");
                if open {
                    assert_eq!(op["security"], json!([]), "{method} {path}");
                } else {
                    assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
                    assert!(
                        ["customer", "staff", "admin"]
                            .contains(&op["x-required-role"].as_str().unwrap_or("")),
                        "{method} {path}"
                    );
                    assert!(op["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
                    assert!(op["responses"]["403"].is_object());
                }
            }
        }
        let role = |path: &str, method: &str| doc["paths"][path][method]["x-required-role"].clone();
        assert_eq!(role("/api/carts", "post"), "customer");
        assert_eq!(role("/api/inventory/{sku}", "put"), "staff");
        assert_eq!(role("/api/eventstore/stats", "get"), "admin");
    }

    #[test]
    fn every_error_is_a_problem_and_unavailability_says_when_to_retry() {
        let doc = document();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = &op["operationId"];
                for (status, response) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert!(
                            response["content"]["application/problem+json"].is_object(),
                            "{id} {status}"
                        );
                    }
                    if status == "503" || status == "507" || status == "429" {
                        assert_eq!(response["headers"]["Retry-After"]["required"], true);
                    }
                }
                for status in ["400", "500", "503"] {
                    assert!(op["responses"][status].is_object(), "{id} lacks {status}");
                }
            }
        }
    }
}
