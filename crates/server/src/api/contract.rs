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

use std::sync::LazyLock;

use cornershop_domain::aggregates::cart::MAX_LINE_QUANTITY;
use cornershop_domain::aggregates::inventory::{MAX_STOCK, SKU_PATTERN};
use cornershop_domain::money::{MAX_AMOUNT, MAX_UNIT_PRICE};
use cornershop_domain::{AggregateType, DomainEvent};
use cornershop_readmodels::{ORDER_STATUSES, PROJECTIONS};
use cornershop_store::notification_status;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use super::eventstore::MAX_PAGE;
use super::orders::MAX_ORDERS_PAGE;

/// The document, built once.
pub fn document() -> &'static Value {
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

// ---- Text ------------------------------------------------------------------------------

/// Control characters, as Rust's `char::is_control` has them (U+0000 to U+001F, U+007F
/// to U+009F): refused in every text a person reads.
const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";

/// The white space `str::trim` removes that is not a control character (those are
/// refused anyway): what may pad a value, since the server trims it.
const SPACE: &str = r" \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// The rule of `require_text(field, value, max)`: no control character, and once trimmed
/// of white space, 1 to `max` characters. So: white space, then a character that is not
/// white space, then (up to `max - 2` of anything but a control character and a last
/// non-space character), then white space.
fn text(max: usize) -> Value {
    assert!(max >= 2);
    let edge = format!("[^{CONTROL}{SPACE}]");
    let middle = format!("[^{CONTROL}]");
    // No `minLength` beside the pattern (which implies it): Schemathesis 4.32 cannot
    // generate valid values for the two together.
    json!({
        "pattern": format!("^[{SPACE}]*{edge}({middle}{{0,{}}}{edge})?[{SPACE}]*$", max - 2),
    })
}

/// An optional text that is stored as given: no control character, at most `max`
/// characters, possibly empty (`shippingAddress.line2`).
fn plain_text(max: usize) -> Value {
    json!({ "maxLength": max, "pattern": format!("^[^{CONTROL}]*$") })
}

/// The control characters `extract::Path` refuses in a path segment (`%00` to `%1F`,
/// `%7F`).
const PATH_CONTROL: &str = r"\u0000-\u001F\u007F";

/// All that `str::trim` removes: white space, control characters among it.
const ANY_SPACE: &str =
    r"\u0009-\u000D\u0085 \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// A path segment: not empty, no control character.
fn segment() -> Value {
    json!({ "minLength": 1, "pattern": format!("^[^{PATH_CONTROL}]*$") })
}

/// A path segment with a character that is not white space (`value.trim().is_empty()`
/// is refused).
fn segment_not_blank() -> Value {
    json!({
        "pattern": format!("^[^{PATH_CONTROL}]*[^{PATH_CONTROL}{ANY_SPACE}][^{PATH_CONTROL}]*$"),
    })
}

/// A query value with a character that is not white space.
fn not_blank() -> Value {
    json!({ "pattern": format!("[^{ANY_SPACE}]") })
}

/// `validate_email`: at most 254 characters; trimmed of white space (tabs and new lines
/// too), no white space or control character, one `@` after a non-empty local part, and
/// a domain with a dot that neither starts nor ends it.
fn email() -> Value {
    let any = format!("[^@{CONTROL}{SPACE}]");
    let edge = format!("[^@.{CONTROL}{SPACE}]");
    json!({
        "minLength": 5,
        "maxLength": 254,
        "pattern": format!("^[{ANY_SPACE}]*{any}+@{edge}{any}*\\.{any}*{edge}[{ANY_SPACE}]*$"),
    })
}

/// `validate_phone`: digits, spaces and `+ - ( ) .`, with 7 to 15 digits.
fn phone() -> Value {
    json!({ "pattern": r"^[ +().-]*([0-9][ +().-]*){7,15}$" })
}

