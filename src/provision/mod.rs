//! The service itself: create, list, find, run and delete database instances, and repair drift,
//! keeping the store and the Docker engine in step. Calls go one way:
//! api → provision → {engines, runtime, store}.

pub mod backup_schedule;
mod backups;
mod create;
mod error;
mod figures;
mod identity;
mod image_facts;
mod lifecycle;
mod operations;
mod pool;
mod quarantine;
mod quotas;
mod reconcile;
mod stats;
mod templates;
mod users;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use backups::{Export, Seed};
pub use error::{ErrorReport, INTERNAL_DETAIL, ProvisionError};
pub use lifecycle::MAX_LOG_LINES;
pub use operations::{Idempotency, Running};
pub use reconcile::{Reconciler, ReconcilerReport};
pub use stats::InstanceStats;
use tokio_util::task::TaskTracker;
pub use users::{Listed, NewUser, Users, WithToken};

use crate::config::Config;
use crate::engines::{self, Endpoint, Settings};
use crate::metrics::Metrics;
use crate::model::{
    Charset, Collation, DatabaseName, Engine, InstanceId, InstanceName, MemoryMb, OperationId, OperationKind,
    VersionName,
};
use crate::runtime::{ContainerSpec, NetworkSpec, Runtime, SpecFile};
use crate::secrets::{MasterKey, Secret};
use crate::store::{
    AnswerKey, Cached, InstanceFilter, InstanceRecord, Node, OperationRecord, OwnedInstance, Store, Subject,
};
use operations::{Begin, Operations, Progress};

/// Labels on every container and volume dbroker creates, so it can always find its own.
pub const LABEL_INSTANCE: &str = "dbroker.instance";
pub const LABEL_OWNER: &str = "dbroker.owner";
pub const LABEL_ENGINE: &str = "dbroker.engine";
pub const LABEL_PREFIX: &str = "dbroker.prefix";
/// The store's deployment id: a deployment touches only containers and volumes that carry its own.
pub const LABEL_DEPLOYMENT: &str = "dbroker.deployment";

/// The actor of what dbroker does on its own, in instance histories.
const SYSTEM_ACTOR: &str = "dbroker";

/// What a user asks for. Every field is already a validated value; what depends on the engine
/// (memory bounds, options that only one engine takes) is checked by [`Provisioner::create`].
/// Kept as the create operation's input.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewInstance {
    pub engine: Engine,
    pub version: Option<VersionName>,
    pub name: Option<InstanceName>,
    pub memory: Option<MemoryMb>,
    pub charset: Option<Charset>,
    pub collation: Option<Collation>,
    pub database: Option<DatabaseName>,
    /// The data it starts with, if not the engine's empty one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<Seed>,
}

impl NewInstance {
    /// A request for `engine` with every option at its default.
    pub fn of(engine: Engine) -> Self {
        NewInstance {
            engine,
            version: None,
            name: None,
            memory: None,
            charset: None,
            collation: None,
            database: None,
            seed: None,
        }
    }
}

/// Which of every user's instances an admin lists; each `None` lets all through.
#[derive(Debug, Clone, Default)]
pub struct OwnerFilter {
    pub owner: Option<crate::model::UserName>,
    pub engine: Option<Engine>,
    pub status: Option<crate::model::Status>,
}

/// An instance as its owner sees it: the record, the password in the clear, and where to connect.
#[derive(Debug, Clone)]
pub struct Instance {
    pub record: InstanceRecord,
    /// `None` if this master key cannot decrypt it (the record then says so in `attention`).
    pub password: Option<Secret>,
    pub host: String,
}

impl Instance {
    /// The connection URI; `None` for a failed instance, which holds no port, or one whose
    /// password cannot be decrypted.
    pub fn uri(&self) -> Option<String> {
        let port = self.record.port?;
        let password = self.password.as_ref()?;
        let endpoint = Endpoint { host: &self.host, port, password, database: self.record.database() };
        Some(engines::uri(self.record.engine(), &endpoint))
    }
}

