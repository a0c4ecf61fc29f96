//! Our own JSON body extractor, so a bad body gets our error format and a message that says what
//! to fix: malformed JSON is 400, well-formed JSON with wrong fields or values is 422, too big 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::ApiError;

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        // An empty body is an empty object: the old tool's clients may send none when every
        // field is optional; the v1 create then answers that `engine` is missing.
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(bytes).map(JsonBody).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::Unprocessable(e.to_string()),
            _ => ApiError::BadRequest(format!("the body is not valid JSON: {e}")),
        })
    }
}
