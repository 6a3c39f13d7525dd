//! Signing in to the console and out of it.
//!
//! A session is an access token of the shop's identity provider (or of its embedded
//! issuer: `cornershop token --role staff`) kept in the [`SESSION_COOKIE`]: `HttpOnly`
//! (no script reads it), `SameSite=Strict` (no other site's page sends it), `Path=/console`
//! (the API never sees it), `Secure` when the shop is served over HTTPS, and as long-lived
//! as the token. Every request checks the token again, so an expired one signs out.
//!
//! Two ways in: pasting a token into the sign-in form, or, with `--oidc-issuer` and
//! `--console-oidc-client-id`, the identity provider's authorization code flow with PKCE
//! (RFC 7636): the verifier and the state wait in a short-lived cookie of the callback's
//! path, and the code is exchanged for the token at the provider's token endpoint.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::html;
use serde::Deserialize;

use super::html::{Form, Query};
use super::{cookie, html, SESSION_COOKIE};
use crate::api::AppState;
use crate::auth::AuthFailure;

/// The cookie that holds the authorization code flow's state, verifier and next page.
const FLOW_COOKIE: &str = "cornershop_console_flow";

/// The identity provider's client of the console.
pub(crate) struct OidcClient {
    issuer: String,
    client_id: String,
    http: reqwest::Client,
}

impl OidcClient {
    pub(crate) fn new(issuer: String, client_id: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            client_id,
            http,
        }
    }

    /// The provider's authorization and token endpoints, from its discovery document.
    async fn endpoints(&self) -> Result<(String, String), String> {
        #[derive(Deserialize)]
        struct Discovery {
            authorization_endpoint: String,
            token_endpoint: String,
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let discovery: Discovery = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("the identity provider's discovery document cannot be read: {e}"))?
            .json()
            .await
            .map_err(|e| {
                format!("the identity provider's discovery document is not as expected: {e}")
            })?;
        Ok((discovery.authorization_endpoint, discovery.token_endpoint))
    }
}

/// Where to go after signing in: a console path only (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_string()
        }
        _ => "/console".to_string(),
    }
}

#[derive(Deserialize)]
pub(super) struct SignInParams {
    next: Option<String>,
}

/// The sign-in page: the token form, and the identity provider's button when one is set.
pub(super) async fn sign_in_page(
    State(state): State<AppState>,
    Query(params): Query<SignInParams>,
) -> Response {
    sign_in_form(
        &state,
        &safe_next(params.next.as_deref()),
        None,
        StatusCode::OK,
    )
}

fn sign_in_form(
    state: &AppState,
    next: &str,
    problem: Option<&str>,
    status: StatusCode,
) -> Response {
    let oidc = state.console.oidc.is_some();
    let mut response = html::page(
        "Sign in",
        "",
        None,
        html! {
            @if let Some(problem) = problem {
                p class="error" role="alert" { (problem) }
            }
            @if oidc {
                p {
                    a class="button" href=(format!("/console/sign-in/oidc?next={}", html::encode(next))) {
                        "Sign in with the identity provider"
                    }
                }
                p { "Or paste an access token:" }
            } @else {
                p {
                    "Paste an access token with the staff or admin role. On the embedded shop, "
                    code { "cornershop token --role staff --sub you" }
                    " prints one."
                }
            }
            form method="post" action="/console/sign-in" class="stack" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Access token" }
                textarea id="token" name="token" rows="4" required autocomplete="off" spellcheck="false" {}
                button type="submit" { "Sign in" }
            }
        },
    );
    *response.status_mut() = status;
    response
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    token: String,
    next: Option<String>,
}

/// Checks the pasted token as the API would and, when it is a staff's or an admin's,
/// keeps it in the session cookie.
pub(super) async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    // A sign-in from another site's form would sign the browser in as someone else.
    if !super::same_origin(&headers) {
        return sign_in_form(
            &state,
            &next,
            Some("This sign-in was sent from another site, so it is refused."),
            StatusCode::FORBIDDEN,
        );
    }
    let token = form.token.trim().to_string();
    signed_in(&state, token, &next).await
}

