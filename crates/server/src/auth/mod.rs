//! Who is calling, and what they may do.
//!
//! Every request to a protected route carries an OpenID Connect access token (a JWT,
//! RFC 6750 bearer). [`Authenticator::verify`] checks its signature against the identity
//! provider's keys ([`jwks::RemoteKeys`], fetched from `--oidc-issuer`'s discovery
//! document and cached) or, on the embedded default, against the shop's own key
//! ([`issuer::LocalIssuer`]); then its issuer, audience and validity window. The caller's
//! role is the highest of `customer` < `staff` < `admin` its roles claim names.
//!
//! [`guard`] runs before every route: it looks the route's [`Access`] up in
//! [`crate::api::access`] (one table, which the OpenAPI document is written from too),
//! answers 401 (no valid token), 403 (a valid token without the role) or 429 (too many
//! failures from this address), and otherwise hands the handler a [`Caller`]. What
//! belongs to whom (a customer's own carts and orders) the handlers check with
//! [`Caller::may_act_for`], answering 404 for another's, as if it did not exist.

pub mod issuer;
pub mod jwks;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::api::error::ApiError;
use crate::config::{AuthArgs, AuthMode};

/// What a caller may be, each including the ones before it: staff may do all a customer
/// may, for any customer; an admin all that staff may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Role {
    Customer,
    Staff,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Staff => "staff",
            Role::Admin => "admin",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "customer" => Some(Role::Customer),
            "staff" => Some(Role::Staff),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, metrics, the OpenAPI document, the embedded issuer's keys.
    Open,
    /// A valid token with at least this role.
    Needs(Role),
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's `sub`: a customer's customer id, and every event's `metadata.userId`.
    pub sub: String,
    /// The highest role the token names; `None` when it names none of ours.
    pub role: Option<Role>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.role.is_some_and(|r| r >= role)
    }

    /// Whether this caller may see and act on what belongs to `customer_id`: a customer
    /// only on its own, staff and admins on anyone's.
    pub fn may_act_for(&self, customer_id: &str) -> bool {
        self.has(Role::Staff) || self.sub == customer_id
    }

    /// The customer whose data alone this caller may see, or `None` for staff and admins.
    pub fn only_customer(&self) -> Option<&str> {
        (!self.has(Role::Staff)).then_some(self.sub.as_str())
    }
}

/// Handlers take the caller the guard authenticated.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            // A route missing from the access table is refused by the guard before it
            // gets here; this is a wiring mistake, not the caller's.
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "this route was reached without authentication; this is a bug",
            )
        })
    }
}

/// Why a token was refused: the `reason` label of `auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    Malformed,
    Algorithm,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
}

impl Reason {
    /// Every reason: the series `auth_failures_total` starts with, at 0.
    pub const ALL: [Reason; 9] = [
        Reason::Missing,
        Reason::Malformed,
        Reason::Algorithm,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongIssuer,
        Reason::WrongAudience,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Algorithm => "algorithm",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
        }
    }
}

/// A token that does not authenticate its bearer.
#[derive(Debug)]
pub enum AuthFailure {
    /// 401: what is wrong with it, for `error_description` (never the token itself).
    Refused(Reason, String),
    /// 503: the identity provider's keys cannot be fetched, so no token can be checked.
    ProviderUnavailable(String),
}

impl AuthFailure {
    fn refused(reason: Reason, description: impl Into<String>) -> Self {
        AuthFailure::Refused(reason, description.into())
    }
}

/// The algorithms a token may be signed with: asymmetric only. `none` cannot be named
/// (jsonwebtoken has no such algorithm) and HS* would let anyone holding the public key
/// sign, so both are refused before any key is looked at.
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// The longest `sub` taken: it becomes a customer id and every event's userId.
const MAX_SUBJECT_LEN: usize = 200;

enum Keys {
    /// `--auth off`: nothing is checked.
    Off,
    /// The embedded default: the shop's own key.
    Local(Arc<issuer::LocalIssuer>),
    /// `--oidc-issuer`: the provider's published keys.
    Remote(jwks::RemoteKeys),
}

