//! The warm pool: instances started ahead of demand, owned by nobody and listed to no user, that
//! a create claims and makes its own in milliseconds instead of waiting for a server's first
//! start. Sizes are per engine version (`pool` in the catalogue); the leader refills in the
//! background after each claim and at every reconciler pass.

use super::lifecycle::PasswordFile;
use super::{Caller, Instance, NewInstance, Progress, ProvisionError, Provisioner, SYSTEM_ACTOR};
use crate::engines;
use crate::model::{EngineSettings, EventKind, InstanceId, MemoryMb, Status};
use crate::store::{InstanceRecord, PoolClaim, StoreError};

impl Provisioner {
    /// Claims a pool member of the request's engine and version for `caller`, if there is one,
    /// and makes it theirs: a fresh password (the pool's stops working), their memory cap and
    /// database. The claim is checked against the caller's quota as it is made. A member that
    /// cannot be made theirs is removed, and the create goes on without the pool (`None`), as
    /// instance `own_id` again.
    pub(super) async fn claim_from_pool(
        &self,
        caller: &Caller,
        request: &NewInstance,
        version: &str,
        memory: MemoryMb,
        own_id: &InstanceId,
        progress: &Progress,
    ) -> Result<Option<Instance>, ProvisionError> {
        let name = request.name.as_ref();
        // The create's operation moves to the member with it: from here on it holds the member.
        let operation = progress.operation_id();
        let claim = PoolClaim { engine: request.engine, version, owner_id: caller.user_id, name, memory, operation };
        let limits = self.quotas.limits(&self.runtime).await?;
        let claimed = self.store.claim_pool_member(&claim, &limits).await;
        self.pool_wanted.notify_one();
        let (record, pool_memory) = match claimed {
            Ok(Some(claimed)) => claimed,
            Ok(None) => return Ok(None),
            Err(StoreError::NameTaken) => {
                return Err(ProvisionError::NameTaken(name.map(|n| n.as_str().to_string()).unwrap_or_default()));
            }
            Err(other) => return Err(other.into()),
        };
        tracing::Span::current().record("instance_id", tracing::field::display(&record.id));
        progress.step("claimed from the warm pool").await;
        match self.make_own(caller, record.clone(), request, pool_memory).await {
            Ok(instance) => {
                progress.step("ready").await;
                Ok(Some(instance))
            }
            Err(error) => {
                tracing::warn!(instance_id = %record.id, error = %error, "a claimed pool member could not be handed over; removing it");
                if let Err(error) = self.remove_everything(&record.id).await {
                    tracing::error!(instance_id = %record.id, error = %error, "could not remove it either; the reconciler will");
                }
                self.store.repoint_operation(progress.operation_id(), own_id).await?;
                Ok(None)
            }
        }
    }

    /// Makes a claimed member the caller's. Its record holds the cap asked for already (the claim
    /// set it); its container and server still have `pool_memory`'s.
    async fn make_own(
        &self,
        caller: &Caller,
        mut record: InstanceRecord,
        request: &NewInstance,
        pool_memory: MemoryMb,
    ) -> Result<Instance, ProvisionError> {
        let memory = record.memory_mb;
        let host = self.probe_host();
        let refused = |what: &str, reason: String| ProvisionError::ServerRefused(format!("{what}: {reason}"));
        // A rotation like any other: crash-safe, the new password pending until the server has it.
        let password = self.rotate_now(&record, PasswordFile::WrittenLater).await?;
        if memory != pool_memory {
            self.runtime.set_memory(&self.container_name(&record.id), memory.bytes()).await?;
            engines::apply_memory(record.engine(), &self.endpoint(&record, &host, &password), memory)
                .await
                .map_err(|e| refused("memory limit", e))?;
        }
        if let Some(database) = &request.database
            && record.settings.database() != Some(database)
        {
            engines::rename_database(record.engine(), &self.endpoint(&record, &host, &password), database)
                .await
                .map_err(|e| refused("database", e))?;
            self.store.set_database(&record.id, database).await?;
            record.settings = EngineSettings::Postgres { database: database.clone() };
        }
        self.store.add_event(&record.id, EventKind::Created, &caller.name, Some("claimed from the warm pool")).await?;
        self.store.add_event(&record.id, EventKind::Ready, SYSTEM_ACTOR, None).await?;
        tracing::info!(instance_id = %record.id, "instance claimed from the warm pool");
        self.reveal_current(&record.id).await
    }

    /// Starts the members each version's pool lacks, one at a time, so a refill never competes
    /// with users' creates for more than one server's start at once.
    pub(super) async fn fill_pool(&self) {
        let members = match self.store.pool_members().await {
            Ok(members) => members,
            Err(error) => return tracing::warn!(error = %error, "cannot read the warm pool"),
        };
        for (engine, catalogue) in self.config.catalogue.engines() {
            for (version, spec) in &catalogue.versions {
                let alive = |m: &&InstanceRecord| {
                    m.engine() == engine
                        && &m.version == version
                        && matches!(m.status, Status::Provisioning | Status::Running)
                };
                let have = members.iter().filter(alive).count();
                for _ in have..spec.pool as usize {
                    let Ok(version_name) = version.parse() else { break };
                    let request = NewInstance { version: Some(version_name), ..NewInstance::of(engine) };
                    // An operation like any create: shutdown waits for a member half started.
                    if let Err(error) = self.create_pool_member(request).await {
                        tracing::warn!(%engine, version, error = %error, "could not start a warm-pool member");
                        break;
                    }
                }
            }
        }
    }

    /// The warm pool's members, for admins.
    pub async fn pool(&self) -> Result<Vec<InstanceRecord>, ProvisionError> {
        Ok(self.store.pool_members().await?)
    }
}
