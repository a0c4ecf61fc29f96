//! Serving the router: axum's `serve`, with one HTTP/1 setting of our own. hyper closes a
//! connection at the first end of stream it reads, by default, even right after a whole request,
//! and may drop that request unread; so a client that sends a change and hangs up at once would
//! leave it to chance whether the change happens. With half-closed connections kept, every
//! request that arrived whole is served (its answer then has nowhere to go), and `detached` sees
//! it to its end. (Header-read timeouts and connection limits belong here too.)

use std::future::Future;

use axum::Router;
use axum::body::Body;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long accepting waits after an error (out of file descriptors, say) before trying again.
const ACCEPT_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets each
/// connection finish the request it is serving, and returns once all have closed.
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.half_close(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service =
            router.clone().map_request(|request: axum::http::Request<hyper::body::Incoming>| request.map(Body::new));
        let connection = http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a connection ended in an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
