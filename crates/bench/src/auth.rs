//! The cost of one token check: `Authenticator::verify` of an ES256 token from the
//! embedded issuer, beside two baselines measured in the same run on the same token:
//! jsonwebtoken's decode with signature validation off (parsing and the claim checks,
//! the same ones `verify` asks for) and ring's raw ECDSA P-256 verification of the
//! token's signature over its signing input (the crypto floor).

use std::hint::black_box;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cornershop_server::auth::issuer::LocalIssuer;
use cornershop_server::auth::{AuthFailure, Authenticator, Role};
use cornershop_server::config::AuthArgs;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde_json::{json, Value};

use crate::cli::AuthArgs as Args;
use crate::{emit, measure, round1, round3, Count};

/// `auth [--seconds S] [--rounds R]`: every case runs S seconds in all (default 3), in R
/// rounds (default 5) that take turns, so that load from elsewhere on the machine falls
/// on the three cases alike.
pub(crate) async fn auth(args: &Args) -> anyhow::Result<()> {
    let seconds = args.seconds;
    let rounds = args.rounds.max(1);
    let slice = Duration::from_secs_f64(seconds / f64::from(rounds));

    // The embedded issuer, as `serve` without --oidc-issuer has it: a key file it creates,
    // an admin token minted with it (what `cornershop token --role admin` prints).
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("signing-key.pem");
    let issuer = LocalIssuer::open_or_create(&key_file)?;
    let token = issuer.mint(
        "bench",
        &[Role::Admin],
        Duration::from_secs(3600),
        "cornershop",
    )?;
    let settings = AuthArgs {
        signing_key_file: Some(key_file),
        ..cornershop_server::config::defaults::<AuthArgs>()
    };
    let authenticator = Authenticator::from_config(&settings, dir.path())?;
    let caller = authenticator
        .verify(&token)
        .await
        .map_err(|e| anyhow!("the bench token does not verify: {}", failure(&e)))?;
    if caller.role != Some(Role::Admin) || caller.sub != "bench" {
        bail!("the bench token verified as {caller:?}");
    }

    // Baseline (i): the same decode and claim checks, signature validation off.
    let jwk = issuer.jwks()["keys"][0].clone();
    let (x, y) = (
        jwk["x"].as_str().context("the JWK has no x")?,
        jwk["y"].as_str().context("the JWK has no y")?,
    );
    let unchecked_key = DecodingKey::from_ec_components(x, y)?;
    let mut unchecked = Validation::new(Algorithm::ES256);
    unchecked.insecure_disable_signature_validation();
    unchecked.set_issuer(&[cornershop_server::auth::issuer::ISSUER]);
    unchecked.set_audience(&[settings.oidc_audience.as_str()]);
    unchecked.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    unchecked.validate_nbf = true;
    unchecked.leeway = 30; // the leeway `verify` allows on exp and nbf
    let decode_unchecked = || {
        jsonwebtoken::decode::<Value>(black_box(&token), &unchecked_key, &unchecked)
            .is_ok_and(|data| data.claims["sub"] == "bench")
    };
    if !decode_unchecked() {
        bail!("jsonwebtoken cannot decode the bench token");
    }

    // Baseline (ii): the signature alone, with ring, the way jsonwebtoken calls it
    // (the public key as the uncompressed point, parsed by ring on each verification).
    let (signing_input, signature) = token
        .rsplit_once('.')
        .context("the token has no signature part")?;
    let signature = URL_SAFE_NO_PAD.decode(signature)?;
    let mut point = vec![0x04];
    point.extend(URL_SAFE_NO_PAD.decode(x)?);
    point.extend(URL_SAFE_NO_PAD.decode(y)?);
    let public_key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point);
    let ring_verify = || {
        public_key
            .verify(
                black_box(signing_input.as_bytes()),
                black_box(signature.as_slice()),
            )
            .is_ok()
    };
    if !ring_verify() {
        bail!("ring does not verify the bench token's signature");
    }

    // By reference, so that each call's future owns what it needs.
    let (authenticator, token) = (&authenticator, token.as_str());
    let (decode_unchecked, ring_verify) = (&decode_unchecked, &ring_verify);
    let verify_once = move || async move { authenticator.verify(black_box(token)).await.is_ok() };
    let decode_once = move || async move { decode_unchecked() };
    let ring_once = move || async move { ring_verify() };

    // Warm-up, not counted.
    let warm = Duration::from_millis(100);
    let mut ignored = Count::default();
    measure(&mut ignored, warm, verify_once).await?;
    measure(&mut ignored, warm, decode_once).await?;
    measure(&mut ignored, warm, ring_once).await?;

    let (mut verify, mut decode, mut ring) = (Count::default(), Count::default(), Count::default());
    for _ in 0..rounds {
        measure(&mut verify, slice, verify_once).await?;
        measure(&mut decode, slice, decode_once).await?;
        measure(&mut ring, slice, ring_once).await?;
    }

    let cases = [
        (
            "verify",
            "Authenticator::verify, ES256, embedded issuer",
            verify,
        ),
        (
            "decode-unverified",
            "jsonwebtoken decode, signature validation off (parsing and claim checks)",
            decode,
        ),
        (
            "ring-p256",
            "ring ECDSA_P256_SHA256_FIXED verify of the signature over the signing input",
            ring,
        ),
    ];
    for (case, label, count) in cases {
        emit(json!({
            "kind": "auth", "case": case, "label": label, "tasks": 1,
            "ops": count.ops, "seconds": round3(count.seconds), "rounds": rounds,
            "opsPerSecond": round1(count.ops as f64 / count.seconds),
            "nsPerOp": round1(count.seconds * 1e9 / count.ops as f64),
            "tokenBytes": token.len(),
        }));
    }
    Ok(())
}

fn failure(e: &AuthFailure) -> String {
    match e {
        AuthFailure::Refused(reason, why) => format!("{}: {why}", reason.as_str()),
        AuthFailure::ProviderUnavailable(why) => why.clone(),
    }
}
