//! `cornershop simulate`: the load simulator (`cornershop-simulate`) with the token this
//! shop's embedded issuer signs for it when it is given none.

use std::time::Duration;

pub use cornershop_simulate::{plan, Mix, Report, SimulateError, SCARCE_SKU};

use crate::config::SimulateArgs;

/// Runs the simulation described by `args` and returns its report. Without --token or
/// --token-file, the simulator sends a token signed with the embedded shop's key (admin,
/// `sub` simulator, valid an hour) when that key exists.
pub async fn run(args: SimulateArgs) -> Result<Report, SimulateError> {
    cornershop_simulate::run(args, own_token).await
}

/// The token signed with the key of `--signing-key-file`, else of `--data-dir`; none when
/// there is no key.
fn own_token(args: &SimulateArgs) -> Result<Option<String>, String> {
    let key = args
        .signing_key_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join(crate::config::SIGNING_KEY_FILE));
    if !key.exists() {
        return Ok(None);
    }
    let issuer =
        crate::auth::issuer::LocalIssuer::open_or_create(&key).map_err(|e| format!("{e:#}"))?;
    issuer
        .mint(
            "simulator",
            &[crate::auth::Role::Admin],
            Duration::from_secs(3600),
            "cornershop",
        )
        .map(Some)
        .map_err(|e| format!("{e:#}"))
}
