//! The service itself: create, list, find, run and delete database instances, and repair drift,
//! keeping the store and the Docker engine in step. Calls go one way:
//! api → provision → {engines, runtime, store}.

mod claims;
mod create;
mod error;
mod identity;
mod lifecycle;
mod pool;
mod reconcile;
mod templates;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub use error::ProvisionError;
pub use reconcile::ReconcilerStats;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engines::{self, Endpoint, Settings};
use crate::model::{
    Charset, Collation, DatabaseName, Engine, EventKind, InstanceId, InstanceName, MemoryMb, Status, VersionName,
};
use crate::runtime::{ContainerSpec, Runtime, SpecFile};
use crate::secrets::{MasterKey, Secret};
use crate::store::{InstanceRecord, Store};

/// Labels on every container and volume dbroker creates, so it can always find its own.
pub const LABEL_INSTANCE: &str = "dbroker.instance";
pub const LABEL_OWNER: &str = "dbroker.owner";
pub const LABEL_ENGINE: &str = "dbroker.engine";
pub const LABEL_PREFIX: &str = "dbroker.prefix";

/// The actor of what dbroker does on its own, in instance histories.
const SYSTEM_ACTOR: &str = "dbroker";

/// What a user asks for. Every field is already a validated value; what depends on the engine
/// (memory bounds, options that only one engine takes) is checked by [`Provisioner::create`].
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub engine: Engine,
    pub version: Option<VersionName>,
    pub name: Option<InstanceName>,
    pub memory: Option<MemoryMb>,
    pub charset: Option<Charset>,
    pub collation: Option<Collation>,
    pub database: Option<DatabaseName>,
}

impl NewInstance {
    /// A request for `engine` with every option at its default.
    pub fn of(engine: Engine) -> Self {
        NewInstance { engine, version: None, name: None, memory: None, charset: None, collation: None, database: None }
    }
}

/// An instance as its owner sees it: the record, the password in the clear, and where to connect.
#[derive(Debug, Clone)]
pub struct Instance {
    pub record: InstanceRecord,
    pub password: Secret,
    pub host: String,
}

impl Instance {
    /// The connection URI; `None` for a failed instance, which holds no port.
    pub fn uri(&self) -> Option<String> {
        let port = self.record.port?;
        let endpoint =
            Endpoint { host: &self.host, port, password: &self.password, database: self.record.database.as_deref() };
        Some(engines::uri(self.record.engine, &endpoint))
    }
}

/// Who asks for an operation, for instance histories.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: i64,
    pub name: String,
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
    /// This process's identity, which its creates carry until they finish.
    process: Arc<claims::ProcessClaim>,
    /// Instances an operation of this process is working on: a second operation on the same
    /// instance is refused, and Docker events it causes are not taken for crashes.
    busy: Arc<Mutex<HashSet<InstanceId>>>,
    stats: Arc<ReconcilerStats>,
    /// Wakes the leader to refill the warm pool after a claim.
    pool_wanted: Arc<tokio::sync::Notify>,
    /// Held while a data-directory template is looked up or built (see `templates`).
    template_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Marks an instance busy while it lives.
