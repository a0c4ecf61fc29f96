//! The provisioning layer's errors, named for what the caller should do.

use serde::{Deserialize, Serialize};

use crate::config::PortRange;
use crate::model::{OperationId, OperationKind, UserName};
use crate::runtime::RuntimeError;
use crate::store::{Exceeded, LimitKind, OperationRecord, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("no such instance")]
    NotFound,
    /// A value that is well-formed on its own but not acceptable here (out of bounds, wrong engine).
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("you already have an instance named {0:?}; choose another name")]
    NameTaken(String),
    #[error("no user named {0}")]
    NoSuchUser(UserName),
    #[error("a user named {0} exists already; choose another name")]
    UserNameTaken(UserName),
    /// A user who owns instances cannot be removed: their instances would have no owner.
    #[error(
        "{name} still owns {count} instance(s); delete them first, or disable {name} instead, which refuses \
         their token and keeps their instances"
    )]
    UserOwnsInstances { name: UserName, count: u64 },
    /// Another operation is in flight on the instance (which, if it could be read).
    #[error("{}", busy_message(.operation))]
    Busy { operation: Option<(OperationId, OperationKind)> },
    /// The operation makes no sense in the instance's status.
    #[error("{0}")]
    Conflict(String),
    /// The caller sent this idempotency key before with the same request: the first operation,
    /// whose outcome is the answer.
    #[error("this request was made before with the same idempotency key")]
    Replay(Box<OperationRecord>),
    #[error("this Idempotency-Key was used before for another request; use a new key for a new request")]
    IdempotencyKeyReused,
    /// The database server refused what dbroker asked of it.
    #[error("{0}")]
    ServerRefused(String),
    /// A user's quota (of instances, or of memory) would be passed.
    #[error("{}", limit_message(.0))]
    QuotaExceeded(Exceeded),
    /// All instances' memory caps together would pass the host's memory budget.
    #[error("{}", limit_message(.0))]
    HostMemoryExhausted(Exceeded),
    #[error("every port of the range {0} is in use; delete instances or widen --port-range")]
    PortsExhausted(PortRange),
    #[error("the Docker engine is unreachable ({0}); try again when it is back")]
    EngineUnreachable(String),
    #[error(
        "image {image} is not on this host and could not be pulled ({reason}); set {flag} to an image the host has"
    )]
    ImageMissing { image: String, flag: &'static str, reason: String },
    /// The database did not accept its credentials in time, or its server exited.
    #[error("the database did not become ready: {reason}")]
    NotReady { reason: String, last_logs: Vec<String> },
    /// The server did not load a dump (an import's, a backup's): its message, and that nothing
    /// was changed.
    #[error("the server did not load the dump: {0}")]
    NotLoadable(String),
    /// A backup target refused, could not be reached, or is full.
    #[error("{0}")]
    TargetFailed(String),
    #[error("instance {0} has no backup policy; PUT one to schedule its backups")]
    NoBackupPolicy(crate::model::InstanceId),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn busy_message(operation: &Option<(OperationId, OperationKind)>) -> String {
    match operation {
        Some((id, kind)) => {
            format!("another operation ({kind} {id}) is in flight on this instance; try again once it has ended")
        }
        None => "another operation is in flight on this instance; try again once it has ended".to_string(),
    }
}

/// What a change beyond a limit is told: which limit, and what to do.
fn limit_message(exceeded: &Exceeded) -> String {
    let Exceeded { quota, limit, in_use, requested } = exceeded;
    match quota {
        LimitKind::Instances => format!(
            "the quota of {limit} instances is reached ({in_use} in use): delete an instance, or ask an admin to \
             raise the quota"
        ),
        LimitKind::Memory => format!(
            "the memory quota of {limit} MiB would be passed ({in_use} MiB in use, {requested} MiB more asked): \
             ask for less memory, delete or shrink an instance, or ask an admin to raise the quota"
        ),
        LimitKind::HostMemory => format!(
            "the host's memory budget for instances, {limit} MiB, would be passed ({in_use} MiB in use, \
             {requested} MiB more asked): ask for less memory, or try again once instances are deleted"
        ),
        LimitKind::Backups => format!(
            "the quota of {limit} backups is reached ({in_use} kept): delete a backup, keep fewer in the backup \
             policy, or ask an admin to raise the quota"
        ),
        LimitKind::BackupStorage => format!(
            "the backup storage quota of {limit} MiB is used up ({in_use} MiB kept): delete a backup, keep fewer \
             in the backup policy, or ask an admin to raise the quota"
        ),
    }
}

/// An error as a failed operation keeps it: what kind of error (the variant, which the API maps
/// to an HTTP status), its message and the server's last log lines if it did not start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReport {
    pub code: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_logs: Vec<String>,
    /// The limit a change would have passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exceeded: Option<Exceeded>,
}

