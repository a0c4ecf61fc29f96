//! Who is calling: `Authorization: Bearer TOKEN`, or the bare token as the old tool's clients send it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::provision::Caller;
use crate::secrets::hash_token;
use crate::store::User;

/// How long a known token is taken on trust before the store is asked again. Every request used
/// to cost a store query for its token, half of all the store work on the read path; a removed or
/// disabled user's token, or one replaced by `dbroker user rotate-token`, keeps working for at most
/// this long (and an enabled user's stays refused as long).
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(1);

/// Tokens past this many are forgotten all at once: a bound on memory, not an eviction policy.
const AUTH_CACHE_MAX: usize = 10_000;

/// Known tokens (by hash, never the tokens themselves) and their users. Unknown tokens are not
/// cached, so a flood of made-up tokens cannot fill it.
#[derive(Default)]
pub struct AuthCache(Mutex<HashMap<String, (User, Instant)>>);

impl AuthCache {
    fn get(&self, token_hash: &str) -> Option<User> {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(token_hash).filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL).map(|(user, _)| user.clone())
    }

    fn put(&self, token_hash: String, user: User) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= AUTH_CACHE_MAX {
            cache.clear();
        }
        cache.insert(token_hash, (user, Instant::now()));
    }
}

/// The authenticated caller. A handler that takes it cannot run without a known token.
#[derive(Clone)]
pub struct CurrentUser(pub User);

impl CurrentUser {
    /// The caller as the provisioning layer knows it: whose instances, and who to name in histories.
    pub fn caller(&self) -> Caller {
        Caller { user_id: self.0.id, name: self.0.name.clone(), is_admin: self.0.is_admin }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The rate limits' middleware has authenticated the request already, on every route it guards.
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(user.clone());
        }
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("send your token in the Authorization header"))?;
        let value = header.to_str().map_err(|_| ApiError::Unauthorized("the Authorization header is not text"))?.trim();
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).unwrap_or(value).trim();
        if token.is_empty() {
            return Err(ApiError::Unauthorized("the Authorization header holds no token"));
        }
        let token_hash = hash_token(token);
        let user = match state.auth_cache.get(&token_hash) {
            Some(user) => user,
            None => {
                let user = state
                    .store
                    .user_by_token_hash(&token_hash)
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?
                    .ok_or(ApiError::Unauthorized("unknown token"))?;
                // Disabled users are cached too: there are only as many as there are users.
                state.auth_cache.put(token_hash, user.clone());
                user
            }
        };
        if user.is_disabled() {
            return Err(ApiError::Unauthorized("the user of this token is disabled"));
        }
        Ok(CurrentUser(user))
    }
}
