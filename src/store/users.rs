//! Users and their API tokens (kept as hashes); demo users, disabled users, and their quota
//! overrides (checked in `quotas`).

use super::sql::{Columns, narrowed, now, params};
use super::{Constraint, LimitChange, QuotaChange, QuotaOverride, Store, StoreError, Tx};
use crate::model::UserName;
use crate::secrets::hash_token;

/// A user of the API, as the store keeps them (never their token).
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    /// A demo user (`--demo-users`), whose token is its name.
    pub is_demo: bool,
    /// When the user was disabled (RFC 3339); `None` while their token works.
    pub disabled_at: Option<String>,
    pub created_at: String,
    /// Their own quota, where it differs from the configuration's default.
    pub quota: QuotaOverride,
}

impl User {
    /// Whether the user's token is refused (see `dbroker user disable`).
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }
}

/// What start-up did to the demo users (see [`Store::sync_demo_users`]). Counts rather than names
/// where a name is a token that works.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoUsers {
    /// Demo users named by `--demo-users`: each added, or enabled again if it was disabled.
    pub named: usize,
    /// Demo users that `--demo-users` no longer names, disabled now.
    pub disabled: usize,
    /// Admins whose token was their name, disabled now: a start-up from before demo users were
    /// marked gave an admin named in `--demo-users` their name as a token. Named, since their
    /// token no longer works and the operator has to give each a new one.
    pub admins_disabled: Vec<String>,
}

/// The columns a [`User`] is read from, in every query that returns one: a macro, so that
/// `concat!` keeps each query a constant string.
macro_rules! user_columns {
    () => {
        "id, name, is_admin, is_demo, disabled_at, created_at, quota_instances, quota_memory_mb"
    };
}
pub(super) use user_columns;

impl Store {
    /// Adds a user with the given token; `NameTaken` if the name exists.
    pub async fn add_user(&self, name: &UserName, token: &str, is_admin: bool) -> Result<User, StoreError> {
        self.add_user_with_quota(name, token, is_admin, QuotaOverride::default()).await
    }

    /// Adds a user with the given token and their own quota (in the same row, so a user is never
    /// left without the quota they were added with); `NameTaken` if the name exists.
    pub async fn add_user_with_quota(
        &self,
        name: &UserName,
        token: &str,
        is_admin: bool,
        quota: QuotaOverride,
    ) -> Result<User, StoreError> {
        let sql = concat!(
            "INSERT INTO users (name, token_hash, is_admin, created_at, quota_instances, quota_memory_mb) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            user_columns!()
        );
        let params = params![
            name.as_str(),
            hash_token(token),
            is_admin,
            now(),
            quota.instances,
            quota.memory_mb.map(|m| m as i64),
        ];
        self.db.fetch_one(sql, params, user_from_row).await.map_err(|e| e.or_broke(Constraint::UserName))
    }

