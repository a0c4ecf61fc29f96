//! Self-healing: compare the store with the containers labelled as this deployment's, and repair
//! the drift that crashes and people leave behind. One process leads the repairs at a time (see
//! `claims`), at start-up and then every `--reconcile-interval`; it also follows Docker's event
//! stream, so a server that dies shows as exited at once rather than at the next pass.
//!
//! What it repairs, and why that way:
//! - a container with no record: the record is always written first, so the store lost rows
//!   (restored from an older backup, say). The container may hold a user's data: it is stopped
//!   and quarantined for an admin to adopt or remove, never deleted.
//! - a record left `provisioning` by a process that died: finished if its container becomes
//!   ready, else rolled back (container, volume, port) and marked failed.
//! - a record left `deleting` by a crash: the delete is finished.
//! - an instance whose container vanished but whose volume remains: recreated from the volume
//!   with the same port and credentials.
//! - a container that stopped although its instance should run: started again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::claims::{self, Leadership};
use super::{Caller, Instance, LABEL_ENGINE, LABEL_INSTANCE, LABEL_OWNER, ProvisionError, Provisioner, SYSTEM_ACTOR};
use crate::engines;
use crate::model::{Engine, EventKind, InstanceId, MemoryMb, Status};
use crate::runtime::{ContainerEvent, ContainerState, ContainerSummary};
use crate::secrets::Secret;
use crate::store::{InstanceRecord, NewInstanceRecord, Quarantined, StoreError};

/// A server restarted this many times by Docker is reported as dying repeatedly.
const CRASH_LOOP_RESTARTS: i64 = 5;

/// How long the event watcher waits before subscribing again after the stream ended.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// What the reconciler has done, for admins.
#[derive(Debug, Default)]
pub struct ReconcilerStats {
    leader: AtomicBool,
    passes: AtomicU64,
    repairs: Mutex<BTreeMap<&'static str, u64>>,
}

#[derive(Debug, Serialize)]
pub struct ReconcilerReport {
    pub leader: bool,
    pub passes: u64,
    pub repairs: BTreeMap<&'static str, u64>,
}

impl ReconcilerStats {
    fn count(&self, repair: &'static str) {
        *self.repairs.lock().unwrap_or_else(|e| e.into_inner()).entry(repair).or_default() += 1;
    }
}

