//! The embedded default's own small issuer: with no `--oidc-issuer`, the shop signs its
//! tokens itself (`cornershop token`), with a P-256 key (ES256) it creates in the data
//! directory on first start (file mode 0600), and publishes the public half at
//! `/.well-known/jwks.json`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use super::Role;

/// The `iss` of the embedded issuer's tokens (and the `issuer` of its discovery
/// document). A constant, not a URL: `cornershop token` mints without knowing where the
/// shop listens, and another shop's tokens fail on the key anyway.
pub const ISSUER: &str = "cornershop-embedded";

const PEM_LABEL: &str = "PRIVATE KEY";

/// The shop's signing key.
pub struct LocalIssuer {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
}

impl LocalIssuer {
    /// The key at `path`, created (mode 0600) when there is none.
    pub fn open_or_create(path: &Path) -> anyhow::Result<Self> {
        let pkcs8 = match std::fs::read_to_string(path) {
            Ok(pem) => {
                warn_if_readable_by_others(path);
                from_pem(&pem)
                    .with_context(|| format!("reading the signing key {}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the signing key {}", path.display()))
            }
        };
        Self::from_pkcs8(&pkcs8)
    }

    fn from_pkcs8(pkcs8: &[u8]) -> anyhow::Result<Self> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| anyhow::anyhow!("the signing key is not a P-256 PKCS#8 key: {e}"))?;
        // The public key is the uncompressed point: 0x04, then x and y, 32 bytes each.
        let public = pair.public_key().as_ref();
        anyhow::ensure!(public.len() == 65, "unexpected P-256 public key length");
        let x = URL_SAFE_NO_PAD.encode(&public[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&public[33..65]);
        // The kid names the key by its public half (RFC 7638's idea, shortened).
        let digest = ring::digest::digest(&ring::digest::SHA256, public);
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
        let decoding = DecodingKey::from_ec_components(&x, &y)?;
        Ok(Self {
            jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y,
                        "kid": kid, "use": "sig", "alg": "ES256"}),
            kid,
            encoding: EncodingKey::from_ec_der(pkcs8),
            decoding,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// A signed access token for `sub` with these roles, valid for `ttl`.
    pub fn mint(
        &self,
        sub: &str,
        roles: &[Role],
        ttl: Duration,
        audience: &str,
    ) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let claims = json!({
            "iss": ISSUER,
            "aud": audience,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(ttl.as_secs().max(1)),
            "jti": uuid::Uuid::new_v4().to_string(),
            "roles": roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        });
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }

    /// The public key set, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// The discovery document, as served at `/.well-known/openid-configuration`; `base`
    /// is how the client reached us (scheme and host). Tokens come from `cornershop
    /// token`, so there is no authorization or token endpoint.
    pub fn discovery(&self, base: &str) -> Value {
        json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": [],
            "response_types_supported": [],
            "subject_types_supported": ["public"],
            "claims_supported": ["sub", "iss", "aud", "exp", "nbf", "iat", "roles"],
        })
    }
}

/// A new key written to `path` with mode 0600; when another process wrote one first
/// (the processes of one shop started together, or `serve` and `cornershop token`), that
/// one. The key is written whole to a file of its own and then linked to `path`, which
/// fails if `path` exists: a reader finds no key or a complete one, never a half-written
/// file, and two processes never end up signing with different keys.
fn create(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory {}", dir.display()))?;
    }
    let document =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|e| anyhow::anyhow!("cannot generate a signing key: {e}"))?;
    let pkcs8 = document.as_ref().to_vec();
    let draft = path.with_extension(format!("new-{}-{}", std::process::id(), draft_tag()?));
    let written = write_private(&draft, to_pem(&pkcs8).as_bytes());
    let published = written.and_then(|()| std::fs::hard_link(&draft, path));
    let _ = std::fs::remove_file(&draft);
    match published {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the shop's token signing key");
            Ok(pkcs8)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process published its key first: it is complete, and it is the one.
            from_pem(&std::fs::read_to_string(path)?)
                .with_context(|| format!("reading the signing key {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("creating the signing key {}", path.display())),
    }
}

/// Writes `bytes` to a new file (mode 0600) and makes them durable.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A random tag for a draft file's name (never derived from the key: a file name is
/// public).
fn draft_tag() -> anyhow::Result<String> {
    let mut tag = [0u8; 6];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut tag)
        .map_err(|_| anyhow::anyhow!("cannot draw a random file name"))?;
    Ok(tag.iter().map(|b| format!("{b:02x}")).collect())
}

fn to_pem(der: &[u8]) -> String {
    let unix_lines = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(PEM_LABEL, der), unix_lines)
}

fn from_pem(text: &str) -> anyhow::Result<Vec<u8>> {
    let block = pem::parse(text)?;
    anyhow::ensure!(
        block.tag() == PEM_LABEL,
        "the PEM block is a {}, not a {PEM_LABEL}",
        block.tag()
    );
    Ok(block.into_contents())
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(),
                    "the signing key is readable by others; run chmod 600 on it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_private_to_its_owner_and_reopens_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("signing-key.pem");
        let first = LocalIssuer::open_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = LocalIssuer::open_or_create(&path).unwrap();
        assert_eq!(first.kid(), again.kid());
        assert_eq!(first.jwks(), again.jwks());
    }

    /// The processes of one shop start together and share the key file: every one of
    /// them gets the same, whole key (a reader once saw the file half-written).
    #[test]
    fn processes_starting_together_all_get_the_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("signing-key.pem");
            let kids: Vec<String> = std::thread::scope(|scope| {
                let starts: Vec<_> = (0..8)
                    .map(|_| scope.spawn(|| LocalIssuer::open_or_create(&path)))
                    .collect();
                starts
                    .into_iter()
                    .map(|start| start.join().unwrap().unwrap().kid().to_string())
                    .collect()
            });
            assert!(kids.iter().all(|kid| *kid == kids[0]), "{kids:?}");
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert_eq!(left.len(), 1, "only the key file stays: {left:?}");
        }
    }
}