    /// Makes the enabled demo users exactly those `names`, at start-up: each is added (its token its
    /// name) or enabled again, and every other demo user is disabled, so that a trial token stops
    /// working once `--demo-users` no longer names it. A name that belongs to a real user is
    /// `NotADemoUser`, and then nothing changes: a real user's token is never replaced by their name.
    pub async fn sync_demo_users(&self, names: &[UserName]) -> Result<DemoUsers, StoreError> {
        // The write lock is taken before the first read, so who is a real user is still true when
        // it is written on, whatever another process (`dbroker user add`) does meanwhile.
        self.db
            .write(async |tx| {
                let now = now();
                let mut outcome = DemoUsers { named: names.len(), ..DemoUsers::default() };

                // Users from before demo users were marked (migration 0005). A token that is its user's
                // name can only have come from `--demo-users`: `user add` makes tokens of 40 random
                // characters. An admin among them is a real admin whose token an old start-up replaced
                // with their name: disabled, not made a demo user, so that the name neither stays an
                // admin's token nor is handed out again as a demo user's.
                let unmarked = tx
                    .fetch_all(
                        "SELECT id, name, token_hash, is_admin FROM users WHERE is_demo = FALSE",
                        params![],
                        |row| Ok((row.int(0)?, row.text(1)?, row.text(2)?, row.flag(3)?)),
                    )
                    .await?;
                for (id, name, token_hash, is_admin) in unmarked {
                    if token_hash != hash_token(&name) {
                        continue;
                    }
                    if is_admin {
                        tx.execute(
                            "UPDATE users SET disabled_at = coalesce(disabled_at, $1) WHERE id = $2",
                            params![now, id],
                        )
                        .await?;
                        outcome.admins_disabled.push(name);
                    } else {
                        tx.execute("UPDATE users SET is_demo = TRUE WHERE id = $1", params![id]).await?;
                    }
                }

                for name in names {
                    let is_demo = tx
                        .fetch_optional("SELECT is_demo FROM users WHERE name = $1", params![name.as_str()], |row| {
                            row.flag(0)
                        })
                        .await?;
                    match is_demo {
                        // An error rolls back whatever the transaction did.
                        Some(false) => return Err(StoreError::NotADemoUser(name.to_string())),
                        Some(true) => {
                            tx.execute("UPDATE users SET disabled_at = NULL WHERE name = $1", params![name.as_str()])
                                .await?;
                        }
                        None => {
                            tx.execute(
                                "INSERT INTO users (name, token_hash, is_admin, is_demo, created_at) \
                             VALUES ($1, $2, FALSE, TRUE, $3)",
                                params![name.as_str(), hash_token(name.as_str()), now],
                            )
                            .await
                            .map_err(|e| e.or_broke(Constraint::UserName))?;
                        }
                    }
                }

                let enabled = tx
                    .fetch_all(
                        "SELECT name FROM users WHERE is_demo = TRUE AND disabled_at IS NULL",
                        params![],
                        |row| row.text(0),
                    )
                    .await?;
                for stale in
                    enabled.iter().filter(|enabled| !names.iter().any(|name| name.as_str() == enabled.as_str()))
                {
                    tx.execute("UPDATE users SET disabled_at = $1 WHERE name = $2", params![now, stale.as_str()])
                        .await?;
                    outcome.disabled += 1;
                }
                Ok(outcome)
            })
            .await
    }

    /// Gives the user a new token: its hash replaces the old one's, so the old token stops working
    /// (on a running dbroker, within `api::auth::AUTH_CACHE_TTL`), and their instances are left as
    /// they are. A demo user becomes a real one, its token no longer being its name. Returns the
    /// user as they were before; `NotFound` if there is no such user.
    pub async fn rotate_token(&self, name: &UserName, token: &str) -> Result<User, StoreError> {
        // Under the write lock: what is returned as "before" is what the update replaced.
        self.db
            .write(async |tx| {
                let before = user_named(tx, name).await?;
                tx.execute(
                    "UPDATE users SET token_hash = $1, is_demo = FALSE WHERE id = $2",
                    params![hash_token(token), before.id],
                )
                .await?;
                // A new token is given when the old one may have leaked: a console signed in with
                // it is signed out.
                tx.execute("DELETE FROM sessions WHERE user_id = $1", params![before.id]).await?;
                Ok(before)
            })
            .await
    }

    /// Disables the user: their token is refused (on a running dbroker, within
    /// `api::auth::AUTH_CACHE_TTL`) but kept, and so are their instances. Disabling a disabled user
    /// keeps the first time. Returns the user as they are now; `NotFound` if there is no such user.
    pub async fn disable_user(&self, name: &UserName) -> Result<User, StoreError> {
        let sql = concat!(
            "UPDATE users SET disabled_at = coalesce(disabled_at, $1) WHERE name = $2 RETURNING ",
            user_columns!()
        );
        self.db.fetch_one(sql, params![now(), name.as_str()], user_from_row).await
    }

    /// Enables the user again, with the token they had. Returns the user as they are now;
    /// `NotFound` if there is no such user.
    pub async fn enable_user(&self, name: &UserName) -> Result<User, StoreError> {
        let sql = concat!("UPDATE users SET disabled_at = NULL WHERE name = $1 RETURNING ", user_columns!());
        self.db.fetch_one(sql, params![name.as_str()], user_from_row).await
    }

