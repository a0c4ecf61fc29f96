//! Instance records and their port leases.

use std::collections::HashSet;

use rusqlite::OptionalExtension;
use sqlx::Row;

use super::{Store, StoreError, map_unique_violation, now_rfc3339};
use crate::model::{Engine, InstanceId, MemoryMb, Status};

/// An instance as the store keeps it. The password stays encrypted until someone needs it.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    pub id: InstanceId,
    /// `None` for a warm-pool member.
    pub owner_id: Option<i64>,
    pub name: String,
    pub engine: Engine,
    /// The catalogue's name of the version asked for.
    pub version: String,
    pub image: String,
    pub status: Status,
    /// Why the status is what it is, when that is not obvious (a failure, an exit).
    pub status_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub claimed_by: Option<String>,
    pub memory_mb: MemoryMb,
    pub charset: Option<String>,
    pub collation: Option<String>,
    pub database: Option<String>,
    /// `None` once a failed instance has released its port.
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password_enc: Vec<u8>,
    pub created_at: String,
    /// The data-directory template (an image id) the instance was made from, if any.
    pub template_image: Option<String>,
}

/// What a create writes before its container exists (status `provisioning`).
pub struct NewInstanceRecord<'a> {
    pub id: &'a InstanceId,
    pub owner_id: Option<i64>,
    pub name: &'a str,
    pub engine: Engine,
    pub version: &'a str,
    pub image: &'a str,
    pub memory_mb: MemoryMb,
    pub charset: Option<&'a str>,
    pub collation: Option<&'a str>,
    pub database: Option<&'a str>,
    pub port: u16,
    pub username: Option<&'a str>,
    pub password_enc: &'a [u8],
    /// The process doing the create (see `claimed_by` in the schema).
    pub claimed_by: &'a str,
    /// `provisioning` for a create; `running` for an adopted container.
    pub status: Status,
    pub template_image: Option<&'a str>,
}

/// The columns of an instance row, in the order `record_from_row` reads them.
/// A macro, so queries stay `&'static str` built with `concat!`: sqlx refuses SQL strings
/// assembled at run time.
macro_rules! columns {
    () => {
        "id, owner_id, name, engine, version, image, status, status_reason, exit_code, oom_killed, \
         claimed_by, memory_mb, charset, collation, database, port, username, password_enc, created_at, \
         template_image"
    };
}

