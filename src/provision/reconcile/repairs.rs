//! The repairs, each an operation of its own (see the module above). What drifts, and why it is
//! repaired that way:
//! - a container with no record: the record is always written first, so the store lost rows
//!   (restored from an older backup, say). The container may hold a user's data: it is stopped
//!   and quarantined for an admin to adopt or remove, never deleted.
//! - a record left `provisioning` with no operation in flight (a rollback that could not reach
//!   Docker): finished if its container is ready, else rolled back.
//! - a record left `deleting` with no operation in flight: the delete is finished.
//! - an instance whose container vanished but whose volume remains: recreated from the volume
//!   with the same port and credentials.
//! - a container that stopped although its instance should run: started again.
//! - an exited instance whose server Docker's restart policy brought back: running again once it
//!   accepts logins.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::Reconciler;
use crate::model::{Engine, EventKind, InstanceId, OperationId, OperationKind, Status};
use crate::provision::operations::Begin;
use crate::provision::templates;
use crate::provision::{
    LABEL_DEPLOYMENT, LABEL_ENGINE, LABEL_INSTANCE, LABEL_OWNER, LABEL_PREFIX, ProvisionError, SYSTEM_ACTOR,
};
use crate::runtime::{ContainerState, ContainerSummary, RuntimeError};
use crate::store::InstanceRecord;

/// After this many failed repairs in a row, an instance is reported as needing attention.
const ATTENTION_AFTER_FAILURES: u32 = 3;

/// The longest wait between two tries of a repair that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What a pass saw that calls for a look (the repair itself decides again on what is true then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::provision) enum Repair {
    /// The instance's record and container disagree.
    Drift,
    /// A container of this deployment whose instance has no record.
    Quarantine,
}

impl Repair {
    fn as_str(self) -> &'static str {
        match self {
            Repair::Drift => "drift",
            Repair::Quarantine => "quarantine",
        }
    }
}

impl Reconciler {
    /// Takes over the operations whose process died (their lease expired) and resumes each in the
    /// background: one indexed query when there are none, so the leader looks every second.
    pub(super) async fn take_over_abandoned(&self) -> Result<(), ProvisionError> {
        for operation in self.service.store.abandoned_operations().await? {
            // One this process runs is not abandoned: its renewal only lagged (a busy machine, a
            // slow store), and the next one extends it. Taken over, it would run twice.
            if self.service.ops.holds(&operation.id) {
                continue;
            }
            if self.service.ops.take_over(&operation).await? {
                self.resume(operation);
            }
        }
        Ok(())
    }

    /// One comparison of the store with Docker: takes over the operations whose process died,
    /// and starts a repair for each instance that looks adrift. Returns without waiting for them.
    pub async fn reconcile_once(&self) -> Result<(), ProvisionError> {
        self.take_over_abandoned().await?;
        // Records first: a create that ends between the two reads then shows as a record with its
        // operation in flight, and its container, rather than as a record with no container.
        let records = self.service.store.all_instances().await?;
        let containers = self.service.runtime.list(LABEL_PREFIX, &self.service.config.instance_prefix).await?;
        let known: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let deployment = self.service.store.deployment_id();
        // Another deployment's containers are never ours, whatever their prefix. Containers made
        // before deployments were stamped carry no id: ours if the store knows them, else left be.
        let ours = |c: &ContainerSummary| match c.labels.get(LABEL_DEPLOYMENT) {
            Some(id) => id == deployment,
            None => c.labels.get(LABEL_INSTANCE).is_some_and(|id| known.contains(id.as_str())),
        };
        let by_instance: HashMap<&str, &ContainerSummary> = containers
            .iter()
            .filter(|c| ours(c))
            .filter_map(|c| c.labels.get(LABEL_INSTANCE).map(|id| (id.as_str(), c)))
            .collect();

        let now = crate::store::now_millis();
        for record in &records {
            let backing_off = record.repair_after.is_some_and(|after| after > now);
            if record.running_operation.is_some() || backing_off {
                continue;
            }
            let state = by_instance.get(record.id.as_str()).map(|c| &c.state);
            if looks_adrift(record, state) {
                self.spawn_repair(record.id.clone(), record.owner_id, Some(record.engine()), Repair::Drift);
            }
        }
        self.remove_abandoned_template_builds(&containers).await;
        // A quarantined container stays as it is until an admin decides: nothing to look at.
        let quarantined: HashSet<String> =
            self.service.store.quarantined().await?.into_iter().map(|q| q.container).collect();
        for (instance, container) in by_instance.iter().filter(|(id, _)| !known.contains(*id)) {
            if let Ok(id) = instance.parse::<InstanceId>()
                && !quarantined.contains(&container.name)
            {
                let engine = container.labels.get(LABEL_ENGINE).and_then(|e| e.parse().ok());
                self.spawn_repair(id, None, engine, Repair::Quarantine);
            }
        }
        Ok(())
    }

