//! Instance records and their port leases.

use std::collections::HashSet;

use super::quotas::{self, Limits, Need};
use super::sql::{Columns, narrowed, now, params, parsed, parsed_text};
use super::{Constraint, Store, StoreError};
use crate::model::{
    Charset, Collation, DatabaseName, Engine, EngineSettings, InstanceId, InstanceName, MemoryMb, OperationId, Status,
};

/// An instance as the store keeps it. The password stays encrypted until someone needs it.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    pub id: InstanceId,
    /// `None` for a warm-pool member.
    pub owner_id: Option<i64>,
    pub name: InstanceName,
    /// The node (Docker host) it runs on, whose port `port` is.
    pub node_id: String,
    /// The engine, and what only it has (a charset, a database).
    pub settings: EngineSettings,
    /// The catalogue's name of the version asked for.
    pub version: String,
    pub image: String,
    pub status: Status,
    /// Why the status is what it is, when that is not obvious (a failure, an exit).
    pub status_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub memory_mb: MemoryMb,
    /// `None` once a failed instance has released its port.
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password_enc: Vec<u8>,
    /// A rotation's new password, stored before the server got it (see the schema).
    pub pending_password_enc: Option<Vec<u8>>,
    pub created_at: String,
    /// The data-directory template (an image id) the instance was made from, if any.
    pub template_image: Option<String>,
    /// The operation in flight on the instance, if any.
    pub running_operation: Option<OperationId>,
    /// Why the reconciler stopped retrying a repair for now, if it did.
    pub attention: Option<String>,
    /// How many repairs failed in a row, and when the next may be tried (Unix milliseconds).
    pub repair_failures: u32,
    pub repair_after: Option<i64>,
}

/// Which instances an admin's listing shows (see `Store::owned_instances`): each `None` lets all
/// through.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstanceFilter {
    pub owner_id: Option<i64>,
    pub engine: Option<Engine>,
    pub status: Option<Status>,
}

/// An instance with its owner's name, for admins.
#[derive(Debug, Clone)]
pub struct OwnedInstance {
    pub record: InstanceRecord,
    pub owner: String,
}

/// What a create writes before its container exists (status `provisioning`).
pub struct NewInstanceRecord<'a> {
    pub id: &'a InstanceId,
    /// The node it runs on (see `store::Node`).
    pub node_id: &'a str,
    pub owner_id: Option<i64>,
    pub name: &'a InstanceName,
    pub settings: &'a EngineSettings,
    pub version: &'a str,
    pub image: &'a str,
    pub memory_mb: MemoryMb,
    pub port: u16,
    pub username: Option<&'a str>,
    pub password_enc: &'a [u8],
    /// `provisioning` for a create; `running` for an adopted container.
    pub status: Status,
    pub template_image: Option<&'a str>,
}

/// A create's claim of a warm-pool member (see `Store::claim_pool_member`).
#[derive(Clone, Copy)]
pub struct PoolClaim<'a> {
    pub engine: Engine,
    pub version: &'a str,
    pub owner_id: i64,
    /// The name asked for; `ENGINE-ID` if none.
    pub name: Option<&'a InstanceName>,
    pub memory: MemoryMb,
    /// The create's operation, which moves to the member.
    pub operation: &'a OperationId,
}

/// The columns of an instance row (`i`), with the id of its operation in flight (`o`), in the
/// order `record_from_row` reads them; and the join they are read from. Macros, so queries stay
/// `&'static str` built with `concat!`: sqlx refuses SQL strings assembled at run time.
macro_rules! columns {
    () => {
        "i.id, i.owner_id, i.name, i.engine, i.version, i.image, i.status, i.status_reason, i.exit_code, \
         i.oom_killed, i.memory_mb, i.charset, i.\"collation\", i.database, i.port, i.username, i.password_enc, \
         i.pending_password_enc, i.created_at, i.template_image, o.id, i.attention, i.repair_failures, \
         i.repair_after, i.node_id"
    };
}
/// Where the owner's name follows `columns!()` in `owned_instances`.
const OWNER_COLUMN: usize = 25;
macro_rules! from {
    () => {
        " FROM instances i LEFT JOIN operations o ON o.instance_id = i.id AND o.state IN ('pending', 'running')"
    };
}

impl InstanceRecord {
    pub fn engine(&self) -> Engine {
        self.settings.engine()
    }