impl Store {
    /// Writes a new record, which also leases its port: `PortTaken` if another instance holds the
    /// port (the caller tries another), `NameTaken` if the owner already has that name.
    pub async fn insert_instance(&self, new: &NewInstanceRecord<'_>) -> Result<InstanceRecord, StoreError> {
        sqlx::query(concat!(
            "INSERT INTO instances (id, owner_id, name, engine, version, image, status, claimed_by, \
             memory_mb, charset, collation, database, port, username, password_enc, created_at, template_image) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(new.id.as_str())
        .bind(new.owner_id)
        .bind(new.name)
        .bind(new.engine.as_str())
        .bind(new.version)
        .bind(new.image)
        .bind(new.status.as_str())
        .bind(new.claimed_by)
        .bind(new.memory_mb.0)
        .bind(new.charset)
        .bind(new.collation)
        .bind(new.database)
        .bind(new.port)
        .bind(new.username)
        .bind(new.password_enc)
        .bind(now_rfc3339())
        .bind(new.template_image)
        .execute(&self.pool)
        .await
        .map_err(map_unique_violation)?;
        self.instance(new.id).await?.ok_or(StoreError::NotFound)
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

    /// Sets the status, clearing any reason, exit code and claim of the previous one.
    pub async fn set_status(&self, id: &InstanceId, status: Status) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE instances SET status = ?, status_reason = NULL, exit_code = NULL, oom_killed = 0, \
             claimed_by = NULL WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that the server died on its own. Only an instance that was running (or had
    /// exited already) changes: a stop, a delete or a create in flight explains the exit itself.
    pub async fn mark_exited(&self, id: &InstanceId, exit_code: i64, oom_killed: bool) -> Result<bool, StoreError> {
        let reason = if oom_killed {
            format!("killed for exceeding its memory cap (exit code {exit_code})")
        } else {
            format!("the server exited with code {exit_code}")
        };
        let done = sqlx::query(
            "UPDATE instances SET status = 'exited', status_reason = ?, exit_code = ?, oom_killed = ? \
             WHERE id = ? AND status IN ('running', 'exited')",
        )
        .bind(reason)
        .bind(exit_code)
        .bind(oom_killed)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks a create that cannot finish as failed, releasing its port.
    pub async fn mark_failed(&self, id: &InstanceId, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE instances SET status = 'failed', status_reason = ?, port = NULL, claimed_by = NULL WHERE id = ?",
        )
        .bind(reason)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_memory(&self, id: &InstanceId, memory: MemoryMb) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET memory_mb = ? WHERE id = ?")
            .bind(memory.0)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_password(&self, id: &InstanceId, password_enc: &[u8]) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET password_enc = ? WHERE id = ?")
            .bind(password_enc)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One of `owner_id`'s instances. Another user's instance is `None`, as if it did not exist.
    pub async fn find_instance(&self, owner_id: i64, id: &InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        self.readers.read(|connection| {
            connection
                .prepare_cached(concat!("SELECT ", columns!(), " FROM instances WHERE id = ?1 AND owner_id = ?2"))?
                .query_row((id.as_str(), owner_id), record_from_row)
                .optional()
        })
    }

    /// Any instance, whoever owns it: for dbroker's own repairs.
    pub async fn instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        self.readers.read(|connection| {
            connection
                .prepare_cached(concat!("SELECT ", columns!(), " FROM instances WHERE id = ?1"))?
                .query_row([id.as_str()], record_from_row)
                .optional()
        })
    }

    /// `owner_id`'s instances, oldest first, optionally of one engine only.
    pub async fn list_instances(
        &self,
        owner_id: i64,
        engine: Option<Engine>,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.readers.read(|connection| {
            connection
                .prepare_cached(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM instances WHERE owner_id = ?1 AND (?2 IS NULL OR engine = ?2) ORDER BY created_at, id"
                ))?
                .query_map((owner_id, engine.map(Engine::as_str)), record_from_row)?
                .collect()
        })
    }

    /// Every instance of every user: what the reconciler compares with Docker.
    pub async fn all_instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.readers.read(|connection| {
            connection
                .prepare_cached(concat!("SELECT ", columns!(), " FROM instances ORDER BY created_at, id"))?
                .query_map([], record_from_row)?
                .collect()
        })
    }

    /// Hands one running warm-pool member of `engine` at `version` to `owner_id`, renamed `name`.
    /// One statement, so two creates (in one process or several) never get the same member.
    /// `None` if the pool is empty; `NameTaken` if the owner has an instance of that name.
    pub async fn claim_pool_member(
        &self,
        engine: Engine,
        version: &str,
        owner_id: i64,
        name: Option<&str>,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let claimed: Option<String> = sqlx::query_scalar(concat!(
            "UPDATE instances SET owner_id = ?1, name = coalesce(?2, engine || '-' || id) \
             WHERE id = (SELECT id FROM instances WHERE owner_id IS NULL AND engine = ?3 AND version = ?4 \
                         AND status = 'running' ORDER BY created_at LIMIT 1) \
             AND owner_id IS NULL RETURNING id",
        ))
        .bind(owner_id)
        .bind(name)
        .bind(engine.as_str())
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_unique_violation)?;
        match claimed {
            Some(id) => self.instance(&id.parse().map_err(|e: crate::model::Invalid| StoreError::Corrupt(e.0))?).await,
            None => Ok(None),
        }
    }

    /// The warm pool's members, oldest first.
    pub async fn pool_members(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.readers.read(|connection| {
            connection
                .prepare_cached(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM instances WHERE owner_id IS NULL ORDER BY created_at"
                ))?
                .query_map([], record_from_row)?
                .collect()
        })
    }

    pub async fn set_database(&self, id: &InstanceId, database: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET database = ? WHERE id = ?")
            .bind(database)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes a record, which frees its port and its name.
    pub async fn delete_instance(&self, id: &InstanceId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM instances WHERE id = ?").bind(id.as_str()).execute(&self.pool).await?;
        Ok(())
    }
}

/// An instance row, read by position in `columns!`'s order: looking columns up by name was a
/// fifth of the list route's CPU.
fn record_from_row(row: &rusqlite::Row) -> rusqlite::Result<InstanceRecord> {
    fn parsed<T: std::str::FromStr<Err = crate::model::Invalid>>(
        row: &rusqlite::Row,
        column: usize,
    ) -> rusqlite::Result<T> {
        let text: String = row.get(column)?;
        text.parse()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e)))
    }
    Ok(InstanceRecord {
        id: parsed(row, 0)?,
        owner_id: row.get(1)?,
        name: row.get(2)?,
        engine: parsed(row, 3)?,
        version: row.get(4)?,
        image: row.get(5)?,
        status: parsed(row, 6)?,
        status_reason: row.get(7)?,
        exit_code: row.get(8)?,
        oom_killed: row.get(9)?,
        claimed_by: row.get(10)?,
        memory_mb: MemoryMb(row.get(11)?),
        charset: row.get(12)?,
        collation: row.get(13)?,
        database: row.get(14)?,
        port: row.get(15)?,
        username: row.get(16)?,
        password_enc: row.get(17)?,
        created_at: row.get(18)?,
        template_image: row.get(19)?,
    })
}
