//! Operations: every change to an instance, recorded before its first side effect, with a lease
//! held by the process running it. The schema allows one in flight per instance, which is how a
//! second change is refused across processes; an expired lease is how a crash is noticed.

use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, map_unique_violation, millis_from_now, now_millis, now_rfc3339};
use crate::model::{InstanceId, Invalid, OperationId, OperationKind, OperationState};

/// What a new operation records.
pub struct NewOperation<'a> {
    pub id: &'a OperationId,
    pub instance_id: &'a InstanceId,
    pub kind: OperationKind,
    pub requested_by: &'a str,
    /// The user whose instance it is (who may read the operation); `None` for the warm pool.
    pub owner_id: Option<i64>,
    /// The process that will run it, and for how long its lease holds before it is renewed.
    pub holder: &'a str,
    pub lease: Duration,
    pub input: serde_json::Value,
    /// The client's `Idempotency-Key` and the hash of its request.
    pub idempotency: Option<(&'a str, &'a str)>,
}

/// One step an operation has done, and when.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Step {
    pub step: String,
    pub at: String,
}

/// An operation as the store keeps it.
#[derive(Debug, Clone)]
pub struct OperationRecord {
    pub id: OperationId,
    pub instance_id: InstanceId,
    pub kind: OperationKind,
    pub state: OperationState,
    pub requested_by: String,
    pub owner_id: Option<i64>,
    pub holder: Option<String>,
    pub input: serde_json::Value,
    pub steps: Vec<Step>,
    /// A failed operation's problem detail.
    pub error: Option<serde_json::Value>,
    pub request_hash: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
}

/// The columns `operation_from_row` reads. A macro, so queries stay `&'static str` built with
/// `concat!` (as `instances`'s `columns!`).
macro_rules! op_columns {
    () => {
        "id, instance_id, kind, state, requested_by, owner_id, holder, input, steps, error, request_hash, \
         created_at, updated_at, finished_at"
    };
}

impl Store {
    /// Records a new operation, in flight and leased to its holder. `OperationInFlight` if the
    /// instance has one already; `IdempotencyKeyUsed` if the owner sent that key before.
    pub async fn insert_operation(&self, new: &NewOperation<'_>) -> Result<OperationRecord, StoreError> {
        let now = now_rfc3339();
        let (key, hash) = new.idempotency.unzip();
        let row = sqlx::query(concat!(
            "INSERT INTO operations (id, instance_id, kind, state, requested_by, owner_id, holder, lease_until, \
             input, idempotency_key, request_hash, created_at, updated_at) \
             VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ",
            op_columns!()
        ))
        .bind(new.id.as_str())
        .bind(new.instance_id.as_str())
        .bind(new.kind.as_str())
        .bind(new.requested_by)
        .bind(new.owner_id)
        .bind(new.holder)
        .bind(millis_from_now(new.lease))
        .bind(new.input.to_string())
        .bind(key)
        .bind(hash)
        .bind(&now)
        .bind(&now)
        .fetch_one(&self.pool)
        .await
        .map_err(map_unique_violation)?;
        operation_from_row(&row)
    }

    pub async fn operation(&self, id: &OperationId) -> Result<Option<OperationRecord>, StoreError> {
        let query = concat!("SELECT ", op_columns!(), " FROM operations WHERE id = ?");
        let row = sqlx::query(query).bind(id.as_str()).fetch_optional(&self.pool).await?;
        row.map(|r| operation_from_row(&r)).transpose()
    }

    /// The operation in flight on an instance, if any.
    pub async fn operation_in_flight(&self, instance_id: &InstanceId) -> Result<Option<OperationRecord>, StoreError> {
        let query = concat!(
            "SELECT ",
            op_columns!(),
            " FROM operations WHERE instance_id = ? AND state IN ('pending', 'running')"
        );
        let row = sqlx::query(query).bind(instance_id.as_str()).fetch_optional(&self.pool).await?;
        row.map(|r| operation_from_row(&r)).transpose()
    }

    /// The operation that `owner_id` started with idempotency key `key`, if any.
    pub async fn operation_by_key(&self, owner_id: i64, key: &str) -> Result<Option<OperationRecord>, StoreError> {
        let query = concat!("SELECT ", op_columns!(), " FROM operations WHERE owner_id = ? AND idempotency_key = ?");
        let row = sqlx::query(query).bind(owner_id).bind(key).fetch_optional(&self.pool).await?;
        row.map(|r| operation_from_row(&r)).transpose()
    }