    /// Removes this deployment's template build containers whose operation is no longer in
    /// flight: their process died during the build (a live build's operation is in flight).
    async fn remove_abandoned_template_builds(&self, containers: &[ContainerSummary]) {
        let deployment = self.service.store.deployment_id();
        for container in containers {
            let prefix = &self.service.config.instance_prefix;
            let Some(operation) = templates::build_operation(prefix, &container.name) else { continue };
            if container.labels.get(LABEL_DEPLOYMENT).map(String::as_str) != Some(deployment) {
                continue;
            }
            let in_flight = match self.service.store.operation(&operation).await {
                Ok(found) => found.is_some_and(|o| o.state.in_flight()),
                Err(error) => {
                    tracing::warn!(%error, "cannot look up a template build's operation");
                    continue;
                }
            };
            if in_flight {
                continue;
            }
            match self.service.runtime.remove_container(&container.name).await {
                Ok(()) => {
                    tracing::warn!(container = %container.name, "removed a template build left by a process that died");
                    self.count("remove_template_build");
                }
                Err(error) => tracing::warn!(container = %container.name, %error, "cannot remove a template build"),
            }
        }
    }

    /// Starts a repair of `id` in the background, if a slot is free (else the next pass will).
    pub(in crate::provision) fn spawn_repair(
        &self,
        id: InstanceId,
        owner_id: Option<i64>,
        engine: Option<Engine>,
        repair: Repair,
    ) {
        let Ok(slot) = self.state.slots.clone().try_acquire_owned() else {
            tracing::debug!(instance_id = %id, "every repair slot is taken; trying next pass");
            return;
        };
        let this = self.clone();
        self.service.ops.tasks().spawn(async move {
            this.repair(&id, owner_id, engine, repair).await;
            drop(slot);
        });
    }

