//! The PostgreSQL backend's head listener: `watch_head` across processes (see the
//! module comment of `postgres`): a background task LISTENs on [`CHANNEL`] and raises the
//! head watch to every notified position, catching up by reading the head after a
//! reconnection.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::StoreError;

/// The channel on which appends announce the new head of the log.
pub(super) const CHANNEL: &str = "cornershop_events";

/// Raises the head watch to `position`; never lowers it.
pub(super) fn raise(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|head| {
        let newer = position > *head;
        if newer {
            *head = position;
        }
        newer
    });
}

pub(super) async fn read_head(pool: &PgPool) -> Result<u64, StoreError> {
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(head as u64)
}

pub(super) async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// The head listener: raises the head watch for every append notified on [`CHANNEL`], from
/// this process or any other, until the store is closed or dropped.
pub(super) async fn follow_head(
    listener: PgListener,
    listen_pool: PgPool,
    pool: PgPool,
    head: Arc<watch::Sender<u64>>,
) {
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
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
                Ok(position) => raise(&head, position),
                Err(_) => {
                    tracing::warn!(payload = notification.payload(), "odd head notification");
                    catch_up(&pool, &head).await;
                }
            },
            // The connection was lost and re-established (and listens again): whatever was
            // notified meanwhile is gone, so read the head instead.
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
    match read_head(pool).await {
        Ok(position) => raise(head, position),
        Err(error) => tracing::warn!(%error, "cannot read the head of the log"),
    }
}
