//! Serving the router: axum's `serve` loop, with the limits a public service needs and two
//! settings of our own.
//!
//! - Half-closed HTTP/1 connections are kept. hyper closes a connection at the first end of
//!   stream it reads, by default, even right after a whole request, and may drop that request
//!   unread; so a client that sends a change and hangs up at once would leave it to chance whether
//!   the change happens. With half-closed connections kept, every request that arrived whole is
//!   served (its answer then has nowhere to go), and `detached` sees it to its end.
//! - A client has `HEADER_READ_TIMEOUT` to send each request's head; hyper's timer runs whenever a
//!   connection waits for one, so an idle keep-alive connection is closed after as long too, and a
//!   client that trickles its headers cannot hold a connection. (`BODY_READ_TIMEOUT` bounds a
//!   body, in `api::router`.)
//! - At most `Limits::max_connections` connections are served at once, below the process's limit
//!   of open files: the rest of the files stay for the store and the Docker engine, which
//!   dbroker cannot work without. A connection past the cap is answered 503 at once and closed.
//! - Each request carries its peer's address (axum's `ConnectInfo`), for the rate limits.
//! - Shutdown stops accepting, lets each connection finish the request it is serving, and waits
//!   at most `Limits::shutdown_grace` for them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How long a client has to send a request's head, and how long an idle connection is kept.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to send a request's body (64 KiB at most).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Open files kept for what is not a client connection: the store's files, connections to the
/// Docker engine and to instances' servers, archive spools, logs.
const RESERVED_FILES: u64 = 256;

/// The most connections served at once, whatever the limit of open files.
const MAX_CONNECTIONS: u64 = 10_000;

/// How long accepting waits after an error (out of file descriptors, say) before trying again.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// What a connection past the cap is told, before it is closed.
const TOO_MANY_CONNECTIONS: &str = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"too many connections; try again shortly"}"#;

/// The limits of `serve`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

impl Limits {
    /// A cap on connections below this process's limit of open files (its soft `RLIMIT_NOFILE`),
    /// keeping `RESERVED_FILES` for the rest; and `shutdown_grace`.
    pub fn for_this_process(shutdown_grace: Duration) -> Self {
        let files = open_files_limit().unwrap_or(1024);
        let max_connections = files.saturating_sub(RESERVED_FILES).clamp(16, MAX_CONNECTIONS) as usize;
        Limits { max_connections, shutdown_grace }
    }
}

/// This process's soft limit of open files.
fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given, and nothing else.
    let done = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (done == 0).then_some(limit.rlim_cur)
}

/// Serves `router` on `listener` until `shutdown` resolves (see the module's comment).
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>, limits: Limits) {
    tracing::info!(max_connections = limits.max_connections, "serving");
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.half_close(true).timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(turn_away(stream));
            continue;
        };
        let service = router.clone().map_request(move |request: axum::http::Request<hyper::body::Incoming>| {
            let mut request = request.map(Body::new);
            // Who is at the other end: requests without a valid token are rate-limited by it.
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection =
            graceful.watch(http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a connection ended in an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?limits.shutdown_grace, "connections still open at shutdown; closing them");
    }
}

/// How long a connection past the cap may take to send its request's head, and how much of it
/// is read: an answer written before the request arrived is one that no client reads.
const TURN_AWAY_READ: Duration = Duration::from_secs(1);
const TURN_AWAY_HEAD_BYTES: usize = 16 * 1024;

/// Answers a connection past the cap once its request's head has arrived, and closes it.
async fn turn_away(mut stream: TcpStream) {
    tracing::warn!("too many connections: turning one away");
    let read_head = async {
        let (mut head, mut buffer) = (Vec::new(), [0u8; 1024]);
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < TURN_AWAY_HEAD_BYTES {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(TURN_AWAY_READ, read_head).await;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nRetry-After: 1\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{TOO_MANY_CONNECTIONS}",
        TOO_MANY_CONNECTIONS.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
}