    /// Runs one repair as an operation, within its deadline, and keeps the instance's back-off.
    #[tracing::instrument(skip_all, fields(instance_id = %id, repair = repair.as_str()))]
    async fn repair(&self, id: &InstanceId, owner_id: Option<i64>, engine: Option<Engine>, repair: Repair) {
        // A pass's view is seconds old: look again before holding the instance, so that what
        // has settled meanwhile costs no operation (and refuses no user's change).
        match self.still_adrift(id, repair).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => return tracing::warn!(%error, "could not look at the instance again"),
        }
        let input = serde_json::json!({ "repair": repair.as_str() });
        let begin = Begin {
            instance_id: id.clone(),
            kind: OperationKind::Repair,
            engine,
            caller: None,
            owner_id,
            input,
            idempotency: None,
        };
        let operation = match self.service.ops.begin(begin).await {
            Ok(operation) => operation,
            // Something else is under way on it: that explains the drift, or will be looked at next.
            Err(ProvisionError::Busy { .. }) => return,
            Err(error) => return tracing::warn!(%error, "could not record a repair"),
        };
        let deadline = self.repair_deadline();
        let outcome = match tokio::time::timeout(deadline, self.repair_now(id, &operation.id)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ProvisionError::NotReady {
                reason: format!("the repair did not finish within {deadline:?}"),
                last_logs: Vec::new(),
            }),
        };
        match outcome {
            Ok(None) => return self.service.ops.discard(&operation.id).await,
            Ok(Some(done)) => {
                self.service.ops.finish(&operation.id, None).await;
                self.count(done);
                if let Err(error) = self.service.store.clear_repair_failures(id).await {
                    tracing::warn!(%error, "could not clear the repair back-off");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "repair failed");
                self.service.ops.finish(&operation.id, Some(&error)).await;
                self.back_off(id, &error).await;
            }
        }
    }

    /// Whether the instance still looks as if it needs `repair`, now.
    async fn still_adrift(&self, id: &InstanceId, repair: Repair) -> Result<bool, ProvisionError> {
        let record = self.service.store.instance(id).await?;
        let state = self.service.runtime.state(&self.service.container_name(id)).await?;
        Ok(match (repair, record) {
            (Repair::Quarantine, record) => record.is_none() && state != ContainerState::Missing,
            (Repair::Drift, Some(record)) => {
                record.running_operation.is_none()
                    && looks_adrift(&record, Some(&state).filter(|s| **s != ContainerState::Missing))
            }
            (Repair::Drift, None) => false,
        })
    }

    /// How long one repair may take: a server's start, at most.
    fn repair_deadline(&self) -> Duration {
        self.service.config.ready_timeout + Duration::from_secs(10)
    }

    /// Counts a failed repair and waits longer before the next: twice the pass interval per
    /// failure in a row, up to `MAX_BACKOFF`; past `ATTENTION_AFTER_FAILURES` the owner sees why.
    async fn back_off(&self, id: &InstanceId, error: &ProvisionError) {
        let failures = match self.service.store.instance(id).await {
            Ok(Some(record)) => record.repair_failures + 1,
            _ => return,
        };
        let wait = self.service.config.reconcile_interval.saturating_mul(1 << failures.min(16)).min(MAX_BACKOFF);
        let attention = (failures >= ATTENTION_AFTER_FAILURES).then(|| {
            format!("dbroker could not repair it {failures} times in a row (last: {error}); retrying in {wait:?}")
        });
        if attention.is_some() {
            tracing::error!(instance_id = %id, failures, "an instance needs attention");
        }
        if let Err(error) = self.service.store.record_repair_failure(id, wait, attention.as_deref()).await {
            tracing::warn!(%error, "could not record a failed repair");
        }
    }

    /// Looks again at the record and the container, and repairs what is adrift now. `Ok(None)` if
    /// nothing is; else the repair's name, for the counters.
    async fn repair_now(
        &self,
        id: &InstanceId,
        operation: &OperationId,
    ) -> Result<Option<&'static str>, ProvisionError> {
        let container = self.service.container_name(id);
        let state = self.service.runtime.state(&container).await?;
        let Some(record) = self.service.store.instance(id).await? else {
            if state == ContainerState::Missing {
                return Ok(None);
            }
            return self.quarantine(id, &container, &state).await;
        };
        match (record.status, &state) {
            (Status::Provisioning, _) => self.finish_or_roll_back_create(&record, operation).await.map(Some),
            (Status::Failed, _) => Ok(None),
            (Status::Deleting, _) => {
                self.service.delete_now(id, SYSTEM_ACTOR).await?;
                self.repaired(&record, "finish_delete", EventKind::Deleted, "finished a delete interrupted by a crash")
                    .await
            }
            (Status::Running | Status::Exited | Status::Stopped, ContainerState::Missing) => {
                self.recreate_from_volume(&record).await
            }
            (Status::Running | Status::Exited, ContainerState::Exited { .. } | ContainerState::Created) => {
                self.service.runtime.start(&container).await?;
                self.service.wait_until_ready(&record).await?;
                self.service.store.set_status(id, Status::Running).await?;
                self.repaired(
                    &record,
                    "restart_stopped",
                    EventKind::Repaired,
                    "started its container, which had stopped",
                )
                .await
            }
            (Status::Exited, ContainerState::Running { .. }) => {
                // Back by Docker's restart policy: running once it accepts logins again.
                self.service.wait_until_ready(&record).await?;
                self.service.store.set_status(id, Status::Running).await?;
                self.service
                    .store
                    .add_event(id, EventKind::Started, DOCKER_ACTOR, Some("restarted by its restart policy"))
                    .await?;
                Ok(Some("restarted_by_docker"))
            }
            _ => Ok(None),
        }
    }

    /// A create whose operation ended without finishing it: finished if its container becomes
    /// ready, else rolled back (container, volume, port) and marked failed. The name of what was done.
    pub(super) async fn finish_or_roll_back_create(
        &self,
        record: &InstanceRecord,
        operation: &OperationId,
    ) -> Result<&'static str, ProvisionError> {
        let state = self.service.runtime.state(&self.service.container_name(&record.id)).await?;
        let outcome = match state {
            ContainerState::Running { .. } | ContainerState::Restarting { .. } => match &record.template_image {
                Some(template_image) => self.service.finish_copy(record, template_image, operation).await,
                None => self.service.wait_until_ready(record).await,
            },
            _ => Err(ProvisionError::Conflict("its container never started".into())),
        };
        match outcome {
            Ok(()) => {
                self.service.store.set_status(&record.id, Status::Running).await?;
                self.repaired(record, "finish_create", EventKind::Ready, "finished a create interrupted by a crash")
                    .await?;
                Ok("finish_create")
            }
            Err(ProvisionError::EngineUnreachable(reason)) => Err(ProvisionError::EngineUnreachable(reason)),
            Err(error) => {
                self.service.runtime.remove_container(&self.service.container_name(&record.id)).await?;
                self.service.runtime.remove_volume(&self.service.volume_name(&record.id)).await?;
                let reason = format!("dbroker stopped during the create, which could not finish: {error}");
                self.service.store.mark_failed(&record.id, &reason).await?;
                self.repaired(record, "roll_back_create", EventKind::Failed, &reason).await?;
                Ok("roll_back_create")
            }
        }
    }

    /// The container is gone: recreate it from the data volume, with the same port and credentials.
    async fn recreate_from_volume(&self, record: &InstanceRecord) -> Result<Option<&'static str>, ProvisionError> {
        let Some(port) = record.port else { return Ok(None) };
        let password = self.service.password_of(record)?;
        let spec = self.service.spec_for(record, &password, port);
        if !self.service.runtime.create_on_existing_volume(&spec).await? {
            let reason = "its container and its data volume were removed outside dbroker";
            self.service.store.mark_failed(&record.id, reason).await?;
            return self.repaired(record, "data_lost", EventKind::Failed, reason).await;
        }
        if record.status != Status::Stopped {
            self.service.runtime.start_created(&spec.name).await?;
            self.service.wait_until_ready(record).await?;
            self.service.store.set_status(&record.id, Status::Running).await?;
        }
        let detail = "recreated its container, removed outside dbroker, from its volume";
        self.repaired(record, "recreate_container", EventKind::Repaired, detail).await
    }

    /// Stops a container that has no record and keeps it for an admin: within a repair
    /// operation on its instance id, so nothing else is under way on it.
    async fn quarantine(
        &self,
        id: &InstanceId,
        container: &str,
        state: &ContainerState,
    ) -> Result<Option<&'static str>, ProvisionError> {
        let details = match self.service.runtime.details(container).await {
            Err(RuntimeError::NotFound) => return Ok(None),
            other => other?,
        };
        // Never another deployment's, even if its name is ours.
        if details.labels.get(LABEL_DEPLOYMENT).map(String::as_str) != Some(self.service.store.deployment_id()) {
            return Ok(None);
        }
        if matches!(state, ContainerState::Running { .. } | ContainerState::Restarting { .. }) {
            match self.service.runtime.stop(container).await {
                Err(RuntimeError::NotFound) => return Ok(None),
                other => other?,
            }
        }
        let label = |name: &str| details.labels.get(name).map(String::as_str);
        let found =
            self.service.store.quarantine(container, id.as_str(), label(LABEL_ENGINE), label(LABEL_OWNER)).await?;
        if !found {
            return Ok(None);
        }
        tracing::warn!(container, "a container with no record was stopped and quarantined for an admin");
        Ok(Some("quarantine"))
    }

    /// Logs and records a repair in the instance's history; its name, for the counters.
    pub(super) async fn repaired(
        &self,
        record: &InstanceRecord,
        repair: &'static str,
        kind: EventKind,
        detail: &str,
    ) -> Result<Option<&'static str>, ProvisionError> {
        tracing::warn!(repair, detail, "repaired drift");
        self.service.store.add_event(&record.id, kind, SYSTEM_ACTOR, Some(detail)).await?;
        Ok(Some(repair))
    }
}

/// The actor of what Docker did on its own (its restart policy), in instance histories.
pub(super) const DOCKER_ACTOR: &str = "docker";

/// Whether what a pass saw calls for a closer look.
fn looks_adrift(record: &InstanceRecord, container: Option<&ContainerState>) -> bool {
    match (record.status, container) {
        (Status::Failed, _) => false,
        (Status::Provisioning | Status::Deleting, _) => true,
        (Status::Running | Status::Exited | Status::Stopped, None) => true,
        (Status::Running | Status::Exited, Some(ContainerState::Exited { .. } | ContainerState::Created)) => true,
        (Status::Exited, Some(ContainerState::Running { .. })) => true,
        _ => false,
    }
}
