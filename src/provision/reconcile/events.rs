//! Docker's event stream, followed by the leader: a server that dies shows as exited at once,
//! and one that Docker's restart policy brings back is looked at by a repair.

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::repairs::DOCKER_ACTOR;
use super::{Reconciler, Repair};
use crate::model::{EventKind, InstanceId, Status};
use crate::provision::{LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_PREFIX, ProvisionError};
use crate::runtime::{ContainerChange, ContainerEvent, ContainerState};

/// A server restarted this many times by Docker is reported as dying repeatedly.
const CRASH_LOOP_RESTARTS: i64 = 5;

/// How long the event watcher waits before subscribing again after the stream ended.
const RESUBSCRIBE_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

impl Reconciler {
    /// Follows Docker's events for this deployment's containers until `stop`, subscribing
    /// again whenever the stream ends (the engine went away and came back).
    pub(super) async fn watch_events(self, stop: CancellationToken) {
        loop {
            if let Ok(mut events) =
                self.service.runtime.events(LABEL_PREFIX, &self.service.config.instance_prefix).await
            {
                loop {
                    let event = tokio::select! {
                        _ = stop.cancelled() => return,
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
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            }
        }
    }

    async fn on_container_event(&self, event: ContainerEvent) -> Result<(), ProvisionError> {
        if event.labels.get(LABEL_DEPLOYMENT).is_some_and(|d| d != self.service.store.deployment_id()) {
            return Ok(());
        }
        let Some(id) = event.labels.get(LABEL_INSTANCE).and_then(|id| id.parse::<InstanceId>().ok()) else {
            return Ok(());
        };
        let Some(record) = self.service.store.instance(&id).await? else {
            return Ok(());
        };
        // dbroker's own operations explain their stops and starts.
        if record.running_operation.is_some() {
            return Ok(());
        }
        match event.change {
            ContainerChange::Died { exit_code } => {
                let (oom_killed, restarts) = match self.service.runtime.state(&self.service.container_name(&id)).await?
                {
                    ContainerState::Exited { oom_killed, .. } | ContainerState::Restarting { oom_killed, .. } => {
                        (oom_killed, 0)
                    }
                    ContainerState::Running { restart_count } => (false, restart_count),
                    _ => (false, 0),
                };
                // Only if no operation began meanwhile (the store checks).
                if self.service.store.mark_exited(&id, exit_code, oom_killed).await? {
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
                    self.service.store.add_event(&id, EventKind::Exited, DOCKER_ACTOR, Some(&detail)).await?;
                }
            }
            // Docker's restart policy brought it back: a repair marks it running once it accepts
            // logins again.
            ContainerChange::Started if record.status == Status::Exited => {
                self.spawn_repair(id, record.owner_id, Some(record.engine()), Repair::Drift);
            }
            ContainerChange::Started => {}
        }
        Ok(())
    }
}
