//! The statuses and headers of every route, from what it goes through (the middleware,
//! the body extractor, the command bus), who may call it (`access::ROUTES`), and the
//! probes' answers.

use serde_json::{json, Value};

use super::*;

// ---- Statuses and headers of every route -----------------------------------------------

/// What a route goes through, and so what it can answer besides its own statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trait {
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
pub(super) const ROUTES: &[(&str, &[Trait])] = &[
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
    ("export_personal_data", &[]),
    ("erase_personal_data", &[Command]),
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

pub(super) fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {
            "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } }
        },
    })
}

pub(super) fn retry_after(mut response: Value) -> Value {
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
pub(super) fn header(name: &str, description: &str, max: usize, internal_spaces: bool) -> Value {
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

pub(super) fn route_rules(doc: &mut Value, id: &str, traits: &[Trait]) {
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
pub(super) fn every_route_is_listed(doc: &Value) {
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
pub(super) fn security(doc: &mut Value) {
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
            let access = crate::api::access::required_for_document(method, path)
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
pub(super) fn health_answers(doc: &mut Value) {
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
