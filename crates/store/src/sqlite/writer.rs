//! The group-commit writer of the SQLite backend: every write (appends, checkpoints,
//! timers, notifications, leases, ...) is queued as a job for one task that runs a batch
//! of them in one transaction, each under its own savepoint, and answers each once the
//! commit is durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;
use futures::future::BoxFuture;
use sqlx::{Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot, watch};

use super::SqliteEventStore;
use crate::{StoreError, Unavailable};

/// A write waiting for the group-commit writer: it runs on the writer's connection inside
/// the batch's transaction and says whether it succeeded, and what to do once the batch
/// is committed (or not).
pub(super) type WriteJob =
    Box<dyn for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> BoxFuture<'c, JobOutcome> + Send>;

/// What a job's run says to the group commit: how it went, and its answer to finish.
pub(super) struct JobOutcome {
    succeeded: bool,
    /// The job failed in a way that can end the whole transaction (see [`Unavailable`]):
    /// the batch must not go on.
    fatal: Option<StoreError>,
    answer: Box<dyn Finish>,
}

/// What a write does after its batch's commit: answer its caller (only now, when the
/// outcome is durable) and report the log position it reached, if it appended.
pub(super) trait Finish: Send {
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>) -> Option<u64>;
}

/// The answer to one write, held until the commit.
struct Answer<T> {
    outcome: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    /// Runs on a committed success; returns the log position reached (appends).
    on_commit: fn(&T) -> Option<u64>,
}

impl<T: Send> Finish for Answer<T> {
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>) -> Option<u64> {
        let outcome = match (commit, self.outcome) {
            (Ok(()), outcome) => outcome,
            // The commit failed: nothing of the batch is stored.
            (Err(e), Ok(_)) => Err(shared_failure(e)),
            (Err(_), Err(e)) => Err(e),
        };
        let position = outcome.as_ref().ok().and_then(self.on_commit);
        let _ = self.reply.send(outcome);
        position
    }
}

/// Most writes one commit takes: bounds the latency a commit adds to the first of them.
pub(super) const GROUP_COMMIT_MAX: usize = 256;

impl SqliteEventStore {
    /// Runs `write` in the writer's next group commit and answers once that commit is
    /// durable (or failed).
    pub(super) async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        self.write_then(write, |_| None).await
    }

    pub(super) async fn write_then<T, F>(
        &self,
        write: F,
        on_commit: fn(&T) -> Option<u64>,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            Box::pin(async move {
                let outcome = write(conn).await;
                let succeeded = outcome.is_ok();
                let fatal = match &outcome {
                    Err(e) => e
                        .unavailability()
                        .map(|kind| StoreError::unavailable(kind, e.to_string())),
                    Ok(_) => None,
                };
                JobOutcome {
                    succeeded,
                    fatal,
                    answer: Box::new(Answer {
                        outcome,
                        reply,
                        on_commit,
                    }),
                }
            })
        });
        self.writes
            .send(job)
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }
}

/// The group-commit writer's connection pool (one connection) and the count of the
/// transaction rollbacks SQLite made on it, by itself or asked.
pub(super) struct Writer {
    pub(super) pool: SqlitePool,
    pub(super) rollbacks: Arc<AtomicU64>,
    pub(super) refusal: Arc<std::sync::Mutex<Option<String>>>,
}