/// A word matched without regard to ASCII case (`eq_ignore_ascii_case`).
fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One of `words` in any ASCII case, as `AggregateType::parse` reads it.
fn one_of_any_case(words: &[&str]) -> Value {
    let alternatives: Vec<String> = words.iter().map(|w| any_case(w)).collect();
    json!({ "pattern": format!("^({})$", alternatives.join("|")) })
}

/// A comma-separated list of order statuses, each trimmed and in any ASCII case.
fn status_list() -> Value {
    let space = format!("[{ANY_SPACE}]*");
    let words: Vec<String> = ORDER_STATUSES.iter().map(|s| any_case(s)).collect();
    let one = format!("{space}({}){space}", words.join("|"));
    json!({ "pattern": format!("^{one}(,{one})*$") })
}

// ---- Money -----------------------------------------------------------------------------

/// An amount written as a decimal string: at most two decimal places, 0 to `max` (a
/// whole power of ten, as the shop's bounds are). With `max` = 10^n: up to n digits
/// before the point (n + 1 when the first is 0), or `max` itself.
fn money_text(max: Decimal) -> Value {
    let digits = max.trunc().to_string();
    assert!(
        max.fract().is_zero() && digits.starts_with('1') && digits[1..].bytes().all(|b| b == b'0'),
        "a money bound is a power of ten"
    );
    let n = digits.len() - 1;
    json!({
        "type": "string",
        "pattern": format!(r"^(([0-9]{{1,{n}}}|0[0-9]{{{n}}})(\.[0-9]{{1,2}})?|{digits}(\.0{{1,2}})?)$"),
        "description": format!("A decimal with at most two places, 0 to {digits}.00, e.g. \"19.99\"."),
    })
}

/// A money field of a body: the decimal string, or a JSON number of at most two places.
fn money(max: Decimal) -> Value {
    json!({
        "oneOf": [
            money_text(max),
            {
                "type": "number",
                "minimum": 0,
                "maximum": max.trunc().to_string().parse::<u64>().expect("a whole bound"),
                "multipleOf": 0.01,
            },
        ],
        "examples": ["19.99"],
    })
}

// ---- Applying rules --------------------------------------------------------------------

/// The value at a JSON pointer; a rule naming something that is not there is a bug.
fn at<'a>(doc: &'a mut Value, pointer: &str) -> &'a mut Value {
    doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("the OpenAPI document has nothing at {pointer}"))
}

/// A rule with an example value: what the examples in the document show, and what a
/// client (or a fuzzer) tries first. The examples fit together: the product `SKU-1` is
/// what the cart buys, and `tok_visa` is a card the simulated gateway takes.
fn example(mut rule: Value, value: Value) -> Value {
    rule["examples"] = json!([value]);
    rule
}

/// Adds (or replaces) the keys of `rule` in `target`.
fn merge(target: &mut Value, rule: Value) {
    let target = target.as_object_mut().expect("a schema is an object");
    let Value::Object(rule) = rule else {
        panic!("a rule is an object");
    };
    target.extend(rule);
}

/// A property of a component schema (`Checkout/email`).
fn property(doc: &mut Value, schema_and_property: &str, rule: Value) {
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
fn replace_property(doc: &mut Value, schema_and_property: &str, rule: Value) {
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
fn operations(doc: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    doc["paths"]
        .as_object_mut()
        .expect("paths")
        .values_mut()
        .flat_map(|item| item.as_object_mut().expect("a path item").values_mut())
        .filter_map(Value::as_object_mut)
}

fn operation<'a>(doc: &'a mut Value, id: &str) -> &'a mut Map<String, Value> {
    operations(doc)
        .find(|op| op.get("operationId").and_then(Value::as_str) == Some(id))
        .unwrap_or_else(|| panic!("the OpenAPI document has no operation {id}"))
}

/// The schema of a parameter of an operation.
fn parameter(doc: &mut Value, operation_and_name: &str, rule: Value) {
    let (id, name) = operation_and_name
        .split_once('/')
        .expect("operation/parameter");
    let op = operation(doc, id);
    let parameter = op
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
        .and_then(|all| all.iter_mut().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("operation {id} has no parameter {name}"));
    merge(&mut parameter["schema"], rule);
}

