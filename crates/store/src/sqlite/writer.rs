//! The group-commit writer of the SQLite backend: every write (appends, checkpoints,
//! timers, notifications, leases, ...) is queued as a job for one thread that owns a plain
//! synchronous connection (rusqlite, statements prepared once and cached), runs a batch of
//! jobs in one transaction, each under its own savepoint, and answers each once the commit
//! is durable.
//!
//! Why a thread of its own and not sqlx: sqlx runs every SQLite connection on a worker
//! thread and hands it each statement, and each row, through a channel: with several
//! statements per write, most of the embedded shop's CPU went to waking threads (see
//! BENCHMARKS.md). Here a whole job, all its statements, is one message, and a whole batch
//! runs without leaving the thread.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};

use super::SqliteEventStore;
use crate::{StoreError, Unavailable};

/// A write waiting for the group-commit writer: it runs on the writer's connection inside
/// the batch's transaction and says whether it succeeded, and what to do once the batch
/// is committed (or not).
pub(super) type WriteJob = Box<dyn FnOnce(&rusqlite::Connection) -> JobOutcome + Send>;

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

/// Statements each connection keeps prepared: every statement a write runs, with room.
pub(super) const PREPARED_STATEMENTS: usize = 64;

pub(super) fn closed() -> StoreError {
    StoreError::unavailable(Unavailable::Unreachable, "the event store is closed")
}

impl SqliteEventStore {
    /// Runs `write` in the writer's next group commit and answers once that commit is
    /// durable (or failed).
    pub(super) async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
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
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let outcome = write(conn);
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
        });
        let writes = self
            .writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(closed)?;
        writes.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// What the writer thread holds besides its connection: where it says that writes are
/// refused (a full disk), and the head of the log it moves after each commit.
pub(super) struct Writer {
    pub(super) conn: rusqlite::Connection,
    pub(super) refusal: Arc<Mutex<Option<String>>>,
    pub(super) head: Arc<watch::Sender<u64>>,
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
///
/// Runs on a thread of its own until every sender of `queue` is gone.
pub(super) fn run_group_commit(writer: Writer, mut queue: mpsc::Receiver<WriteJob>) {
    let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < GROUP_COMMIT_MAX {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let jobs = std::mem::take(&mut batch);
        let mut answers = Vec::with_capacity(jobs.len());
        let committed = commit_group(&writer.conn, jobs, &mut answers);
        note_refusal(&writer.refusal, &committed, answers.len());
        let mut last_position = None;
        for answer in answers {
            if let Some(position) = answer.finish(committed.as_ref().map(|_| ())) {
                last_position = Some(position);
            }
        }
        if let Some(position) = last_position {
            writer.head.send_if_modified(|head| {
                let newer = position > *head;
                if newer {
                    *head = position;
                }
                newer
            });
        }
    }
}

/// Keeps `refusal` saying why writes fail while they fail for a reason of the store's own
/// (a full disk), and clears it with the next commit that succeeds.
fn note_refusal(
    refusal: &Mutex<Option<String>>,
    committed: &Result<(), StoreError>,
    writes: usize,
) {
    let why = match committed {
        Err(e) => {
            tracing::error!(error = %e, writes, "a group commit failed; none of its writes is stored");
            e.unavailability().map(|_| {
                format!(
                    "since {}: {e}",
                    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
        }
        Ok(()) => None,
    };
    let mut current = refusal.lock().unwrap_or_else(|p| p.into_inner());
    match (why, current.is_some()) {
        (Some(why), false) => *current = Some(why),
        (None, true) if committed.is_ok() => {
            tracing::info!("the store takes writes again");
            *current = None;
        }
        _ => {}
    }
}

/// The error each write of a batch gets when the batch as a whole failed (the drivers'
/// errors are not `Clone`). Its kind says whether the store is unavailable (a full disk,
/// say), so that the caller can answer 507 or 503 rather than 500.
fn shared_failure(e: &StoreError) -> StoreError {
    let detail = format!("the commit of this write's batch failed, nothing of it is stored: {e}");
    match e.unavailability() {
        Some(kind) => StoreError::unavailable(kind, detail),
        None => StoreError::Database(sqlx::Error::Io(std::io::Error::other(detail))),
    }
}

/// Runs each job under a savepoint of one transaction and commits it. Any error returned
/// here fails every job of the batch; the transaction, if SQLite has not rolled it back by
/// itself, is rolled back before the next batch.
fn commit_group(
    conn: &rusqlite::Connection,
    jobs: Vec<WriteJob>,
    answers: &mut Vec<Box<dyn Finish>>,
) -> Result<(), StoreError> {
    let committed = run_jobs(conn, jobs, answers);
    if committed.is_err() && !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "cannot roll back a failed group commit");
        }
    }
    committed
}

fn run_jobs(
    conn: &rusqlite::Connection,
    jobs: Vec<WriteJob>,
    answers: &mut Vec<Box<dyn Finish>>,
) -> Result<(), StoreError> {
    // IMMEDIATE: the write lock is taken here, not by the first job's first write.
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    for job in jobs {
        // Without a savepoint the job cannot run alone: fail the batch (the jobs not run
        // yet are dropped, and their callers get an error).
        conn.prepare_cached("SAVEPOINT job")?.execute([])?;
        let JobOutcome {
            succeeded,
            fatal,
            answer,
        } = job(conn);
        answers.push(answer);
        if let Some(e) = fatal {
            return Err(e);
        }
        // SQLite rolls a whole transaction back by itself on some errors (full disk, I/O
        // error, out of memory, busy): then the savepoints released so far are gone.
        if conn.is_autocommit() {
            return Err(StoreError::unavailable(
                Unavailable::Unreachable,
                "SQLite rolled the transaction back by itself",
            ));
        }
        if !succeeded {
            // Only this job's changes go; the savepoint is then released like the others.
            conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
        }
        // A savepoint that cannot be released leaves the transaction in doubt.
        conn.prepare_cached("RELEASE job")?.execute([])?;
    }
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(())
}
