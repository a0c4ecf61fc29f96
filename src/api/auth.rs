//! Who is calling: `Authorization: Bearer TOKEN`, or the bare token as the old tool's clients send it.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::provision::Caller;
use crate::store::User;

/// The authenticated caller. A handler that takes it cannot run without a known token.
pub struct CurrentUser(pub User);

impl CurrentUser {
    /// The caller as the provisioning layer knows it: whose instances, and who to name in histories.
    pub fn caller(&self) -> Caller {
        Caller { user_id: self.0.id, name: self.0.name.clone() }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("send your token in the Authorization header"))?;
        let value = header.to_str().map_err(|_| ApiError::Unauthorized("the Authorization header is not text"))?.trim();
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).unwrap_or(value).trim();
        if token.is_empty() {
            return Err(ApiError::Unauthorized("the Authorization header holds no token"));
        }
        let user = state
            .store
            .user_by_token(token)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .ok_or(ApiError::Unauthorized("unknown token"))?;
        Ok(CurrentUser(user))
    }
}
