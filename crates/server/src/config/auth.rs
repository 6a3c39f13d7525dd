//! Who may call the API: the authentication mode and the OpenID Connect settings.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::SIGNING_KEY_FILE;

/// Whether requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    On,
    /// Nothing is checked and every caller is an admin: for local experiments only.
    Off,
}

/// Who may call the API: OpenID Connect bearer tokens (see `auth`).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// `on` (the default): every route but health, metrics, the OpenAPI document and the
    /// issuer's keys needs a bearer token. `off`: nothing is checked, X-User-Id is
    /// believed, and a warning is logged at start; never on a network.
    #[arg(long = "auth", env = "CORNERSHOP_AUTH", value_enum, default_value_t = AuthMode::On)]
    pub auth: AuthMode,

    /// The OpenID Connect issuer whose access tokens are accepted, e.g.
    /// https://idp.example.com/realms/cornershop; its discovery document names the keys.
    /// Without it the shop is its own issuer: it signs tokens (`cornershop token`) with a
    /// key kept under --data-dir.
    #[arg(long, env = "CORNERSHOP_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// The audience (`aud`) a token must name.
    #[arg(long, env = "CORNERSHOP_OIDC_AUDIENCE", default_value = "cornershop")]
    pub oidc_audience: String,

    /// The claim holding the caller's roles (customer, staff, admin). Keycloak's
    /// realm_access.roles is read too.
    #[arg(long, env = "CORNERSHOP_OIDC_ROLES_CLAIM", default_value = "roles")]
    pub oidc_roles_claim: String,

    /// The identity provider's client id of the console (`/console`), a public client
    /// with the authorization code flow and PKCE whose redirect URI is
    /// `<this shop's origin>/console/callback`. Without it (or without --oidc-issuer) the
    /// console signs in with a pasted access token only.
    #[arg(long, env = "CORNERSHOP_CONSOLE_OIDC_CLIENT_ID")]
    pub console_oidc_client_id: Option<String>,

    /// The embedded issuer's signing key (created, mode 0600, when missing). Default:
    /// signing-key.pem in --data-dir. Processes of one shop that sign their own tokens
    /// share this file.
    #[arg(long, env = "CORNERSHOP_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,

    /// Failed authentications allowed per client address and minute (a burst of as many);
    /// past that, requests without a valid token get 429 with Retry-After. 0: no limit.
    #[arg(long, env = "CORNERSHOP_AUTH_FAILURE_LIMIT", default_value_t = 60)]
    pub auth_failure_limit: u32,
}

impl AuthArgs {
    /// Where the embedded issuer's key is.
    pub fn signing_key_path(&self, data_dir: &std::path::Path) -> PathBuf {
        self.signing_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join(SIGNING_KEY_FILE))
    }
}
