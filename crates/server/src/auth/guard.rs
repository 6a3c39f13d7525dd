//! The guard before every route: the route's access, the bearer token, and the 401, 403
//! and 429 answers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;

use super::{Access, AuthFailure, Authenticator, Caller, Reason, Role, MAX_SUBJECT_LEN};

/// The state of [`guard`].
#[derive(Clone)]
pub struct Guard {
    pub auth: Arc<Authenticator>,
}

/// Before every route: the route's access from [`crate::api::access`], then the token.
pub async fn guard(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let Some(path) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    let access = crate::api::access::required(request.method(), path.as_str());
    let needed = match access {
        Some(Access::Open) => return next.run(request).await,
        Some(Access::Needs(role)) => role,
        // A method the route does not take: its 405, which reveals nothing.
        None if crate::api::access::is_listed(path.as_str()) => return next.run(request).await,
        // Fail closed: a route nobody gave an access to is nobody's.
        None => {
            tracing::error!(route = path.as_str(), method = %request.method(),
                "route missing from the access table; refusing it");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route has no access rule, so it is refused",
            )
            .into_response();
        }
    };
    let auth = &guard.auth;
    let caller = if auth.is_off() {
        Caller {
            sub: trusted_user_header(&request).unwrap_or_else(|| "anonymous".to_string()),
            role: Some(Role::Admin),
        }
    } else {
        let address = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let verified = match bearer_token(&request) {
            Ok(token) => auth.verify(token).await,
            Err(failure) => Err(failure),
        };
        match verified {
            Ok(caller) => caller,
            Err(AuthFailure::ProviderUnavailable(why)) => {
                tracing::warn!(error = %why, "cannot check a token: the identity provider's keys are unavailable");
                let mut problem = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "identity-provider-unavailable",
                    "the identity provider's signing keys cannot be fetched, so no token can \
                     be checked now; try again in a few seconds",
                );
                problem.retry_after = Some(5);
                return problem.into_response();
            }
            Err(AuthFailure::Refused(reason, description)) => {
                metrics::counter!("auth_failures_total", "reason" => reason.as_str()).increment(1);
                // The reason and where from; never the token.
                tracing::warn!(reason = reason.as_str(), client = %address,
                    route = path.as_str(), "authentication failed: {description}");
                if let Some(wait) = auth.failed_from(address) {
                    let mut problem = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too-many-failed-authentications",
                        format!(
                            "too many failed authentications from this address; try again \
                             in {wait} s with a valid token"
                        ),
                    );
                    problem.retry_after = Some(u32::try_from(wait).unwrap_or(u32::MAX));
                    return problem.into_response();
                }
                return unauthorized(&description);
            }
        }
    };
    if !caller.has(needed) {
        let has = caller.role.map_or("no role of this shop", Role::as_str);
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this route needs the {} role; your token carries {has}",
                needed.as_str()
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The token of an `Authorization: Bearer ...` header.
fn bearer_token(request: &Request) -> Result<&str, AuthFailure> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(AuthFailure::refused(
            Reason::Missing,
            "this route needs a bearer token: send Authorization: Bearer <access token>",
        ));
    };
    let text = value.to_str().map_err(|_| {
        AuthFailure::refused(Reason::Malformed, "the Authorization header is not ASCII")
    })?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthFailure::refused(
            Reason::Malformed,
            "the Authorization header must be 'Bearer <access token>'",
        ));
    }
    Ok(token.trim())
}

/// 401 problem+json with the RFC 6750 challenge.
fn unauthorized(description: &str) -> Response {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{description}; get an access token from the shop's identity provider"),
    )
    .into_response();
    // The description is ours (no token text), and quotes cannot appear in it.
    let challenge = format!(
        "Bearer realm=\"cornershop\", error=\"invalid_token\", error_description=\"{}\"",
        description.replace('"', "'")
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// `X-User-Id`, believed only with authentication off (for local experiments).
fn trusted_user_header(request: &Request) -> Option<String> {
    let value = request.headers().get("x-user-id")?.to_str().ok()?.trim();
    (!value.is_empty() && value.len() <= MAX_SUBJECT_LEN && !value.chars().any(char::is_control))
        .then(|| value.to_string())
}
