//! A request that may change something runs to its end, whatever its client does. Once a request
//! has arrived whole, hyper may drop its future unpolled when the client hangs up at once (it
//! reads the request and the end of the stream together), so this layer spawns the handler's
//! future as a task in `call`, before anything can drop it; the operation it records then runs
//! as a task of its own anyway (see `provision::operations`). Reads (GET, HEAD, OPTIONS) stay in
//! the connection's future, so a client that goes away stops them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;

use super::ApiError;

#[derive(Clone, Copy)]
pub struct RunChangesToCompletion;

impl<S> tower::Layer<S> for RunChangesToCompletion {
    type Service = Detached<S>;

    fn layer(&self, inner: S) -> Detached<S> {
        Detached { inner }
    }
}

#[derive(Clone)]
pub struct Detached<S> {
    inner: S,
}

/// Of any body: in `api::router`'s stack it is given the body timeout's.
impl<S, B> tower::Service<Request<B>> for Detached<S>
where
    S: tower::Service<Request<B>, Response = Response> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    /// A read's own future, unboxed (reads are most requests); a change's, spawned.
    type Future = Either<S::Future, Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let reads = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let answer = self.inner.call(request);
        if reads {
            return Either::Left(answer);
        }
        let detached = tokio::spawn(answer);
        Either::Right(Box::pin(async move {
            match detached.await {
                Ok(answer) => answer,
                Err(error) => Ok(ApiError::Internal(error.into()).into_response()),
            }
        }))
    }
}
