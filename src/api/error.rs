//! The one place where errors become HTTP responses: `application/problem+json` on v1, and the old
//! `{"code","msg","data"}` envelope with the same HTTP status on the old tool's routes.
//! Internal errors are logged here, once, with their cause chain, and answered with a generic
//! sentence.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::provision::ProvisionError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the request body is larger than {} KiB", super::MAX_BODY_BYTES / 1024)]
    PayloadTooLarge,
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What an error response says, kept on the response so the old routes can re-render it.
#[derive(Debug, Clone)]
struct ErrorDetail {
    detail: String,
    extra: Value,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        use ProvisionError as P;
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Provision(e) => match e {
                P::NotFound => StatusCode::NOT_FOUND,
                P::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                P::NameTaken(_) | P::Busy(_) | P::Conflict(_) => StatusCode::CONFLICT,
                P::PortsExhausted(_) | P::EngineUnreachable(_) | P::ImageMissing { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                // The database server, dbroker's upstream, failed to come up.
                P::NotReady { .. } | P::ServerRefused(_) => StatusCode::BAD_GATEWAY,
                P::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            ApiError::Internal(cause) | ApiError::Provision(ProvisionError::Internal(cause)) => {
                tracing::error!(error = ?cause, "internal error");
                "dbroker failed on its side; the error is in its log".to_string()
            }
            other => other.to_string(),
        };
        if status.is_server_error() && status != StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(%status, %detail, "request failed");
        }
        let extra = match &self {
            ApiError::Provision(ProvisionError::NotReady { last_logs, .. }) => {
                json!({ "last_logs": last_logs })
            }
            _ => json!({}),
        };
        let mut body = json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(ErrorDetail { detail, extra });
        response
    }
}

/// The old tool's envelope around a successful answer.
pub fn envelope(data: Value) -> Response {
    axum::Json(json!({ "code": 200, "msg": "success", "data": data })).into_response()
}

/// Middleware for the old tool's routes: any error response, whichever layer produced it
/// (authentication, body parsing, the service), becomes the envelope, with the same HTTP status
/// and the status in `code` too.
pub async fn legacy_errors(response: Response) -> Response {
    let Some(error) = response.extensions().get::<ErrorDetail>().cloned() else {
        return response;
    };
    let status = response.status();
    let mut legacy = (status, axum::Json(json!({ "code": status.as_u16(), "msg": error.detail, "data": error.extra })))
        .into_response();
    if let Some(challenge) = response.headers().get(header::WWW_AUTHENTICATE) {
        legacy.headers_mut().insert(header::WWW_AUTHENTICATE, challenge.clone());
    }
    legacy
}