    /// The user whose token has this hash (see `secrets::hash_token`), if any, disabled or not:
    /// the caller tells a disabled user from an unknown token.
    pub async fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<User>, StoreError> {
        let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE token_hash = $1");
        self.db.fetch_optional(sql, params![token_hash], user_from_row).await
    }

    /// The user of that name, if any.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1");
        self.db.fetch_optional(sql, params![name], user_from_row).await
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let sql = concat!("SELECT ", user_columns!(), " FROM users ORDER BY name");
        self.db.fetch_all(sql, params![], user_from_row).await
    }

    /// Changes the user's own quota, limit by limit (see [`QuotaChange`]); a running dbroker
    /// applies it to the next change. Returns the user as they are now; `NotFound` if there is no
    /// such user.
    pub async fn change_quota(&self, name: &UserName, change: QuotaChange) -> Result<User, StoreError> {
        // Each limit: `$n` says whether it changes, `$n+1` is its new value (NULL: the default).
        let sql = concat!(
            "UPDATE users SET quota_instances = CASE WHEN $1 THEN $2 ELSE quota_instances END, \
             quota_memory_mb = CASE WHEN $3 THEN $4 ELSE quota_memory_mb END WHERE name = $5 RETURNING ",
            user_columns!()
        );
        let params = params![
            !matches!(change.instances, LimitChange::Keep),
            change.instances.value(),
            !matches!(change.memory_mb, LimitChange::Keep),
            change.memory_mb.value().map(|m| m as i64),
            name.as_str(),
        ];
        self.db.fetch_one(sql, params, user_from_row).await
    }

    /// Removes a user who owns no instances, and returns them as they were. `NotFound` if there
    /// is no such user, `OwnsInstances` (how many) if they own any, `OwnsBackups` if they have backups.
    pub async fn remove_user(&self, name: &UserName) -> Result<User, StoreError> {
        // Under the write lock: no create can give them an instance between the count and the
        // delete (the foreign key would refuse the delete then, but as an error of no use to anyone).
        self.db
            .write(async |tx| {
                let user = user_named(tx, name).await?;
                let owned = tx
                    .fetch_one("SELECT count(*) FROM instances WHERE owner_id = $1", params![user.id], |row| row.int(0))
                    .await?;
                if owned > 0 {
                    return Err(StoreError::OwnsInstances(narrowed(owned)?));
                }
                // A backup outlives its instance, and keeps its owner (a foreign key).
                let backups = tx
                    .fetch_one("SELECT count(*) FROM backups WHERE owner_id = $1", params![user.id], |row| row.int(0))
                    .await?;
                if backups > 0 {
                    return Err(StoreError::OwnsBackups(narrowed(backups)?));
                }
                // Their operations (and the idempotency keys on them) go with them: SQLite may give
                // the next user added the same id, who must not read a removed user's history as
                // their own.
                tx.execute("DELETE FROM operations WHERE owner_id = $1", params![user.id]).await?;
                // Their console sessions too (a foreign key): a removed user is signed out.
                tx.execute("DELETE FROM sessions WHERE user_id = $1", params![user.id]).await?;
                tx.execute("DELETE FROM users WHERE id = $1", params![user.id]).await?;
                Ok(user)
            })
            .await
    }
}

/// The user of that name, read in a write transaction; `NotFound` if there is none.
async fn user_named(tx: &mut Tx, name: &UserName) -> Result<User, StoreError> {
    let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1");
    tx.fetch_optional(sql, params![name.as_str()], user_from_row).await?.ok_or(StoreError::NotFound)
}

/// A [`User`] from a row of `user_columns!()`.
pub(super) fn user_from_row(row: &dyn Columns) -> Result<User, StoreError> {
    Ok(User {
        id: row.int(0)?,
        name: row.text(1)?,
        is_admin: row.flag(2)?,
        is_demo: row.flag(3)?,
        disabled_at: row.opt_time(4)?,
        created_at: row.time(5)?,
        quota: QuotaOverride {
            instances: row.opt_int(6)?.map(narrowed).transpose()?,
            memory_mb: row.opt_int(7)?.map(narrowed).transpose()?,
        },
    })
}