    /// Its database, for engines that have one.
    pub fn database(&self) -> Option<&str> {
        self.settings.database().map(DatabaseName::as_str)
    }
}

impl Store {
    /// Writes a new record, which also leases its port, if it fits within `limits` (its owner's
    /// quota, the host's memory budget; checked in the same transaction): `OverLimit` if it does
    /// not, `PortTaken` if another instance holds the port (the caller tries another), `NameTaken`
    /// if the owner already has that name.
    pub async fn insert_instance_within(
        &self,
        new: &NewInstanceRecord<'_>,
        limits: &Limits,
    ) -> Result<InstanceRecord, StoreError> {
        let memory = i64::from(new.memory_mb.0);
        let need = Need { owner_id: new.owner_id, instances: 1, owner_memory_mb: memory, host_memory_mb: memory };
        self.db
            .write(async |tx| {
                quotas::check_room(tx, &need, limits).await?;
                tx.fetch_optional(INSERT, insert_params(new), |row| row.text(0)).await
            })
            .await
            .map_err(|e| e.or_broke(Constraint::PortLease))?
            .ok_or(StoreError::NameTaken)?;
        self.instance(new.id).await?.ok_or(StoreError::NotFound)
    }

    /// Writes a new record with no limit: for tools and tests that fill a store themselves.
    pub async fn insert_instance(&self, new: &NewInstanceRecord<'_>) -> Result<InstanceRecord, StoreError> {
        self.db
            .fetch_optional(INSERT, insert_params(new), |row| row.text(0))
            .await
            .map_err(|e| e.or_broke(Constraint::PortLease))?
            .ok_or(StoreError::NameTaken)?;
        self.instance(new.id).await?.ok_or(StoreError::NotFound)
    }

    /// Every port of `node` leased within `first..=last`, by any instance of any user.
    pub async fn leased_ports(&self, node: &str, first: u16, last: u16) -> Result<HashSet<u16>, StoreError> {
        let ports = self
            .db
            .fetch_all(
                "SELECT port FROM instances WHERE node_id = $1 AND port BETWEEN $2 AND $3",
                params![node, first, last],
                |row| narrowed(row.int(0)?),
            )
            .await?;
        Ok(ports.into_iter().collect())
    }

    /// Moves an instance's lease to another port; `PortTaken` if that one is leased.
    pub async fn move_port(&self, id: &InstanceId, port: u16) -> Result<(), StoreError> {
        self.db
            .execute("UPDATE instances SET port = $1 WHERE id = $2", params![port, id.as_str()])
            .await
            .map_err(|e| e.or_broke(Constraint::PortLease))?;
        Ok(())
    }

