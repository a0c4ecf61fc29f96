//! Backups and backup policies. A backup's row is written (running) before the first byte of its
//! object, by the operation that takes it, and ends succeeded or failed with one compare-and-set
//! each, so a backup is never reported done twice or both ways; one left running by a process
//! that died is found through its operation, which is no longer in flight. A policy is due when
//! its schedule's next time has come; its run is recorded with a compare-and-set on its revision,
//! so of two processes that found it due only one runs it.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::quotas::{self, BackupQuota, BackupUsage};
use super::sql::{Columns, narrowed, now, params, parsed};
use super::{Store, StoreError};
use crate::model::{
    BackupId, BackupKind, BackupState, Engine, InstanceId, Invalid, KeepDays, KeepLast, OperationId, Schedule,
    TargetName,
};

/// What a new backup records before its object is written (state `running`).
pub struct NewBackup<'a> {
    pub id: &'a BackupId,
    pub instance_id: &'a InstanceId,
    pub owner_id: i64,
    pub engine: Engine,
    /// The catalogue's name of the instance's version.
    pub version: &'a str,
    /// The target it is written to: the default resolved, never "whatever is the default later".
    pub target: &'a TargetName,
    /// The object's key on the target, chosen before it is written, so that a failed backup's
    /// partial object can be found and removed.
    pub object_key: &'a str,
    pub kind: BackupKind,
    pub encrypted: bool,
    /// The operation that takes it (a safety backup: the restore's).
    pub operation_id: &'a OperationId,
}

/// What a backup that succeeded stored.
#[derive(Debug, Clone, Copy)]
pub struct StoredObject<'a> {
    /// The object's size on the target, in bytes (compressed and encrypted, as stored).
    pub size_bytes: u64,
    /// The SHA-256 of the stored object, hex.
    pub sha256: &'a str,
    /// A checksum of the data's content, which a verification compares with the restored server's.
    pub content_digest: &'a str,
}

/// A backup as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    pub id: BackupId,
    /// The instance it is of, which may be gone: a backup outlives it.
    pub instance_id: InstanceId,
    pub owner_id: i64,
    pub engine: Engine,
    pub version: String,
    pub target: TargetName,
    pub object_key: String,
    pub kind: BackupKind,
    pub state: BackupState,
    pub encrypted: bool,
    /// Set once it succeeded.
    pub size_bytes: Option<u64>,
    pub sha256: Option<String>,
    pub content_digest: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
    pub operation_id: OperationId,
    pub started_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    /// The last verification's outcome: when it passed, or why it did not (never both).
    pub verified_at: Option<OffsetDateTime>,
    pub verify_error: Option<String>,
}

/// Which backups a listing shows: each `None` lets all through.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupFilter<'a> {
    pub owner_id: Option<i64>,
    pub instance_id: Option<&'a InstanceId>,
}

/// What a `PUT` of an instance's backup policy sets.
#[derive(Debug, Clone)]
pub struct NewPolicy<'a> {
    pub schedule: &'a Schedule,
    /// `None`: the configured default target at each run.
    pub target: Option<&'a TargetName>,
    pub keep_last: Option<KeepLast>,
    pub keep_days: Option<KeepDays>,
    pub verify: bool,
}

/// An instance's backup policy as the store keeps it, with the scheduler's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPolicy {
    pub instance_id: InstanceId,
    pub schedule: Schedule,
    pub target: Option<TargetName>,
    pub keep_last: Option<KeepLast>,
    pub keep_days: Option<KeepDays>,
    pub verify: bool,
    pub last_run_at: Option<OffsetDateTime>,
    /// The first time its schedule names after its last run (or after it was set): `None` if it
    /// names none (it never runs again).
    pub next_due_at: Option<OffsetDateTime>,
    /// Bumped by every write; what [`Store::record_backup_run`] compares.
    pub revision: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The columns `backup_from_row` reads. A macro, so queries stay `&'static str` built with
/// `concat!` (as `instances`'s `columns!`).
macro_rules! backup_columns {
    () => {
        "id, instance_id, owner_id, engine, version, target, object_key, kind, state, encrypted, size_bytes, \
         sha256, content_digest, reason, operation_id, started_at, finished_at, verified_at, verify_error"
    };
}

macro_rules! policy_columns {
    () => {
        "instance_id, schedule, target, keep_last, keep_days, verify, last_run_at, next_due_at, revision, \
         created_at, updated_at"
    };
}