/// Checks tokens, and limits how often one address may fail.
pub struct Authenticator {
    keys: Keys,
    issuer: String,
    audience: String,
    roles_claim: String,
    failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Authenticator {
    /// From the settings: the provider named by `--oidc-issuer`, else the embedded issuer
    /// with its key under the data directory (created on first start), or nothing at all
    /// with `--auth off`.
    pub fn from_config(args: &AuthArgs, data_dir: &Path) -> anyhow::Result<Self> {
        let (keys, issuer) = match (args.auth, &args.oidc_issuer) {
            (AuthMode::Off, _) => {
                tracing::warn!(
                    "authentication is OFF (--auth off): every caller is trusted as an admin \
                     and X-User-Id is taken as sent; never run a shop like this on a network"
                );
                (Keys::Off, String::new())
            }
            (AuthMode::On, Some(url)) => {
                let url = url.trim_end_matches('/').to_string();
                (Keys::Remote(jwks::RemoteKeys::new(&url)?), url)
            }
            (AuthMode::On, None) => {
                let local = issuer::LocalIssuer::open_or_create(&args.signing_key_path(data_dir))?;
                (Keys::Local(Arc::new(local)), issuer::ISSUER.to_string())
            }
        };
        let failures = NonZeroU32::new(args.auth_failure_limit)
            .map(|per_minute| RateLimiter::keyed(Quota::per_minute(per_minute)));
        Ok(Self {
            keys,
            issuer,
            audience: args.oidc_audience.clone(),
            roles_claim: args.oidc_roles_claim.clone(),
            failures,
        })
    }

    pub fn is_off(&self) -> bool {
        matches!(self.keys, Keys::Off)
    }

    /// The embedded issuer, when the shop is its own.
    pub fn local_issuer(&self) -> Option<&Arc<issuer::LocalIssuer>> {
        match &self.keys {
            Keys::Local(local) => Some(local),
            _ => None,
        }
    }

    /// Fetches the provider's keys now, so that the first request does not wait for
    /// them; a failure is only logged (requests retry the fetch).
    pub async fn warm_up(&self) {
        if let Keys::Remote(remote) = &self.keys {
            if let Err(e) = remote.refresh().await {
                tracing::warn!(issuer = %self.issuer, error = %e,
                    "cannot fetch the identity provider's keys yet; requests will retry");
            }
        }
    }

    /// Checks a bearer token; the caller it names.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthFailure> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| match header_algorithm(token) {
                Some(alg) => AuthFailure::refused(
                    Reason::Algorithm,
                    format!("tokens signed with '{alg}' are not accepted"),
                ),
                None => AuthFailure::refused(Reason::Malformed, "the token is not a JWT"),
            })?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(AuthFailure::refused(
                Reason::Algorithm,
                format!(
                    "tokens signed with {:?} are not accepted; RS*, PS* and ES* are",
                    header.alg
                ),
            ));
        }
        // The local key is borrowed; a provider's comes out of its cache.
        let fetched: DecodingKey;
        let key: &DecodingKey = match &self.keys {
            Keys::Off => {
                return Err(AuthFailure::refused(
                    Reason::Malformed,
                    "authentication is off",
                ))
            }
            Keys::Local(local) => {
                if header.kid.as_deref().is_some_and(|kid| kid != local.kid()) {
                    return Err(AuthFailure::refused(
                        Reason::UnknownKey,
                        "the token names a signing key this shop does not have",
                    ));
                }
                local.decoding_key()
            }
            Keys::Remote(remote) => {
                fetched = remote.key(header.kid.as_deref(), header.alg).await?;
                &fetched
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        let claims = jsonwebtoken::decode::<Value>(token, key, &validation)
            .map_err(|e| self.refusal(e))?
            .claims;
        let sub = claims["sub"].as_str().unwrap_or_default();
        if sub.is_empty() || sub.len() > MAX_SUBJECT_LEN || sub.chars().any(char::is_control) {
            return Err(AuthFailure::refused(
                Reason::Malformed,
                format!("the token's sub must be 1 to {MAX_SUBJECT_LEN} visible characters"),
            ));
        }
        Ok(Caller {
            sub: sub.to_string(),
            role: self.highest_role(&claims),
        })
    }

    fn refusal(&self, error: jsonwebtoken::errors::Error) -> AuthFailure {
        use jsonwebtoken::errors::ErrorKind as K;
        match error.kind() {
            K::ExpiredSignature => AuthFailure::refused(Reason::Expired, "the token has expired"),
            K::ImmatureSignature => {
                AuthFailure::refused(Reason::NotYetValid, "the token is not valid yet (nbf)")
            }
            K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => AuthFailure::refused(
                Reason::BadSignature,
                "the token's signature does not verify",
            ),
            K::InvalidIssuer => AuthFailure::refused(
                Reason::WrongIssuer,
                format!("the token was not issued by {}", self.issuer),
            ),
            K::InvalidAudience => AuthFailure::refused(
                Reason::WrongAudience,
                format!("the token is not meant for audience '{}'", self.audience),
            ),
            K::InvalidAlgorithm => AuthFailure::refused(
                Reason::Algorithm,
                "the token's algorithm does not fit its signing key",
            ),
            K::MissingRequiredClaim(claim) => AuthFailure::refused(
                Reason::Malformed,
                format!("the token lacks the '{claim}' claim"),
            ),
            _ => AuthFailure::refused(Reason::Malformed, "the token cannot be read"),
        }
    }

    /// The highest of our roles named by the roles claim (a list, or a space-separated
    /// string) or by Keycloak's `realm_access.roles`.
    fn highest_role(&self, claims: &Value) -> Option<Role> {
        let names = |value: &Value| -> Vec<String> {
            match value {
                Value::Array(items) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                Value::String(text) => text.split_whitespace().map(str::to_string).collect(),
                _ => Vec::new(),
            }
        };
        let mut all = names(&claims[self.roles_claim.as_str()]);
        all.extend(names(&claims["realm_access"]["roles"]));
        all.iter().filter_map(|name| Role::parse(name)).max()
    }

    /// Counts one failed authentication from `address`; `Some(seconds to wait)` once the
    /// address is over its limit.
    fn failed_from(&self, address: IpAddr) -> Option<u64> {
        let limiter = self.failures.as_ref()?;
        // Addresses that stopped failing are forgotten now and then, so a scan from many
        // addresses cannot grow the table without bound.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        match limiter.check_key(&address) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                Some(wait.as_secs().max(1))
            }
        }
    }
}

