//! Who is calling: `Authorization: Bearer TOKEN`, or the bare token as the old tool's clients send it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::provision::Caller;
use crate::secrets::token_digest;
use crate::store::User;

/// How long a known token is taken on trust before the store is asked again. Every request used
/// to cost a store query for its token, half of all the store work on the read path. The admin
/// routes forget a user they change at once (see [`AuthCache::forget_user`]), but only in their own
/// process: in every other process on the store, and beside `dbroker user ...`, a removed or
/// disabled user's token, or one rotated away, keeps working for at most this long (and an enabled
/// user's stays refused as long).
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(1);

/// Tokens past this many are forgotten all at once: a bound on memory, not an eviction policy.
const AUTH_CACHE_MAX: usize = 10_000;

/// Known tokens (by hash, never the tokens themselves) and their users. Unknown tokens are not
/// cached, so a flood of made-up tokens cannot fill it. Keyed by the hash's bytes, and the users
/// shared, not copied: both are done on every request.
#[derive(Default)]
pub struct AuthCache(Mutex<Entries>);

#[derive(Default)]
struct Entries {
    users: HashMap<Digest, (Arc<User>, Instant)>,
    /// Counts the users forgotten: a lookup that began before a user was changed read the store as
    /// it was, and what it read must not be cached after the change was forgotten.
    forgotten: u64,
}

/// What the cache knows of a token: its user, or nothing, with the mark to cache the store's
/// answer with (see [`AuthCache::put`]).
enum Lookup {
    Hit(Arc<User>),
    Miss { mark: u64 },
}

impl AuthCache {
    fn get(&self, token_hash: &Digest) -> Lookup {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match cache.users.get(token_hash).filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL) {
            Some((user, _)) => Lookup::Hit(user.clone()),
            None => Lookup::Miss { mark: cache.forgotten },
        }
    }

    /// Caches what the store said of a token, unless a user was forgotten since `mark` was read.
    fn put(&self, token_hash: Digest, user: Arc<User>, mark: u64) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.forgotten != mark {
            return;
        }
        if cache.users.len() >= AUTH_CACHE_MAX {
            cache.users.clear();
        }
        cache.users.insert(token_hash, (user, Instant::now()));
    }

    /// Forgets every token of the user: after an admin route changed them (disabled, enabled, a
    /// new token, removed), this process's next request with one asks the store.
    pub fn forget_user(&self, user_id: i64) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.users.retain(|_, (user, _)| user.id != user_id);
        cache.forgotten += 1;
    }
}

/// A token's SHA-256 (see `secrets::hash_token`).
type Digest = [u8; 32];

/// The authenticated caller. A handler that takes it cannot run without a known token.
#[derive(Clone)]
pub struct CurrentUser(pub Arc<User>);

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
        let token_hash = token_digest(token);
        let user = match state.auth_cache.get(&token_hash) {
            Lookup::Hit(user) => user,
            Lookup::Miss { mark } => {
                let user = state
                    .store
                    .user_by_token_hash(&hex::encode(token_hash))
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?
                    .map(Arc::new)
                    .ok_or(ApiError::Unauthorized("unknown token"))?;
                // Disabled users are cached too: there are only as many as there are users.
                state.auth_cache.put(token_hash, user.clone(), mark);
                user
            }
        };
        if user.is_disabled() {
            return Err(ApiError::Unauthorized("the user of this token is disabled"));
        }
        Ok(CurrentUser(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> User {
        User {
            id,
            name: format!("user{id}"),
            is_admin: false,
            is_demo: false,
            disabled_at: None,
            created_at: String::new(),
            quota: Default::default(),
        }
    }

    fn mark_of(lookup: Lookup) -> u64 {
        match lookup {
            Lookup::Miss { mark } => mark,
            Lookup::Hit(user) => panic!("{} was cached", user.name),
        }
    }

    #[test]
    fn a_forgotten_user_is_looked_up_again_and_others_stay_cached() {
        let cache = AuthCache::default();
        cache.put(token_digest("h1"), Arc::new(user(1)), mark_of(cache.get(&token_digest("h1"))));
        cache.put(token_digest("h2"), Arc::new(user(2)), mark_of(cache.get(&token_digest("h2"))));

        cache.forget_user(1);

        assert!(matches!(cache.get(&token_digest("h1")), Lookup::Miss { .. }));
        assert!(matches!(cache.get(&token_digest("h2")), Lookup::Hit(u) if u.id == 2));
    }

    #[test]
    fn what_the_store_said_before_a_user_was_forgotten_is_not_cached_after() {
        // The race of a request that read the store just before an admin route disabled its user:
        // its answer, put in the cache after the route forgot the user, would keep the token
        // working for up to AUTH_CACHE_TTL.
        let cache = AuthCache::default();
        let mark = mark_of(cache.get(&token_digest("h1")));

        cache.forget_user(1);
        cache.put(token_digest("h1"), Arc::new(user(1)), mark);

        assert!(matches!(cache.get(&token_digest("h1")), Lookup::Miss { .. }));
    }
}
