//! Quotas: how many instances and how much memory (the sum of memory caps) each user may hold, and
//! how much memory all instances together (every user's and the warm pool's) may be capped at on
//! the host. A change that needs room is checked inside the write transaction that makes it
//! (which holds the store's write lock, so what is read is still true when it is written on):
//! concurrent creates, in one process or several sharing the store, never pass a limit together.

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

impl Store {
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