/// Adds a sentence to a parameter's description: a rule JSON Schema cannot state.
fn describe(doc: &mut Value, operation_and_name: &str, sentence: &str) {
    let (id, name) = operation_and_name
        .split_once('/')
        .expect("operation/parameter");
    let op = operation(doc, id);
    let parameter = op
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
        .and_then(|all| all.iter_mut().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("operation {id} has no parameter {name}"));
    let description = parameter["description"].as_str().unwrap_or("").trim_end();
    parameter["description"] = json!(format!("{description} {sentence}").trim_start());
}

/// A parameter that may be left out is never `null` on the wire: `Option` in the
/// parameter structs means "optional", which `required: false` already says.
fn optional_parameters_are_not_null(doc: &mut Value) {
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

// ---- The rules of fields and parameters ------------------------------------------------

fn body_rules(doc: &mut Value) {
    let stock = json!({ "minimum": 0, "maximum": MAX_STOCK });

    property(
        doc,
        "CreateCart/customerId",
        example(text(200), json!("cust-1")),
    );

    property(
        doc,
        "AddItem/sku",
        example(json!({ "pattern": SKU_PATTERN }), json!("SKU-1")),
    );
    property(
        doc,
        "AddItem/quantity",
        example(
            json!({ "minimum": 1, "maximum": MAX_LINE_QUANTITY }),
            json!(2),
        ),
    );

    property(
        doc,
        "Checkout/paymentToken",
        example(text(200), json!("tok_visa")),
    );
    property(
        doc,
        "Checkout/email",
        example(email(), json!("ada@example.com")),
    );
    property(
        doc,
        "Checkout/phone",
        example(phone(), json!("+44 20 7946 0958")),
    );
    property(
        doc,
        "ShippingAddress/name",
        example(text(200), json!("Ada Lovelace")),
    );
    property(
        doc,
        "ShippingAddress/line1",
        example(text(200), json!("12 St James's Square")),
    );
    property(
        doc,
        "ShippingAddress/line2",
        example(plain_text(200), json!("Flat 3")),
    );
    property(
        doc,
        "ShippingAddress/city",
        example(text(100), json!("London")),
    );
    property(
        doc,
        "ShippingAddress/postalCode",
        example(text(20), json!("SW1Y 4JH")),
    );
    property(
        doc,
        "ShippingAddress/country",
        example(json!({ "pattern": "^[A-Za-z]{2}$" }), json!("GB")),
    );

    property(
        doc,
        "PutStock/name",
        example(text(200), json!("Espresso beans, 1 kg")),
    );
    replace_property(doc, "PutStock/unitPrice", money(MAX_UNIT_PRICE));
    property(
        doc,
        "PutStock/quantity",
        example(stock.clone(), json!(100_000)),
    );
    property(doc, "PutStock/lowStockThreshold", example(stock, json!(5)));

    property(doc, "ShipOrder/carrier", example(text(100), json!("UPS")));
    property(
        doc,
        "ShipOrder/trackingNumber",
        example(text(100), json!("1Z999AA10123456784")),
    );
    property(
        doc,
        "CancelOrder/reason",
        example(text(500), json!("ordered by mistake")),
    );
}

fn parameter_rules(doc: &mut Value) {
    let sku = json!({ "pattern": SKU_PATTERN, "examples": ["SKU-1"] });
    for id in ["put_stock/sku", "get_stock/sku", "remove_item/sku"] {
        parameter(doc, id, sku.clone());
    }
    for id in [
        "get_cart/cartId",
        "add_item/cartId",
        "remove_item/cartId",
        "checkout/cartId",
        "get_order/orderId",
        "timeline/orderId",
        "ship/orderId",
        "deliver/orderId",
        "cancel/orderId",
        "replay/aggregateId",
    ] {
        parameter(doc, id, segment());
    }
    parameter(doc, "customer_orders/customerId", segment_not_blank());

    // Orders: filters and pages.
    let order_page = json!({ "minimum": 1, "maximum": MAX_ORDERS_PAGE });
    // An opaque cursor: the hex of `v1:<created microseconds>:<order id>`, as the
    // previous page's `nextCursor` gave it.
    let cursor = json!({
        "pattern": r"^76313[aA](2[bBdD])?(3[0-9]){1,18}3[aA]([0-7][0-9a-fA-F]){0,480}$",
        "maxLength": 1024,
    });
    for id in ["list_orders", "customer_orders"] {
        parameter(doc, &format!("{id}/status"), status_list());
        parameter(doc, &format!("{id}/limit"), order_page.clone());
        parameter(doc, &format!("{id}/cursor"), cursor.clone());
    }
    parameter(doc, "list_orders/customerId", not_blank());
    parameter(doc, "list_orders/minTotal", money_text(MAX_AMOUNT));

    // Reports.
    parameter(doc, "sales/groupBy", json!({ "enum": ["hour", "day"] }));
    parameter(doc, "sales/top", json!({ "minimum": 1, "maximum": 100 }));
    parameter(doc, "rebuild/name", json!({ "enum": PROJECTIONS }));

    // The event store.
    let aggregate_types: Vec<&str> = AggregateType::ALL.iter().map(|t| t.as_str()).collect();
    parameter(
        doc,
        "replay/aggregateType",
        one_of_any_case(&aggregate_types),
    );
    parameter(
        doc,
        "events/aggregateType",
        one_of_any_case(&aggregate_types),
    );
    parameter(
        doc,
        "events/eventType",
        json!({ "enum": DomainEvent::TYPES }),
    );
    parameter(
        doc,
        "events/limit",
        json!({ "minimum": 1, "maximum": MAX_PAGE }),
    );
    parameter(doc, "events/after", json!({ "maximum": u64::MAX }));

    // A window's start after its end is refused (400).
    for (id, end) in [
        ("list_orders/from", "`to`"),
        ("sales/from", "`to`"),
        ("replay/fromDate", "`toDate`"),
    ] {
        describe(
            doc,
            id,
            &format!("Not after {end}, when both are given (else 400)."),
        );
    }

    // Dead letters and notifications.
    parameter(
        doc,
        "list_dead_letters/status",
        json!({ "enum": ["pending", "resolved"] }),
    );
    parameter(doc, "retry/id", json!({ "maximum": u64::MAX }));
    parameter(
        doc,
        "list_notifications/channel",
        json!({ "enum": ["email", "sms", "push"] }),
    );
    parameter(
        doc,
        "list_notifications/status",
        json!({ "enum": notification_status::ALL }),
    );
}

// ---- Statuses and headers of every route -----------------------------------------------

/// What a route goes through, and so what it can answer besides its own statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trait {
    /// A command through the bus, with the request's context: it reads the
    /// `Idempotency-Key` and `X-User-Id` headers, can lose to concurrent writers (409),
    /// find its key used for another request (422) and a full disk (507).
    Command,
    /// A JSON body: too large (413), not JSON (415).
    Body,
    /// Writes outside the command bus (a rebuild, a re-driven dead letter): 507.
    Writes,
}

