//! The HTTP layer: the router, authentication, the v1 API, the old tool's routes (an adapter over
//! the same service), and the one place where errors become responses.

mod admin;
mod admin_users;
mod auth;
mod detached;
mod error;
mod json;
mod legacy;
mod metrics;
mod rate_limit;
mod serve;
mod stats;
mod v1;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use metrics::metrics_router;
pub use serve::{Limits, serve};
pub use stats::{ContainerStatsView, DatabaseSizeView, InstanceStatsView, ServerStatsView};

use crate::provision::{Provisioner, Reconciler};
use crate::store::Store;

/// Request bodies larger than this are refused with 413: no valid request comes near it.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub provisioner: Provisioner,
    pub reconciler: Reconciler,
    pub store: Store,
    pub config: std::sync::Arc<crate::config::Config>,
    pub auth_cache: std::sync::Arc<auth::AuthCache>,
    pub users: crate::provision::Users,
    pub metrics: crate::metrics::Metrics,
}

pub fn router(state: AppState) -> Router {
    // Every route but `/healthz` is rate-limited (see `rate_limit`); the old routes' envelope goes
    // outside the limits, so that their 429 is in it too.
    let rate_limited =
        axum::middleware::from_fn_with_state(rate_limit::Limiting::new(state.clone()), rate_limit::limit_callers);
    let router = Router::new()
        .route("/healthz", get(healthz))
        .merge(v1::routes().merge(admin::routes()).route_layer(rate_limited.clone()))
        .merge(legacy::routes().route_layer(rate_limited).layer(axum::middleware::map_response(error::legacy_errors)))
        .layer(detached::RunChangesToCompletion)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(serve::BODY_READ_TIMEOUT))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http());
    // Outermost: a request's time includes its rate limit, its body's read, its envelope. With no
    // metrics listener, nobody would read the figures: requests are not timed.
    let router = match state.config.metrics_listen {
        Some(_) => router.layer(state.metrics.http_layer()),
        None => router,
    };
    router.with_state(state)
}

/// 200 when the store and the Docker engine answer, else 503 saying which does not.
async fn healthz(State(state): State<AppState>) -> Response {
    let checks = state.provisioner.health().await;
    let healthy = checks.values().all(Result::is_ok);
    let body: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(part, result)| (part.to_string(), result.map_or_else(|e| json!(e), |()| json!("ok"))))
        .collect();
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}