/// The session for `token` and the way to `next`, or the form again saying why not.
async fn signed_in(state: &AppState, token: String, next: &str) -> Response {
    let caller = match state.auth.verify(&token).await {
        Ok(caller) => caller,
        Err(AuthFailure::Refused(reason, description)) => {
            tracing::info!(reason = reason.as_str(), "console sign-in refused: {description}");
            return sign_in_form(
                state,
                next,
                Some(&format!("This token is refused: {description}.")),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(AuthFailure::ProviderUnavailable(_)) => {
            return sign_in_form(
                state,
                next,
                Some("The identity provider cannot be reached, so the token cannot be checked; try again in a few seconds."),
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    };
    if !caller.has(crate::auth::Role::Staff) {
        return sign_in_form(
            state,
            next,
            Some("This token has no staff or admin role: the console is for the shop's staff."),
            StatusCode::FORBIDDEN,
        );
    }
    tracing::info!(user = %caller.sub, "signed in to the console");
    let mut response = Redirect::to(next).into_response();
    set_cookie(
        &mut response,
        &session_cookie(&token, state.console.secure_cookies, None),
    );
    response
}

fn session_cookie(token: &str, secure: bool, max_age: Option<u64>) -> String {
    let mut cookie = format!("{SESSION_COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Forgets the session.
pub(super) async fn sign_out(State(state): State<AppState>) -> Response {
    let mut response = Redirect::to("/console/sign-in").into_response();
    set_cookie(
        &mut response,
        &session_cookie("", state.console.secure_cookies, Some(0)),
    );
    response
}

/// Starts the authorization code flow: to the provider's authorization endpoint with a
/// fresh state and the PKCE challenge of a fresh verifier.
pub(super) async fn oidc_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<SignInParams>,
) -> Response {
    let next = safe_next(params.next.as_deref());
    let Some(client) = &state.console.oidc else {
        return sign_in_form(
            &state,
            &next,
            Some("No identity provider is set for the console."),
            StatusCode::NOT_FOUND,
        );
    };
    let (authorize, _) = match client.endpoints().await {
        Ok(endpoints) => endpoints,
        Err(why) => {
            tracing::warn!(error = %why, "console sign-in cannot start");
            return sign_in_form(&state, &next, Some(&why), StatusCode::BAD_GATEWAY);
        }
    };
    let (Some(flow_state), Some(verifier)) = (random_text(), random_text()) else {
        return sign_in_form(
            &state,
            &next,
            Some("No random numbers are available; try again."),
            StatusCode::INTERNAL_SERVER_ERROR,
        );
    };
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
    let redirect_uri = callback_uri(&headers, state.console.secure_cookies);
    let location = format!(
        "{authorize}?response_type=code&client_id={}&redirect_uri={}&scope=openid&state={}&code_challenge={challenge}&code_challenge_method=S256",
        html::encode(&client.client_id),
        html::encode(&redirect_uri),
        html::encode(&flow_state),
    );
    let mut response = Redirect::to(&location).into_response();
    // SameSite=Lax: the provider's redirect back is a top-level navigation from its site.
    let mut flow = format!(
        "{FLOW_COOKIE}={flow_state}.{verifier}.{}; Path=/console/callback; HttpOnly; SameSite=Lax; Max-Age=600",
        html::encode(&next)
    );
    if state.console.secure_cookies {
        flow.push_str("; Secure");
    }
    set_cookie(&mut response, &flow);
    response
}

fn random_text() -> Option<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// `<this origin>/console/callback`, from the request's Host.
fn callback_uri(headers: &HeaderMap, https: bool) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!(
        "{}://{host}/console/callback",
        if https { "https" } else { "http" }
    )
}

#[derive(Deserialize)]
pub(super) struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider's redirect back: the state checked against the flow's cookie, the code
/// exchanged (with the verifier) for an access token, which becomes the session.
pub(super) async fn oidc_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let fail = |why: &str| sign_in_form(&state, "/console", Some(why), StatusCode::BAD_REQUEST);
    if let Some(error) = params.error {
        let detail = params.error_description.unwrap_or_default();
        return fail(&format!(
            "The identity provider refused the sign-in: {error} {detail}"
        ));
    }
    let Some(client) = &state.console.oidc else {
        return fail("No identity provider is set for the console.");
    };
    let Some(flow) = cookie(&headers, FLOW_COOKIE) else {
        return fail("The sign-in took too long or was started in another browser; start again.");
    };
    let mut parts = flow.splitn(3, '.');
    let (Some(expected_state), Some(verifier), next) = (parts.next(), parts.next(), parts.next())
    else {
        return fail("The sign-in's cookie is damaged; start again.");
    };
    let next = safe_next(
        next.map(|n| {
            percent_encoding::percent_decode_str(n)
                .decode_utf8_lossy()
                .into_owned()
        })
        .as_deref(),
    );
    let (Some(code), Some(sent_state)) = (params.code, params.state) else {
        return fail("The identity provider sent no code back; start again.");
    };
    if sent_state != expected_state {
        return fail("The sign-in's state does not match; start again.");
    }
    let (_, token_endpoint) = match client.endpoints().await {
        Ok(endpoints) => endpoints,
        Err(why) => return fail(&why),
    };
    let redirect_uri = callback_uri(&headers, state.console.secure_cookies);
    #[derive(Deserialize)]
    struct TokenAnswer {
        access_token: String,
    }
    let answer = client
        .http
        .post(&token_endpoint)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("client_id", client.client_id.as_str()),
            ("code_verifier", verifier),
        ])
        .send()
        .await;
    let token = match answer {
        Ok(r) if r.status().is_success() => match r.json::<TokenAnswer>().await {
            Ok(t) => t.access_token,
            Err(e) => {
                return fail(&format!(
                    "The identity provider's token answer is not as expected: {e}"
                ))
            }
        },
        Ok(r) => {
            let status = r.status();
            tracing::warn!(%status, "the console's code exchange was refused");
            return fail(&format!(
                "The identity provider refused the code ({status}); start again."
            ));
        }
        Err(e) => return fail(&format!("The identity provider cannot be reached: {e}")),
    };
    let mut response = signed_in(&state, token, &next).await;
    let mut gone =
        format!("{FLOW_COOKIE}=; Path=/console/callback; HttpOnly; SameSite=Lax; Max-Age=0");
    if state.console.secure_cookies {
        gone.push_str("; Secure");
    }
    set_cookie(&mut response, &gone);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_signing_in_only_console_pages() {
        assert_eq!(
            safe_next(Some("/console/events?x=1")),
            "/console/events?x=1"
        );
        for elsewhere in [
            None,
            Some("https://evil.example"),
            Some("//evil.example"),
            Some("/api/orders"),
            Some("/console\\@evil"),
        ] {
            assert_eq!(safe_next(elsewhere), "/console", "{elsewhere:?}");
        }
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_scoped() {
        let cookie = session_cookie("t", true, None);
        for part in [
            "cornershop_console=t",
            "Path=/console",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
        ] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(!session_cookie("t", false, None).contains("Secure"));
    }
}
