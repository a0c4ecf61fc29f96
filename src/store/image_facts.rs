//! What dbroker has read from images themselves: which server each MySQL image runs, and the
//! collations that server has (see `provision::image_facts`); and the password of each
//! data-directory template (see `provision::templates`).

use sqlx::Row;

use super::{Store, StoreError, now_rfc3339};
use crate::model::{Flavor, ServerCollations};

impl Store {
    /// The flavour read from image `image_id`, if it has been.
    pub async fn image_flavor(&self, image_id: &str) -> Result<Option<Flavor>, StoreError> {
        let flavor: Option<String> = sqlx::query_scalar("SELECT flavor FROM image_facts WHERE image_id = ?")
            .bind(image_id)
            .fetch_optional(&self.pool)
            .await?;
        flavor.map(|f| f.parse().map_err(|e: crate::model::Invalid| StoreError::Corrupt(e.0))).transpose()
    }

    /// Keeps the flavour read from image `image_id`. Another process may have read it first: the
    /// image is the same, and so is what it read.
    pub async fn set_image_flavor(&self, image_id: &str, flavor: Flavor) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO image_facts (image_id, flavor) VALUES (?, ?) ON CONFLICT (image_id) DO NOTHING")
            .bind(image_id)
            .bind(flavor.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The collations read from image `image_id`'s server; `None` if they have not been read.
    pub async fn image_collations(&self, image_id: &str) -> Result<Option<ServerCollations>, StoreError> {
        let read: Option<Option<String>> =
            sqlx::query_scalar("SELECT collations_read_at FROM image_facts WHERE image_id = ?")
                .bind(image_id)
                .fetch_optional(&self.pool)
                .await?;
        if read.flatten().is_none() {
            return Ok(None);
        }
        let rows = sqlx::query("SELECT collation, charset FROM image_collations WHERE image_id = ?")
            .bind(image_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(Some(ServerCollations::new(rows.iter().map(|row| (row.get(0), row.get(1))))))
    }

    /// Keeps the collations read from image `image_id`'s server (whose flavour is kept already),
    /// all at once: a reader sees the whole list or none.
    pub async fn set_image_collations(&self, image_id: &str, pairs: &[(String, String)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM image_collations WHERE image_id = ?").bind(image_id).execute(&mut *tx).await?;
        for (collation, charset) in pairs {
            sqlx::query("INSERT INTO image_collations (image_id, collation, charset) VALUES (?, ?, ?)")
                .bind(image_id)
                .bind(collation)
                .bind(charset)
                .execute(&mut *tx)
                .await?;
        }
        let updated = sqlx::query("UPDATE image_facts SET collations_read_at = ? WHERE image_id = ?")
            .bind(now_rfc3339())
            .bind(image_id)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// The encrypted password of template image `image_id`, if this store has read it.
    pub async fn template_password(&self, image_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT password_enc FROM template_passwords WHERE image_id = ?")
            .bind(image_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Keeps the encrypted password of template image `image_id`.
    pub async fn set_template_password(&self, image_id: &str, password_enc: &[u8]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO template_passwords (image_id, password_enc) VALUES (?, ?) \
             ON CONFLICT (image_id) DO UPDATE SET password_enc = excluded.password_enc",
        )
        .bind(image_id)
        .bind(password_enc)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
