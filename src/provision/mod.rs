//! The service itself: create, list, find and delete database instances, keeping the store and
//! the Docker engine in step. Calls go one way: api → provision → {engines, runtime, store}.

mod create;
mod error;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

pub use error::ProvisionError;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engines;
use crate::model::{Charset, Collation, Engine, InstanceId, InstanceName, MemoryMb, Status};
use crate::runtime::Runtime;
use crate::secrets::{MasterKey, Secret};
use crate::store::{InstanceRecord, Store};

/// Labels on every container and volume dbroker creates, so it can always find its own.
pub const LABEL_INSTANCE: &str = "dbroker.instance";
pub const LABEL_OWNER: &str = "dbroker.owner";
pub const LABEL_ENGINE: &str = "dbroker.engine";
pub const LABEL_PREFIX: &str = "dbroker.prefix";

/// What a user asks for. Every field is already a validated value; what depends on the engine
/// (memory bounds, options that only one engine takes) is checked by [`Provisioner::create`].
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub engine: Engine,
    pub name: Option<InstanceName>,
    pub memory: Option<MemoryMb>,
    pub charset: Option<Charset>,
    pub collation: Option<Collation>,
}

/// An instance as its owner sees it: the record, the password in the clear, and where to connect.
#[derive(Debug, Clone)]
pub struct Instance {
    pub record: InstanceRecord,
    pub password: Secret,
    pub host: String,
}

impl Instance {
    pub fn uri(&self) -> String {
        engines::uri(
            self.record.engine,
            &self.host,
            self.record.port,
            &self.password,
        )
    }
}

/// The provisioning service; cheap to clone, one per process.
#[derive(Clone)]
pub struct Provisioner {
    store: Store,
    runtime: Runtime,
    key: MasterKey,
    config: Arc<Config>,
    /// Creates run as tasks of their own, so a client that hangs up cannot leave one half done;
    /// shutdown waits for them.
    tasks: TaskTracker,
}

impl Provisioner {
    pub fn new(store: Store, runtime: Runtime, key: MasterKey, config: Arc<Config>) -> Self {
        Self {
            store,
            runtime,
            key,
            config,
            tasks: TaskTracker::new(),
        }
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// `owner_id`'s instances, optionally of one engine.
    pub async fn list(
        &self,
        owner_id: i64,
        engine: Option<Engine>,
    ) -> Result<Vec<Instance>, ProvisionError> {
        let records = self.store.list_instances(owner_id, engine).await?;
        records.into_iter().map(|r| self.reveal(r)).collect()
    }

    /// One of `owner_id`'s instances; another user's is `NotFound`, as if it did not exist.
    pub async fn get(&self, owner_id: i64, id: &InstanceId) -> Result<Instance, ProvisionError> {
        let record = self
            .store
            .find_instance(owner_id, id)
            .await?
            .ok_or(ProvisionError::NotFound)?;
        self.reveal(record)
    }

    /// Removes the instance's container, its volume (its data) and its record, which frees its port.
    #[tracing::instrument(skip_all, fields(instance_id = %id))]
    pub async fn delete(&self, owner_id: i64, id: &InstanceId) -> Result<(), ProvisionError> {
        let record = self
            .store
            .find_instance(owner_id, id)
            .await?
            .ok_or(ProvisionError::NotFound)?;
        if record.status == Status::Provisioning {
            return Err(ProvisionError::Busy(
                "the instance is still being created; delete it once the create has answered"
                    .into(),
            ));
        }
        self.store.set_status(id, Status::Deleting).await?;
        // Container first, volume second: a volume in use cannot be removed. The record goes last,
        // so if the engine fails half way the instance is still known and a retry finishes the job.
        self.runtime
            .remove_container(&self.container_name(id))
            .await?;
        self.runtime.remove_volume(&self.volume_name(id)).await?;
        self.store.delete_instance(id).await?;
        tracing::info!("instance deleted");
        Ok(())
    }

    /// Whether the store and the Docker engine answer, each with the reason if not.
    pub async fn health(&self) -> HashMap<&'static str, Result<(), String>> {
        let (store, docker) = tokio::join!(self.store.ping(), self.runtime.ping());
        HashMap::from([
            ("store", store.map_err(|e| e.to_string())),
            ("docker", docker.map_err(|e| e.to_string())),
        ])
    }

    fn reveal(&self, record: InstanceRecord) -> Result<Instance, ProvisionError> {
        let password = self
            .key
            .decrypt(&record.password_enc)
            .map_err(|e| ProvisionError::Internal(e.into()))?;
        Ok(Instance {
            record,
            password,
            host: self.config.advertise_host.clone(),
        })
    }

    fn container_name(&self, id: &InstanceId) -> String {
        format!("{}-{id}", self.config.instance_prefix)
    }

    fn volume_name(&self, id: &InstanceId) -> String {
        format!("{}-{id}-data", self.config.instance_prefix)
    }

    /// Where dbroker's own client reaches a published port: the publish address, or loopback if
    /// ports are published on every interface.
    fn probe_host(&self) -> String {
        match self.config.publish_ip {
            ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]).to_string(),
            ip => ip.to_string(),
        }
    }
}
