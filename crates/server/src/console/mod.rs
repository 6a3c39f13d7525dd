//! The operator's console at `/console`: server-rendered pages over the event store, the
//! read models, the consumers, the dead letters and (on the production path) Kafka.
//!
//! Every page's first answer holds its content (a page works with JavaScript off); the one
//! script (`assets/console.js`) adds live updates over Server-Sent Events. Assets are
//! compiled into the binary (`include_str!`): nothing to install, no CDN.
//!
//! Who may do what is one table, [`ROUTES`]: staff may look, admin may act. The console
//! signs in with the same tokens as the API ([`session`]): pasted from `cornershop token`
//! on the embedded default, or by the identity provider's authorization code flow with
//! PKCE; the token is kept in an `HttpOnly`, `SameSite=Strict` cookie scoped to
//! `/console`. Every POST must carry the session's CSRF token ([`csrf_token`]) and, when
//! the browser sends one, an `Origin` of this host; [`guard`] checks both before any
//! handler runs, so no action can forget it.
//!
//! Files: `html` the layout and the small helpers every page uses; `pages` the pages;
//! `live` the event streams; `session` signing in and out; `sampler` the overview's few
//! minutes of history.

mod html;
mod live;
mod pages;
pub(crate) mod sampler;
mod session;

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use cornershop_messaging::kafka::KafkaInspector;

use crate::api::AppState;
use crate::auth::{Access, AuthFailure, Caller, Role};

use Access::{Needs, Open};
use Role::{Admin, Staff};

/// Who may call each console route: pages are staff's, actions admin's.
pub(crate) const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/console/sign-in", Open),
    ("POST", "/console/sign-in", Open),
    ("GET", "/console/sign-in/oidc", Open),
    ("GET", "/console/callback", Open),
    ("POST", "/console/sign-out", Open),
    ("GET", "/console/assets/{file}", Open),
    // Any other console address: a page saying there is none (not the API's JSON 404).
    ("GET", "/console/{*rest}", Open),
    ("GET", "/console", Needs(Staff)),
    ("GET", "/console/live/overview", Needs(Staff)),
    ("GET", "/console/events", Needs(Staff)),
    ("GET", "/console/live/events", Needs(Staff)),
    ("GET", "/console/events/{event_id}", Needs(Staff)),
    (
        "GET",
        "/console/aggregates/{aggregate_type}/{aggregate_id}",
        Needs(Staff),
    ),
    ("GET", "/console/orders/{order_id}", Needs(Staff)),
    ("GET", "/console/kafka", Needs(Staff)),
    ("GET", "/console/kafka/messages", Needs(Staff)),
    ("GET", "/console/consumers", Needs(Staff)),
    ("POST", "/console/projections/{name}/rebuild", Needs(Admin)),
    ("POST", "/console/projections/verify", Needs(Admin)),
    ("GET", "/console/deadletters", Needs(Staff)),
    ("POST", "/console/deadletters/redrive", Needs(Admin)),
];

fn required(method: &Method, route: &str) -> Option<Access> {
    ROUTES
        .iter()
        .find(|(m, r, _)| *m == method.as_str() && *r == route)
        .map(|(_, _, access)| *access)
}

/// What the console keeps beside the API's state.
pub struct Console {
    /// The cluster's view for the Kafka page; `None` on the embedded transport.
    pub(crate) kafka: Option<KafkaInspector>,
    /// The overview's recent history.
    pub(crate) samples: Arc<sampler::Samples>,
    /// The rebuilds started from the console, for their progress bars.
    pub(crate) rebuilds: pages::Rebuilds,
    /// The last verification of the read models run from the console.
    pub(crate) verified: pages::Verified,
    /// Whether the session cookie is marked `Secure` (the API is served over HTTPS).
    pub(crate) secure_cookies: bool,
    /// The identity provider's client for the authorization code flow, when one is set.
    pub(crate) oidc: Option<session::OidcClient>,
}

impl Console {
    pub(crate) fn new(
        kafka: Option<KafkaInspector>,
        samples: Arc<sampler::Samples>,
        secure_cookies: bool,
        oidc: Option<(String, String)>,
    ) -> Self {
        Self {
            kafka,
            samples,
            rebuilds: pages::Rebuilds::default(),
            verified: pages::Verified::default(),
            secure_cookies,
            oidc: oidc.map(|(issuer, client_id)| session::OidcClient::new(issuer, client_id)),
        }
    }
}

/// The console's routes with their guard: `timed` go under the request deadline, the
/// event streams (which stay open) do not.
pub(crate) fn routes(state: &AppState) -> (Router<AppState>, Router<AppState>) {
    let timed = Router::new()
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/sign-in/oidc", get(session::oidc_start))
        .route("/console/callback", get(session::oidc_callback))
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/assets/{file}", get(html::asset))
        .route("/console/{*rest}", get(html::no_such_page))
        .route("/console", get(pages::overview))
        .route("/console/events", get(pages::events))
        .route("/console/events/{event_id}", get(pages::event))
        .route(
            "/console/aggregates/{aggregate_type}/{aggregate_id}",
            get(pages::aggregate),
        )
        .route("/console/orders/{order_id}", get(pages::order))
        .route("/console/kafka", get(pages::kafka))
        .route("/console/kafka/messages", get(pages::kafka_messages))
        .route("/console/consumers", get(pages::consumers))
        .route(
            "/console/projections/{name}/rebuild",
            post(pages::rebuild_projection),
        )
        .route(
            "/console/projections/verify",
            post(pages::verify_projections),
        )
        .route("/console/deadletters", get(pages::dead_letters))
        .route("/console/deadletters/redrive", post(pages::redrive));
    let streams = Router::new()
        .route("/console/live/overview", get(live::overview))
        .route("/console/live/events", get(live::events));
    let layer = || axum::middleware::from_fn_with_state(state.clone(), guard);
    (timed.route_layer(layer()), streams.route_layer(layer()))
}

