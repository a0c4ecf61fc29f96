//! The quarantine: containers of this deployment found with no record (the reconciler puts them
//! there). Each may hold a user's data, so it is stopped and kept for an admin, who adopts it
//! (gives it a record and an owner again) or removes it; nothing else ever deletes it.

use super::operations::Begin;
use super::{Caller, Instance, ProvisionError, Provisioner};
use crate::engines::{self, Endpoint, Launched};
use crate::model::{Engine, EventKind, InstanceId, MemoryMb, OperationKind, Status};
use crate::runtime::RuntimeError;
use crate::store::{NewInstanceRecord, Quarantined, StoreError};

impl Provisioner {
    /// Containers found with no record, oldest first.
    pub async fn quarantined(&self) -> Result<Vec<Quarantined>, ProvisionError> {
        Ok(self.store.quarantined().await?)
    }

    /// Removes a quarantined container and its volume, with the data in it: an admin's explicit
    /// decision, the only way quarantined data is ever deleted.
    pub async fn remove_quarantined(&self, container: &str) -> Result<(), ProvisionError> {
        let entry = self.store.quarantined_container(container).await?.ok_or(ProvisionError::NotFound)?;
        self.runtime.remove_container(&entry.container).await?;
        self.runtime.remove_volume(&format!("{}-data", entry.container)).await?;
        self.store.release_from_quarantine(container).await?;
        tracing::warn!(container, "a quarantined container and its volume were removed by an admin");
        Ok(())
    }

    /// Gives a quarantined container a record again, owned by `owner`, with the credentials its
    /// server already has (read back from the container by its engine), checked by a real login.
    /// An operation on its instance id; the record is written only once the server answered, and
    /// only within the owner's quota and the host's memory budget, so an adopt that fails (beyond
    /// them too) leaves the quarantine as it was.
    pub async fn adopt_quarantined(
        &self,
        admin: &Caller,
        container: &str,
        owner: &Caller,
    ) -> Result<Instance, ProvisionError> {
        let entry = self.store.quarantined_container(container).await?.ok_or(ProvisionError::NotFound)?;
        let unadoptable = |why: &str| ProvisionError::Conflict(format!("cannot adopt {container}: {why}"));
        let id: InstanceId = entry.instance_id.parse().map_err(|_| unadoptable("its instance label is not an id"))?;
        let input = serde_json::json!({ "container": container, "owner": owner.name });
        let begin = Begin {
            instance_id: id.clone(),
            kind: OperationKind::Adopt,
            engine: entry.engine.as_deref().and_then(|e| e.parse().ok()),
            caller: Some(admin.clone()),
            owner_id: Some(owner.user_id),
            input,
            idempotency: None,
        };
        // The reconciler may be finishing the quarantine itself (its last step is the quarantine's
        // list): wait for that repair rather than refuse the admin.
        if let Some(running) = self.store.operation_in_flight(&id).await?
            && running.kind == OperationKind::Repair
        {
            let waited = tokio::time::timeout(self.config.ready_timeout, self.ops.wait_for(&running.id)).await;
            if waited.is_err() {
                return Err(ProvisionError::Busy { operation: Some((running.id, running.kind)) });
            }
        }
        let (this, admin, owner, container) = (self.clone(), admin.clone(), owner.clone(), container.to_string());
        let work = move |_| async move {
            let adopted = this.adopt(&admin, &container, &id, &entry, &owner).await;
            if adopted.is_err() {
                // Back to how it was: stopped, still quarantined, no record.
                if let Err(error) = this.runtime.stop(&container).await {
                    tracing::warn!(container, %error, "could not stop a container whose adopt failed");
                }
            }
            adopted
        };
        self.ops.start(begin, work).await?.outcome().await
    }

    async fn adopt(
        &self,
        admin: &Caller,
        container: &str,
        id: &InstanceId,
        entry: &Quarantined,
        owner: &Caller,
    ) -> Result<Instance, ProvisionError> {
        let unadoptable = |why: &str| ProvisionError::Conflict(format!("cannot adopt {container}: {why}"));
        let details = self.runtime.details(container).await?;
        let engine: Engine =
            entry.engine.as_deref().unwrap_or_default().parse().map_err(|_| unadoptable("unknown engine"))?;
        let port = details.host_port.ok_or_else(|| unadoptable("it publishes no port"))?;
        let config_file = self.runtime.read_file(container, engines::profile(engine).config_path).await?;
        let config_file = config_file.map(|f| String::from_utf8_lossy(&f).into_owned());
        let launched = Launched { env: &details.env, args: &details.args, config_file: config_file.as_deref() };
        let recovered = engines::recover(engine, &launched)
            .ok_or_else(|| unadoptable("its credentials are not in the container"))?;

        self.runtime.start(container).await.map_err(|e| match e {
            RuntimeError::PortTaken => unadoptable(&format!("its port {port} is taken on the host")),
            other => other.into(),
        })?;
        let host = self.probe_host();
        let database = recovered.settings.database().map(|d| d.as_str());
        let endpoint = Endpoint { host: &host, port, password: &recovered.password, database };
        self.wait_ready(engine, container, &endpoint).await.map_err(|error| {
            unadoptable(&format!("its server did not accept the credentials found in it ({error})"))
        })?;

        let memory = MemoryMb(
            details
                .memory_bytes
                .map_or(self.config.catalogue.engine(engine).memory.default.0, |b| (b / (1024 * 1024)) as u32),
        );
        // The catalogue's name for its image, if the catalogue still has one.
        let version = self
            .config
            .catalogue
            .engine(engine)
            .versions
            .iter()
            .find_map(|(name, spec)| (spec.image == details.image).then(|| name.clone()))
            .unwrap_or_else(|| "unknown".into());
        let name = format!("{engine}-{id}").parse().map_err(|_| unadoptable("its id makes no name"))?;
        let password_enc = self.key.encrypt(&recovered.password);
        let limits = self.quotas.limits(&self.runtime).await?;
        self.store
            .insert_instance_within(
                &NewInstanceRecord {
                    id,
                    node_id: &self.node.id,
                    owner_id: Some(owner.user_id),
                    name: &name,
                    settings: &recovered.settings,
                    version: &version,
                    image: &details.image,
                    memory_mb: memory,
                    port,
                    username: engines::profile(engine).user,
                    password_enc: &password_enc,
                    status: Status::Running,
                    // A container made from a template carries the template image's labels.
                    template_image: details
                        .labels
                        .contains_key(super::templates::LABEL_TEMPLATE_OF)
                        .then_some(details.image.as_str()),
                },
                &limits,
            )
            .await
            .map_err(|e| match e {
                StoreError::PortTaken => unadoptable("its port is leased to another instance"),
                StoreError::NameTaken => unadoptable("its owner already has an instance of that name"),
                other => other.into(),
            })?;
        self.store.release_from_quarantine(container).await?;
        let detail = format!("adopted from quarantine by {} for {}", admin.name, owner.name);
        self.store.add_event(id, EventKind::Repaired, super::SYSTEM_ACTOR, Some(&detail)).await?;
        tracing::warn!(container, "a quarantined container was adopted");
        self.reveal_current(id).await
    }
}