    /// Frees an idempotency key that has outlived its window, for a new request to use.
    pub async fn forget_idempotency_key(&self, id: &OperationId) -> Result<(), StoreError> {
        sqlx::query("UPDATE operations SET idempotency_key = NULL WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An instance's operations, newest first: `limit` of them, older than `before` if given.
    pub async fn operations_of(
        &self,
        instance_id: &InstanceId,
        before: Option<&OperationId>,
        limit: u32,
    ) -> Result<Vec<OperationRecord>, StoreError> {
        let query = concat!(
            "SELECT ",
            op_columns!(),
            " FROM operations WHERE instance_id = ?1 \
             AND (?2 IS NULL OR seq < (SELECT seq FROM operations WHERE id = ?2)) ORDER BY seq DESC LIMIT ?3"
        );
        let rows = sqlx::query(query)
            .bind(instance_id.as_str())
            .bind(before.map(OperationId::as_str))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(operation_from_row).collect()
    }

    /// Moves an operation to `running` and writes its steps so far; `false` if `holder` no longer
    /// holds it (its lease expired and another process took it over).
    pub async fn record_steps(&self, id: &OperationId, holder: &str, steps: &[Step]) -> Result<bool, StoreError> {
        let steps = serde_json::to_string(steps).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE operations SET state = 'running', steps = ?, updated_at = ? \
             WHERE id = ? AND holder = ? AND state IN ('pending', 'running')",
        )
        .bind(steps)
        .bind(now_rfc3339())
        .bind(id.as_str())
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Points a create's operation at the instance it ended up making (a warm-pool member it
    /// claimed has an id of its own).
    pub async fn repoint_operation(&self, id: &OperationId, instance_id: &InstanceId) -> Result<(), StoreError> {
        sqlx::query("UPDATE operations SET instance_id = ? WHERE id = ?")
            .bind(instance_id.as_str())
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(map_unique_violation)?;
        Ok(())
    }

    /// Ends an operation, if `holder` still holds it: `succeeded`, or `failed` with its problem
    /// detail. `false` if another process had taken it over.
    pub async fn finish_operation(
        &self,
        id: &OperationId,
        holder: &str,
        error: Option<&serde_json::Value>,
    ) -> Result<bool, StoreError> {
        let now = now_rfc3339();
        let state = if error.is_some() { OperationState::Failed } else { OperationState::Succeeded };
        let done = sqlx::query(
            "UPDATE operations SET state = ?, error = ?, updated_at = ?, finished_at = ?, holder = NULL, \
             lease_until = NULL WHERE id = ? AND holder = ? AND state IN ('pending', 'running')",
        )
        .bind(state.as_str())
        .bind(error.map(|e| e.to_string()))
        .bind(&now)
        .bind(&now)
        .bind(id.as_str())
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes an operation that turned out to have nothing to do (a repair whose drift had
    /// gone by the time it looked again), so histories show only what changed something.
    pub async fn discard_operation(&self, id: &OperationId, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM operations WHERE id = ? AND holder = ?")
            .bind(id.as_str())
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Renews an operation's lease for `ttl`, if `holder` still holds it.
    pub async fn renew_lease(&self, id: &OperationId, holder: &str, ttl: Duration) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE operations SET lease_until = ? WHERE id = ? AND holder = ? AND state IN ('pending', 'running')",
        )
        .bind(millis_from_now(ttl))
        .bind(id.as_str())
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Operations in flight whose holder stopped renewing their lease: it died.
    pub async fn abandoned_operations(&self) -> Result<Vec<OperationRecord>, StoreError> {
        let query = concat!(
            "SELECT ",
            op_columns!(),
            " FROM operations WHERE state IN ('pending', 'running') AND lease_until < ? ORDER BY seq"
        );
        let rows = sqlx::query(query).bind(now_millis()).fetch_all(&self.pool).await?;
        rows.iter().map(operation_from_row).collect()
    }

    /// Takes over an abandoned operation for `holder`: `false` if its lease had not expired after
    /// all, or another process took it first.
    pub async fn take_over_operation(&self, id: &OperationId, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE operations SET holder = ?, lease_until = ?, updated_at = ? \
             WHERE id = ? AND state IN ('pending', 'running') AND lease_until < ?",
        )
        .bind(holder)
        .bind(millis_from_now(ttl))
        .bind(now_rfc3339())
        .bind(id.as_str())
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn operation_from_row(row: &SqliteRow) -> Result<OperationRecord, StoreError> {
    fn parsed<T: std::str::FromStr<Err = Invalid>>(row: &SqliteRow, column: &str) -> Result<T, StoreError> {
        row.get::<String, _>(column).parse().map_err(|e: Invalid| StoreError::Corrupt(e.0))
    }
    fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
    Ok(OperationRecord {
        id: parsed(row, "id")?,
        instance_id: parsed(row, "instance_id")?,
        kind: parsed(row, "kind")?,
        state: parsed(row, "state")?,
        requested_by: row.get("requested_by"),
        owner_id: row.get("owner_id"),
        holder: row.get("holder"),
        input: json(row.get("input"))?,
        steps: json(row.get("steps"))?,
        error: row.get::<Option<String>, _>("error").as_deref().map(json).transpose()?,
        request_hash: row.get("request_hash"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        finished_at: row.get("finished_at"),
    })
}
