//! Rebuilding the read models from the event store's log: the rebuild's lease and
//! heartbeat, filling the shadow tables page by page, and the swap that puts them live.

use std::time::{Duration, Instant};

use chrono::Utc;
use cornershop_store::EventLog;
use futures::FutureExt;

use super::batch::{batched, insert, Stmt};
use super::engine::Tx;
use super::{micros, t, Arg, Dialect, SqlReadModels};
use crate::schema::{render, statements, INDEXES, SWAPPED, TABLES};
use uuid::Uuid;

use crate::{
    is_projected, ProjectedEvent, ReadModelError, RebuildProgress, RebuildReport, PROJECTIONS,
};

/// Events per page (and per transaction) of a rebuild.
const PAGE: u32 = 2000;
/// A rebuild's lease is taken over when its holder has been silent this long.
const LEASE_STALE: Duration = Duration::from_secs(120);

impl SqlReadModels {
    async fn take_lease(&self, name: &str, holder: &str) -> Result<(), ReadModelError> {
        let now = micros(Utc::now());
        let stale = now - LEASE_STALE.as_micros() as i64;
        let mut tx = self.engine.begin().await?;
        let taken = tx
            .exec(
                "UPDATE rm_projection_state SET rebuild_holder = ?, rebuild_heartbeat_us = ? \
                 WHERE name = ? AND (rebuild_holder IS NULL OR rebuild_heartbeat_us < ?)",
                vec![t(holder), Arg::I(now), t(name), Arg::I(stale)],
            )
            .await?;
        if taken == 1 {
            return tx.commit().await;
        }
        let holders = tx
            .fetch(
                "SELECT rebuild_holder FROM rm_projection_state WHERE name = ?",
                vec![t(name)],
                |row| row.text("rebuild_holder"),
            )
            .await?;
        match holders.into_iter().next() {
            None => Err(ReadModelError::UnknownProjection(name.to_string())),
            Some(holder) => Err(ReadModelError::RebuildRunning {
                name: name.to_string(),
                holder: holder.unwrap_or_default(),
            }),
        }
    }

    async fn heartbeat(&self, tx: &mut Tx, name: &str, holder: &str) -> Result<(), ReadModelError> {
        let kept = tx
            .exec(
                "UPDATE rm_projection_state SET rebuild_heartbeat_us = ? \
                 WHERE name = ? AND rebuild_holder = ?",
                vec![Arg::I(micros(Utc::now())), t(name), t(holder)],
            )
            .await?;
        if kept == 1 {
            Ok(())
        } else {
            Err(ReadModelError::RebuildRunning {
                name: name.to_string(),
                holder: "another rebuild took the lease over".into(),
            })
        }
    }

    /// Applies a page of the log to the shadow tables; returns how many events it applied.
    /// (The shadows start empty and the log holds each event once: no event repeats.)
    /// The page's effects go as a few multi-row statements (see batch.rs), on SQLite in
    /// one call.
    async fn apply_page(
        &self,
        tx: &mut Tx,
        page: &[cornershop_store::StoredEvent],
    ) -> Result<u64, ReadModelError> {
        let mut applied = 0;
        let mut statements = Vec::new();
        for stored in page {
            if !is_projected(&stored.envelope.event_type) {
                continue;
            }
            // An event the read models cannot take is left out, as the live projection
            // leaves it out (it dead-letters it): the rebuilt models match the live ones.
            let mut effect = Vec::new();
            let event = match ProjectedEvent::from_stored(stored).and_then(|event| {
                self.effect(&mut effect, "rm_shadow_", &event)
                    .map(|()| event)
            }) {
                Ok(event) => event,
                Err(e @ ReadModelError::BadEvent { .. }) => {
                    tracing::warn!(error = %e, position = stored.position, "the rebuild leaves out an event the read models cannot take");
                    continue;
                }
                Err(e) => return Err(e),
            };
            statements.append(&mut effect);
            let id = event.event_id.to_string();
            insert(
                &mut statements,
                "INSERT INTO rm_shadow_applied (event_id) VALUES".into(),
                "(?)".into(),
                String::new(),
                &id,
                vec![Arg::T(id.clone())],
            );
            applied += 1;
        }
        tx.execute_all(batched(statements), false).await?;
        Ok(applied)
    }