impl Store {
    /// Records a new backup, running. With `quota`, only if its owner has room for one more (in the
    /// same transaction, so concurrent backups never pass it together): `OverLimit` if not. `None`
    /// for a backup that must not be refused for room, as a restore's safety backup.
    pub async fn insert_backup(
        &self,
        new: &NewBackup<'_>,
        quota: Option<&BackupQuota>,
    ) -> Result<BackupRecord, StoreError> {
        let sql = concat!(
            "INSERT INTO backups (id, instance_id, owner_id, engine, version, target, object_key, kind, state, \
             encrypted, operation_id, started_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', $9, $10, $11) RETURNING ",
            backup_columns!()
        );
        let params = params![
            new.id.as_str(),
            new.instance_id.as_str(),
            new.owner_id,
            new.engine.as_str(),
            new.version,
            new.target.as_str(),
            new.object_key,
            new.kind.as_str(),
            new.encrypted,
            new.operation_id.as_str(),
            now(),
        ];
        self.db
            .write(async |tx| {
                if let Some(quota) = quota {
                    quotas::check_backup_room(tx, new.owner_id, quota).await?;
                }
                tx.fetch_one(sql, params, backup_from_row).await
            })
            .await
    }

    /// Marks a running backup succeeded with what it stored: `false` if it was not running (it
    /// had been failed meanwhile, by a process that found its operation gone).
    pub async fn backup_succeeded(&self, id: &BackupId, stored: &StoredObject<'_>) -> Result<bool, StoreError> {
        let size = i64::try_from(stored.size_bytes).map_err(|_| StoreError::Corrupt("a backup's size".into()))?;
        let changed = self
            .db
            .execute(
                "UPDATE backups SET state = 'succeeded', size_bytes = $1, sha256 = $2, content_digest = $3, \
                 finished_at = $4 WHERE id = $5 AND state = 'running'",
                params![size, stored.sha256, stored.content_digest, now(), id.as_str()],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Marks a running backup failed, saying why: `false` if it was not running.
    pub async fn backup_failed(&self, id: &BackupId, reason: &str) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                "UPDATE backups SET state = 'failed', reason = $1, finished_at = $2 WHERE id = $3 AND state = 'running'",
                params![reason, now(), id.as_str()],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Records a verification of a succeeded backup: passed (`Ok`) or why not (`Err`), replacing
    /// the last one's. `false` if there is no such succeeded backup.
    pub async fn set_backup_verified(&self, id: &BackupId, outcome: Result<(), &str>) -> Result<bool, StoreError> {
        let (verified_at, error) = match outcome {
            Ok(()) => (Some(now()), None),
            Err(error) => (None, Some(error)),
        };
        let changed = self
            .db
            .execute(
                "UPDATE backups SET verified_at = $1, verify_error = $2 WHERE id = $3 AND state = 'succeeded'",
                params![verified_at, error, id.as_str()],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Any backup, whoever owns it: for admins and dbroker's own work.
    pub async fn backup(&self, id: &BackupId) -> Result<Option<BackupRecord>, StoreError> {
        let sql = concat!("SELECT ", backup_columns!(), " FROM backups WHERE id = $1");
        self.db.fetch_optional(sql, params![id.as_str()], backup_from_row).await
    }

    /// One of `owner_id`'s backups. Another user's is `None`, as if it did not exist.
    pub async fn find_backup(&self, owner_id: i64, id: &BackupId) -> Result<Option<BackupRecord>, StoreError> {
        let sql = concat!("SELECT ", backup_columns!(), " FROM backups WHERE id = $1 AND owner_id = $2");
        self.db.fetch_optional(sql, params![id.as_str(), owner_id], backup_from_row).await
    }

    /// Every backup of an instance (which may be gone), newest first: what retention judges.
    pub async fn backups_of_instance(&self, instance_id: &InstanceId) -> Result<Vec<BackupRecord>, StoreError> {
        let sql = concat!("SELECT ", backup_columns!(), " FROM backups WHERE instance_id = $1 ORDER BY seq DESC");
        self.db.fetch_all(sql, params![instance_id.as_str()], backup_from_row).await
    }

    /// The backups `filter` lets through, newest first: `limit` of them, older than backup
    /// `before` if given. `None` if there is no backup `before` (deleted since it ended a page).
    pub async fn list_backups(
        &self,
        filter: &BackupFilter<'_>,
        before: Option<&BackupId>,
        limit: u32,
    ) -> Result<Option<Vec<BackupRecord>>, StoreError> {
        if let Some(before) = before
            && self.backup(before).await?.is_none()
        {
            return Ok(None);
        }
        let sql = concat!(
            "SELECT ",
            backup_columns!(),
            " FROM backups WHERE ($1 IS NULL OR owner_id = $1) AND ($2 IS NULL OR instance_id = $2) \
             AND ($3 IS NULL OR seq < (SELECT seq FROM backups WHERE id = $3)) ORDER BY seq DESC LIMIT $4"
        );
        let params =
            params![filter.owner_id, filter.instance_id.map(InstanceId::as_str), before.map(BackupId::as_str), limit,];
        Ok(Some(self.db.fetch_all(sql, params, backup_from_row).await?))
    }

    /// Removes a finished backup's record (once its object is gone from its target): `false` if
    /// there is no such backup, or it is still running (its operation ends it first).
    pub async fn delete_backup(&self, id: &BackupId) -> Result<bool, StoreError> {
        let changed =
            self.db.execute("DELETE FROM backups WHERE id = $1 AND state <> 'running'", params![id.as_str()]).await?;
        Ok(changed > 0)
    }

    /// Fails, with `reason`, every backup still running whose operation is no longer in flight:
    /// its process died, and the operation was taken over and ended (or is gone). Returns them as
    /// failed, for their partial objects to be removed.
    pub async fn fail_orphaned_backups(&self, reason: &str) -> Result<Vec<BackupRecord>, StoreError> {
        let sql = concat!(
            "UPDATE backups SET state = 'failed', reason = $1, finished_at = $2 WHERE state = 'running' \
             AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.id = backups.operation_id \
                 AND o.state IN ('pending', 'running')) RETURNING ",
            backup_columns!()
        );
        self.db.fetch_all(sql, params![reason, now()], backup_from_row).await
    }

    /// What `owner_id`'s backups take, as their quota counts it.
    pub async fn backup_usage(&self, owner_id: i64) -> Result<BackupUsage, StoreError> {
        self.db.fetch_one(quotas::BACKUP_USAGE, params![owner_id], quotas::backup_usage_from_row).await
    }

    /// Each user's backups, counted as their quota counts them, by user id: users with none are
    /// not in it. For the admins' figures in `/metrics`.
    pub async fn backup_usage_by_owner(&self) -> Result<HashMap<i64, BackupUsage>, StoreError> {
        let sql = concat!(
            "SELECT owner_id, ",
            quotas::backup_usage_columns!(),
            " FROM backups WHERE state <> 'failed' GROUP BY owner_id"
        );
        let rows = self
            .db
            .fetch_all(sql, params![], |row| {
                Ok((row.int(0)?, BackupUsage { backups: narrowed(row.int(1)?)?, bytes: narrowed(row.int(2)?)? }))
            })
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Sets an instance's backup policy, replacing any it had; it is next due at the first time
    /// its schedule names from now. Its last run is kept.
    pub async fn put_backup_policy(
        &self,
        instance_id: &InstanceId,
        policy: &NewPolicy<'_>,
    ) -> Result<BackupPolicy, StoreError> {
        let now = now();
        let sql = concat!(
            "INSERT INTO backup_policies (instance_id, schedule, target, keep_last, keep_days, verify, next_due_at, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (instance_id) DO UPDATE SET schedule = excluded.schedule, target = excluded.target, \
             keep_last = excluded.keep_last, keep_days = excluded.keep_days, verify = excluded.verify, \
             next_due_at = excluded.next_due_at, revision = backup_policies.revision + 1, \
             updated_at = excluded.updated_at RETURNING ",
            policy_columns!()
        );
        let params = params![
            instance_id.as_str(),
            policy.schedule.as_str(),
            policy.target.map(TargetName::as_str),
            policy.keep_last.map(KeepLast::get),
            policy.keep_days.map(KeepDays::get),
            policy.verify,
            policy.schedule.next_after(now),
            now,
        ];
        self.db.fetch_one(sql, params, policy_from_row).await
    }

    pub async fn backup_policy(&self, instance_id: &InstanceId) -> Result<Option<BackupPolicy>, StoreError> {
        let sql = concat!("SELECT ", policy_columns!(), " FROM backup_policies WHERE instance_id = $1");
        self.db.fetch_optional(sql, params![instance_id.as_str()], policy_from_row).await
    }

    /// Removes an instance's policy: `false` if it had none.
    pub async fn delete_backup_policy(&self, instance_id: &InstanceId) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute("DELETE FROM backup_policies WHERE instance_id = $1", params![instance_id.as_str()])
            .await?;
        Ok(changed > 0)
    }

    /// Every policy, deleted instances' included: what the retention sweep goes through.
    pub async fn backup_policies(&self) -> Result<Vec<BackupPolicy>, StoreError> {
        let sql = concat!("SELECT ", policy_columns!(), " FROM backup_policies ORDER BY instance_id");
        self.db.fetch_all(sql, params![], policy_from_row).await
    }

    /// The policies due at `at` (their next time has come), soonest first: those of instances the
    /// store still has. A deleted instance's policy is kept for its retention, and never runs.
    pub async fn due_backup_policies(&self, at: OffsetDateTime) -> Result<Vec<BackupPolicy>, StoreError> {
        let sql = concat!(
            "SELECT ",
            policy_columns!(),
            " FROM backup_policies p WHERE next_due_at <= $1 \
             AND EXISTS (SELECT 1 FROM instances i WHERE i.id = p.instance_id) ORDER BY next_due_at, instance_id"
        );
        self.db.fetch_all(sql, params![at], policy_from_row).await
    }

    /// Records that `policy` (as read) runs at `ran_at`, which moves its next time to the first
    /// its schedule names after `ran_at`: `true` if this caller is to run it, `false` if the policy
    /// changed since it was read (another process recorded the run, or its owner changed or
    /// removed it). A run missed while no dbroker ran is so run once, not once per time missed.
    pub async fn record_backup_run(&self, policy: &BackupPolicy, ran_at: OffsetDateTime) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                "UPDATE backup_policies SET last_run_at = $1, next_due_at = $2, revision = revision + 1 \
                 WHERE instance_id = $3 AND revision = $4",
                params![ran_at, policy.schedule.next_after(ran_at), policy.instance_id.as_str(), policy.revision],
            )
            .await?;
        Ok(changed > 0)
    }
}

/// A stored time (see `Columns::opt_time`) as a time.
fn stored_time(text: Option<String>) -> Result<Option<OffsetDateTime>, StoreError> {
    text.map(|text| {
        OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Corrupt(format!("a stored time {text:?}: {e}")))
    })
    .transpose()
}

fn required_time(row: &dyn Columns, column: usize) -> Result<OffsetDateTime, StoreError> {
    let text = row.time(column)?;
    OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("a stored time {text:?}: {e}")))
}

