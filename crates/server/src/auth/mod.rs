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
//!
//! `verify` holds the [`Authenticator`], `guard` the [`guard`]; this file, who a caller
//! is and why a token was refused.

mod guard;
pub mod issuer;
pub mod jwks;
mod verify;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

use crate::api::error::ApiError;

pub use guard::{guard, Guard};
pub use verify::Authenticator;

/// The longest `sub` taken: it becomes a customer id and every event's userId.
const MAX_SUBJECT_LEN: usize = 200;

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
pub(crate) enum Access {
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
    pub(crate) fn may_act_for(&self, customer_id: &str) -> bool {
        self.has(Role::Staff) || self.sub == customer_id
    }

    /// The customer whose data alone this caller may see, or `None` for staff and admins.
    pub(crate) fn only_customer(&self) -> Option<&str> {
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