struct BusyGuard {
    busy: Arc<Mutex<HashSet<InstanceId>>>,
    id: InstanceId,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl Provisioner {
    pub fn new(store: Store, runtime: Runtime, key: MasterKey, config: Arc<Config>) -> std::io::Result<Self> {
        let process = Arc::new(claims::ProcessClaim::acquire(&config.data_dir)?);
        Ok(Self {
            store,
            runtime,
            key,
            config,
            tasks: TaskTracker::new(),
            process,
            busy: Default::default(),
            stats: Default::default(),
            pool_wanted: Default::default(),
            template_lock: Default::default(),
        })
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// `owner_id`'s instances, optionally of one engine.
    pub async fn list(&self, owner_id: i64, engine: Option<Engine>) -> Result<Vec<Instance>, ProvisionError> {
        let records = self.store.list_instances(owner_id, engine).await?;
        records.into_iter().map(|r| self.reveal(r)).collect()
    }

    /// One of `owner_id`'s instances; another user's is `NotFound`, as if it did not exist.
    pub async fn get(&self, owner_id: i64, id: &InstanceId) -> Result<Instance, ProvisionError> {
        let record = self.owned(owner_id, id).await?;
        self.reveal(record)
    }

    /// Removes the instance's container, its volume (its data) and its record, which frees its port.
    #[tracing::instrument(skip_all, fields(instance_id = %id))]
    pub async fn delete(&self, caller: &Caller, id: &InstanceId) -> Result<(), ProvisionError> {
        let record = self.owned(caller.user_id, id).await?;
        let _busy = self.claim_busy(&record)?;
        self.store.set_status(id, Status::Deleting).await?;
        self.remove_everything(id).await?;
        self.store.add_event(id, EventKind::Deleted, &caller.name, None).await?;
        tracing::info!("instance deleted");
        Ok(())
    }

    /// Container first, volume second (a volume in use cannot be removed), record last: if the
    /// engine fails half way, the instance is still known and a retry finishes the job.
    async fn remove_everything(&self, id: &InstanceId) -> Result<(), ProvisionError> {
        self.runtime.remove_container(&self.container_name(id)).await?;
        self.runtime.remove_volume(&self.volume_name(id)).await?;
        self.store.delete_instance(id).await?;
        Ok(())
    }

    /// Whether the store and the Docker engine answer, each with the reason if not.
    pub async fn health(&self) -> HashMap<&'static str, Result<(), String>> {
        let (store, docker) = tokio::join!(self.store.ping(), self.runtime.ping());
        HashMap::from([("store", store.map_err(|e| e.to_string())), ("docker", docker.map_err(|e| e.to_string()))])
    }

    async fn owned(&self, owner_id: i64, id: &InstanceId) -> Result<InstanceRecord, ProvisionError> {
        self.store.find_instance(owner_id, id).await?.ok_or(ProvisionError::NotFound)
    }

    /// Refuses an operation on an instance that another operation is working on.
    fn claim_busy(&self, record: &InstanceRecord) -> Result<BusyGuard, ProvisionError> {
        if record.status == Status::Provisioning {
            return Err(ProvisionError::Busy("the instance is still being created; try again once it is ready".into()));
        }
        if self.is_busy(&record.id) {
            return Err(ProvisionError::Busy("another operation on this instance is in progress; try again".into()));
        }
        Ok(self.mark_busy(&record.id))
    }

    fn mark_busy(&self, id: &InstanceId) -> BusyGuard {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone());
        BusyGuard { busy: self.busy.clone(), id: id.clone() }
    }

    fn is_busy(&self, id: &InstanceId) -> bool {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).contains(id)
    }

    fn reveal(&self, record: InstanceRecord) -> Result<Instance, ProvisionError> {
        let password = self.password_of(&record)?;
        Ok(Instance { record, password, host: self.config.advertise_host.clone() })
    }

    fn password_of(&self, record: &InstanceRecord) -> Result<Secret, ProvisionError> {
        self.key.decrypt(&record.password_enc).map_err(|e| ProvisionError::Internal(e.into()))
    }

    fn container_name(&self, id: &InstanceId) -> String {
        format!("{}-{id}", self.config.instance_prefix)
    }

    fn volume_name(&self, id: &InstanceId) -> String {
        format!("{}-{id}-data", self.config.instance_prefix)
    }

    /// The container an instance runs in, derived from its record alone: a create, a repair of a
    /// container removed behind dbroker's back, and a rewrite of the configuration file after a
    /// rotation all build the same thing.
    fn spec_for(&self, record: &InstanceRecord, password: &Secret, host_port: u16) -> ContainerSpec {
        let engine = record.engine;
        // An instance made from a template runs the template's image with its data where the
        // template keeps it (see `templates`).
        let (image, data_path) = match &record.template_image {
            Some(template) => (template.clone(), engines::TEMPLATE_DATA_PATH),
            None => (record.image.clone(), engines::data_path(engine)),
        };
        let launch = engines::launch(
            engine,
            &Settings {
                password,
                memory: record.memory_mb,
                charset: record.charset.as_deref(),
                collation: record.collation.as_deref(),
                database: record.database.as_deref(),
                data_path,
            },
        );
        let files = launch
            .config_file
            .into_iter()
            .map(|file| SpecFile {
                dir: file.dir.to_string(),
                name: file.name.to_string(),
                contents: file.contents.into_bytes(),
                // The server rewrites it (see `engines::ConfigFile`).
                mode: 0o666,
                dir_mode: Some(0o777),
            })
            .collect();
        ContainerSpec {
            name: self.container_name(&record.id),
            image,
            env: launch.env,
            args: launch.args,
            labels: HashMap::from([
                (LABEL_INSTANCE.to_string(), record.id.to_string()),
                (LABEL_OWNER.to_string(), record.owner_id.map_or("pool".to_string(), |o| o.to_string())),
                (LABEL_ENGINE.to_string(), engine.to_string()),
                (LABEL_PREFIX.to_string(), self.config.instance_prefix.clone()),
            ]),
            volume: self.volume_name(&record.id),
            data_path: data_path.to_string(),
            container_port: engines::container_port(engine),
            publish_ip: self.config.publish_ip,
            host_port,
            memory_bytes: record.memory_mb.bytes(),
            files,
        }
    }

    /// How dbroker's own client at `host` reaches an instance that holds a port.
    fn endpoint<'a>(&self, record: &'a InstanceRecord, host: &'a str, password: &'a Secret) -> Endpoint<'a> {
        let port = record.port.unwrap_or_default();
        Endpoint { host, port, password, database: record.database.as_deref() }
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
