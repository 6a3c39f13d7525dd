//! The layout every console page shares, its assets, and small helpers for the pages.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::auth::{Caller, Role};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// `/console/assets/{file}`: the stylesheet and the script, compiled in.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => {
            return error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such asset.",
            )
        }
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A page's query parameters, or the page that says what is wrong with them (axum's own
/// rejection is plain text).
pub(super) struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(error_page(
                StatusCode::BAD_REQUEST,
                "Cannot show this",
                &format!(
                    "The address's parameters are not right: {}",
                    rejection.body_text()
                ),
            )),
        }
    }
}

/// A submitted form, or the page that says what is wrong with it.
pub(super) struct Form<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Form<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        match axum::Form::<T>::from_request(request, state).await {
            Ok(axum::Form(value)) => Ok(Form(value)),
            Err(rejection) => Err(error_page(
                StatusCode::BAD_REQUEST,
                "Cannot take this form",
                &format!("The form is not as expected: {}", rejection.body_text()),
            )),
        }
    }
}

/// The sections of the navigation, by the path they start with.
const NAV: &[(&str, &str)] = &[
    ("/console", "Overview"),
    ("/console/events", "Event log"),
    ("/console/consumers", "Consumers"),
    ("/console/deadletters", "Dead letters"),
    ("/console/kafka", "Kafka"),
];

/// A whole page: head, the navigation (the current section marked), the signed-in user
/// with the sign-out form, and `body` in `<main>`.
pub(super) fn page(
    title: &str,
    current: &str,
    who: Option<(&Caller, &str)>,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · CornerShop console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/console" { "CornerShop console" }
                    @if let Some((caller, csrf)) = who {
                        nav aria-label="Sections" {
                            ul {
                                @for (href, label) in NAV {
                                    li {
                                        @if *href == current {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form class="signout" method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(csrf);
                            span class="who" { (caller.sub) " (" (caller.role.map_or("no role", Role::as_str)) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// Any console address that is no page.
pub(super) async fn no_such_page() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page in the console.",
    )
}

/// A page that says what went wrong, with its status.
pub(super) fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let mut response = page(
        title,
        "",
        None,
        html! {
            p class="error" role="alert" { (message) }
            p { a href="/console" { "Back to the console" } }
        },
    );
    *response.status_mut() = status;
    response
}

/// An instant as the console shows it: UTC to the millisecond.
pub(super) fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// A duration in milliseconds, short.
pub(super) fn millis(ms: i64) -> String {
    if ms.abs() >= 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// Pretty JSON in a `<pre>`.
pub(super) fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    html! { pre class="json" { (text) } }
}

/// A link to an aggregate's page.
pub(super) fn aggregate_link(kind: &str, id: &str) -> Markup {
    html! {
        a href=(format!("/console/aggregates/{}/{}", encode(kind), encode(id))) { (kind) " " (id) }
    }
}

/// A link to an event's page, named by its type.
pub(super) fn event_link(event_id: &uuid::Uuid, label: &str) -> Markup {
    html! { a href=(format!("/console/events/{event_id}")) { (label) } }
}

/// A number with thin spaces between thousands, as people read them.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What [`encode`] leaves as it is: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query value or a path segment.
pub(super) fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, UNRESERVED).to_string()
}

/// JSON safe inside a `<script type="application/json">`: no `<` can close the element.
pub(super) fn script_json(value: &serde_json::Value) -> PreEscaped<String> {
    PreEscaped(value.to_string().replace('<', "\\u003c"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_encoded_for_urls_numbers_and_scripts() {
        assert_eq!(encode("a b/ü?&="), "a%20b%2F%C3%BC%3F%26%3D");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(
            script_json(&serde_json::json!({"a": "</script>"})).0,
            r#"{"a":"\u003c/script>"}"#
        );
    }
}