use Trait::*;

/// Every operation of the document and what it goes through. Each also answers 400 (an
/// invalid `X-Correlation-Id`, or a parameter), 500 (a failure inside, a panic) and 503
/// (the store is unavailable, or the request outlived `--request-timeout`).
const ROUTES: &[(&str, &[Trait])] = &[
    ("put_stock", &[Command, Body]),
    ("get_stock", &[]),
    ("create_cart", &[Command, Body]),
    ("get_cart", &[]),
    ("add_item", &[Command, Body]),
    ("remove_item", &[Command]),
    ("checkout", &[Command, Body]),
    ("get_order", &[]),
    ("list_orders", &[]),
    ("customer_orders", &[]),
    ("inventory", &[]),
    ("sales", &[]),
    ("projections", &[]),
    ("rebuild", &[Writes]),
    ("timeline", &[]),
    ("ship", &[Command, Body]),
    ("deliver", &[Command]),
    ("cancel", &[Command, Body]),
    ("list_dead_letters", &[]),
    ("retry", &[Writes]),
    ("consumers", &[]),
    ("list_notifications", &[]),
    ("replay", &[]),
    ("events", &[]),
    ("stats", &[]),
    ("live", &[]),
    ("ready", &[]),
];

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {
            "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } }
        },
    })
}

