//! Our own query-string extractor, beside `json::JsonBody`: a query that does not parse (an
//! unknown parameter, a value of the wrong kind) is 422 in our error format, saying what is wrong.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(query) =
            Query::from_request_parts(parts, state).await.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
        Ok(QueryParams(query))
    }
}