/// A column's bound count (`keep_last`, `keep_days`), checked again as it is read.
fn bounded<T>(row: &dyn Columns, column: usize, new: fn(u32) -> Result<T, Invalid>) -> Result<Option<T>, StoreError> {
    row.opt_int(column)?.map(|n| new(narrowed(n)?).map_err(|e| StoreError::Corrupt(e.0))).transpose()
}

/// A backup row, read by position in `backup_columns!`'s order.
fn backup_from_row(row: &dyn Columns) -> Result<BackupRecord, StoreError> {
    Ok(BackupRecord {
        id: parsed(row, 0)?,
        instance_id: parsed(row, 1)?,
        owner_id: row.int(2)?,
        engine: parsed(row, 3)?,
        version: row.text(4)?,
        target: parsed(row, 5)?,
        object_key: row.text(6)?,
        kind: parsed(row, 7)?,
        state: parsed(row, 8)?,
        encrypted: row.flag(9)?,
        size_bytes: row.opt_int(10)?.map(narrowed).transpose()?,
        sha256: row.opt_text(11)?,
        content_digest: row.opt_text(12)?,
        reason: row.opt_text(13)?,
        operation_id: parsed(row, 14)?,
        started_at: required_time(row, 15)?,
        finished_at: stored_time(row.opt_time(16)?)?,
        verified_at: stored_time(row.opt_time(17)?)?,
        verify_error: row.opt_text(18)?,
    })
}

/// A policy row, read by position in `policy_columns!`'s order.
fn policy_from_row(row: &dyn Columns) -> Result<BackupPolicy, StoreError> {
    Ok(BackupPolicy {
        instance_id: parsed(row, 0)?,
        schedule: parsed(row, 1)?,
        target: row.opt_text(2)?.as_deref().map(super::sql::parsed_text).transpose()?,
        keep_last: bounded(row, 3, KeepLast::new)?,
        keep_days: bounded(row, 4, KeepDays::new)?,
        verify: row.flag(5)?,
        last_run_at: stored_time(row.opt_time(6)?)?,
        next_due_at: stored_time(row.opt_time(7)?)?,
        revision: row.int(8)?,
        created_at: required_time(row, 9)?,
        updated_at: required_time(row, 10)?,
    })
}
