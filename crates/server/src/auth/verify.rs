//! Checking a token: the [`Authenticator`] (its keys, issuer, audience and roles claim)
//! and the rate limit of an address's failures.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::{AuthArgs, AuthMode};

use super::{issuer, jwks, AuthFailure, Caller, Reason, Role, MAX_SUBJECT_LEN};

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

    pub(crate) fn is_off(&self) -> bool {
        matches!(self.keys, Keys::Off)
    }

    /// The embedded issuer, when the shop is its own.
    pub(crate) fn local_issuer(&self) -> Option<&Arc<issuer::LocalIssuer>> {
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
    pub(super) fn failed_from(&self, address: IpAddr) -> Option<u64> {
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
