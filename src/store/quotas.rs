//! Quotas: how many instances and how much memory (the sum of memory caps) each user may hold, and
//! how much memory all instances together (every user's and the warm pool's) may be capped at on
//! the host. A change that needs room is checked inside the write transaction that makes it
//! (which holds the store's write lock, so what is read is still true when it is written on):
//! concurrent creates, in one process or several sharing the store, never pass a limit together.
//! Backups have a quota of their own (how many, and how many MiB stored), checked the same way as
//! a backup is recorded (see `backups`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::sql::{narrowed, params};
use super::{Store, StoreError, Tx};

/// How many instances, and how many MiB of memory caps in all, a user may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Quota {
    pub instances: u32,
    pub memory_mb: u64,
}

/// A user's own quota, where it differs from the default (`None`: the default). On the wire as it
/// is here (`/v1/admin/users`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaOverride {
    #[serde(default, deserialize_with = "crate::model::optional_whole_number")]
    #[schema(schema_with = instances_limit_schema)]
    pub instances: Option<u32>,
    #[serde(default, deserialize_with = "crate::model::optional_whole_number")]
    #[schema(schema_with = memory_limit_schema)]
    pub memory_mb: Option<u64>,
}

/// A limit of a user's own quota in the API's document, `null` for the default: the whole range
/// the store holds, which `format: int32` or `int64` (utoipa's words for unsigned types) would cut.
pub(crate) fn instances_limit_schema() -> utoipa::openapi::Object {
    limit_schema(u32::MAX.into(), "instances")
}

/// The memory limit is kept as a signed 64-bit integer, so its largest is `i64::MAX`
/// (`provision::users` refuses more with 422).
pub(crate) fn memory_limit_schema() -> utoipa::openapi::Object {
    limit_schema(i64::MAX as u64, "MiB of memory caps in all")
}

fn limit_schema(max: u64, what: &str) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(0))
        .maximum(Some(max))
        .description(Some(format!("{what}; null: the configuration's default")))
        .build()
}

/// How a user's own quota changes, limit by limit (`dbroker user quota`, `PATCH
/// /v1/admin/users/{name}/quota`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaChange {
    pub instances: LimitChange<u32>,
    pub memory_mb: LimitChange<u64>,
}

/// What becomes of one limit of a user's own quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LimitChange<T> {
    /// It stays as it is.
    #[default]
    Keep,
    /// Back to the configuration's default.
    Default,
    /// Their own.
    Set(T),
}

impl<T: Copy> LimitChange<T> {
    /// `Set` to a value given, else `Keep`.
    pub fn given(value: Option<T>) -> Self {
        value.map_or(LimitChange::Keep, LimitChange::Set)
    }

    /// The override it leaves, if it changes: `None` for the default.
    pub(super) fn value(self) -> Option<T> {
        match self {
            LimitChange::Set(value) => Some(value),
            LimitChange::Keep | LimitChange::Default => None,
        }
    }
}

/// What a user holds, as their quota counts it: instances, and MiB of memory caps in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub instances: u64,
    pub memory_mb: u64,
}

/// What a change is checked against: the configuration's default quota (for users without an
/// override) and the host's memory budget.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub default_quota: Quota,
    /// The most MiB all instances' memory caps may add up to.
    pub host_memory_mb: u64,
}

/// What a change adds: instances and memory for its owner (none for the warm pool), and memory on
/// the host, which differ when a pool member (counted on the host already) is claimed.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    pub owner_id: Option<i64>,
    pub instances: u32,
    pub owner_memory_mb: i64,
    pub host_memory_mb: i64,
}

/// The limit a change would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// The user's number of instances.
    Instances,
    /// The sum of the user's memory caps, MiB.
    Memory,
    /// The sum of every instance's memory cap on the host, MiB.
    HostMemory,
    /// The user's number of backups (running and succeeded).
    Backups,
    /// The MiB the user's stored backups take in all.
    BackupStorage,
}

/// A limit a change would pass: which, the limit, what is in use, and what the change asked for
/// (instances, or MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Exceeded {
    pub quota: LimitKind,
    pub limit: u64,
    pub in_use: u64,
    pub requested: u64,
}

/// What counts against a limit: every record but a failed create's, which holds no container.
macro_rules! counted {
    () => {
        "status != 'failed'"
    };
}

