//! The console's static files, inside the binary (the machine it runs on may reach no CDN, and a
//! page must not depend on one): htmx as its authors publish it, and the console's own CSS and
//! script. Each is served under a path that changes with its content (htmx's version, the others'
//! hash), so that it can be cached for a year and a new release is still fetched at once.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::Digest;

use crate::api::AppState;

/// One file: what it is served as, and its bytes.
pub(super) struct Asset {
    /// Its path, `/assets/NAME`, versioned (see the module's comment).
    pub path: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

impl Asset {
    /// A file whose name carries the hash of its content: `console-0123456789ab.css`.
    fn hashed(stem: &str, extension: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
        let hash = hex::encode(&sha2::Sha256::digest(bytes)[..6]);
        Asset { path: format!("/assets/{stem}-{hash}.{extension}"), content_type, bytes }
    }
}

/// htmx 2.0.11 (`npm pack htmx.org@2`: `dist/htmx.min.js`), under its Zero-Clause BSD licence
/// (assets/htmx-LICENSE). Its version is in its name.
pub(super) static HTMX: LazyLock<Asset> = LazyLock::new(|| Asset {
    path: "/assets/htmx-2.0.11.min.js".into(),
    content_type: "text/javascript; charset=utf-8",
    bytes: include_bytes!("../../assets/htmx-2.0.11.min.js"),
});

pub(super) static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::hashed("console", "css", "text/css; charset=utf-8", include_bytes!("../../assets/console.css"))
});

/// The console's few lines of its own script (copying a URI), as a file: the policy allows no
/// inline script.
pub(super) static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::hashed("console", "js", "text/javascript; charset=utf-8", include_bytes!("../../assets/console.js"))
});

/// How long a browser may keep a file: a year, since its path changes with its content.
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/assets/{name}", get(serve_asset))
}

async fn serve_asset(Path(name): Path<String>) -> Response {
    let path = format!("/assets/{name}");
    let Some(asset) = [&*HTMX, &*STYLE, &*SCRIPT].into_iter().find(|asset| asset.path == path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(CACHE_FOREVER)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        asset.bytes,
    )
        .into_response()
}