    /// Sets the status, clearing any reason and exit code of the previous one.
    pub async fn set_status(&self, id: &InstanceId, status: Status) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE instances SET status = $1, status_reason = NULL, exit_code = NULL, oom_killed = FALSE \
                 WHERE id = $2",
                params![status.as_str(), id.as_str()],
            )
            .await?;
        Ok(())
    }

    /// Records that the server died on its own. Only an instance that was running (or had
    /// exited already) and has no operation in flight changes: a stop, a restart, a delete or a
    /// create explains the exit itself.
    pub async fn mark_exited(&self, id: &InstanceId, exit_code: i64, oom_killed: bool) -> Result<bool, StoreError> {
        let reason = if oom_killed {
            format!("killed for exceeding its memory cap (exit code {exit_code})")
        } else {
            format!("the server exited with code {exit_code}")
        };
        let changed = self
            .db
            .execute(
                "UPDATE instances SET status = 'exited', status_reason = $2, exit_code = $3, oom_killed = $4 \
                 WHERE id = $1 AND status IN ('running', 'exited') AND NOT EXISTS \
                 (SELECT 1 FROM operations WHERE instance_id = $1 AND state IN ('pending', 'running'))",
                params![id.as_str(), reason, exit_code, oom_killed],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Marks a create that cannot finish as failed, releasing its port.
    pub async fn mark_failed(&self, id: &InstanceId, reason: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE instances SET status = 'failed', status_reason = $1, port = NULL WHERE id = $2",
                params![reason, id.as_str()],
            )
            .await?;
        Ok(())
    }

    /// Raises an instance's memory cap from the record's to `to` if the increase fits within
    /// `limits` (its owner's quota, the host's memory budget), in one transaction: `OverLimit` if
    /// it does not, `NotFound` if the stored cap is no longer the record's.
    pub async fn grow_memory(&self, record: &InstanceRecord, to: MemoryMb, limits: &Limits) -> Result<(), StoreError> {
        let more = i64::from(to.0) - i64::from(record.memory_mb.0);
        let need = Need { owner_id: record.owner_id, instances: 0, owner_memory_mb: more, host_memory_mb: more };
        self.db
            .write(async |tx| {
                quotas::check_room(tx, &need, limits).await?;
                let changed = tx
                    .execute(
                        "UPDATE instances SET memory_mb = $1 WHERE id = $2 AND memory_mb = $3",
                        params![to.0, record.id.as_str(), record.memory_mb.0],
                    )
                    .await?;
                if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
            })
            .await
    }

    pub async fn set_memory(&self, id: &InstanceId, memory: MemoryMb) -> Result<(), StoreError> {
        self.set("UPDATE instances SET memory_mb = $1 WHERE id = $2", memory.0.into(), id).await
    }

    pub async fn set_password(&self, id: &InstanceId, password_enc: &[u8]) -> Result<(), StoreError> {
        self.set(
            "UPDATE instances SET password_enc = $1, pending_password_enc = NULL WHERE id = $2",
            password_enc.into(),
            id,
        )
        .await
    }

    /// Stores a rotation's new password beside the current one, before the server gets it.
    pub async fn set_pending_password(&self, id: &InstanceId, password_enc: &[u8]) -> Result<(), StoreError> {
        self.set("UPDATE instances SET pending_password_enc = $1 WHERE id = $2", password_enc.into(), id).await
    }

    /// Forgets a pending password the server never got.
    pub async fn clear_pending_password(&self, id: &InstanceId) -> Result<(), StoreError> {
        self.db.execute("UPDATE instances SET pending_password_enc = NULL WHERE id = $1", params![id.as_str()]).await?;
        Ok(())
    }

    pub async fn set_database(&self, id: &InstanceId, database: &DatabaseName) -> Result<(), StoreError> {
        self.set("UPDATE instances SET database = $1 WHERE id = $2", database.as_str().into(), id).await
    }

    /// Runs an `UPDATE … SET column = $1 WHERE id = $2`.
    async fn set(&self, sql: &'static str, value: super::sql::Param, id: &InstanceId) -> Result<(), StoreError> {
        self.db.execute(sql, vec![value, id.as_str().into()]).await?;
        Ok(())
    }

    /// Counts a failed repair, and sets when the next may be tried and, once it has failed often
    /// enough to need a person, why.
    pub async fn record_repair_failure(
        &self,
        id: &InstanceId,
        retry_after: std::time::Duration,
        attention: Option<&str>,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE instances SET repair_failures = repair_failures + 1, repair_after = $1, \
                 attention = coalesce($2, attention) WHERE id = $3",
                params![super::millis_from_now(retry_after), attention, id.as_str()],
            )
            .await?;
        Ok(())
    }

    /// Clears the repair back-off: the instance is healthy again (or its owner acted on it).
    pub async fn clear_repair_failures(&self, id: &InstanceId) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE instances SET repair_failures = 0, repair_after = NULL, attention = NULL \
                 WHERE id = $1 AND repair_failures > 0",
                params![id.as_str()],
            )
            .await?;
        Ok(())
    }

    /// One of `owner_id`'s instances. Another user's instance is `None`, as if it did not exist.
    pub async fn find_instance(&self, owner_id: i64, id: &InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        let sql = concat!("SELECT ", columns!(), from!(), " WHERE i.id = $1 AND i.owner_id = $2");
        Ok(self.db.read(sql, params![id.as_str(), owner_id], record_from_row).await?.pop())
    }

    /// Any instance, whoever owns it: for dbroker's own repairs.
    pub async fn instance(&self, id: &InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        let sql = concat!("SELECT ", columns!(), from!(), " WHERE i.id = $1");
        Ok(self.db.read(sql, params![id.as_str()], record_from_row).await?.pop())
    }

    /// `owner_id`'s instances, oldest first, optionally of one engine only.
    pub async fn list_instances(
        &self,
        owner_id: i64,
        engine: Option<Engine>,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            from!(),
            " WHERE i.owner_id = $1 AND ($2 IS NULL OR i.engine = $2) ORDER BY i.created_at, i.id"
        );
        self.db.read(sql, params![owner_id, engine.map(Engine::as_str)], record_from_row).await
    }

    /// Every user's instances (not the warm pool's), newest first, with their owner's name:
    /// those `filter` lets through, `limit` of them, created before instance `before`. `None` if
    /// there is no instance `before` (deleted since it ended a page, say).
    pub async fn owned_instances(
        &self,
        filter: &InstanceFilter,
        before: Option<&InstanceId>,
        limit: u32,
    ) -> Result<Option<Vec<OwnedInstance>>, StoreError> {
        if let Some(before) = before {
            let exists = self.db.read("SELECT 1 FROM instances WHERE id = $1", params![before.as_str()], |_| Ok(()));
            if exists.await?.is_empty() {
                return Ok(None);
            }
        }
        // Ordered and paged by (created_at, id), both in the one comparison, so that a page ends
        // where the next begins even among instances created in the same instant.
        let sql = concat!(
            "SELECT ",
            columns!(),
            ", u.name",
            from!(),
            " JOIN users u ON u.id = i.owner_id \
             WHERE ($1 IS NULL OR i.owner_id = $1) AND ($2 IS NULL OR i.engine = $2) \
             AND ($3 IS NULL OR i.status = $3) \
             AND ($4 IS NULL OR (i.created_at, i.id) < (SELECT created_at, id FROM instances WHERE id = $4)) \
             ORDER BY i.created_at DESC, i.id DESC LIMIT $5"
        );
        let params = params![
            filter.owner_id,
            filter.engine.map(Engine::as_str),
            filter.status.map(Status::as_str),
            before.map(InstanceId::as_str),
            limit,
        ];
        let owned = self.db.read(sql, params, |row| {
            Ok(OwnedInstance { record: record_from_row(row)?, owner: row.text(OWNER_COLUMN)? })
        });
        Ok(Some(owned.await?))
    }

    /// Every instance of every user: what the reconciler compares with Docker.
    pub async fn all_instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let sql = concat!("SELECT ", columns!(), from!(), " ORDER BY i.created_at, i.id");
        self.db.read(sql, params![], record_from_row).await
    }

    /// Hands one running warm-pool member of the claim's engine and version to its owner, renamed
    /// and capped as it asks, and points the create's operation at it, in one transaction: two
    /// creates (in one process or several) never get the same member, a member with a repair in
    /// flight is never handed out, and the member counts against the owner's quota from the
    /// moment it is theirs. Returns it with the memory cap it had in the pool (its container's
    /// until the caller changes it). `None` if the pool is empty; `NameTaken` if the owner has an
    /// instance of that name; `OverLimit` if it does not fit within `limits`.
    pub async fn claim_pool_member(
        &self,
        claim: &PoolClaim<'_>,
        limits: &Limits,
    ) -> Result<Option<(InstanceRecord, MemoryMb)>, StoreError> {
        let PoolClaim { engine, version, owner_id, name, memory, operation } = *claim;
        let claimed = self
            .db
            .write(async |tx| {
                let member = tx
                    .fetch_optional(
                        "SELECT id, memory_mb FROM instances WHERE owner_id IS NULL AND engine = $1 \
                         AND version = $2 AND status = 'running' AND NOT EXISTS (SELECT 1 FROM operations \
                             WHERE instance_id = instances.id AND state IN ('pending', 'running')) \
                         ORDER BY created_at LIMIT 1",
                        params![engine.as_str(), version],
                        |row| Ok((parsed::<InstanceId>(row, 0)?, MemoryMb(narrowed(row.int(1)?)?))),
                    )
                    .await?;
                let Some((id, pool_memory)) = member else { return Ok(None) };
                // The member counts on the host already: only a larger cap takes more of it.
                let need = Need {
                    owner_id: Some(owner_id),
                    instances: 1,
                    owner_memory_mb: memory.0.into(),
                    host_memory_mb: i64::from(memory.0) - i64::from(pool_memory.0),
                };
                quotas::check_room(tx, &need, limits).await?;
                tx.execute(
                    "UPDATE instances SET owner_id = $1, name = coalesce($2, engine || '-' || id), memory_mb = $3 \
                     WHERE id = $4 AND owner_id IS NULL",
                    params![owner_id, name.map(InstanceName::as_str), memory.0, id.as_str()],
                )
                .await
                .map_err(|e| e.or_broke(Constraint::InstanceName))?;
                tx.execute(
                    "UPDATE operations SET instance_id = $1, owner_id = $2 WHERE id = $3",
                    params![id.as_str(), owner_id, operation.as_str()],
                )
                .await
                .map_err(|e| e.or_broke(Constraint::OperationInFlight))?;
                Ok(Some((id, pool_memory)))
            })
            .await;
        let claimed = match claimed {
            // A repair began on the member after it was chosen: a write that takes no write lock
            // (PostgreSQL's is advisory) may come between, and the one operation in flight per
            // instance refuses the claim then. Nothing was changed; the create makes its own.
            Err(StoreError::OperationInFlight) => None,
            claimed => claimed?,
        };
        let Some((id, pool_memory)) = claimed else { return Ok(None) };
        Ok(self.instance(&id).await?.map(|record| (record, pool_memory)))
    }

    /// The warm pool's members, oldest first.
    pub async fn pool_members(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let sql = concat!("SELECT ", columns!(), from!(), " WHERE i.owner_id IS NULL ORDER BY i.created_at");
        self.db.read(sql, params![], record_from_row).await
    }

    /// A stored password, if the store holds any: an instance's (the oldest), else a template's.
    /// What start-up checks the master key against.
    pub async fn oldest_password(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let instance = self
            .db
            .fetch_optional("SELECT password_enc FROM instances ORDER BY created_at, id LIMIT 1", params![], |row| {
                row.bytes(0)
            })
            .await?;
        match instance {
            Some(password) => Ok(Some(password)),
            None => {
                let sql = "SELECT password_enc FROM template_passwords ORDER BY image_id LIMIT 1";
                self.db.fetch_optional(sql, params![], |row| row.bytes(0)).await
            }
        }
    }

    /// Removes a record, which frees its port and its name.
    pub async fn delete_instance(&self, id: &InstanceId) -> Result<(), StoreError> {
        self.db.execute("DELETE FROM instances WHERE id = $1", params![id.as_str()]).await?;
        Ok(())
    }
}

