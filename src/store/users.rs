//! Users and their API tokens (kept as hashes); demo users, disabled users, and their quota
//! overrides (checked in `quotas`).

use sqlx::Row;

use super::{LimitChange, QuotaChange, QuotaOverride, Store, StoreError, map_unique_violation, now_rfc3339};
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
        let created_at = now_rfc3339();
        let id = sqlx::query(
            "INSERT INTO users (name, token_hash, is_admin, created_at, quota_instances, quota_memory_mb) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(name.as_str())
        .bind(hash_token(token))
        .bind(is_admin)
        .bind(&created_at)
        .bind(quota.instances)
        .bind(quota.memory_mb.map(|m| m as i64))
        .fetch_one(&self.pool)
        .await
        .map_err(map_unique_violation)?
        .get(0);
        Ok(User { id, name: name.to_string(), is_admin, is_demo: false, disabled_at: None, created_at, quota })
    }

    /// Makes the enabled demo users exactly those `names`, at start-up: each is added (its token its
    /// name) or enabled again, and every other demo user is disabled, so that a trial token stops
    /// working once `--demo-users` no longer names it. A name that belongs to a real user is
    /// `NotADemoUser`, and then nothing changes: a real user's token is never replaced by their name.
    pub async fn sync_demo_users(&self, names: &[UserName]) -> Result<DemoUsers, StoreError> {
        // IMMEDIATE takes the write lock before the first read, so who is a real user is still true
        // when it is written on, whatever another process (`dbroker user add`) does meanwhile.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let now = now_rfc3339();
        let mut outcome = DemoUsers { named: names.len(), ..DemoUsers::default() };

        // Users from before demo users were marked (migration 0005). A token that is its user's
        // name can only have come from `--demo-users`: `user add` makes tokens of 40 random
        // characters. An admin among them is a real admin whose token an old start-up replaced
        // with their name: disabled, not made a demo user, so that the name neither stays an
        // admin's token nor is handed out again as a demo user's.
        let unmarked = sqlx::query("SELECT id, name, token_hash, is_admin FROM users WHERE is_demo = 0")
            .fetch_all(&mut *tx)
            .await?;
        for row in unmarked {
            let (id, name, token_hash): (i64, String, String) = (row.get("id"), row.get("name"), row.get("token_hash"));
            if token_hash != hash_token(&name) {
                continue;
            }
            if row.get::<bool, _>("is_admin") {
                sqlx::query("UPDATE users SET disabled_at = coalesce(disabled_at, ?) WHERE id = ?")
                    .bind(&now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                outcome.admins_disabled.push(name);
            } else {
                sqlx::query("UPDATE users SET is_demo = 1 WHERE id = ?").bind(id).execute(&mut *tx).await?;
            }
        }

        for name in names {
            let is_demo: Option<bool> = sqlx::query_scalar("SELECT is_demo FROM users WHERE name = ?")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            match is_demo {
                // Dropping the transaction rolls back whatever it did.
                Some(false) => return Err(StoreError::NotADemoUser(name.to_string())),
                Some(true) => {
                    sqlx::query("UPDATE users SET disabled_at = NULL WHERE name = ?")
                        .bind(name.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO users (name, token_hash, is_admin, is_demo, created_at) VALUES (?, ?, 0, 1, ?)",
                    )
                    .bind(name.as_str())
                    .bind(hash_token(name.as_str()))
                    .bind(&now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_unique_violation)?;
                }
            }
        }

        let enabled: Vec<String> =
            sqlx::query_scalar("SELECT name FROM users WHERE is_demo = 1 AND disabled_at IS NULL")
                .fetch_all(&mut *tx)
                .await?;
        for stale in enabled.iter().filter(|enabled| !names.iter().any(|name| name.as_str() == enabled.as_str())) {
            sqlx::query("UPDATE users SET disabled_at = ? WHERE name = ?")
                .bind(&now)
                .bind(stale)
                .execute(&mut *tx)
                .await?;
            outcome.disabled += 1;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Gives the user a new token: its hash replaces the old one's, so the old token stops working
    /// (on a running dbroker, within `api::auth::AUTH_CACHE_TTL`), and their instances are left as
    /// they are. A demo user becomes a real one, its token no longer being its name. Returns the
    /// user as they were before; `NotFound` if there is no such user.
    pub async fn rotate_token(&self, name: &UserName, token: &str) -> Result<User, StoreError> {
        // IMMEDIATE: what is returned as "before" is what the update replaced.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let before = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE name = ?"))
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| user_from_row(&r))
            .ok_or(StoreError::NotFound)?;
        sqlx::query("UPDATE users SET token_hash = ?, is_demo = 0 WHERE id = ?")
            .bind(hash_token(token))
            .bind(before.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(before)
    }

    /// Disables the user: their token is refused (on a running dbroker, within
    /// `api::auth::AUTH_CACHE_TTL`) but kept, and so are their instances. Disabling a disabled user
    /// keeps the first time. Returns the user as they are now; `NotFound` if there is no such user.
    pub async fn disable_user(&self, name: &UserName) -> Result<User, StoreError> {
        sqlx::query(concat!(
            "UPDATE users SET disabled_at = coalesce(disabled_at, ?) WHERE name = ? RETURNING ",
            user_columns!()
        ))
        .bind(now_rfc3339())
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| user_from_row(&r))
        .ok_or(StoreError::NotFound)
    }

    /// Enables the user again, with the token they had. Returns the user as they are now;
    /// `NotFound` if there is no such user.
    pub async fn enable_user(&self, name: &UserName) -> Result<User, StoreError> {
        sqlx::query(concat!("UPDATE users SET disabled_at = NULL WHERE name = ? RETURNING ", user_columns!()))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| user_from_row(&r))
            .ok_or(StoreError::NotFound)
    }

    /// The user whose token has this hash (see `secrets::hash_token`), if any, disabled or not:
    /// the caller tells a disabled user from an unknown token.
    pub async fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE token_hash = ?"))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| user_from_row(&r)))
    }

    /// The user of that name, if any.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| user_from_row(&r)))
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows =
            sqlx::query(concat!("SELECT ", user_columns!(), " FROM users ORDER BY name")).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    /// Changes the user's own quota, limit by limit (see [`QuotaChange`]); a running dbroker
    /// applies it to the next change. Returns the user as they are now; `NotFound` if there is no
    /// such user.
    pub async fn change_quota(&self, name: &UserName, change: QuotaChange) -> Result<User, StoreError> {
        // Each limit: `?n` says whether it changes, `?n+1` is its new value (NULL: the default).
        sqlx::query(concat!(
            "UPDATE users SET quota_instances = CASE WHEN ?1 THEN ?2 ELSE quota_instances END, \
             quota_memory_mb = CASE WHEN ?3 THEN ?4 ELSE quota_memory_mb END WHERE name = ?5 RETURNING ",
            user_columns!()
        ))
        .bind(!matches!(change.instances, LimitChange::Keep))
        .bind(change.instances.value())
        .bind(!matches!(change.memory_mb, LimitChange::Keep))
        .bind(change.memory_mb.value().map(|m| m as i64))
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| user_from_row(&r))
        .ok_or(StoreError::NotFound)
    }

    /// Removes a user who owns no instances, and returns them as they were. `NotFound` if there
    /// is no such user, `OwnsInstances` (how many) if they own any.
    pub async fn remove_user(&self, name: &UserName) -> Result<User, StoreError> {
        // IMMEDIATE: no create can give them an instance between the count and the delete (the
        // foreign key would refuse the delete then, but as an error of no use to anyone).
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let user = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE name = ?"))
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| user_from_row(&r))
            .ok_or(StoreError::NotFound)?;
        let owned: i64 = sqlx::query_scalar("SELECT count(*) FROM instances WHERE owner_id = ?")
            .bind(user.id)
            .fetch_one(&mut *tx)
            .await?;
        if owned > 0 {
            return Err(StoreError::OwnsInstances(owned as u64));
        }
        // Their operations (and the idempotency keys on them) go with them: SQLite may give the
        // next user added the same id, who must not read a removed user's history as their own.
        sqlx::query("DELETE FROM operations WHERE owner_id = ?").bind(user.id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM users WHERE id = ?").bind(user.id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(user)
    }
}

/// A [`User`] from a row of `user_columns!()`.
fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> User {
    User {
        id: row.get("id"),
        name: row.get("name"),
        is_admin: row.get("is_admin"),
        is_demo: row.get("is_demo"),
        disabled_at: row.get("disabled_at"),
        created_at: row.get("created_at"),
        quota: QuotaOverride {
            instances: row.get::<Option<i64>, _>("quota_instances").map(|n| n as u32),
            memory_mb: row.get::<Option<i64>, _>("quota_memory_mb").map(|n| n as u64),
        },
    }
}
