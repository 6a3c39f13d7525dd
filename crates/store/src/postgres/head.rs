//! The PostgreSQL backend's head of the log: the *settled head*, the position below which
//! every append has finished (see the module comment of `postgres` and
//! migrations/postgres/0004 for why readers stop there), kept in a watch and shared across
//! processes.
//!
//! Three background tasks per store:
//! - the **settler** computes the settled head (`cornershop_settled_head()`) whenever an
//!   append of this process is not settled yet, and once a second
//!   otherwise (which settles what a process that crashed after its commit left behind);
//! - the **announcer** tells the other processes each new settled head with `pg_notify`
//!   (`cornershop_announce`, committed without waiting for a WAL flush), at most one
//!   notification in flight: a notifying commit takes a database-wide lock, so
//!   notifications are coalesced instead of sent once per append;
//! - the **listener** LISTENs on [`CHANNEL`] and raises the head to every announced
//!   position, settling afresh after a reconnection (notifications are not durable).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::StoreError;

/// The channel on which stores announce the settled head of the log.
pub(super) const CHANNEL: &str = "cornershop_events";

/// How often the settler settles when no append asks it to.
const IDLE_SETTLE: Duration = Duration::from_secs(1);

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// SQLSTATE 55P03: the lock timeout of `cornershop_settled_head()` ran out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Raises the head watch to `position`; never lowers it. Returns whether it rose.
pub(super) fn raise(head: &watch::Sender<u64>, position: u64) -> bool {
    head.send_if_modified(|head| {
        let newer = position > *head;
        if newer {
            *head = position;
        }
        newer
    })
}

/// The settled head, computed now: waits for the appends in flight to finish.
pub(super) async fn settled_head(pool: &PgPool) -> Result<u64, StoreError> {
    let head: i64 = sqlx::query_scalar("SELECT cornershop_settled_head()")
        .fetch_one(pool)
        .await?;
    Ok(head as u64)
}

/// Whether settling failed because an append stayed registered past the lock timeout of
/// `cornershop_settled_head()` (the database itself answers).
pub(super) fn waited_too_long(error: &StoreError) -> bool {
    matches!(error, StoreError::Database(sqlx::Error::Database(db))
        if db.code().as_deref() == Some(LOCK_NOT_AVAILABLE))
}

/// When settling failed because an append stayed registered past the lock timeout of
/// `cornershop_settled_head()`: which appends are in flight, and for how long (backend pid,
/// application name, state, seconds since its transaction began), for the operator.
async fn stuck_appends(pool: &PgPool, error: &StoreError) -> Option<String> {
    if !waited_too_long(error) {
        return None;
    }
    let described: Vec<String> = sqlx::query_scalar(
        "SELECT format('backend %s (%s, %s, transaction open for %s s)', a.pid, \
                       a.application_name, a.state, \
                       round(EXTRACT(EPOCH FROM now() - a.xact_start)::numeric, 1)) \
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
          WHERE l.locktype = 'advisory' AND l.classid = 1129529680 AND l.objsubid = 2 \
            AND l.granted AND l.mode = 'ExclusiveLock' \
          ORDER BY a.xact_start LIMIT 5",
    )
    .fetch_all(pool)
    .await
    .ok()?;
    Some(if described.is_empty() {
        "an append that has finished meanwhile".to_string()
    } else {
        described.join("; ")
    })
}

pub(super) async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// The settler: settles whenever `wanted` (the last position an append of this process
/// waits for) is above the head, or [`IDLE_SETTLE`] has passed, and hands each rise of the
/// head to the announcer.
pub(super) async fn settle(
    pool: PgPool,
    head: Arc<watch::Sender<u64>>,
    mut wanted: watch::Receiver<u64>,
    announce: watch::Sender<u64>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        // The head is read before waiting, not inside `wait_for`'s test (which runs under
        // the `wanted` watch's read guard): no guard of one watch is held while the other
        // is locked. A rise of the head meanwhile only makes this settle one more time.
        let settled = *head.borrow();
        let store_gone = matches!(
            tokio::time::timeout(IDLE_SETTLE, wanted.wait_for(|wanted| *wanted > settled)).await,
            Ok(Err(_))
        );
        if store_gone || pool.is_closed() {
            return; // the store is gone
        }
        match settled_head(&pool).await {
            Ok(position) => {
                backoff = Duration::from_millis(100);
                if raise(&head, position) {
                    announce.send_replace(position);
                }
            }
            Err(StoreError::Database(sqlx::Error::PoolClosed)) => return,
            Err(error) => {
                match stuck_appends(&pool, &error).await {
                    Some(stuck) => tracing::warn!(
                        %stuck,
                        "the head of the log waits for an append that does not finish; retrying"
                    ),
                    None => tracing::warn!(%error, "cannot settle the head of the log; retrying"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The announcer: notifies the newest settled head this process found, one notification
/// at a time (those found meanwhile are folded into the next).
pub(super) async fn announce(pool: PgPool, mut found: watch::Receiver<u64>) {
    while found.changed().await.is_ok() {
        let position = *found.borrow_and_update();
        let sent = sqlx::query("SELECT cornershop_announce($1)")
            .bind(position as i64)
            .execute(&pool)
            .await;
        match sent {
            Ok(_) => {}
            Err(sqlx::Error::PoolClosed) => return,
            // The other processes settle on their own within a second.
            Err(error) => tracing::warn!(%error, "cannot announce the head of the log"),
        }
    }
}

/// The head listener: raises the head watch for every position announced on [`CHANNEL`],
/// by this process or any other, until the store is closed or dropped.
pub(super) async fn follow_head(
    listener: PgListener,
    listen_pool: PgPool,
    pool: PgPool,
    head: Arc<watch::Sender<u64>>,
) {
    let mut listener = Some(listener);
    let mut backoff = Duration::from_millis(100);
    loop {
        if listen_pool.is_closed() {
            return;
        }
        let Some(current) = listener.as_mut() else {
            match listen(&listen_pool).await {
                Ok(l) => {
                    tracing::info!("head listener reconnected");
                    listener = Some(l);
                    backoff = Duration::from_millis(100);
                    catch_up(&pool, &head).await;
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    tracing::warn!(%error, "head listener cannot reconnect; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        match current.try_recv().await {
            Ok(Some(notification)) => match notification.payload().parse::<u64>() {
                Ok(position) => {
                    raise(&head, position);
                }
                Err(_) => {
                    tracing::warn!(payload = notification.payload(), "odd head notification");
                    catch_up(&pool, &head).await;
                }
            },
            // The connection was lost and re-established (and listens again): whatever was
            // announced meanwhile is gone, so settle instead.
            Ok(None) => {
                tracing::info!("head listener reconnected");
                catch_up(&pool, &head).await;
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::warn!(%error, "head listener lost its connection; reconnecting");
                listener = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn catch_up(pool: &PgPool, head: &watch::Sender<u64>) {
    match settled_head(pool).await {
        Ok(position) => {
            raise(head, position);
        }
        Err(error) => tracing::warn!(%error, "cannot settle the head of the log"),
    }
}