/// The INSERT of a new record. A name the owner has already is no row (`ON CONFLICT DO NOTHING`),
/// so that the only constraint it can break is the port's.
const INSERT: &str = "INSERT INTO instances (id, owner_id, name, engine, version, image, status, memory_mb, \
     charset, \"collation\", database, port, username, password_enc, created_at, template_image, node_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
     ON CONFLICT (owner_id, name) DO NOTHING RETURNING id";

fn insert_params(new: &NewInstanceRecord<'_>) -> Vec<super::sql::Param> {
    params![
        new.id.as_str(),
        new.owner_id,
        new.name.as_str(),
        new.settings.engine().as_str(),
        new.version,
        new.image,
        new.status.as_str(),
        new.memory_mb.0,
        new.settings.charset().map(Charset::as_str),
        new.settings.collation().map(Collation::as_str),
        new.settings.database().map(DatabaseName::as_str),
        new.port,
        new.username,
        new.password_enc,
        now(),
        new.template_image,
        new.node_id,
    ]
}

/// An instance row, read by position in `columns!`'s order.
fn record_from_row(row: &dyn Columns) -> Result<InstanceRecord, StoreError> {
    let engine: Engine = parsed(row, 3)?;
    let (charset, collation, database) = (row.opt_text(11)?, row.opt_text(12)?, row.opt_text(13)?);
    let settings = EngineSettings::from_parts(engine, charset.as_deref(), collation.as_deref(), database.as_deref())
        .map_err(|e| StoreError::Corrupt(e.0))?;
    Ok(InstanceRecord {
        id: parsed(row, 0)?,
        owner_id: row.opt_int(1)?,
        name: parsed(row, 2)?,
        settings,
        version: row.text(4)?,
        image: row.text(5)?,
        status: parsed(row, 6)?,
        status_reason: row.opt_text(7)?,
        exit_code: row.opt_int(8)?,
        oom_killed: row.flag(9)?,
        memory_mb: MemoryMb(narrowed(row.int(10)?)?),
        port: row.opt_int(14)?.map(narrowed).transpose()?,
        username: row.opt_text(15)?,
        password_enc: row.bytes(16)?,
        pending_password_enc: row.opt_bytes(17)?,
        created_at: row.time(18)?,
        template_image: row.opt_text(19)?,
        running_operation: row.opt_text(20)?.as_deref().map(parsed_text).transpose()?,
        attention: row.opt_text(21)?,
        repair_failures: narrowed(row.int(22)?)?,
        repair_after: row.opt_int(23)?,
        node_id: row.text(24)?,
    })
}
