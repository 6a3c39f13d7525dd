//! The HTTP server's accept loop (in place of `axum::serve`, which cannot bound a
//! connection): HTTP/1.1 through hyper, with
//!
//! - a header read timeout: a connection must send its whole request head within it of
//!   opening or of its previous answer, so neither a client that trickles half a request
//!   line nor an idle keep-alive connection holds a file descriptor for long;
//! - a cap on open connections: one more is answered 503 problem+json with `Retry-After`
//!   and closed (and beyond a small number of those at once, closed unanswered);
//! - TLS when the listener has certificates (`--tls-cert`, `--tls-key`; `crate::tls`);
//! - graceful shutdown as `axum::serve` had it: once the signal comes, no new connection
//!   is accepted, idle connections close, and the requests in hand are answered before
//!   their connections close; the call returns when the last one has.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// What one connection may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A connection without a whole request head this long after it opened (or after its
    /// previous answer) is closed.
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// Connections over the cap that are answered at once; beyond these, they are closed
/// without an answer (a flood must not take the descriptors the cap keeps free).
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// How long a refusal may take to write its answer and see the client go.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` completes, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_tls(listener, router, limits, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given (the handshake, in the connection's own task,
/// must end within the header read timeout).
pub async fn serve_with_tls(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream, &refusals, limits.max_connections);
            continue;
        };
        // The client's address, for the limit on failed authentications.
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let Some(tls) = &tls else {
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    // A client that went away, or one too slow with its request head.
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                drop(slot);
            });
            continue;
        };
        let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    // Plain HTTP on the HTTPS port, an untrusting client, a slow handshake.
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What `axum::serve` does too: a connection reset before it was accepted is the client's
/// business; anything else (out of file descriptors, say) is logged, and accepting pauses
/// a second so that connections can close meanwhile.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; accepting again in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A connection over the cap: 503 problem+json with `Retry-After`, then closed.
fn refuse(mut stream: TcpStream, refusals: &Arc<Semaphore>, max_connections: usize) {
    metrics::counter!("http_connections_refused_total").increment(1);
    warn_at_most_every_second(max_connections);
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return; // dropped: closed without an answer
    };
    tokio::spawn(async move {
        let body = format!(
            r#"{{"type":"/problems/too-many-connections","title":"Service Unavailable","status":503,"detail":"the server has {max_connections} connections open, as many as it takes; try again in a moment"}}"#
        );
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            // Read what the client sent until it closes: closing with unread data would
            // reset the connection, and the client could lose the answer.
            let mut discard = [0u8; 1024];
            while stream.read(&mut discard).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
        drop(permit);
    });
}

fn warn_at_most_every_second(max_connections: usize) {
    static LAST_WARNING: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_WARNING.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(
            max_connections,
            "a connection over --max-connections was refused"
        );
    }
}
