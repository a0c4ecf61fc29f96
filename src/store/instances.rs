//! Instance records and their port leases.

use std::collections::HashSet;

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, map_unique_violation, now_rfc3339};
use crate::model::{Engine, InstanceId, MemoryMb, Status};

/// An instance as the store keeps it. The password stays encrypted until someone needs it.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    pub id: InstanceId,
    pub owner_id: i64,
    pub name: String,
    pub engine: Engine,
    pub image: String,
    pub status: Status,
    pub memory_mb: MemoryMb,
    pub charset: Option<String>,
    pub collation: Option<String>,
    pub port: u16,
    pub username: Option<String>,
    pub password_enc: Vec<u8>,
    pub created_at: String,
}

/// What a create writes before its container exists (status `provisioning`).
pub struct NewInstanceRecord<'a> {
    pub id: &'a InstanceId,
    pub owner_id: i64,
    pub name: &'a str,
    pub engine: Engine,
    pub image: &'a str,
    pub memory_mb: MemoryMb,
    pub charset: Option<&'a str>,
    pub collation: Option<&'a str>,
    pub port: u16,
    pub username: Option<&'a str>,
    pub password_enc: &'a [u8],
}

/// The columns of an instance row, in `record_from_row`'s order. A macro, so queries stay
/// `&'static str` built with `concat!`: sqlx refuses SQL strings assembled at run time.
macro_rules! columns {
    () => {
        "id, owner_id, name, engine, image, status, memory_mb, charset, collation, port, username, \
         password_enc, created_at"
    };
}

impl Store {
    /// Writes a new record, which also leases its port: `PortTaken` if another instance holds the
    /// port (the caller tries another), `NameTaken` if the owner already has that name.
    pub async fn insert_instance(
        &self,
        new: &NewInstanceRecord<'_>,
    ) -> Result<InstanceRecord, StoreError> {
        let row = sqlx::query(concat!(
            "INSERT INTO instances (",
            columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ",
            columns!()
        ))
        .bind(new.id.as_str())
        .bind(new.owner_id)
        .bind(new.name)
        .bind(new.engine.as_str())
        .bind(new.image)
        .bind(Status::Provisioning.as_str())
        .bind(new.memory_mb.0)
        .bind(new.charset)
        .bind(new.collation)
        .bind(new.port)
        .bind(new.username)
        .bind(new.password_enc)
        .bind(now_rfc3339())
        .fetch_one(&self.pool)
        .await
        .map_err(map_unique_violation)?;
        record_from_row(&row)
    }

    /// Every port leased within `first..=last`, by any instance of any user.
    pub async fn leased_ports(&self, first: u16, last: u16) -> Result<HashSet<u16>, StoreError> {
        let rows = sqlx::query("SELECT port FROM instances WHERE port BETWEEN ? AND ?")
            .bind(first)
            .bind(last)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<u16, _>(0)).collect())
    }

    /// Moves an instance's lease to another port; `PortTaken` if that one is leased.
    pub async fn move_port(&self, id: &InstanceId, port: u16) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET port = ? WHERE id = ?")
            .bind(port)
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(map_unique_violation)?;
        Ok(())
    }

    pub async fn set_status(&self, id: &InstanceId, status: Status) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET status = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One of `owner_id`'s instances. Another user's instance is `None`, as if it did not exist.
    pub async fn find_instance(
        &self,
        owner_id: i64,
        id: &InstanceId,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM instances WHERE id = ? AND owner_id = ?"
        ))
        .bind(id.as_str())
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// `owner_id`'s instances, oldest first, optionally of one engine only.
    pub async fn list_instances(
        &self,
        owner_id: i64,
        engine: Option<Engine>,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM instances WHERE owner_id = ?1 AND (?2 IS NULL OR engine = ?2) ORDER BY created_at, id"
        ))
        .bind(owner_id)
        .bind(engine.map(Engine::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Removes a record, which frees its port and its name.
    pub async fn delete_instance(&self, id: &InstanceId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM instances WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn record_from_row(row: &SqliteRow) -> Result<InstanceRecord, StoreError> {
    let corrupt = |e: crate::model::Invalid| StoreError::Corrupt(e.0);
    Ok(InstanceRecord {
        id: row.get::<String, _>("id").parse().map_err(corrupt)?,
        owner_id: row.get("owner_id"),
        name: row.get("name"),
        engine: row.get::<String, _>("engine").parse().map_err(corrupt)?,
        image: row.get("image"),
        status: row.get::<String, _>("status").parse().map_err(corrupt)?,
        memory_mb: MemoryMb(row.get("memory_mb")),
        charset: row.get("charset"),
        collation: row.get("collation"),
        port: row.get("port"),
        username: row.get("username"),
        password_enc: row.get("password_enc"),
        created_at: row.get("created_at"),
    })
}