/// The `alg` a token's header names, when it is one jsonwebtoken cannot even parse
/// (`none`, say): for a clearer refusal.
fn header_algorithm(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    // Echoed in the answer, its challenge header and the log: the caller's text, so only
    // what an algorithm name can hold.
    let alg = value.get("alg")?.as_str()?;
    let name: String = alg
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(20)
        .collect();
    Some(if name.is_empty() { "?".into() } else { name })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(roles_claim: &str) -> Authenticator {
        Authenticator {
            keys: Keys::Off,
            issuer: String::new(),
            audience: "cornershop".into(),
            roles_claim: roles_claim.into(),
            failures: None,
        }
    }

    #[test]
    fn the_highest_known_role_counts_from_either_claim() {
        let auth = authenticator("roles");
        let role = |claims: Value| auth.highest_role(&claims);
        assert_eq!(
            role(serde_json::json!({"roles": ["customer"]})),
            Some(Role::Customer)
        );
        assert_eq!(
            role(serde_json::json!({"realm_access": {"roles": ["offline_access", "staff"]}})),
            Some(Role::Staff)
        );
        assert_eq!(
            role(
                serde_json::json!({"roles": "customer admin", "realm_access": {"roles": ["staff"]}})
            ),
            Some(Role::Admin)
        );
        assert_eq!(
            role(serde_json::json!({"roles": ["Admin", "root", 7]})),
            None
        );
        assert_eq!(role(serde_json::json!({})), None);
        let custom = authenticator("groups");
        assert_eq!(
            custom.highest_role(&serde_json::json!({"groups": ["staff"], "roles": ["admin"]})),
            Some(Role::Staff)
        );
    }

    #[test]
    fn the_algorithm_of_an_unparsable_header_is_named() {
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        assert_eq!(
            header_algorithm(&format!("{header}.e30.")).as_deref(),
            Some("none")
        );
        assert_eq!(header_algorithm("garbage"), None);
        let odd = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode("{\"alg\":\"x\\n\\\"y\\u0000z\"}");
        assert_eq!(
            header_algorithm(&format!("{odd}.e30.")).as_deref(),
            Some("xyz")
        );
    }
}