/// Why an instance whose stored password this master key cannot decrypt needs attention.
const UNDECRYPTABLE: &str = "its password cannot be decrypted with this master key: restore the key it was \
                             created with, or delete the instance";

/// Who asks for an operation, for instance histories and for who may read it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: i64,
    pub name: String,
    pub is_admin: bool,
}

/// The provisioning service; cheap to clone, one per process.
#[derive(Clone)]
pub struct Provisioner {
    store: Store,
    runtime: Runtime,
    key: MasterKey,
    config: Arc<Config>,
    /// The Docker host this process runs instances on (today the only one: see `store::Node`).
    node: Arc<Node>,
    /// Every change runs as an operation (see `operations`).
    ops: Operations,
    /// Wakes the leader to refill the warm pool after a claim.
    pool_wanted: Arc<tokio::sync::Notify>,
    /// Held while a data-directory template is looked up or built (see `templates`), or a
    /// throwaway server lists its collations (see `image_facts`).
    template_lock: Arc<tokio::sync::Mutex<()>>,
    /// What creates, resizes, claims and adopts are checked against (see `quotas`).
    quotas: quotas::Quotas,
    /// Where operations and repairs are counted (the runtime counts Docker's errors).
    metrics: Metrics,
    /// The backup targets and keys, if the configuration has any (see `backups`).
    backups: Option<crate::backups::Backups>,
}

/// The store's lease held while dbroker's network is looked up or made (see `prepare_network`).
const NETWORK_LEASE: &str = "network";

impl Provisioner {
    pub fn new(
        store: Store,
        runtime: Runtime,
        key: MasterKey,
        config: Arc<Config>,
        metrics: Metrics,
        backups: Option<crate::backups::Backups>,
    ) -> Self {
        let ops = Operations::new(store.clone(), config.operation_lease, TaskTracker::new(), metrics.clone());
        let quotas = quotas::Quotas::new(config.quotas);
        let node = Node {
            id: Node::LOCAL.to_string(),
            engine: config.docker_host.clone(),
            publish_ip: config.publish_ip,
            advertise_host: config.advertise_host.clone(),
            port_range: config.port_range,
        };
        Self {
            store,
            runtime,
            key,
            config,
            node: Arc::new(node),
            ops,
            pool_wanted: Default::default(),
            template_lock: Default::default(),
            quotas,
            metrics,
            backups,
        }
    }

