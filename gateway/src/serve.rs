//! The public HTTP server. `axum::serve` has no bound on how long a client may take to send
//! its headers, nor on how many connections it holds open: a slowloris client sending a
//! header line a minute would hold file descriptors for ever. Here hyper closes a connection
//! whose request head has not arrived within `header_timeout`, the router answers 408 to a
//! request (body included) not done within `request_timeout`, and at most `max_connections`
//! are open at once (further ones wait in the kernel's accept queue).

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use verimail_server::shutdown::Shutdown;

/// How long connections may take to finish after the shutdown signal.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `GATEWAY_HEADER_TIMEOUT_SECONDS`: from a connection's start (or its previous response)
    /// to the end of the request head.
    pub header_timeout: Duration,
    /// `GATEWAY_REQUEST_TIMEOUT_SECONDS`: from the head to the response, body included.
    pub request_timeout: Duration,
    /// `GATEWAY_MAX_CONNECTIONS`: connections open at once.
    pub max_connections: usize,
}

/// The defaults: a browser sends its head in milliseconds and our pages answer in a few; the
/// connection cap stays under the usual limit of 1024 open files.
impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1000,
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets the open connections finish
/// their requests (for at most 20 s).
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: give the ones in use time to close.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A closed or timed-out connection is the client's business, not an error of ours.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown()).await.is_err() {
        tracing::warn!(limit = ?DRAIN_LIMIT, "connections still open after the drain limit; stopping anyway");
    }
}
