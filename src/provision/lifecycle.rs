//! Running an instance day to day: stop, start, restart, resize, rotate its password, read its
//! logs and its history. Each keeps the data written before it.

use super::create::check_memory;
use super::{Caller, Instance, ProvisionError, Provisioner};
use crate::engines;
use crate::model::{EventKind, InstanceId, MemoryMb, Status};
use crate::secrets::Secret;
use crate::store::{Event, InstanceRecord};

/// The most log lines one request may ask for.
pub const MAX_LOG_LINES: usize = 10_000;

impl Provisioner {
    /// Stops the server; the instance keeps its port, data and credentials.
    #[tracing::instrument(skip_all, fields(instance_id = %id))]
    pub async fn stop(&self, caller: &Caller, id: &InstanceId) -> Result<Instance, ProvisionError> {
        let record = self.owned(caller.user_id, id).await?;
        let _busy = self.claim_busy(&record)?;
        require_status(&record, &[Status::Running, Status::Exited, Status::Stopped], "stop")?;
        // The intent first: a reconciler (maybe in another process) that sees the container down
        // must not take it for a crash and start it again.
        self.store.set_status(id, Status::Stopped).await?;
        if let Err(error) = self.runtime.stop(&self.container_name(id)).await {
            self.store.set_status(id, record.status).await?;
            return Err(error.into());
        }

        self.store.add_event(id, EventKind::Stopped, &caller.name, None).await?;
        self.get(caller.user_id, id).await
    }

    /// Starts a stopped instance and returns once it accepts its credentials again.
    pub async fn start(&self, caller: &Caller, id: &InstanceId) -> Result<Instance, ProvisionError> {
        self.start_server(caller, id, EventKind::Started).await
    }

    /// Restarts the server and returns once it accepts its credentials again.
    pub async fn restart(&self, caller: &Caller, id: &InstanceId) -> Result<Instance, ProvisionError> {
        self.start_server(caller, id, EventKind::Restarted).await
    }

    #[tracing::instrument(skip_all, fields(instance_id = %id, action = kind.as_str()))]
    async fn start_server(
        &self,
        caller: &Caller,
        id: &InstanceId,
        kind: EventKind,
    ) -> Result<Instance, ProvisionError> {
        let record = self.owned(caller.user_id, id).await?;
        let _busy = self.claim_busy(&record)?;
        require_status(&record, &[Status::Running, Status::Exited, Status::Stopped], "start")?;
        let container = self.container_name(id);
        match kind {
            EventKind::Restarted => self.runtime.restart(&container).await?,
            _ => self.runtime.start(&container).await?,
        }
        self.wait_until_ready(&record).await?;
        self.store.set_status(id, Status::Running).await?;
        self.store.add_event(id, kind, &caller.name, None).await?;
        self.get(caller.user_id, id).await
    }

    /// Changes the memory cap in place: the container's limit, and the server's own limit where
    /// the engine keeps one (Redis's `maxmemory`): told to the server if it runs (which keeps it
    /// for its next start), else written to its configuration file.
    #[tracing::instrument(skip_all, fields(instance_id = %id))]
    pub async fn resize(&self, caller: &Caller, id: &InstanceId, memory: MemoryMb) -> Result<Instance, ProvisionError> {
        let record = self.owned(caller.user_id, id).await?;
        let _busy = self.claim_busy(&record)?;
        require_status(&record, &[Status::Running, Status::Stopped, Status::Exited], "resize")?;
        let memory = check_memory(&self.config.catalogue, record.engine, Some(memory))?;
        let password = self.password_of(&record)?;
        let resized = InstanceRecord { memory_mb: memory, ..record.clone() };
        let container = self.container_name(id);
        // Growing: the container first, so the server never has more than its cap allows.
        // Shrinking: the server first, so it is within the new cap before the cap tightens.
        let growing = memory > record.memory_mb;
        if growing {
            self.runtime.set_memory(&container, memory.bytes()).await?;
        }
        if record.status == Status::Running {
            let host = self.probe_host();
            engines::apply_memory(record.engine, &self.endpoint(&record, &host, &password), memory).await.map_err(
                |reason| ProvisionError::ServerRefused(format!("the server did not take the new limit: {reason}")),
            )?;
        } else {
            self.write_config_file(&resized, &password).await?;
        }
        if !growing {
            self.runtime.set_memory(&container, memory.bytes()).await?;
        }
        self.store.set_memory(id, memory).await?;
        let detail = format!("{} MiB to {} MiB", record.memory_mb.0, memory.0);
        self.store.add_event(id, EventKind::Resized, &caller.name, Some(&detail)).await?;
        self.get(caller.user_id, id).await
    }

    /// Gives the instance a new password: it works at once, and the old one is refused.
    #[tracing::instrument(skip_all, fields(instance_id = %id))]
    pub async fn rotate_password(&self, caller: &Caller, id: &InstanceId) -> Result<Instance, ProvisionError> {
        let record = self.owned(caller.user_id, id).await?;
        let _busy = self.claim_busy(&record)?;
        // The server must run: only it can change its password, and the old one must stop working now.
        require_status(&record, &[Status::Running], "rotate the password of")?;
        let old = self.password_of(&record)?;
        let new = Secret::generate_password();
        let host = self.probe_host();
        engines::rotate_password(record.engine, &self.endpoint(&record, &host, &old), &new).await.map_err(
            |reason| ProvisionError::ServerRefused(format!("the server did not take the new password: {reason}")),
        )?;
        self.store.set_password(id, &self.key.encrypt(&new)).await?;
        self.store.add_event(id, EventKind::Rotated, &caller.name, None).await?;
        self.get(caller.user_id, id).await
    }

    /// The server's last `lines` lines, with the instance's password removed.
    pub async fn logs(&self, owner_id: i64, id: &InstanceId, lines: usize) -> Result<Vec<String>, ProvisionError> {
        let record = self.owned(owner_id, id).await?;
        let password = self.password_of(&record)?;
        self.server_logs(&self.container_name(id), lines.min(MAX_LOG_LINES), &[&password]).await
    }

    /// What happened to the instance, oldest first.
    pub async fn events(&self, owner_id: i64, id: &InstanceId) -> Result<Vec<Event>, ProvisionError> {
        self.owned(owner_id, id).await?;
        Ok(self.store.events(id).await?)
    }

    /// Rewrites the engine's configuration file in a stopped container from the record, for the
    /// server's next start (engines without one have nothing to write).
    pub(super) async fn write_config_file(
        &self,
        record: &InstanceRecord,
        password: &Secret,
    ) -> Result<(), ProvisionError> {
        let port = record.port.unwrap_or_default();
        let spec = self.spec_for(record, password, port);
        for file in &spec.files {
            self.runtime.write_file(&spec.name, file).await?;
        }
        Ok(())
    }

    pub(super) async fn wait_until_ready(&self, record: &InstanceRecord) -> Result<(), ProvisionError> {
        let port = record.port.ok_or_else(|| ProvisionError::Conflict("the instance holds no port".into()))?;
        let password = self.password_of(record)?;
        self.wait_ready(record, port, &password).await
    }
}

/// Refuses an operation that makes no sense in the instance's status, saying why.
fn require_status(record: &InstanceRecord, allowed: &[Status], operation: &str) -> Result<(), ProvisionError> {
    if allowed.contains(&record.status) {
        Ok(())
    } else {
        Err(ProvisionError::Conflict(format!("cannot {operation} an instance that is {}", record.status.as_str())))
    }
}