fn retry_after(mut response: Value) -> Value {
    response["headers"] = json!({
        "Retry-After": {
            "description": "Seconds after which the same request may succeed.",
            "required": true,
            "schema": { "type": "integer", "minimum": 0 },
        }
    });
    response
}

/// A header the server reads: optional; trimmed of spaces and tabs, then 1 to `max`
/// visible ASCII characters, (`internal_spaces`) with spaces between them.
fn header(name: &str, description: &str, max: usize, internal_spaces: bool) -> Value {
    let pattern = if internal_spaces {
        format!(r"^[ \t]*[!-~]([\t -~]{{0,{}}}[!-~])?[ \t]*$", max - 2)
    } else {
        format!(r"^[ \t]*[!-~]{{1,{max}}}[ \t]*$")
    };
    json!({
        "name": name,
        "in": "header",
        "required": false,
        "description": description,
        "schema": { "type": "string", "pattern": pattern },
    })
}

fn route_rules(doc: &mut Value, id: &str, traits: &[Trait]) {
    let op = operation(doc, id);
    let mut statuses = vec![
        (
            400,
            problem(
                "The request is not valid (a parameter, a field or a header); `detail` says \
                 which and why.",
            ),
        ),
        (
            500,
            problem("The server failed inside (a bug); it has been logged."),
        ),
        (
            503,
            retry_after(problem(
                "The store cannot be reached, the request took longer than the server \
                 allows, or the server has all the connections it takes; repeat the request \
                 (a command with the same Idempotency-Key) after Retry-After seconds.",
            )),
        ),
    ];
    let mut headers = vec![header(
        "X-Correlation-Id",
        "Ties the request to a business transaction; echoed in the answer. New when absent.",
        128,
        false,
    )];
    if traits.contains(&Command) {
        statuses.push((
            409,
            problem(
                "The command conflicts with the state of what it changes, or lost to other \
                 writers too often.",
            ),
        ));
        statuses.push((
            422,
            problem("The Idempotency-Key was used before for a different request."),
        ));
        headers.push(header(
            "Idempotency-Key",
            "Makes the command safe to repeat: a repeat with the same key (and the same \
             request) gets the first answer and changes nothing.",
            255,
            true,
        ));
    }
    if traits.contains(&Command) || traits.contains(&Writes) {
        statuses.push((
            507,
            retry_after(problem(
                "The store's disk is full: nothing of the request was stored; reads still \
                 work.",
            )),
        ));
    }
    if traits.contains(&Body) {
        statuses.push((413, problem("The body is larger than the server accepts.")));
        statuses.push((
            415,
            problem("The body is not JSON: send it with Content-Type: application/json."),
        ));
    }
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses");
    for (status, generic) in statuses {
        let entry = responses
            .entry(status.to_string())
            .or_insert_with(|| generic.clone());
        // A route's own description of a status stays; the body and headers are the
        // same for every route.
        if entry.get("description").and_then(Value::as_str) == Some("") {
            entry["description"] = generic["description"].clone();
        }
        entry["content"] = generic["content"].clone();
        if let Some(headers) = generic.get("headers") {
            entry["headers"] = headers.clone();
        }
    }
    // The other errors a route names in its annotation are problems too.
    for (status, response) in responses.iter_mut() {
        if status.starts_with('4') || status.starts_with('5') {
            response["content"] = problem("")["content"].clone();
        }
    }
    let parameters = op
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("parameters");
    parameters.extend(headers);
}

