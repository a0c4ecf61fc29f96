//! The provisioning layer's errors, named for what the caller should do.

use crate::config::PortRange;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("no such instance")]
    NotFound,
    /// A value that is well-formed on its own but not acceptable here (out of bounds, wrong engine).
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("you already have an instance named {0:?}; choose another name")]
    NameTaken(String),
    /// The instance is in the middle of something else.
    #[error("{0}")]
    Busy(String),
    /// The operation makes no sense in the instance's status.
    #[error("{0}")]
    Conflict(String),
    /// The database server refused what dbroker asked of it.
    #[error("{0}")]
    ServerRefused(String),
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
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ProvisionError {
    fn from(error: StoreError) -> Self {
        ProvisionError::Internal(error.into())
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