/// Group commit: every write (appends, checkpoints, timers, notifications, leases, ...)
/// queues here while the previous commit is being made durable, and the next commit takes
/// all of them (up to [`GROUP_COMMIT_MAX`]) in one transaction, so that they share one
/// fsync. Each runs under its own savepoint: one that fails (a version conflict, a used
/// idempotency or dedupe key) is rolled back alone and answered with its error; the
/// others commit. Nobody is answered before the commit is durable.
///
/// A failure that can end the transaction (a full disk, an I/O error, out of memory, a
/// busy database: see [`Unavailable`]) fails the whole batch: every job of it is answered
/// with that error and none with success, because SQLite may have rolled back everything
/// before it. The writer then carries on with the next batch, so writes succeed again by
/// themselves once the cause (a full disk) is gone.
pub(super) async fn run_group_commit(
    writer: Writer,
    head: Arc<watch::Sender<u64>>,
    mut queue: mpsc::Receiver<WriteJob>,
) {
    let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
    while queue.recv_many(&mut batch, GROUP_COMMIT_MAX).await > 0 {
        let jobs = std::mem::take(&mut batch);
        let mut answers = Vec::with_capacity(jobs.len());
        let committed = commit_group(&writer, jobs, &mut answers).await;
        let refusal = match &committed {
            Err(e) => {
                tracing::error!(error = %e, writes = answers.len(), "a group commit failed; none of its writes is stored");
                e.unavailability().map(|_| {
                    format!(
                        "since {}: {e}",
                        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                })
            }
            Ok(()) => None,
        };
        {
            let mut current = writer.refusal.lock().unwrap_or_else(|p| p.into_inner());
            match (refusal, current.is_some()) {
                (Some(why), false) => *current = Some(why),
                (None, true) if committed.is_ok() => {
                    tracing::info!("the store takes writes again");
                    *current = None;
                }
                _ => {}
            }
        }
        let mut last_position = None;
        for answer in answers {
            if let Some(position) = answer.finish(committed.as_ref().map(|_| ())) {
                last_position = Some(position);
            }
        }
        if let Some(position) = last_position {
            head.send_if_modified(|head| {
                let newer = position > *head;
                if newer {
                    *head = position;
                }
                newer
            });
        }
    }
}

/// The error each write of a batch gets when the batch as a whole failed (sqlx errors are
/// not `Clone`). Its kind says whether the store is unavailable (a full disk, say), so
/// that the caller can answer 507 or 503 rather than 500.
fn shared_failure(e: &StoreError) -> StoreError {
    let detail = format!("the commit of this write's batch failed, nothing of it is stored: {e}");
    match e.unavailability() {
        Some(kind) => StoreError::unavailable(kind, detail),
        None => StoreError::Database(sqlx::Error::Io(std::io::Error::other(detail))),
    }
}

/// Runs each job under a savepoint of one transaction and commits it. Any error returned
/// here fails every job of the batch (the transaction rolls back when dropped).
///
/// After a failed batch the connection is closed, not reused: when SQLite has rolled the
/// transaction back by itself, sqlx's own ROLLBACK fails and its count of open
/// transactions and savepoints no longer matches SQLite's, so its next BEGIN, COMMIT or
/// RELEASE would not mean what it says. A new connection starts from a known state.
async fn commit_group(
    writer: &Writer,
    jobs: Vec<WriteJob>,
    answers: &mut Vec<Box<dyn Finish>>,
) -> Result<(), StoreError> {
    let mut conn = writer.pool.acquire().await?;
    let committed = commit_group_on(&mut conn, writer, jobs, answers).await;
    if committed.is_err() {
        conn.close_on_drop();
    }
    committed
}

async fn commit_group_on(
    conn: &mut sqlx::pool::PoolConnection<Sqlite>,
    writer: &Writer,
    jobs: Vec<WriteJob>,
    answers: &mut Vec<Box<dyn Finish>>,
) -> Result<(), StoreError> {
    let mut tx = sqlx::Connection::begin(&mut **conn).await?;
    let rollbacks_before = writer.rollbacks.load(Ordering::SeqCst);
    // Whether SQLite has rolled the batch's transaction back by itself: then the
    // savepoints released so far are gone, and a later SAVEPOINT would silently start a
    // new transaction.
    let transaction_lost = || writer.rollbacks.load(Ordering::SeqCst) != rollbacks_before;
    for job in jobs {
        let mut savepoint = match sqlx::Connection::begin(&mut *tx).await {
            Ok(savepoint) => savepoint,
            // Without a savepoint the job cannot run alone: fail the batch (the jobs not
            // run yet are dropped, and their callers get an error).
            Err(e) => return Err(e.into()),
        };
        let JobOutcome {
            succeeded,
            fatal,
            answer,
        } = job(&mut savepoint).await;
        answers.push(answer);
        if let Some(e) = fatal {
            return Err(e);
        }
        if succeeded {
            // A savepoint that cannot be released leaves the transaction in doubt.
            savepoint.commit().await?;
        }
        // (A failed job's savepoint is rolled back, and only it, when dropped.)
        if transaction_lost() {
            return Err(StoreError::unavailable(
                Unavailable::Unreachable,
                "SQLite rolled the transaction back by itself",
            ));
        }
    }
    tx.commit().await.map_err(StoreError::from)
}
