//! Users and their API tokens (kept as hashes).

use sqlx::Row;

use super::{Store, StoreError, map_unique_violation, now_rfc3339};
use crate::model::UserName;
use crate::secrets::hash_token;

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    pub created_at: String,
}

impl Store {
    /// Adds a user with the given token; `NameTaken` if the name exists.
    pub async fn add_user(&self, name: &UserName, token: &str, is_admin: bool) -> Result<User, StoreError> {
        let created_at = now_rfc3339();
        let id =
            sqlx::query("INSERT INTO users (name, token_hash, is_admin, created_at) VALUES (?, ?, ?, ?) RETURNING id")
                .bind(name.as_str())
                .bind(hash_token(token))
                .bind(is_admin)
                .bind(&created_at)
                .fetch_one(&self.pool)
                .await
                .map_err(map_unique_violation)?
                .get(0);
        Ok(User { id, name: name.to_string(), is_admin, created_at })
    }

    /// Adds the user unless one of that name exists (demo users, on every start).
    pub async fn ensure_user(&self, name: &UserName, token: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (name, token_hash, is_admin, created_at) VALUES (?, ?, 0, ?) \
             ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash",
        )
        .bind(name.as_str())
        .bind(hash_token(token))
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user whose token has this hash (see `secrets::hash_token`), if any.
    pub async fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, name, is_admin, created_at FROM users WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| user_from_row(&r)))
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, name, is_admin, created_at FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| user_from_row(&r)))
    }

    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows =
            sqlx::query("SELECT id, name, is_admin, created_at FROM users ORDER BY name").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    /// Removes a user who owns no instances; `NotFound` if there is no such user.
    /// Returns the number of instances that stop the removal, if any.
    pub async fn remove_user(&self, name: &UserName) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let owned: Option<i64> =
            sqlx::query("SELECT (SELECT count(*) FROM instances WHERE owner_id = users.id) FROM users WHERE name = ?")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.get(0));
        match owned {
            None => Err(StoreError::NotFound),
            Some(n) if n > 0 => Ok(Some(n)),
            Some(_) => {
                sqlx::query("DELETE FROM users WHERE name = ?").bind(name.as_str()).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(None)
            }
        }
    }
}

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> User {
    User { id: row.get("id"), name: row.get("name"), is_admin: row.get("is_admin"), created_at: row.get("created_at") }
}
