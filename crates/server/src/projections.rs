//! `cornershop projections rebuild|verify`: the read models' maintenance commands, on the
//! same store settings as `serve`.

use std::sync::Arc;
use std::time::Duration;

use cornershop_app::{CommandBus, SystemClock};
use cornershop_readmodels::{verify, RebuildProgress, PROJECTIONS};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::StoreArgs;
use crate::startup::{open_event_store, open_read_models};

/// Rebuilds the named projection (all when `None`), showing progress on the terminal.
pub async fn rebuild(name: Option<String>, store_args: &StoreArgs) -> anyhow::Result<()> {
    let names: Vec<String> = match name {
        Some(name) => vec![name],
        None => PROJECTIONS.iter().map(|n| n.to_string()).collect(),
    };
    let store = open_event_store(store_args).await?;
    let read_models = open_read_models(store_args).await?;
    for name in names {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} [{elapsed_precise}] [{bar:40}] position {pos}/{len} {msg}",
            )?
            .progress_chars("=> "),
        );
        bar.set_prefix(name.clone());
        bar.enable_steady_tick(Duration::from_millis(200));
        let progress = |p: RebuildProgress| {
            bar.set_length(p.head);
            bar.set_position(p.position);
            bar.set_message(format!("({} events read)", p.events));
        };
        let result = read_models.rebuild(&name, store.as_ref(), &progress).await;
        bar.finish_and_clear();
        let report = result.map_err(|e| anyhow::anyhow!("rebuild of {name} failed: {e}"))?;
        println!(
            "{name}: rebuilt from {} events (applied {}) up to position {}, generation {}, in {:.1} s",
            report.events_read,
            report.events_applied,
            report.position,
            report.generation,
            report.duration_ms as f64 / 1000.0
        );
    }
    read_models.close().await;
    store.close().await;
    Ok(())
}

/// Verifies every read model against the events; prints each mismatch. Returns whether
/// everything matched.
pub async fn verify(store_args: &StoreArgs) -> anyhow::Result<bool> {
    let store = open_event_store(store_args).await?;
    let read_models = open_read_models(store_args).await?;
    // Verifying compares ids, totals and statuses: no personal value is opened, so no
    // master key is needed.
    let keyring = Arc::new(cornershop_app::Keyring::locked(store.clone()));
    let bus = CommandBus::new(store.clone(), Arc::new(SystemClock), keyring);
    // A projection still catching up is given a few seconds before a difference counts.
    let report = verify::verify(&bus, read_models.as_ref(), 3, Duration::from_secs(1))
        .await
        .map_err(|e| anyhow::anyhow!("verification failed to run: {e}"))?;
    for mismatch in &report.mismatches {
        println!("MISMATCH {mismatch}");
    }
    println!(
        "verified {} orders and {} SKUs: {} mismatches",
        report.orders_checked,
        report.skus_checked,
        report.mismatches.len()
    );
    read_models.close().await;
    store.close().await;
    Ok(report.mismatches.is_empty())
}
