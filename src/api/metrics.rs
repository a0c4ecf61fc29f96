//! `GET /metrics`, on the metrics listener only (see `app`): what `crate::metrics` recorded, and
//! the figures of the store read as Prometheus scrapes. It needs no token: the listener is on
//! loopback by default, and no figure names a user or an instance.

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{ApiError, AppState};

pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut figures = state.provisioner.figures().await?;
    figures.reconciler_leader = state.reconciler.report().leader;
    Ok(([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], state.metrics.encode(&figures)).into_response())
}