impl Provisioner {
    /// Runs the reconciler until `shutdown` is cancelled: tries to lead every interval, and once
    /// leading, reconciles at each tick and follows Docker's events.
    pub async fn run_reconciler(self, shutdown: CancellationToken) {
        let mut leadership = Leadership::new(&self.config.data_dir);
        let mut watching = false;
        let mut ticks = tokio::time::interval(self.config.reconcile_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A claim from the warm pool wakes the leader early, to refill it.
            let pool_only = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => false,
                _ = self.pool_wanted.notified() => true,
            };
            if !leadership.try_lead() {
                continue;
            }
            if !self.stats.leader.swap(true, Ordering::Relaxed) {
                tracing::info!("this process leads the repairs");
            }
            if !watching {
                watching = true;
                tokio::spawn(self.clone().watch_events(shutdown.clone()));
            }
            if !pool_only {
                match self.reconcile_once().await {
                    Ok(()) => {}
                    Err(ProvisionError::EngineUnreachable(reason)) => {
                        tracing::warn!(%reason, "reconciler: the Docker engine is unreachable; trying again next pass")
                    }
                    Err(error) => tracing::error!(error = ?error, "reconciler pass failed"),
                }
                self.stats.passes.fetch_add(1, Ordering::Relaxed);
            }
            self.fill_pool().await;
        }
    }

    pub fn reconciler_report(&self) -> ReconcilerReport {
        ReconcilerReport {
            leader: self.stats.leader.load(Ordering::Relaxed),
            passes: self.stats.passes.load(Ordering::Relaxed),
            repairs: self.stats.repairs.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// One comparison of the store with Docker, and the repairs it calls for.
    pub async fn reconcile_once(&self) -> Result<(), ProvisionError> {
        let containers = self.runtime.list(super::LABEL_PREFIX, &self.config.instance_prefix).await?;
        let records = self.store.all_instances().await?;
        let by_instance: HashMap<&str, &ContainerSummary> =
            containers.iter().filter_map(|c| c.labels.get(LABEL_INSTANCE).map(|id| (id.as_str(), c))).collect();
        let known: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();

        for record in &records {
            if self.is_busy(&record.id) {
                continue;
            }
            let container = by_instance.get(record.id.as_str()).copied();
            if let Err(error) = self.reconcile_instance(record, container).await {
                tracing::warn!(instance_id = %record.id, error = %error, "repair failed; trying again next pass");
            }
        }
        for container in &containers {
            let instance = container.labels.get(LABEL_INSTANCE).map(String::as_str).unwrap_or_default();
            if !known.contains(instance) {
                self.quarantine(container).await?;
            }
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(instance_id = %record.id, engine = %record.engine))]
    async fn reconcile_instance(
        &self,
        record: &InstanceRecord,
        container: Option<&ContainerSummary>,
    ) -> Result<(), ProvisionError> {
        match record.status {
            Status::Provisioning if !self.create_in_flight(record) => {
                self.finish_interrupted_create(record, container).await
            }
            Status::Provisioning | Status::Failed => Ok(()),
            Status::Deleting => {
                self.remove_everything(&record.id).await?;
                self.repaired(record, "finish_delete", EventKind::Deleted, "finished a delete interrupted by a crash")
                    .await
            }
            Status::Running | Status::Exited | Status::Stopped => match container {
                None => self.recreate_from_volume(record).await,
                Some(c)
                    if record.status != Status::Stopped
                        && matches!(c.state.as_str(), "exited" | "created" | "dead") =>
                {
                    let _busy = self.mark_busy(&record.id);
                    self.runtime.start(&c.name).await?;
                    self.wait_until_ready(record).await?;
                    self.store.set_status(&record.id, Status::Running).await?;
                    self.repaired(
                        record,
                        "restart_stopped",
                        EventKind::Repaired,
                        "started its container, which had stopped",
                    )
                    .await
                }
                Some(c) if record.status == Status::Exited && c.state == "running" => {
                    // Back by Docker's restart policy, and the event was missed.
                    let _busy = self.mark_busy(&record.id);
                    self.wait_until_ready(record).await?;
                    self.store.set_status(&record.id, Status::Running).await?;
                    self.store
                        .add_event(&record.id, EventKind::Started, "docker", Some("restarted by its restart policy"))
                        .await?;
                    Ok(())
                }
                Some(_) => Ok(()),
            },
        }
    }

    /// Whether a `provisioning` record belongs to a create that is still running somewhere.
    fn create_in_flight(&self, record: &InstanceRecord) -> bool {
        match record.claimed_by.as_deref() {
            Some(claimer) if claimer == self.process.id() => self.is_busy(&record.id),
            Some(claimer) => claims::is_alive(&self.config.data_dir, claimer),
            None => false,
        }
    }

    /// A create whose process died: finished if its container becomes ready, else rolled back.
    async fn finish_interrupted_create(
        &self,
        record: &InstanceRecord,
        container: Option<&ContainerSummary>,
    ) -> Result<(), ProvisionError> {
        let _busy = self.mark_busy(&record.id);
        let outcome = match (container, record.port) {
            (Some(c), Some(_)) if c.state == "running" || c.state == "restarting" => {
                self.wait_until_ready(record).await
            }
            _ => Err(ProvisionError::Conflict("its container never started".into())),
        };
        match outcome {
            Ok(()) => {
                self.store.set_status(&record.id, Status::Running).await?;
                self.repaired(record, "finish_create", EventKind::Ready, "finished a create interrupted by a crash")
                    .await
            }
            Err(ProvisionError::EngineUnreachable(reason)) => Err(ProvisionError::EngineUnreachable(reason)),
            Err(error) => {
                self.runtime.remove_container(&self.container_name(&record.id)).await?;
                self.runtime.remove_volume(&self.volume_name(&record.id)).await?;
                let reason = format!("dbroker stopped during the create, which could not finish: {error}");
                self.store.mark_failed(&record.id, &reason).await?;
                self.repaired(record, "roll_back_create", EventKind::Failed, &reason).await
            }
        }
    }

    /// The container is gone: recreate it from the data volume, with the same port and credentials.
    async fn recreate_from_volume(&self, record: &InstanceRecord) -> Result<(), ProvisionError> {
        let _busy = self.mark_busy(&record.id);
        let Some(port) = record.port else { return Ok(()) };
        if !self.runtime.volume_exists(&self.volume_name(&record.id)).await? {
            let reason = "its container and its data volume were removed outside dbroker";
            self.store.mark_failed(&record.id, reason).await?;
            return self.repaired(record, "data_lost", EventKind::Failed, reason).await;
        }
        let password = self.password_of(record)?;
        let spec = self.spec_for(record, &password, port);
        if record.status == Status::Stopped {
            self.runtime.create(&spec).await?;
        } else {
            self.runtime.run(&spec).await?;
            self.wait_ready(record, port, &password).await?;
            self.store.set_status(&record.id, Status::Running).await?;
        }
        self.repaired(
            record,
            "recreate_container",
            EventKind::Repaired,
            "recreated its container, removed outside dbroker, from its volume",
        )
        .await
    }

    /// Logs, counts and records a repair in the instance's history.
    async fn repaired(
        &self,
        record: &InstanceRecord,
        repair: &'static str,
        kind: EventKind,
        detail: &str,
    ) -> Result<(), ProvisionError> {
        tracing::warn!(repair, detail, "repaired drift");
        self.stats.count(repair);
        self.store.add_event(&record.id, kind, SYSTEM_ACTOR, Some(detail)).await?;
        Ok(())
    }

    /// Stops a container that has no record and keeps it for an admin.
    async fn quarantine(&self, container: &ContainerSummary) -> Result<(), ProvisionError> {
        // The containers were listed before the records were read: a delete that finished in
        // between leaves a container that is gone, or a record read too late. Look again.
        let instance_id = container.labels.get(LABEL_INSTANCE).and_then(|id| id.parse::<InstanceId>().ok());
        if let Some(id) = &instance_id
            && (self.store.instance(id).await?.is_some() || self.is_busy(id))
        {
            return Ok(());
        }
        if container.state == "running" || container.state == "restarting" {
            match self.runtime.stop(&container.name).await {
                Err(crate::runtime::RuntimeError::NotFound) => return Ok(()),
                other => other?,
            }
        }
        let label = |name: &str| container.labels.get(name).map(String::as_str);
        let found = self
            .store
            .quarantine(
                &container.name,
                label(LABEL_INSTANCE).unwrap_or_default(),
                label(LABEL_ENGINE),
                label(LABEL_OWNER),
            )
            .await?;
        if found {
            tracing::warn!(container = %container.name, "a container with no record was stopped and quarantined for an admin");
            self.stats.count("quarantine");
        }
        Ok(())
    }

    /// Follows Docker's events for this deployment's containers until `shutdown`, subscribing
    /// again whenever the stream ends (the engine went away and came back).
    async fn watch_events(self, shutdown: CancellationToken) {
        loop {
            if let Ok(mut events) = self.runtime.events(super::LABEL_PREFIX, &self.config.instance_prefix).await {
                loop {
                    let event = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        event = events.next() => event,
                    };
                    match event {
                        Some(Ok(event)) => {
                            if let Err(error) = self.on_container_event(event).await {
                                tracing::warn!(error = %error, "could not record a container event");
                            }
                        }
                        Some(Err(_)) | None => break,
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            }
        }
    }

    async fn on_container_event(&self, event: ContainerEvent) -> Result<(), ProvisionError> {
        let Some(id) = event.labels.get(LABEL_INSTANCE).and_then(|id| id.parse::<InstanceId>().ok()) else {
            return Ok(());
        };
        // dbroker's own operations explain their stops and starts.
        if self.is_busy(&id) {
            return Ok(());
        }
        let Some(record) = self.store.instance(&id).await? else {
            return Ok(());
        };
        match event.action.as_str() {
            "die" => {
                let container = self.container_name(&id);
                let (oom_killed, restarts) = match self.runtime.state(&container).await? {
                    ContainerState::Exited { oom_killed, .. } | ContainerState::Restarting { oom_killed, .. } => {
                        (oom_killed, 0)
                    }
                    ContainerState::Running { restart_count } => (false, restart_count),
                    _ => (false, 0),
                };
                let exit_code = event.exit_code.unwrap_or_default();
                if self.store.mark_exited(&id, exit_code, oom_killed).await? {
                    let mut detail = if oom_killed {
                        format!("killed for exceeding its memory cap (exit code {exit_code})")
                    } else {
                        format!("the server exited with code {exit_code}")
                    };
                    if restarts >= CRASH_LOOP_RESTARTS {
                        detail.push_str(&format!("; Docker has restarted it {restarts} times"));
                        tracing::error!(instance_id = %id, restarts, "an instance keeps dying");
                    } else {
                        tracing::warn!(instance_id = %id, exit_code, oom_killed, "an instance's server exited");
                    }
                    self.store.add_event(&id, EventKind::Exited, "docker", Some(&detail)).await?;
                }
            }
            "start" if record.status == Status::Exited => {
                // Docker's restart policy brought it back: running once it accepts logins again.
                let this = self.clone();
                tokio::spawn(async move {
                    let _busy = this.mark_busy(&record.id);
                    if this.wait_until_ready(&record).await.is_ok() {
                        let _ = this.store.set_status(&record.id, Status::Running).await;
                        let _ = this
                            .store
                            .add_event(
                                &record.id,
                                EventKind::Started,
                                "docker",
                                Some("restarted by its restart policy"),
                            )
                            .await;
                    }
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Containers found with no record, oldest first.
    pub async fn quarantined(&self) -> Result<Vec<Quarantined>, ProvisionError> {
        Ok(self.store.quarantined().await?)
    }

    /// Removes a quarantined container and its volume, with the data in it.
    pub async fn remove_quarantined(&self, container: &str) -> Result<(), ProvisionError> {
        let entry = self.quarantine_entry(container).await?;
        self.runtime.remove_container(&entry.container).await?;
        self.runtime.remove_volume(&format!("{}-data", entry.container)).await?;
        self.store.release_from_quarantine(container).await?;
        tracing::warn!(container, "a quarantined container and its volume were removed by an admin");
        Ok(())
    }

    /// Gives a quarantined container a record again, owned by `owner`, with the credentials its
    /// server already has (found in the container), checked by a real login.
    pub async fn adopt_quarantined(
        &self,
        admin: &Caller,
        container: &str,
        owner: &Caller,
    ) -> Result<Instance, ProvisionError> {
        let entry = self.quarantine_entry(container).await?;
        let details = self.runtime.details(&entry.container).await?;
        let unadoptable =
            |why: &str| ProvisionError::Conflict(format!("cannot adopt {container}: {why}; remove it instead"));
        let id: InstanceId = entry.instance_id.parse().map_err(|_| unadoptable("its instance label is not an id"))?;
        let engine: Engine =
            entry.engine.as_deref().unwrap_or_default().parse().map_err(|_| unadoptable("unknown engine"))?;
        let port = details.host_port.ok_or_else(|| unadoptable("it publishes no port"))?;
        let env = |name: &str| details.env.iter().find_map(|e| e.strip_prefix(name)).map(str::to_string);
        let password = match engine {
            Engine::Mysql => env("MYSQL_ROOT_PASSWORD="),
            Engine::Postgres => env("POSTGRES_PASSWORD="),
            Engine::Redis => {
                let file =
                    self.runtime.read_file(&entry.container, &engines::config_path(engine).unwrap_or_default()).await?;
                file.and_then(|f| {
                    String::from_utf8_lossy(&f)
                        .lines()
                        .find_map(|l| l.strip_prefix("requirepass ").map(|p| p.trim().trim_matches('"').to_string()))
                })
            }
        }
        .map(Secret::new)
        .ok_or_else(|| unadoptable("its credentials are not in the container"))?;
        let server_option = |name: &str| details.args.iter().find_map(|a| a.strip_prefix(name).map(str::to_string));
        let charset = server_option("--character-set-server=");
        let collation = server_option("--collation-server=");
        let memory = MemoryMb(
            details
                .memory_bytes
                .map_or(self.config.catalogue.engine(engine).memory.default.0, |b| (b / (1024 * 1024)) as u32),
        );
        let database = env("POSTGRES_DB=");
        // The catalogue's name for its image, if the catalogue still has one.
        let version = self
            .config
            .catalogue
            .engine(engine)
            .versions
            .iter()
            .find_map(|(name, spec)| (spec.image == details.image).then(|| name.clone()))
            .unwrap_or_else(|| "unknown".into());
        let name = format!("{engine}-{id}");
        let password_enc = self.key.encrypt(&password);
        let record = self
            .store
            .insert_instance(&NewInstanceRecord {
                id: &id,
                owner_id: Some(owner.user_id),
                name: &name,
                engine,
                version: &version,
                image: &details.image,
                memory_mb: memory,
                charset: charset.as_deref(),
                collation: collation.as_deref(),
                database: database.as_deref(),
                port,
                username: engines::username(engine),
                password_enc: &password_enc,
                claimed_by: self.process.id(),
                status: Status::Provisioning,
                // A container made from a template carries the template image's labels.
                template_image: details
                    .labels
                    .contains_key(super::templates::LABEL_TEMPLATE_OF)
                    .then_some(details.image.as_str()),
            })
            .await
            .map_err(|e| match e {
                StoreError::PortTaken => unadoptable("its port is leased to another instance"),
                StoreError::NameTaken => unadoptable("its owner already has an instance of that name"),
                other => other.into(),
            })?;
        let _busy = self.mark_busy(&id);
        self.runtime.start(&entry.container).await?;
        if let Err(error) = self.wait_ready(&record, port, &password).await {
            // Back to how it was: no record, stopped, still quarantined.
            self.store.delete_instance(&id).await?;
            self.runtime.stop(&entry.container).await?;
            return Err(unadoptable(&format!("its server did not accept the credentials found in it ({error})")));
        }
        self.store.set_status(&id, Status::Running).await?;
        self.store.release_from_quarantine(container).await?;
        let detail = format!("adopted from quarantine by {} for {}", admin.name, owner.name);
        self.repaired(&record, "adopt", EventKind::Repaired, &detail).await?;
        self.get(owner.user_id, &id).await
    }

    async fn quarantine_entry(&self, container: &str) -> Result<Quarantined, ProvisionError> {
        let entries = self.store.quarantined().await?;
        entries.into_iter().find(|q| q.container == container).ok_or(ProvisionError::NotFound)
    }
}