    async fn rebuild_inner(
        &self,
        name: &str,
        holder: &str,
        source: &dyn EventLog,
        progress: &(dyn Fn(RebuildProgress) + Send + Sync),
    ) -> Result<RebuildReport, ReadModelError> {
        let started = Instant::now();
        let head = source.head_position().await?;
        let int = self.dialect.int();
        {
            let mut tx = self.engine.begin().await?;
            for table in SWAPPED {
                tx.exec(&format!("DROP TABLE IF EXISTS rm_shadow_{table}"), vec![])
                    .await?;
            }
            for statement in statements(&render(TABLES, "rm_shadow_", int)) {
                tx.exec(statement, vec![]).await?;
            }
            tx.commit().await?;
        }
        let (mut position, mut read, mut applied) = (0u64, 0u64, 0u64);
        progress(RebuildProgress {
            position,
            head,
            events: read,
        });
        // Fill the shadows, a page per transaction (with the lease's heartbeat), while the
        // live tables keep serving. The next page is read from the log while this one is
        // applied: reading (decoding every event) and applying each take a core.
        let mut page = source.read_log(position, PAGE).await?;
        while let Some(last) = page.last().map(|e| e.position) {
            let full = page.len() == PAGE as usize;
            let fill = async {
                let mut tx = self.engine.begin().await?;
                let applied = self.apply_page(&mut tx, &page).await?;
                self.heartbeat(&mut tx, name, holder).await?;
                tx.commit().await?;
                Ok::<u64, ReadModelError>(applied)
            };
            let ahead = async {
                if full {
                    source
                        .read_log(last, PAGE)
                        .await
                        .map_err(ReadModelError::from)
                } else {
                    Ok(Vec::new())
                }
            };
            let (filled, next) = tokio::join!(fill, ahead);
            applied += filled?;
            read += page.len() as u64;
            position = last;
            progress(RebuildProgress {
                position,
                head: head.max(position),
                events: read,
            });
            page = next?;
        }
        // The swap: the live projection waits on the state row from here to the commit.
        let mut tx = self.engine.begin().await?;
        self.heartbeat(&mut tx, name, holder).await?;
        loop {
            let page = source.read_log(position, PAGE).await?;
            let Some(last) = page.last() else { break };
            applied += self.apply_page(&mut tx, &page).await?;
            read += page.len() as u64;
            position = last.position;
        }
        for table in SWAPPED {
            tx.exec(&format!("DROP TABLE IF EXISTS rm_{table}"), vec![])
                .await?;
        }
        for table in SWAPPED {
            tx.exec(
                &format!("ALTER TABLE rm_shadow_{table} RENAME TO rm_{table}"),
                vec![],
            )
            .await?;
            if self.dialect == Dialect::Postgres {
                // The primary key's index keeps its name through a rename; give it the
                // live name, so that the next rebuild's shadow can have the shadow name.
                tx.exec(
                    &format!(
                        "ALTER INDEX IF EXISTS rm_shadow_{table}_pkey RENAME TO rm_{table}_pkey"
                    ),
                    vec![],
                )
                .await?;
            }
        }
        for statement in statements(&render(INDEXES, "rm_", int)) {
            tx.exec(statement, vec![]).await?;
        }
        let now = micros(Utc::now());
        tx.exec(
            "UPDATE rm_projection_state SET position = ?, events_applied = ?, updated_us = ?, \
             generation = generation + 1, rebuilt_us = ?, rebuild_holder = NULL, \
             rebuild_heartbeat_us = NULL, rebuild_error = NULL WHERE name = ?",
            vec![
                Arg::I(position as i64),
                Arg::I(applied as i64),
                Arg::I(now),
                Arg::I(now),
                t(name),
            ],
        )
        .await?;
        let generations = tx
            .fetch(
                "SELECT generation FROM rm_projection_state WHERE name = ?",
                vec![t(name)],
                |row| row.int_of("generation"),
            )
            .await?;
        tx.commit().await?;
        let generation = generations.first().copied().unwrap_or(0).max(0) as u64;
        progress(RebuildProgress {
            position,
            head: head.max(position),
            events: read,
        });
        Ok(RebuildReport {
            name: name.to_string(),
            events_read: read,
            events_applied: applied,
            position,
            generation,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}

pub(super) async fn rebuild(
    store: &SqlReadModels,
    name: &str,
    source: &dyn EventLog,
    progress: &(dyn Fn(RebuildProgress) + Send + Sync),
) -> Result<RebuildReport, ReadModelError> {
    if !PROJECTIONS.contains(&name) {
        return Err(ReadModelError::UnknownProjection(name.to_string()));
    }
    let holder = format!("pid{}-{}", std::process::id(), Uuid::new_v4().simple());
    store.take_lease(name, &holder).await?;
    // Whatever ends the rebuild early (an error, a panic in the code it runs), its
    // lease is released and the failure recorded for `GET /api/projections`.
    let result =
        match std::panic::AssertUnwindSafe(store.rebuild_inner(name, &holder, source, progress))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => Err(ReadModelError::RebuildFailed(format!(
                "the rebuild panicked: {}",
                cornershop_messaging::panic_message(panic.as_ref())
            ))),
        };
    if let Err(e) = &result {
        tracing::error!(projection = name, error = %e, "the rebuild failed; its lease is released");
        let why = format!(
            "{}: {e}",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        // Released in its own statement, retried a few times: a lease left behind
        // would refuse every rebuild until it went stale.
        for attempt in 0..3 {
            let released = store
                .engine
                .all_or_nothing(vec![Stmt::alone(
                    "UPDATE rm_projection_state SET rebuild_holder = NULL, \
                     rebuild_heartbeat_us = NULL, rebuild_error = ? \
                     WHERE name = ? AND rebuild_holder = ?",
                    vec![t(&why), t(name), t(&holder)],
                )])
                .await
                .is_ok();
            if released {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
    }
    result
}
