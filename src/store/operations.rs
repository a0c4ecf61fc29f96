//! Operations: every change to an instance, recorded before its first side effect, with a lease
//! held by the process running it. The schema allows one in flight per instance, which is how a
//! second change is refused across processes; an expired lease is how a crash is noticed.

use std::time::Duration;

use serde::Serialize;

use super::sql::{Columns, now, params, parsed};
use super::{Constraint, Store, StoreError, millis_from_now, now_millis};
use crate::model::{InstanceId, OperationId, OperationKind, OperationState};

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
        let now = now();
        let (key, hash) = new.idempotency.unzip();
        // A key used before is no row (`ON CONFLICT DO NOTHING`), so that the only constraint the
        // insert can break is the one operation in flight per instance.
        let sql = concat!(
            "INSERT INTO operations (id, instance_id, kind, state, requested_by, owner_id, holder, lease_until, \
             input, idempotency_key, request_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING ",
            op_columns!()
        );
        let params = params![
            new.id.as_str(),
            new.instance_id.as_str(),
            new.kind.as_str(),
            new.requested_by,
            new.owner_id,
            new.holder,
            millis_from_now(new.lease),
            new.input.to_string(),
            key,
            hash,
            now,
            now,
        ];
        self.db
            .fetch_optional(sql, params, operation_from_row)
            .await
            .map_err(|e| e.or_broke(Constraint::OperationInFlight))?
            .ok_or(StoreError::IdempotencyKeyUsed)
    }

    pub async fn operation(&self, id: &OperationId) -> Result<Option<OperationRecord>, StoreError> {
        let sql = concat!("SELECT ", op_columns!(), " FROM operations WHERE id = $1");
        self.db.fetch_optional(sql, params![id.as_str()], operation_from_row).await
    }

    /// The operation in flight on an instance, if any.
    pub async fn operation_in_flight(&self, instance_id: &InstanceId) -> Result<Option<OperationRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            op_columns!(),
            " FROM operations WHERE instance_id = $1 AND state IN ('pending', 'running')"
        );
        self.db.fetch_optional(sql, params![instance_id.as_str()], operation_from_row).await
    }

    /// The operation that `owner_id` started with idempotency key `key`, if any.
    pub async fn operation_by_key(&self, owner_id: i64, key: &str) -> Result<Option<OperationRecord>, StoreError> {
        let sql = concat!("SELECT ", op_columns!(), " FROM operations WHERE owner_id = $1 AND idempotency_key = $2");
        self.db.fetch_optional(sql, params![owner_id, key], operation_from_row).await
    }

    /// Frees an idempotency key that has outlived its window, for a new request to use.
    pub async fn forget_idempotency_key(&self, id: &OperationId) -> Result<(), StoreError> {
        self.db.execute("UPDATE operations SET idempotency_key = NULL WHERE id = $1", params![id.as_str()]).await?;
        Ok(())
    }

    /// An instance's operations, newest first: `limit` of them, older than `before` if given.
    pub async fn operations_of(
        &self,
        instance_id: &InstanceId,
        before: Option<&OperationId>,
        limit: u32,
    ) -> Result<Vec<OperationRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            op_columns!(),
            " FROM operations WHERE instance_id = $1 \
             AND ($2 IS NULL OR seq < (SELECT seq FROM operations WHERE id = $2)) ORDER BY seq DESC LIMIT $3"
        );
        let params = params![instance_id.as_str(), before.map(OperationId::as_str), limit];
        self.db.fetch_all(sql, params, operation_from_row).await
    }

    /// Moves an operation to `running` and writes its steps so far; `false` if `holder` no longer
    /// holds it (its lease expired and another process took it over).
    pub async fn record_steps(&self, id: &OperationId, holder: &str, steps: &[Step]) -> Result<bool, StoreError> {
        let steps = serde_json::to_string(steps).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let changed = self
            .db
            .execute(
                "UPDATE operations SET state = 'running', steps = $1, updated_at = $2 \
                 WHERE id = $3 AND holder = $4 AND state IN ('pending', 'running')",
                params![steps, now(), id.as_str(), holder],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Points a create's operation at the instance it ended up making (a warm-pool member it
    /// claimed has an id of its own).
    pub async fn repoint_operation(&self, id: &OperationId, instance_id: &InstanceId) -> Result<(), StoreError> {
        self.db
            .execute("UPDATE operations SET instance_id = $1 WHERE id = $2", params![instance_id.as_str(), id.as_str()])
            .await
            .map_err(|e| e.or_broke(Constraint::OperationInFlight))?;
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
        let now = now();
        let state = if error.is_some() { OperationState::Failed } else { OperationState::Succeeded };
        let changed = self
            .db
            .execute(
                "UPDATE operations SET state = $1, error = $2, updated_at = $3, finished_at = $4, holder = NULL, \
                 lease_until = NULL WHERE id = $5 AND holder = $6 AND state IN ('pending', 'running')",
                params![state.as_str(), error.map(|e| e.to_string()), now, now, id.as_str(), holder],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Removes an operation that turned out to have nothing to do (a repair whose drift had
    /// gone by the time it looked again), so histories show only what changed something.
    pub async fn discard_operation(&self, id: &OperationId, holder: &str) -> Result<(), StoreError> {
        self.db.execute("DELETE FROM operations WHERE id = $1 AND holder = $2", params![id.as_str(), holder]).await?;
        Ok(())
    }

    /// Renews an operation's lease for `ttl`, if `holder` still holds it.
    pub async fn renew_lease(&self, id: &OperationId, holder: &str, ttl: Duration) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE operations SET lease_until = $1 WHERE id = $2 AND holder = $3 \
                 AND state IN ('pending', 'running')",
                params![millis_from_now(ttl), id.as_str(), holder],
            )
            .await?;
        Ok(())
    }

    /// Operations in flight whose holder stopped renewing their lease: it died.
    pub async fn abandoned_operations(&self) -> Result<Vec<OperationRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            op_columns!(),
            " FROM operations WHERE state IN ('pending', 'running') AND lease_until < $1 ORDER BY seq"
        );
        self.db.fetch_all(sql, params![now_millis()], operation_from_row).await
    }

    /// Takes over an abandoned operation for `holder`: `false` if its lease had not expired after
    /// all, or another process took it first.
    pub async fn take_over_operation(&self, id: &OperationId, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                "UPDATE operations SET holder = $1, lease_until = $2, updated_at = $3 \
                 WHERE id = $4 AND state IN ('pending', 'running') AND lease_until < $5",
                params![holder, millis_from_now(ttl), now(), id.as_str(), now_millis()],
            )
            .await?;
        Ok(changed > 0)
    }
}

/// An operation row, read by position in `op_columns!`'s order.
fn operation_from_row(row: &dyn Columns) -> Result<OperationRecord, StoreError> {
    fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
    Ok(OperationRecord {
        id: parsed(row, 0)?,
        instance_id: parsed(row, 1)?,
        kind: parsed(row, 2)?,
        state: parsed(row, 3)?,
        requested_by: row.text(4)?,
        owner_id: row.opt_int(5)?,
        holder: row.opt_text(6)?,
        input: json(&row.text(7)?)?,
        steps: json(&row.text(8)?)?,
        error: row.opt_text(9)?.as_deref().map(json).transpose()?,
        request_hash: row.opt_text(10)?,
        created_at: row.time(11)?,
        updated_at: row.time(12)?,
        finished_at: row.opt_time(13)?,
    })
}