/// The cookie that holds the session's access token.
pub(crate) const SESSION_COOKIE: &str = "cornershop_console";

/// The largest form a console POST may send (ids of dead letters, a token).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Before every console route: its access in [`ROUTES`], the session, the role, and for a
/// POST the CSRF token and the origin.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(route) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    let needed = match required(request.method(), route.as_str()) {
        Some(Open) => return next.run(request).await,
        Some(Needs(role)) => role,
        // Fail closed, as the API's guard does.
        None => {
            tracing::error!(route = route.as_str(), method = %request.method(),
                "console route missing from its access table; refusing it");
            return html::error_page(
                StatusCode::FORBIDDEN,
                "Refused",
                "This page has no access rule, so it is refused.",
            );
        }
    };
    let (caller, token) = match session_caller(&state, request.headers()).await {
        Ok(found) => found,
        Err(why) if request.method() == Method::GET => {
            tracing::debug!(reason = %why, "console request without a valid session");
            let next = request
                .uri()
                .path_and_query()
                .map_or("/console", |p| p.as_str());
            return Redirect::to(&format!("/console/sign-in?next={}", html::encode(next)))
                .into_response();
        }
        Err(why) => {
            return html::error_page(
                StatusCode::UNAUTHORIZED,
                "Signed out",
                &format!("{why}. Sign in again at /console/sign-in."),
            )
        }
    };
    if !caller.has(needed) {
        let has = caller.role.map_or("no role of this shop", Role::as_str);
        return html::error_page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &format!(
                "This needs the {} role; you are signed in with {has}.",
                needed.as_str()
            ),
        );
    }
    let mut request = request;
    if request.method() == Method::POST {
        match checked_form(request, &token).await {
            Ok(checked) => request = checked,
            Err(refused) => return refused,
        }
    }
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(SessionToken(token));
    next.run(request).await
}

/// The session's token, for the handlers that write the CSRF token into their forms.
#[derive(Clone)]
pub(crate) struct SessionToken(pub String);

/// The caller of the session cookie, with its token.
async fn session_caller(state: &AppState, headers: &HeaderMap) -> Result<(Caller, String), String> {
    if state.auth.is_off() {
        return Ok((
            Caller {
                sub: "anonymous".into(),
                role: Some(Role::Admin),
            },
            String::from("authentication-off"),
        ));
    }
    let token = cookie(headers, SESSION_COOKIE).ok_or("You are not signed in")?;
    match state.auth.verify(&token).await {
        Ok(caller) => Ok((caller, token)),
        Err(AuthFailure::Refused(_, description)) => {
            Err(format!("Your session ended: {description}"))
        }
        Err(AuthFailure::ProviderUnavailable(_)) => {
            Err("The identity provider cannot be reached, so your session cannot be checked".into())
        }
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// The CSRF token of a session: a digest of its token, which a page on another origin
/// cannot read (the cookie is `HttpOnly` and its own origin's) and so cannot compute.
pub(crate) fn csrf_token(session: &str) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("cornershop-console-csrf:{session}").as_bytes(),
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A POST's form with a CSRF token matching the session, from this origin; the request
/// rebuilt with the same body for the handler.
async fn checked_form(request: Request, session: &str) -> Result<Request, Response> {
    let refused = |why: &str| {
        tracing::warn!(reason = why, "console POST refused (CSRF defence)");
        html::error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            &format!("{why}. Reload the page and try again."),
        )
    };
    if !same_origin(request.headers()) {
        return Err(refused("This form was sent from another site"));
    }
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| refused("The form is too large or was cut short"))?;
    let sent = form_pairs(&bytes)
        .into_iter()
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value);
    let expected = csrf_token(session);
    match sent {
        Some(sent) if constant_time_eq(sent.as_bytes(), expected.as_bytes()) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        Some(_) => Err(refused(
            "The form's security token does not match your session",
        )),
        None => Err(refused("The form carries no security token")),
    }
}

/// Whether the request's `Origin` (when the browser sent one) is this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    authority == host
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The pairs of an `application/x-www-form-urlencoded` body.
pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url_decode_pairs(&String::from_utf8_lossy(body))
}

fn url_decode_pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_console_route_has_an_access_rule_and_actions_are_admins() {
        for (method, route, access) in ROUTES {
            assert!(route.starts_with("/console"), "{route}");
            if *method == "POST" && !route.starts_with("/console/sign-") {
                assert_eq!(*access, Needs(Admin), "{method} {route}");
            }
        }
        assert_eq!(required(&Method::GET, "/console"), Some(Needs(Staff)));
        assert_eq!(required(&Method::DELETE, "/console"), None);
    }

    #[test]
    fn the_csrf_token_is_the_sessions_own() {
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn origin_must_be_this_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "shop.example:8080".parse().unwrap());
        assert!(same_origin(&headers), "no Origin: a same-origin form");
        headers.insert(header::ORIGIN, "http://shop.example:8080".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&headers));
    }

    #[test]
    fn forms_and_cookies_decode() {
        assert_eq!(
            url_decode_pairs("ids=1&ids=2&csrf=a%2Bb&note=x+y"),
            vec![
                ("ids".into(), "1".into()),
                ("ids".into(), "2".into()),
                ("csrf".into(), "a+b".into()),
                ("note".into(), "x y".into()),
            ]
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; cornershop_console=tok".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&headers, "b"), None);
    }
}
