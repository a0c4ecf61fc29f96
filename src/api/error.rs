//! The one place where errors become HTTP responses: `application/problem+json` on v1, and the old
//! `{"code","msg","data"}` envelope with the same HTTP status on the old tool's routes.
//! Internal errors are logged here, once, with their cause chain, and answered with a generic
//! sentence.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::types::{Envelope, Problem, ProblemExtra};
use crate::provision::{ErrorReport, INTERNAL_DETAIL, ProvisionError};

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
    /// An upload beyond its own limit (an import's).
    #[error("{0}")]
    UploadTooLarge(String),
    #[error("{0}")]
    RateLimited(super::rate_limit::Throttled),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The error an operation ended with, as the store keeps it: what a replayed request answers.
    #[error("{}", .0.detail)]
    Reported(ErrorReport),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What an error response says, kept on the response so the old routes can re-render it.
#[derive(Debug, Clone)]
struct ErrorDetail {
    detail: String,
    extra: ProblemExtra,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge | ApiError::UploadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Provision(e) => status_of(e.code()),
            ApiError::Reported(report) => status_of(&report.code),
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the problem says besides its detail.
    fn extra(&self) -> ProblemExtra {
        let last_logs = |logs: &[String]| ProblemExtra { last_logs: Some(logs.to_vec()), ..Default::default() };
        match self {
            ApiError::Provision(ProvisionError::NotReady { last_logs: logs, .. }) => last_logs(logs),
            ApiError::Reported(report) if !report.last_logs.is_empty() => last_logs(&report.last_logs),
            ApiError::Provision(ProvisionError::Busy { operation: Some((id, _)) }) => {
                ProblemExtra { operation: Some(id.clone()), ..Default::default() }
            }
            // Which limit (`instances`, `memory`, `host_memory`), the limit, what is in use and
            // what was asked (instances, or MiB).
            ApiError::Provision(error) if let Some(exceeded) = error.exceeded() => {
                ProblemExtra::exceeded(error.code(), exceeded)
            }
            ApiError::Reported(report) if let Some(exceeded) = report.exceeded => {
                ProblemExtra::exceeded(&report.code, exceeded)
            }
            // Which limit (`reads` or `changes`), counted how (`user` or `address`), the rate, the
            // burst, and `retry_after` in seconds, as the header says.
            ApiError::RateLimited(throttled) => ProblemExtra::throttled(throttled),
            _ => ProblemExtra::default(),
        }
    }
}

/// The HTTP status of a provisioning error, by its code (see `ProvisionError::code`): one table
/// for errors as they happen and as failed operations keep them.
fn status_of(code: &str) -> StatusCode {
    match code {
        "not_found" | "user_not_found" | "no_backup_policy" => StatusCode::NOT_FOUND,
        "quota_exceeded" => StatusCode::FORBIDDEN,
        "invalid" | "idempotency_key_reused" | "not_loadable" => StatusCode::UNPROCESSABLE_ENTITY,
        "name_taken" | "busy" | "conflict" | "user_owns_instances" => StatusCode::CONFLICT,
        "ports_exhausted" | "engine_unreachable" | "image_missing" | "host_memory_exhausted" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        // The database server, dbroker's upstream, failed to come up or refused.
        "not_ready" | "server_refused" => StatusCode::BAD_GATEWAY,
        // So did a backup target.
        "target_failed" => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A problem+json body (RFC 9457): status, its title, the detail and `extra`'s members.
fn problem(status: StatusCode, detail: &str, extra: ProblemExtra) -> Problem {
    Problem {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail: detail.into(),
        extra,
    }
}

/// A failed operation's error as the problem detail its request answered (or would have).
pub fn reported_problem(report: &ErrorReport) -> Problem {
    let error = ApiError::Reported(report.clone());
    problem(error.status(), &report.detail, error.extra())
}

impl ApiError {
    /// The response's status and detail, as the API answers them (an internal error logged here,
    /// and answered with the generic sentence): what the web console shows, too.
    pub(crate) fn status_and_detail(&self) -> (StatusCode, String) {
        let status = self.status();
        let detail = match self {
            ApiError::Internal(cause) | ApiError::Provision(ProvisionError::Internal(cause)) => {
                tracing::error!(error = ?cause, "internal error");
                INTERNAL_DETAIL.to_string()
            }
            other => other.to_string(),
        };
        if status.is_server_error() && status != StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(%status, %detail, "request failed");
        }
        (status, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = self.status_and_detail();
        let extra = self.extra();
        let mut response = (status, axum::Json(problem(status, &detail, extra.clone()))).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::RateLimited(throttled) = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(throttled.retry_after));
        }
        response.extensions_mut().insert(ErrorDetail { detail, extra });
        response
    }
}

/// Middleware for the old tool's routes: any error response, whichever layer produced it
/// (authentication, body parsing, the service), becomes the envelope, with the same HTTP status
/// and the status in `code` too.
pub async fn legacy_errors(response: Response) -> Response {
    let Some(error) = response.extensions().get::<ErrorDetail>().cloned() else {
        return response;
    };
    let status = response.status();
    let envelope = Envelope { code: status.as_u16(), msg: error.detail, data: error.extra };
    let mut legacy = (status, axum::Json(envelope)).into_response();
    for name in [header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(value) = response.headers().get(&name) {
            legacy.headers_mut().insert(name, value.clone());
        }
    }
    legacy
}