impl ProvisionError {
    /// The kind of error, in one stable word: what a stored error is mapped to a status by.
    pub fn code(&self) -> &'static str {
        match self {
            ProvisionError::NotFound => "not_found",
            ProvisionError::Invalid { .. } => "invalid",
            ProvisionError::NameTaken(_) | ProvisionError::UserNameTaken(_) => "name_taken",
            ProvisionError::NoSuchUser(_) => "user_not_found",
            ProvisionError::UserOwnsInstances { .. } => "user_owns_instances",
            ProvisionError::Busy { .. } => "busy",
            ProvisionError::Conflict(_) => "conflict",
            ProvisionError::Replay(_) => "replay",
            ProvisionError::IdempotencyKeyReused => "idempotency_key_reused",
            ProvisionError::ServerRefused(_) => "server_refused",
            ProvisionError::NotLoadable(_) => "not_loadable",
            ProvisionError::TargetFailed(_) => "target_failed",
            ProvisionError::NoBackupPolicy(_) => "no_backup_policy",
            ProvisionError::QuotaExceeded(_) => "quota_exceeded",
            ProvisionError::HostMemoryExhausted(_) => "host_memory_exhausted",
            ProvisionError::PortsExhausted(_) => "ports_exhausted",
            ProvisionError::EngineUnreachable(_) => "engine_unreachable",
            ProvisionError::ImageMissing { .. } => "image_missing",
            ProvisionError::NotReady { .. } => "not_ready",
            ProvisionError::Internal(_) => "internal",
        }
    }

    /// The error as an operation keeps it. An internal error's cause stays in the log.
    pub fn report(&self) -> ErrorReport {
        let detail = match self {
            ProvisionError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                INTERNAL_DETAIL.to_string()
            }
            other => other.to_string(),
        };
        let last_logs = match self {
            ProvisionError::NotReady { last_logs, .. } => last_logs.clone(),
            _ => Vec::new(),
        };
        ErrorReport { code: self.code().to_string(), detail, last_logs, exceeded: self.exceeded() }
    }

    /// The limit the change would have passed, if that is the error.
    pub fn exceeded(&self) -> Option<Exceeded> {
        match self {
            ProvisionError::QuotaExceeded(exceeded) | ProvisionError::HostMemoryExhausted(exceeded) => Some(*exceeded),
            _ => None,
        }
    }
}

/// What an internal error says to a client: the cause is in dbroker's log, not in the answer.
pub const INTERNAL_DETAIL: &str = "dbroker failed on its side; the error is in its log";

impl From<StoreError> for ProvisionError {
    fn from(error: StoreError) -> Self {
        // A constraint a caller did not map itself still says what it is, never a 500.
        match error {
            StoreError::OperationInFlight => ProvisionError::Busy { operation: None },
            StoreError::NameTaken => ProvisionError::Conflict("that name is in use already; choose another".into()),
            StoreError::NotFound => ProvisionError::NotFound,
            StoreError::OverLimit(exceeded) if exceeded.quota == LimitKind::HostMemory => {
                ProvisionError::HostMemoryExhausted(exceeded)
            }
            StoreError::OverLimit(exceeded) => ProvisionError::QuotaExceeded(exceeded),
            other => ProvisionError::Internal(other.into()),
        }
    }
}

impl From<RuntimeError> for ProvisionError {
    fn from(error: RuntimeError) -> Self {
        match error {
            RuntimeError::Unreachable(reason) => ProvisionError::EngineUnreachable(reason),
            other => ProvisionError::Internal(other.into()),
        }
    }
}
