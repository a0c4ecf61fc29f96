//! An instance's figures, read when they are asked for: its container's CPU and memory use from
//! Docker, and what its server says of itself (see `engines::ServerStats`). A read, not an
//! operation: it changes nothing and runs beside any operation.

use super::{ProvisionError, Provisioner};
use crate::engines::{self, ServerStats};
use crate::model::{InstanceId, Status};
use crate::runtime::{ContainerUsage, RuntimeError};

/// What `Provisioner::stats` reads. The server's own figures are `Err` with the reason when it
/// does not answer in time (or refuses): the container's figures stand without them.
pub struct InstanceStats {
    pub read_at: String,
    pub container: ContainerUsage,
    pub server: Result<ServerStats, String>,
}

impl Provisioner {
    /// The figures of one of the owner's instances, which must be running: a stopped one has a
    /// container that uses nothing and a server that cannot answer. Docker and the server are
    /// asked at once, the server within `engines::PROBE_ATTEMPT_TIMEOUT`.
    pub async fn stats(&self, owner_id: i64, id: &InstanceId) -> Result<InstanceStats, ProvisionError> {
        let record = self.owned(owner_id, id).await?;
        if record.status != Status::Running {
            let hint = if record.status == Status::Stopped { "; start it first" } else { "" };
            return Err(ProvisionError::Conflict(format!(
                "cannot read the stats of an instance that is {}: they come from its running server{hint}",
                record.status
            )));
        }
        let read_at = crate::store::now_rfc3339();
        let host = self.probe_host();
        let server = async {
            let password = self.password_of(&record).map_err(|e| e.to_string())?;
            engines::server_stats(record.engine(), &self.endpoint(&record, &host, &password)).await
        };
        let container = self.container_name(id);
        let (container, server) = tokio::join!(self.runtime.usage(&container), server);
        let container = match container {
            Ok(Some(usage)) => usage,
            // Its server died or its container was removed since the record said running: the
            // reconciler is on it.
            Ok(None) | Err(RuntimeError::NotFound) => {
                return Err(ProvisionError::Conflict(
                    "the instance's container is not running right now; try again once it is back".into(),
                ));
            }
            Err(other) => return Err(other.into()),
        };
        Ok(InstanceStats { read_at, container, server })
    }
}
