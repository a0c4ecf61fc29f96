//! The web console's sessions: a signed-in browser's cookie names one, and the store keeps only
//! the SHA-256 of its id (a copy of the store signs nobody in), whose user it acts as, its CSRF
//! token and its expiry. In the store, not in memory, so that every replica on it honours a
//! sign-in and a sign-out, and a restart keeps them.

use std::time::Duration;

use super::sql::{Columns, now, params};
use super::users::{user_columns, user_from_row};
use super::{Store, StoreError, User, millis_from_now, now_millis};
use crate::secrets::hash_token;

/// A live session, as a request in it needs it: who, and the token its forms must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf_token: String,
}

impl Store {
    /// Records a session of `user_id` under `session_id` (kept as its hash) for `ttl`, with
    /// `csrf_token`, and sweeps the sessions that have expired, so they do not pile up.
    pub async fn start_session(
        &self,
        session_id: &str,
        user_id: i64,
        csrf_token: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.db.execute("DELETE FROM sessions WHERE expires_at < $1", params![now_millis()]).await?;
        self.db
            .execute(
                "INSERT INTO sessions (id_hash, user_id, csrf_token, signed_in_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                params![hash_token(session_id), user_id, csrf_token, now(), millis_from_now(ttl)],
            )
            .await?;
        Ok(())
    }

    /// The session `session_id` names, with its user as they are now (disabled or not: the caller
    /// refuses a disabled user), unless there is none or it has expired.
    pub async fn session(&self, session_id: &str) -> Result<Option<Session>, StoreError> {
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            ", csrf_token FROM sessions JOIN users ON users.id = sessions.user_id \
             WHERE id_hash = $1 AND expires_at >= $2"
        );
        self.db
            .fetch_optional(sql, params![hash_token(session_id), now_millis()], |row: &dyn Columns| {
                Ok(Session { user: user_from_row(row)?, csrf_token: row.text(8)? })
            })
            .await
    }

    /// Ends session `session_id` (a sign-out): `true` if there was one.
    pub async fn end_session(&self, session_id: &str) -> Result<bool, StoreError> {
        let ended = self.db.execute("DELETE FROM sessions WHERE id_hash = $1", params![hash_token(session_id)]).await?;
        Ok(ended > 0)
    }
}