/// What `judge` needs of the store, in one row: the host's memory in use, the owner's instances
/// and memory, and the owner's own limits (NULL: the default).
const ROOM: &str = concat!(
    "SELECT (SELECT CAST(coalesce(sum(memory_mb), 0) AS BIGINT) FROM instances WHERE ",
    counted!(),
    "), (SELECT count(*) FROM instances WHERE owner_id = $1 AND ",
    counted!(),
    "), (SELECT CAST(coalesce(sum(memory_mb), 0) AS BIGINT) FROM instances WHERE owner_id = $1 AND ",
    counted!(),
    "), (SELECT quota_instances FROM users WHERE id = $1), (SELECT quota_memory_mb FROM users WHERE id = $1)"
);

/// What the store holds that a change is checked against (`ROOM`'s row).
struct InUse {
    host_memory: i64,
    owned: i64,
    owned_memory: i64,
    quota_instances: Option<i64>,
    quota_memory: Option<i64>,
}

fn in_use(row: &dyn super::sql::Columns) -> Result<InUse, StoreError> {
    Ok(InUse {
        host_memory: row.int(0)?,
        owned: row.int(1)?,
        owned_memory: row.int(2)?,
        quota_instances: row.opt_int(3)?,
        quota_memory: row.opt_int(4)?,
    })
}

/// `Err(OverLimit)` if `need` does not fit within `limits` and the owner's quota, as the store is
/// now. Run it in the write transaction that makes the change.
pub(super) async fn check_room(tx: &mut Tx, need: &Need, limits: &Limits) -> Result<(), StoreError> {
    judge(&tx.fetch_one(ROOM, params![need.owner_id], in_use).await?, need, limits)
}

fn judge(in_use: &InUse, need: &Need, limits: &Limits) -> Result<(), StoreError> {
    let quota = Quota {
        instances: in_use.quota_instances.map_or(Ok(limits.default_quota.instances), narrowed)?,
        memory_mb: in_use.quota_memory.map_or(Ok(limits.default_quota.memory_mb), narrowed)?,
    };
    let over = |quota: LimitKind, limit: u64, in_use: i64, requested: i64| {
        // In i128: a limit may be as large as u64 allows.
        let passed = requested > 0 && i128::from(in_use) + i128::from(requested) > i128::from(limit);
        passed.then_some(Exceeded { quota, limit, in_use: in_use as u64, requested: requested as u64 })
    };
    // The user's own limits first: those are theirs to act on.
    let exceeded = if need.owner_id.is_some() {
        over(LimitKind::Instances, quota.instances.into(), in_use.owned, need.instances.into())
            .or_else(|| over(LimitKind::Memory, quota.memory_mb, in_use.owned_memory, need.owner_memory_mb))
    } else {
        None
    };
    let host = || over(LimitKind::HostMemory, limits.host_memory_mb, in_use.host_memory, need.host_memory_mb);
    match exceeded.or_else(host) {
        Some(exceeded) => Err(StoreError::OverLimit(exceeded)),
        None => Ok(()),
    }
}

/// How many backups, and how many MiB of stored backups in all, a user may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupQuota {
    pub backups: u32,
    pub storage_mb: u64,
}

/// What a user's backups take, as their quota counts them: backups running or succeeded (a failed
/// one keeps no object), and the bytes of those stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupUsage {
    pub backups: u64,
    pub bytes: u64,
}

/// The count and bytes of a set of backup rows, as `BackupUsage` counts them (the rows to count
/// are the query's to choose: `state <> 'failed'`).
macro_rules! backup_usage_columns {
    () => {
        "count(*), CAST(coalesce(sum(size_bytes), 0) AS BIGINT)"
    };
}
pub(super) use backup_usage_columns;

/// An owner's backups as their quota counts them, and their own backup limits (NULL: the default).
pub(super) const BACKUP_USAGE: &str = concat!(
    "SELECT ",
    backup_usage_columns!(),
    ", (SELECT quota_backups FROM users WHERE id = $1), (SELECT quota_backup_mb FROM users WHERE id = $1) \
     FROM backups WHERE owner_id = $1 AND state <> 'failed'"
);

pub(super) fn backup_usage_from_row(row: &dyn super::sql::Columns) -> Result<BackupUsage, StoreError> {
    Ok(BackupUsage { backups: narrowed(row.int(0)?)?, bytes: narrowed(row.int(1)?)? })
}