/// Every operation of the document has its row in [`ROUTES`].
fn every_route_is_listed(doc: &Value) {
    for item in doc["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("a path item").values() {
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(
                ROUTES.iter().any(|(listed, _)| *listed == id),
                "operation {id} has no row in contract::ROUTES"
            );
        }
    }
}

/// The bearer scheme, and on each operation who may call it: the access of
/// `access::ROUTES`, the table the guard enforces; a route missing there panics here.
fn security(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An OpenID Connect access token from the shop's identity \
                provider (RS256, PS256 or ES256; `iss`, `aud`, `exp` checked). Its `sub` is \
                the caller (a customer's customer id, and every event's userId); its roles \
                claim names customer, staff or admin. The embedded shop issues its own: \
                `cornershop token --role customer --sub cust-42`.",
        }
    });
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        for (method, op) in item.as_object_mut().expect("a path item") {
            let access = super::access::required_for_document(method, path)
                .unwrap_or_else(|| panic!("{method} {path} has no row in access::ROUTES"));
            let role = match access {
                crate::auth::Access::Open => {
                    op["security"] = json!([]);
                    continue;
                }
                crate::auth::Access::Needs(role) => role,
            };
            op["security"] = json!([{ "bearer": [] }]);
            op["x-required-role"] = json!(role.as_str());
            let responses = op["responses"].as_object_mut().expect("responses");
            let mut unauthorized = problem(
                "No valid bearer token: missing, malformed, expired, not yet valid, signed \
                 by an unknown key or badly, from another issuer or for another audience. \
                 Nothing was done.",
            );
            unauthorized["headers"] = json!({
                "WWW-Authenticate": {
                    "description": "Bearer realm=\"cornershop\", error=\"invalid_token\", error_description=\"...\"",
                    "required": true,
                    "schema": { "type": "string" },
                }
            });
            responses.insert("401".to_string(), unauthorized);
            let needs = format!(
                "The token is valid but lacks the role this route needs ({}). Nothing was \
                 done.",
                role.as_str()
            );
            match responses.get_mut("403") {
                Some(own) => {
                    own["description"] = json!(format!(
                        "{} Or: {}",
                        own["description"].as_str().unwrap_or_default(),
                        needs
                    ))
                }
                None => {
                    responses.insert("403".to_string(), problem(&needs));
                }
            }
            responses.insert(
                "429".to_string(),
                retry_after(problem(
                    "Too many failed authentications from this address; try again after \
                     Retry-After seconds with a valid token.",
                )),
            );
            if role == crate::auth::Role::Customer && path.contains('{') {
                // A customer's view of another's cart or order: as if it did not exist.
                responses.entry("404".to_string()).or_insert_with(|| {
                    problem("No such resource, or one that belongs to another customer.")
                });
            }
        }
    }
}

/// The health routes answer small JSON objects of their own.
fn health_answers(doc: &mut Value) {
    let live = json!({
        "type": "object",
        "required": ["status"],
        "properties": { "status": { "const": "live" } },
    });
    let ready = json!({
        "type": "object",
        "required": ["status", "headPosition"],
        "properties": {
            "status": { "const": "ready" },
            "headPosition": { "type": "integer", "minimum": 0 },
        },
    });
    for (id, schema, description) in [
        ("live", live, "The process is up."),
        (
            "ready",
            ready,
            "The event store answers; the head of its log.",
        ),
    ] {
        let op = operation(doc, id);
        op["responses"]["200"] = json!({
            "description": description,
            "content": { "application/json": { "schema": schema } },
        });
    }
}

// ---- Links -----------------------------------------------------------------------------

/// `(from operation, its status, link name, to operation, parameters)`, the parameters
/// as runtime expressions on the answer.
type Link = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const CART_OF_ANSWER: &[(&str, &str)] = &[("cartId", "$response.body#/cartId")];
const ORDER_OF_ANSWER: &[(&str, &str)] = &[("orderId", "$response.body#/orderId")];

const LINKS: &[Link] = &[
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
fn links(doc: &mut Value) {
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