    /// The tasks operations run on: shutdown waits for them.
    pub fn tasks(&self) -> &TaskTracker {
        self.ops.tasks()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Renews this process's operation leases until `stop`: keep it going until every operation
    /// has ended, shutdown included, or another process would take them over.
    pub async fn keep_leases(self, stop: tokio_util::sync::CancellationToken) {
        self.ops.keep_leases(stop).await
    }

    /// `owner_id`'s instances, optionally of one engine.
    pub async fn list(&self, owner_id: i64, engine: Option<Engine>) -> Result<Vec<Instance>, ProvisionError> {
        let records = self.store.list_instances(owner_id, engine).await?;
        records.into_iter().map(|r| self.reveal(r)).collect()
    }

    /// `list`, rendered by `render` (as `rendering`: the v1 API's JSON, say), or that rendering
    /// kept from an earlier read if nothing in the store has changed since (see `store::answers`).
    pub async fn list_rendered(
        &self,
        owner_id: i64,
        engine: Option<Engine>,
        rendering: &'static str,
        render: impl FnOnce(Vec<Instance>) -> anyhow::Result<Bytes>,
    ) -> Result<Bytes, ProvisionError> {
        let key = AnswerKey { owner_id, subject: Subject::Instances(engine), rendering };
        self.rendered(key, async { Ok(render(self.list(owner_id, engine).await?)?) }).await
    }

    /// `get`, rendered and kept as `list_rendered`'s answers are.
    pub async fn get_rendered(
        &self,
        owner_id: i64,
        id: &InstanceId,
        rendering: &'static str,
        render: impl FnOnce(Instance) -> anyhow::Result<Bytes>,
    ) -> Result<Bytes, ProvisionError> {
        let key = AnswerKey { owner_id, subject: Subject::Instance(id.clone()), rendering };
        self.rendered(key, async { Ok(render(self.get(owner_id, id).await?)?) }).await
    }

    /// The answer the store keeps for `key`, else the one `make` makes (kept for the next reads;
    /// an error is not).
    async fn rendered(
        &self,
        key: AnswerKey,
        make: impl Future<Output = Result<Bytes, ProvisionError>>,
    ) -> Result<Bytes, ProvisionError> {
        let mark = match self.store.cached_answer(&key)? {
            Cached::Hit(answer) => return Ok(answer),
            Cached::Miss(mark) => mark,
        };
        let answer = make.await?;
        self.store.keep_answer(mark, key, answer.clone());
        Ok(answer)
    }

    /// Every user's instances, for admins: newest first, those `filter` lets through, `limit`
    /// of them, created before instance `before`.
    pub async fn every_users_instances(
        &self,
        filter: &OwnerFilter,
        before: Option<&InstanceId>,
        limit: u32,
    ) -> Result<Vec<OwnedInstance>, ProvisionError> {
        let mut owner_id = None;
        if let Some(name) = &filter.owner {
            let unknown = || ProvisionError::Invalid { field: "owner", reason: format!("no user named {name}") };
            owner_id = Some(self.store.user_by_name(name.as_str()).await?.ok_or_else(unknown)?.id);
        }
        let filter = InstanceFilter { owner_id, engine: filter.engine, status: filter.status };
        self.store.owned_instances(&filter, before, limit).await?.ok_or_else(|| ProvisionError::Invalid {
            field: "before",
            reason: "no such instance (deleted since that page was read?): list again from the first page".into(),
        })
    }

    /// One of `owner_id`'s instances; another user's is `NotFound`, as if it did not exist.
    pub async fn get(&self, owner_id: i64, id: &InstanceId) -> Result<Instance, ProvisionError> {
        let record = self.owned(owner_id, id).await?;
        self.reveal(record)
    }

    /// Removes the instance's container, its volume (its data) and its record, which frees its port.
    pub async fn delete(
        &self,
        caller: &Caller,
        id: &InstanceId,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<()>, ProvisionError> {
        let actor = caller.name.clone();
        self.change(
            caller,
            id,
            OperationKind::Delete,
            serde_json::json!({}),
            idempotency,
            |this, record, _| async move { this.delete_now(&record.id, &actor).await },
        )
        .await
    }

    /// Marks the instance deleting, then removes everything it has (again, if a crash interrupted
    /// a first try), and records the delete.
    #[tracing::instrument(skip_all, fields(instance_id = %id))]
    async fn delete_now(&self, id: &InstanceId, actor: &str) -> Result<(), ProvisionError> {
        self.store.set_status(id, crate::model::Status::Deleting).await?;
        self.remove_everything(id).await?;
        self.store.add_event(id, crate::model::EventKind::Deleted, actor, None).await?;
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

    /// An operation, for its owner and admins; anyone else's is `NotFound`.
    pub async fn operation(&self, caller: &Caller, id: &OperationId) -> Result<OperationRecord, ProvisionError> {
        match self.store.operation(id).await? {
            Some(operation) if caller.is_admin || operation.owner_id == Some(caller.user_id) => Ok(operation),
            _ => Err(ProvisionError::NotFound),
        }
    }

    /// One of `owner_id`'s instances' operations, newest first: `limit`, older than `before`.
    pub async fn operations(
        &self,
        owner_id: i64,
        id: &InstanceId,
        before: Option<&OperationId>,
        limit: u32,
    ) -> Result<Vec<OperationRecord>, ProvisionError> {
        self.owned(owner_id, id).await?;
        Ok(self.store.operations_of(id, before, limit).await?)
    }

    /// Waits until an operation (maybe another process's) has ended, and returns it as it ended.
    pub async fn wait_for(&self, operation: &OperationId) -> Result<OperationRecord, ProvisionError> {
        self.ops.wait_for(operation).await
    }

    /// Whether the store and the Docker engine answer, each with the reason if not.
    /// The reason is a plain word: `/healthz` is open to anyone, so the details (a socket's path,
    /// a file's) go to the log only.
    pub async fn health(&self) -> HashMap<&'static str, Result<(), &'static str>> {
        let (store, docker) = tokio::join!(self.store.ping(), self.runtime.ping());
        let store = store.map_err(|error| {
            tracing::warn!(%error, "health: the store does not answer");
            "unavailable"
        });
        let docker = docker.map_err(|error| {
            tracing::warn!(%error, "health: the Docker engine does not answer");
            "unreachable"
        });
        HashMap::from([("store", store), ("docker", docker)])
    }

    async fn owned(&self, owner_id: i64, id: &InstanceId) -> Result<InstanceRecord, ProvisionError> {
        self.store.find_instance(owner_id, id).await?.ok_or(ProvisionError::NotFound)
    }

    /// Records a `kind` operation on one of the caller's instances and runs `work` on it as a
    /// task of its own. `work` gets the record as it is once the operation holds the instance:
    /// nothing else can change it from then on.
    async fn change<T, F, Fut>(
        &self,
        caller: &Caller,
        id: &InstanceId,
        kind: OperationKind,
        input: serde_json::Value,
        idempotency: Option<&Idempotency>,
        work: F,
    ) -> Result<Running<T>, ProvisionError>
    where
        T: Send + 'static,
        F: FnOnce(Provisioner, InstanceRecord, Progress) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, ProvisionError>> + Send + 'static,
    {
        let record = self.owned(caller.user_id, id).await?;
        let begin = Begin {
            instance_id: id.clone(),
            kind,
            engine: Some(record.engine()),
            caller: Some(caller.clone()),
            owner_id: record.owner_id,
            input,
            idempotency: idempotency.cloned(),
        };
        let this = self.clone();
        let id = id.clone();
        self.ops
            .start(begin, move |progress| async move {
                let record = this.store.instance(&id).await?.ok_or(ProvisionError::NotFound)?;
                work(this, record, progress).await
            })
            .await
    }

    /// The record with its password decrypted for its owner. One that cannot be decrypted is
    /// shown as needing attention, so that one such record never fails a whole list.
    fn reveal(&self, mut record: InstanceRecord) -> Result<Instance, ProvisionError> {
        let password = match self.key.decrypt(&record.password_enc) {
            Ok(password) => Some(password),
            Err(_) => {
                tracing::warn!(instance_id = %record.id, "a stored password cannot be decrypted with this master key");
                record.attention = Some(UNDECRYPTABLE.to_string());
                None
            }
        };
        Ok(Instance { record, password, host: self.node.advertise_host.clone() })
    }

    /// The record's password, for dbroker's own use: an operation on an instance whose password
    /// cannot be decrypted is refused, saying why.
    fn password_of(&self, record: &InstanceRecord) -> Result<Secret, ProvisionError> {
        self.key.decrypt(&record.password_enc).map_err(|_| ProvisionError::Conflict(UNDECRYPTABLE.to_string()))
    }

    fn container_name(&self, id: &InstanceId) -> String {
        format!("{}-{id}", self.config.instance_prefix)
    }

    fn volume_name(&self, id: &InstanceId) -> String {
        format!("{}-{id}-data", self.config.instance_prefix)
    }

    /// The network every container of this prefix joins, instances, pool members and template
    /// builds alike: `PREFIX-net`, made on first use and kept (also when dbroker stops: it is cheap,
    /// and stopped containers on it need it to start again). Deployments that share a prefix share
    /// it, which lets none of them reach another; its deployment label is that of the one that made it.
    /// Makes dbroker's network if the host has none, holding the store's lease `network`
    /// meanwhile: processes that share a store and start at once make one network, not one each
    /// (Docker 20.10 lets two networks have one name; see `Runtime::ensure_network`). A network
    /// removed later is made again by the first container that needs it.
    pub async fn prepare_network(&self) -> Result<(), ProvisionError> {
        let (holder, ttl) = (self.ops.holder(), Duration::from_secs(30));
        let deadline = Instant::now() + ttl;
        // Another process making it holds the lease for a moment; one that died, until it expires.
        while !self.store.try_lease(NETWORK_LEASE, holder, ttl).await? && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let made = self.runtime.ensure_network(&self.network()).await;
        self.store.release_lease(NETWORK_LEASE, holder).await?;
        made.map(drop).map_err(Into::into)
    }

    fn network(&self) -> NetworkSpec {
        NetworkSpec {
            name: format!("{}-net", self.config.instance_prefix),
            labels: HashMap::from([
                (LABEL_PREFIX.to_string(), self.config.instance_prefix.clone()),
                (LABEL_DEPLOYMENT.to_string(), self.store.deployment_id().to_string()),
            ]),
        }
    }

    /// The container an instance runs in, derived from its record alone: a create, a repair of a
    /// container removed behind dbroker's back, and a rewrite of the configuration file after a
    /// rotation all build the same thing.
    fn spec_for(&self, record: &InstanceRecord, password: &Secret, host_port: u16) -> ContainerSpec {
        let engine = record.engine();
        // An instance made from a template runs the template's image with its data where the
        // template keeps it (see `templates`).
        let (image, data_path) = match &record.template_image {
            Some(template) => (template.clone(), engines::TEMPLATE_DATA_PATH),
            None => (record.image.clone(), engines::profile(engine).data_path),
        };
        let launch = engines::launch(
            engine,
            &Settings { password, memory: record.memory_mb, instance: &record.settings, data_path },
        );
        let files = vec![spec_file(engine, launch.config_file)];
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
                (LABEL_DEPLOYMENT.to_string(), self.store.deployment_id().to_string()),
            ]),
            volume: self.volume_name(&record.id),
            data_path: data_path.to_string(),
            container_port: engines::profile(engine).port,
            publish_ip: self.node.publish_ip,
            host_port,
            memory_bytes: record.memory_mb.bytes(),
            cpu_shares: self.config.catalogue.engine(engine).cpu_shares,
            nano_cpus: self.config.catalogue.engine(engine).nano_cpus,
            files,
            network: self.network(),
            capabilities: engines::profile(engine).capabilities,
        }
    }

    /// How dbroker's own client at `host` reaches an instance that holds a port.
    fn endpoint<'a>(&self, record: &'a InstanceRecord, host: &'a str, password: &'a Secret) -> Endpoint<'a> {
        let port = record.port.unwrap_or_default();
        Endpoint { host, port, password, database: record.database() }
    }

    /// Where dbroker's own client reaches a published port: the publish address, or loopback if
    /// ports are published on every interface.
    fn probe_host(&self) -> String {
        match self.node.publish_ip {
            ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]).to_string(),
            ip => ip.to_string(),
        }
    }
}

/// The file an engine's launch asks for, as the runtime writes it: one upload per container.
pub(super) fn spec_file(engine: engines::Engine, file: engines::ConfigFile) -> SpecFile {
    let (mode, dir_mode) = engines::ConfigFile::modes(engine);
    SpecFile {
        dir: file.dir.to_string(),
        name: file.name.to_string(),
        contents: file.contents.into_bytes(),
        mode,
        dir_mode: Some(dir_mode),
    }
}
