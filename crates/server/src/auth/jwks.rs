//! The identity provider's signing keys: its discovery document names its JWKS, which is
//! fetched once, cached, and fetched again only when a token names a key not in it (a
//! key rotation; at most every [`MIN_REFRESH`]) or when the cache is [`MAX_AGE`] old.
//! Never per request.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use super::{AuthFailure, Reason};

/// An unknown kid fetches the keys again at most this often, so that tokens with made-up
/// kids cannot make us hammer the provider.
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(5);
/// Keys are fetched again after this long anyway (a provider may retire a key without
/// us seeing a new kid first).
pub(crate) const MAX_AGE: Duration = Duration::from_secs(600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

#[derive(Default)]
struct Cache {
    keys: Vec<Key>,
    fetched: Option<Instant>,
}

pub(crate) struct RemoteKeys {
    issuer: String,
    client: reqwest::Client,
    cache: RwLock<Cache>,
    /// One fetch at a time; the others wait for it and use its keys.
    fetching: Mutex<()>,
}

impl RemoteKeys {
    pub(crate) fn new(issuer: &str) -> anyhow::Result<Self> {
        Ok(Self {
            issuer: issuer.to_string(),
            client: reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?,
            cache: RwLock::new(Cache::default()),
            fetching: Mutex::new(()),
        })
    }

    /// The key that verifies a token with this header.
    pub(crate) async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, AuthFailure> {
        let stale = {
            let cache = self.cache.read().await;
            if let Some(key) = find(&cache.keys, kid, alg) {
                if cache.fetched.is_some_and(|at| at.elapsed() < MAX_AGE) {
                    return Ok(key);
                }
            }
            cache.fetched
        };
        let _fetching = self.fetching.lock().await;
        {
            // Someone else may have fetched while we waited.
            let cache = self.cache.read().await;
            if cache.fetched != stale {
                if let Some(key) = find(&cache.keys, kid, alg) {
                    return Ok(key);
                }
            }
            if let Some(at) = cache.fetched {
                if at.elapsed() < MIN_REFRESH {
                    return find(&cache.keys, kid, alg).ok_or_else(unknown_key);
                }
            }
        }
        match self.fetch().await {
            Ok(keys) => {
                let mut cache = self.cache.write().await;
                cache.keys = keys;
                cache.fetched = Some(Instant::now());
                find(&cache.keys, kid, alg).ok_or_else(unknown_key)
            }
            Err(e) => {
                let cache = self.cache.read().await;
                // A provider that is down for a moment does not stop tokens whose key we
                // already hold.
                match find(&cache.keys, kid, alg) {
                    Some(key) => Ok(key),
                    None if cache.fetched.is_some() => Err(unknown_key()),
                    None => Err(AuthFailure::ProviderUnavailable(e.to_string())),
                }
            }
        }
    }

    /// Fetches the keys now.
    pub(crate) async fn refresh(&self) -> anyhow::Result<()> {
        let _fetching = self.fetching.lock().await;
        let keys = self.fetch().await?;
        let mut cache = self.cache.write().await;
        cache.keys = keys;
        cache.fetched = Some(Instant::now());
        Ok(())
    }

    async fn fetch(&self) -> anyhow::Result<Vec<Key>> {
        let discovery_url = format!("{}/.well-known/openid-configuration", self.issuer);
        let discovery: Value = self
            .client
            .get(&discovery_url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let issuer = discovery["issuer"].as_str().unwrap_or_default();
        anyhow::ensure!(
            issuer.trim_end_matches('/') == self.issuer,
            "the discovery document at {discovery_url} names the issuer '{issuer}', not '{}'",
            self.issuer
        );
        let jwks_uri = discovery["jwks_uri"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the discovery document has no jwks_uri"))?;
        let set: Value = self
            .client
            .get(jwks_uri)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let keys = parse_keys(&set);
        tracing::info!(issuer = %self.issuer, keys = keys.len(), "fetched the identity provider's signing keys");
        Ok(keys)
    }
}

/// The signing keys of a JWKS. Each key is read on its own, so one we cannot use (an
/// encryption key, an unknown type) is skipped rather than spoiling the set.
fn parse_keys(set: &Value) -> Vec<Key> {
    set["keys"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|value| {
            let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                return None;
            }
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            Some(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key: DecodingKey::from_jwk(&jwk).ok()?,
            })
        })
        .collect()
}

fn find(keys: &[Key], kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let fits = |k: &&Key| k.alg.is_none_or(|a| a == alg);
    match kid {
        Some(kid) => keys
            .iter()
            .filter(fits)
            .find(|k| k.kid.as_deref() == Some(kid)),
        // Without a kid, only a provider with one fitting key is unambiguous.
        None => {
            let mut fitting = keys.iter().filter(fits);
            let only = fitting.next();
            if fitting.next().is_some() {
                None
            } else {
                only
            }
        }
    }
    .map(|k| k.key.clone())
}

fn unknown_key() -> AuthFailure {
    AuthFailure::refused(
        Reason::UnknownKey,
        "the token names a signing key the identity provider does not publish",
    )
}
