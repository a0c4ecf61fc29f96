//! The HTTP layer: the router, authentication, the v1 API, the old tool's routes (an adapter over
//! the same service), and the one place where errors become responses.

mod admin;
mod admin_users;
mod auth;
mod backups;
mod detached;
mod error;
mod json;
mod legacy;
mod metrics;
mod openapi;
mod query;
mod rate_limit;
mod serve;
mod stats;
pub mod types;
mod v1;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use metrics::metrics_router;
pub use openapi::{DOCS_PATH, DOCUMENT_PATH};
pub use serve::{Limits, serve};
pub use types::{ContainerStatsView, DatabaseSizeView, InstanceStatsView, ServerStatsView};

use crate::provision::{Provisioner, Reconciler};
use crate::store::Store;

/// Request bodies larger than this are refused with 413: no valid request comes near it.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach. One reference count to clone: axum clones the state for each
/// request's middleware and handler, and cloning every handle in it (each some reference counts,
/// touched by both cores at once) was a fifth of the detail route's CPU.
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Handles>);

impl From<Handles> for AppState {
    fn from(handles: Handles) -> Self {
        AppState(std::sync::Arc::new(handles))
    }
}

impl std::ops::Deref for AppState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// The handles in the app's state.
pub struct Handles {
    pub provisioner: Provisioner,
    pub reconciler: Reconciler,
    pub store: Store,
    pub config: std::sync::Arc<crate::config::Config>,
    pub auth_cache: std::sync::Arc<auth::AuthCache>,
    pub users: crate::provision::Users,
    pub metrics: crate::metrics::Metrics,
}

/// Every described route: `/healthz`, v1 with the admin routes, and the old tool's routes, apart
/// so that `router` can put the layers each group needs around it.
fn described_routes() -> [OpenApiRouter<AppState>; 3] {
    [OpenApiRouter::new().routes(routes!(healthz)), v1::routes().merge(admin::routes()), legacy::routes()]
}

/// The OpenAPI document that `router` serves at `/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let [health, v1, legacy] = described_routes();
    openapi::finish(health.merge(v1).merge(legacy).into_openapi())
}

pub fn router(state: AppState) -> Router {
    // Every route but `/healthz` (and the API's own document) is rate-limited (see `rate_limit`);
    // the old routes' envelope goes outside the limits, so that their 429 is in it too.
    let limiting = rate_limit::Limiting::new(state.clone());
    let rate_limited = axum::middleware::from_fn_with_state(limiting.clone(), rate_limit::limit_callers);
    let [health, v1, legacy] = described_routes();
    let (routes, document) = health
        .merge(v1.route_layer(rate_limited.clone()))
        .merge(legacy.route_layer(rate_limited).layer(axum::middleware::map_response(error::legacy_errors)))
        .split_for_parts();
    let routes = routes.merge(openapi::reference_page(openapi::finish(document)));
    // The web console's pages, beside the API and through the same layers; none of its paths is
    // one of the API's or the old tool's.
    let routes = if state.config.console {
        let limited = axum::middleware::from_fn_with_state(limiting, rate_limit::limit_addresses);
        routes.merge(crate::console::routes().route_layer(limited))
    } else {
        routes
    };
    // One stack, put around each route in one `layer` call: each call boxes every route once
    // more, and axum clones every box for every request (one stack instead of five layers took a
    // kept detail from 42k instructions to 37k). The first layer is the outermost.
    let around_every_route = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(serve::BODY_READ_TIMEOUT))
        .layer(detached::RunChangesToCompletion);
    // Outermost: a request's time includes its rate limit, its body's read, its envelope. With no
    // metrics listener, nobody would read the figures: requests are not timed.
    let router = match state.config.metrics_listen {
        Some(_) => routes.layer(ServiceBuilder::new().layer(state.metrics.http_layer()).layer(around_every_route)),
        None => routes.layer(around_every_route),
    };
    router.with_state(state)
}

/// 200 when the store and the Docker engine answer, else 503 saying which does not.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses(
        (status = 200, description = "The store and the Docker engine answer", body = types::Health),
        (status = 503, description = "The store or the Docker engine does not answer", body = types::Health),
    ),
)]
async fn healthz(State(state): State<AppState>) -> Response {
    let checks = state.provisioner.health().await;
    let healthy = checks.values().all(Result::is_ok);
    let word = |part: &str| checks.get(part).map_or("unknown", |result| result.err().unwrap_or("ok")).to_string();
    let body = types::Health { store: word("store"), docker: word("docker") };
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}
