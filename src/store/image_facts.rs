//! What dbroker has read from images themselves: which server each MySQL image runs, and the
//! collations that server has (see `provision::image_facts`); and the password of each
//! data-directory template (see `provision::templates`).

use super::sql::{now, params, parsed};
use super::{Store, StoreError};
use crate::model::{Flavor, ServerCollations};

impl Store {
    /// The flavour read from image `image_id`, if it has been.
    pub async fn image_flavor(&self, image_id: &str) -> Result<Option<Flavor>, StoreError> {
        self.db
            .fetch_optional("SELECT flavor FROM image_facts WHERE image_id = $1", params![image_id], |row| {
                parsed(row, 0)
            })
            .await
    }

    /// Keeps the flavour read from image `image_id`. Another process may have read it first: the
    /// image is the same, and so is what it read.
    pub async fn set_image_flavor(&self, image_id: &str, flavor: Flavor) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO image_facts (image_id, flavor) VALUES ($1, $2) ON CONFLICT (image_id) DO NOTHING",
                params![image_id, flavor.as_str()],
            )
            .await?;
        Ok(())
    }

    /// The collations read from image `image_id`'s server; `None` if they have not been read.
    pub async fn image_collations(&self, image_id: &str) -> Result<Option<ServerCollations>, StoreError> {
        let read = self
            .db
            .fetch_optional(
                "SELECT collations_read_at FROM image_facts WHERE image_id = $1",
                params![image_id],
                |row| row.opt_time(0),
            )
            .await?;
        if read.flatten().is_none() {
            return Ok(None);
        }
        let pairs = self
            .db
            .fetch_all(
                "SELECT \"collation\", charset FROM image_collations WHERE image_id = $1",
                params![image_id],
                |row| Ok((row.text(0)?, row.text(1)?)),
            )
            .await?;
        Ok(Some(ServerCollations::new(pairs)))
    }

    /// Keeps the collations read from image `image_id`'s server (whose flavour is kept already),
    /// all at once: a reader sees the whole list or none.
    pub async fn set_image_collations(&self, image_id: &str, pairs: &[(String, String)]) -> Result<(), StoreError> {
        self.db
            .write(async |tx| {
                tx.execute("DELETE FROM image_collations WHERE image_id = $1", params![image_id]).await?;
                for (collation, charset) in pairs {
                    tx.execute(
                        "INSERT INTO image_collations (image_id, \"collation\", charset) VALUES ($1, $2, $3)",
                        params![image_id, collation.as_str(), charset.as_str()],
                    )
                    .await?;
                }
                let updated = tx
                    .execute(
                        "UPDATE image_facts SET collations_read_at = $1 WHERE image_id = $2",
                        params![now(), image_id],
                    )
                    .await?;
                if updated == 0 { Err(StoreError::NotFound) } else { Ok(()) }
            })
            .await
    }

    /// The encrypted password of template image `image_id`, if this store has read it.
    pub async fn template_password(&self, image_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .fetch_optional(
                "SELECT password_enc FROM template_passwords WHERE image_id = $1",
                params![image_id],
                |row| row.bytes(0),
            )
            .await
    }

    /// Keeps the encrypted password of template image `image_id`.
    pub async fn set_template_password(&self, image_id: &str, password_enc: &[u8]) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO template_passwords (image_id, password_enc) VALUES ($1, $2) \
                 ON CONFLICT (image_id) DO UPDATE SET password_enc = excluded.password_enc",
                params![image_id, password_enc],
            )
            .await?;
        Ok(())
    }
}
