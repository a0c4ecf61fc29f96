//! The web console: server-rendered pages at `/` for people who would rather click than curl.
//! Each page calls the same service as the JSON API (`provision`), not the API over HTTP, and
//! shows the API's own error messages. A user signs in with their token (see `session`); the
//! pages (see `pages`) use a little htmx, served from inside the binary with the console's CSS,
//! to keep statuses and an operation's steps up to date. Nothing is fetched from elsewhere, and
//! the Content-Security-Policy allows no script but those files. `--no-console` leaves it out.

mod assets;
mod pages;
mod session;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

use crate::api::AppState;

/// The console's routes; `api::router` merges them beside the API's when the console is on. No
/// path here is one of the API's (`/v1`, `/healthz`, `/openapi.json`, `/docs`) or the old tool's
/// (`/mysql`, `/redis`, `/postgres`, `/list/…`, `/detail/…`).
pub(crate) fn routes() -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(pages::list_instances))
        .route("/sign-in", get(session::sign_in_page).post(session::sign_in))
        .route("/sign-out", post(session::sign_out))
        .route("/partials/instances", get(pages::instance_rows))
        .route("/new", get(pages::new_instance_page).post(pages::create_instance))
        .route("/instances/{id}", get(pages::show_instance))
        .route("/partials/instances/{id}/status", get(pages::instance_status))
        .route("/instances/{id}/reveal", post(pages::reveal_password))
        .route("/instances/{id}/action", post(pages::act_on_instance))
        .route("/instances/{id}/resize", post(pages::resize_instance))
        .route("/instances/{id}/delete", get(pages::confirm_delete).post(pages::delete_instance))
        .route("/instances/{id}/history", get(pages::instance_history))
        .route("/instances/{id}/backups", post(pages::take_backup))
        .route("/instances/{id}/restore", post(pages::restore_backup))
        .route("/instances/{id}/policy", post(pages::put_policy))
        .route("/operations/{id}", get(pages::show_operation))
        .route("/partials/operations/{id}", get(pages::operation_steps))
        .route("/admin", get(pages::admin_page))
        .layer(axum::middleware::map_response(page_headers));
    pages.merge(assets::routes())
}

/// What every page's answer carries: a policy that allows only the console's own files (no
/// inline script or style, no frames, forms only back to dbroker), and no caching, since a page
/// may show a password.
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    response
}

/// The console's Content-Security-Policy: its own scripts and styles only, never inline ones or
/// `eval` (htmx is told not to use it, see `base.html`).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