/// `Err(OverLimit)` unless `owner_id` has room for one more backup within `default` (or their own
/// limits): fewer backups than their limit, and stored bytes below theirs (a backup's size is
/// known only once it is written, so room for one more is room below the limit). Run it in the
/// write transaction that records the backup.
pub(super) async fn check_backup_room(tx: &mut Tx, owner_id: i64, default: &BackupQuota) -> Result<(), StoreError> {
    let (usage, own) = tx.fetch_one(BACKUP_USAGE, params![owner_id], backup_room).await?;
    judge_backup(usage, own, default)
}

type OwnBackupQuota = (Option<i64>, Option<i64>);

fn backup_room(row: &dyn super::sql::Columns) -> Result<(BackupUsage, OwnBackupQuota), StoreError> {
    Ok((backup_usage_from_row(row)?, (row.opt_int(2)?, row.opt_int(3)?)))
}

fn judge_backup(usage: BackupUsage, own: OwnBackupQuota, default: &BackupQuota) -> Result<(), StoreError> {
    const MIB: u64 = 1024 * 1024;
    let backups: u32 = own.0.map_or(Ok(default.backups), narrowed)?;
    let storage_mb: u64 = own.1.map_or(Ok(default.storage_mb), narrowed)?;
    if usage.backups >= u64::from(backups) {
        let exceeded =
            Exceeded { quota: LimitKind::Backups, limit: backups.into(), in_use: usage.backups, requested: 1 };
        return Err(StoreError::OverLimit(exceeded));
    }
    // In u128: a limit may be as large as u64 allows, and so its bytes more.
    if u128::from(usage.bytes) >= u128::from(storage_mb) * u128::from(MIB) {
        let in_use = usage.bytes.div_ceil(MIB);
        let exceeded = Exceeded { quota: LimitKind::BackupStorage, limit: storage_mb, in_use, requested: 0 };
        return Err(StoreError::OverLimit(exceeded));
    }
    Ok(())
}

impl Store {
    /// Whether `owner_id` has room for one more backup as the store is now (see
    /// `check_backup_room`): a check before a backup's operation is recorded, so that one that
    /// cannot be taken records nothing. Only a hint: `insert_backup` checks again as it writes.
    pub async fn check_backup_room(&self, owner_id: i64, default: &BackupQuota) -> Result<(), StoreError> {
        let (usage, own) = self.db.fetch_one(BACKUP_USAGE, params![owner_id], backup_room).await?;
        judge_backup(usage, own, default)
    }

    /// Sets a user's own backup limits (`Default`: back to the configuration's), by user id.
    /// `NotFound` if there is no such user.
    pub async fn change_backup_quota(
        &self,
        owner_id: i64,
        backups: LimitChange<u32>,
        storage_mb: LimitChange<u64>,
    ) -> Result<(), StoreError> {
        // Each limit: `$n` says whether it changes, `$n+1` is its new value (NULL: the default).
        let changed = self
            .db
            .execute(
                "UPDATE users SET quota_backups = CASE WHEN $1 THEN $2 ELSE quota_backups END, \
                 quota_backup_mb = CASE WHEN $3 THEN $4 ELSE quota_backup_mb END WHERE id = $5",
                params![
                    !matches!(backups, LimitChange::Keep),
                    backups.value(),
                    !matches!(storage_mb, LimitChange::Keep),
                    storage_mb.value().map(|mb| i64::try_from(mb).unwrap_or(i64::MAX)),
                    owner_id,
                ],
            )
            .await?;
        if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Whether `need` fits as the store is now: a check before a change is recorded, so that a
    /// request that cannot be served records nothing. Only a hint: the change checks again as it
    /// writes.
    pub async fn check_room(&self, need: &Need, limits: &Limits) -> Result<(), StoreError> {
        judge(&self.db.fetch_one(ROOM, params![need.owner_id], in_use).await?, need, limits)
    }

    /// Each user's holdings, counted as their quota counts them, by user id: users who hold
    /// nothing are not in it.
    pub async fn usage_by_owner(&self) -> Result<HashMap<i64, Usage>, StoreError> {
        let sql = concat!(
            "SELECT owner_id, count(*), CAST(coalesce(sum(memory_mb), 0) AS BIGINT) FROM instances \
             WHERE owner_id IS NOT NULL AND ",
            counted!(),
            " GROUP BY owner_id"
        );
        let rows = self
            .db
            .fetch_all(sql, params![], |row| {
                Ok((row.int(0)?, Usage { instances: narrowed(row.int(1)?)?, memory_mb: narrowed(row.int(2)?)? }))
            })
            .await?;
        Ok(rows.into_iter().collect())
    }
}
