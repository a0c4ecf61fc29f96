//! Running an instance day to day: stop, start, restart, resize, rotate its password, read its
//! logs and its history. Each change is an operation (see `operations`) and keeps the data
//! written before it; each `*_now` function does its change idempotently from the record, so a
//! process that takes over an interrupted operation runs it again (see `reconcile::takeover`).

use serde_json::json;

use super::create::check_memory;
use super::{Caller, Idempotency, Instance, ProvisionError, Provisioner, Running};
use crate::engines;
use crate::model::{EventKind, InstanceId, MemoryMb, OperationKind, Status};
use crate::runtime::RuntimeError;
use crate::secrets::Secret;
use crate::store::{Event, InstanceRecord};

/// The most log lines one request may ask for.
pub const MAX_LOG_LINES: usize = 10_000;

/// The statuses in which an instance's server can be stopped, started or resized.
const SERVING_OR_STOPPED: &[Status] = &[Status::Running, Status::Exited, Status::Stopped];

/// A day-to-day change: its kind and input, the statuses it makes sense in, and how to say it in
/// a refusal ("cannot stop an instance that is failed").
struct Verb {
    kind: OperationKind,
    input: serde_json::Value,
    allowed: &'static [Status],
    what: &'static str,
}

/// How a stopped or running server is brought (back) up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StartMode {
    Start,
    Restart,
}

impl StartMode {
    fn event(self) -> EventKind {
        match self {
            StartMode::Start => EventKind::Started,
            StartMode::Restart => EventKind::Restarted,
        }
    }

    fn operation(self) -> OperationKind {
        match self {
            StartMode::Start => OperationKind::Start,
            StartMode::Restart => OperationKind::Restart,
        }
    }
}

impl Provisioner {
    /// Stops the server; the instance keeps its port, data and credentials.
    pub async fn stop(
        &self,
        caller: &Caller,
        id: &InstanceId,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<Instance>, ProvisionError> {
        let change = Verb { kind: OperationKind::Stop, input: json!({}), allowed: SERVING_OR_STOPPED, what: "stop" };
        self.day_to_day(caller, id, change, idempotency, |this, record, actor| async move {
            this.stop_now(&record, &actor).await
        })
        .await
    }

    /// Starts a stopped instance; its outcome is the instance once it accepts its credentials.
    pub async fn start(
        &self,
        caller: &Caller,
        id: &InstanceId,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<Instance>, ProvisionError> {
        self.start_server(caller, id, StartMode::Start, idempotency).await
    }

    /// Restarts the server; its outcome is the instance once it accepts its credentials again.
    pub async fn restart(
        &self,
        caller: &Caller,
        id: &InstanceId,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<Instance>, ProvisionError> {
        self.start_server(caller, id, StartMode::Restart, idempotency).await
    }

    async fn start_server(
        &self,
        caller: &Caller,
        id: &InstanceId,
        mode: StartMode,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<Instance>, ProvisionError> {
        let change = Verb { kind: mode.operation(), input: json!({}), allowed: SERVING_OR_STOPPED, what: "start" };
        self.day_to_day(caller, id, change, idempotency, move |this, record, actor| async move {
            this.start_now(&record, mode, &actor).await
        })
        .await
    }

    /// Changes the memory cap in place: the container's limit, and the server's own limit where
    /// the engine keeps one (Redis's `maxmemory`).
    pub async fn resize(
        &self,
        caller: &Caller,
        id: &InstanceId,
        memory: MemoryMb,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<Instance>, ProvisionError> {
        // A cap the engine does not take is refused before an operation is recorded, as a
        // create's is, so that an asynchronous resize (202 at once) is refused with 422 too.
        let engine = self.owned(caller.user_id, id).await?.engine();
        check_memory(&self.config.catalogue, engine, Some(memory))?;
        let input = json!({ "memory_mb": memory.0 });
        let change = Verb { kind: OperationKind::Resize, input, allowed: SERVING_OR_STOPPED, what: "resize" };
        self.day_to_day(caller, id, change, idempotency, move |this, record, actor| async move {
            this.resize_now(&record, memory, &actor).await
        })
        .await
    }

    /// Gives the instance a new password: it works at once, and the old one is refused. The
    /// server must run: only it can change its password, and the old one must stop working now.
    pub async fn rotate_password(
        &self,
        caller: &Caller,
        id: &InstanceId,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<Instance>, ProvisionError> {
        let change = Verb {
            kind: OperationKind::Rotate,
            input: json!({}),
            allowed: &[Status::Running],
            what: "rotate the password of",
        };
        self.day_to_day(caller, id, change, idempotency, |this, record, actor| async move {
            this.rotate_now(&record, PasswordFile::Written).await?;
            this.store.add_event(&record.id, EventKind::Rotated, &actor, None).await?;
            Ok(())
        })
        .await
    }

    /// Runs a day-to-day change as an operation (see `change`): refused unless the instance is in
    /// one of the change's statuses, then `step` (with the caller's name, for the history); its
    /// outcome is the instance as the change leaves it.
    async fn day_to_day<F, Fut>(
        &self,
        caller: &Caller,
        id: &InstanceId,
        change: Verb,
        idempotency: Option<&Idempotency>,
        step: F,
    ) -> Result<Running<Instance>, ProvisionError>
    where
        F: FnOnce(Provisioner, InstanceRecord, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), ProvisionError>> + Send + 'static,
    {
        let actor = caller.name.clone();
        let Verb { kind, input, allowed, what } = change;
        self.change(caller, id, kind, input, idempotency, move |this, record, _| async move {
            require_status(&record, allowed, what)?;
            let id = record.id.clone();
            step(this.clone(), record, actor).await?;
            this.reveal_current(&id).await
        })
        .await
    }

    /// Records the intent, then stops the container.
    pub(super) async fn stop_now(&self, record: &InstanceRecord, actor: &str) -> Result<(), ProvisionError> {
        self.store.set_status(&record.id, Status::Stopped).await?;
        if let Err(error) = self.runtime.stop(&self.container_name(&record.id)).await {
            self.store.set_status(&record.id, record.status).await?;
            return Err(error.into());
        }
        self.store.add_event(&record.id, EventKind::Stopped, actor, None).await?;
        Ok(())
    }

    /// Starts (or restarts) the container and waits until the server accepts its credentials.
    pub(super) async fn start_now(
        &self,
        record: &InstanceRecord,
        mode: StartMode,
        actor: &str,
    ) -> Result<(), ProvisionError> {
        let container = self.container_name(&record.id);
        match mode {
            StartMode::Restart => self.runtime.restart(&container).await?,
            StartMode::Start => self.runtime.start(&container).await?,
        }
        self.wait_until_ready(record).await?;
        self.store.set_status(&record.id, Status::Running).await?;
        self.store.add_event(&record.id, mode.event(), actor, None).await?;
        Ok(())
    }

    /// Growing takes its room in the store first, within the owner's quota and the host's memory
    /// budget, so that concurrent changes never pass them together; a resize that then fails
    /// gives the room back.
    pub(super) async fn resize_now(
        &self,
        record: &InstanceRecord,
        memory: MemoryMb,
        actor: &str,
    ) -> Result<(), ProvisionError> {
        let memory = check_memory(&self.config.catalogue, record.engine(), Some(memory))?;
        if memory <= record.memory_mb {
            return self.change_memory(record, memory, actor).await;
        }
        let limits = self.quotas.limits(&self.runtime).await?;
        self.store.grow_memory(record, memory, &limits).await?;
        let changed = self.change_memory(record, memory, actor).await;
        if changed.is_err()
            && let Err(error) = self.store.set_memory(&record.id, record.memory_mb).await
        {
            tracing::error!(instance_id = %record.id, %error, "could not give back the room of a failed resize");
        }
        changed
    }

    /// Growing: the container first, so the server never has more than its cap allows.
    /// Shrinking: the server first, so it is within the new cap before the cap tightens. Both
    /// steps are idempotent, so an interrupted resize is simply done again.
    async fn change_memory(
        &self,
        record: &InstanceRecord,
        memory: MemoryMb,
        actor: &str,
    ) -> Result<(), ProvisionError> {
        let password = self.password_of(record)?;
        let resized = InstanceRecord { memory_mb: memory, ..record.clone() };
        let container = self.container_name(&record.id);
        let growing = memory > record.memory_mb;
        let host = self.probe_host();
        let endpoint = self.endpoint(record, &host, &password);
        let running = record.status == Status::Running;
        if !growing && running {
            // Nothing is changed for a cap below what the server holds.
            engines::check_fits(record.engine(), &endpoint, memory).await.map_err(|reason| {
                ProvisionError::Conflict(format!("cannot shrink the instance to {} MiB: {reason}", memory.0))
            })?;
        }
        if growing {
            self.runtime.set_memory(&container, memory.bytes()).await?;
        }
        if running {
            engines::apply_memory(record.engine(), &endpoint, memory).await.map_err(|reason| {
                ProvisionError::ServerRefused(format!("the server did not take the new limit: {reason}"))
            })?;
        } else {
            self.write_config_file(&resized, &password).await?;
        }
        if !growing && let Err(error) = self.runtime.set_memory(&container, memory.bytes()).await {
            // Docker refuses a cap below what the container uses now: the server gets its old
            // limit back, and the instance is as it was.
            let restored = if running {
                engines::apply_memory(record.engine(), &endpoint, record.memory_mb).await.map_err(|e| e.to_string())
            } else {
                self.write_config_file(record, &password).await.map_err(|e| e.to_string())
            };
            if let Err(reason) = restored {
                tracing::error!(%reason, "could not give the server its old memory limit back");
            }
            return Err(match error {
                RuntimeError::Refused(reason) => ProvisionError::Conflict(format!(
                    "cannot shrink the instance to {} MiB: Docker refused ({reason}); nothing was changed",
                    memory.0
                )),
                other => other.into(),
            });
        }
        self.store.set_memory(&record.id, memory).await?;
        let detail = format!("{} MiB to {} MiB", record.memory_mb.0, memory.0);
        self.store.add_event(&record.id, EventKind::Resized, actor, Some(&detail)).await?;
        Ok(())
    }

    /// Changes the server's password, crash-safe: the new password is stored as pending before
    /// the server gets it, and becomes the password once the server has it and its container's
    /// password file holds it. If the change fails half way (a timeout, a crash),
    /// `settle_password` finds out which of the two the server has.
    pub(super) async fn rotate_now(
        &self,
        record: &InstanceRecord,
        file: PasswordFile,
    ) -> Result<Secret, ProvisionError> {
        let old = self.password_of(record)?;
        let new = Secret::generate_password();
        self.store.set_pending_password(&record.id, &self.key.encrypt(&new)).await?;
        let host = self.probe_host();
        let changed = engines::rotate_password(record.engine(), &self.endpoint(record, &host, &old), &new).await;
        if let Err(reason) = changed {
            // The server may have changed it before the answer was lost: ask it which it has.
            let record = self.store.instance(&record.id).await?.ok_or(ProvisionError::NotFound)?;
            self.settle_password(&record).await?;
            return Err(ProvisionError::ServerRefused(format!("the server did not take the new password: {reason}")));
        }
        if let PasswordFile::Written = file {
            self.write_password_file(record, &new).await?;
        }
        self.store.set_password(&record.id, &self.key.encrypt(&new)).await?;
        if let PasswordFile::WrittenLater = file {
            // Once the new password is the stored one: that is what it writes. On the operations'
            // tasks, so that a shutdown waits for it too.
            let (this, id) = (self.clone(), record.id.clone());
            self.tasks().spawn(async move { this.refresh_password_file(&id).await });
        }
        Ok(new)
    }

    /// Writes `password` into the instance's password file, for engines whose server does not keep
    /// that file up to date itself (see `Profile::server_rewrites_config`): it is where an adopt
    /// finds the password if the record is ever lost.
    async fn write_password_file(&self, record: &InstanceRecord, password: &Secret) -> Result<(), ProvisionError> {
        if engines::profile(record.engine()).server_rewrites_config {
            return Ok(());
        }
        self.write_config_file(record, password).await
    }

    /// Writes the stored password into the instance's password file, after a rotation that could
    /// not wait for it (see `PasswordFile::WrittenLater`). Reads the record when it writes, so a
    /// rotation in between is not undone.
    async fn refresh_password_file(&self, id: &InstanceId) {
        let written = async {
            let record = self.store.instance(id).await?.ok_or(ProvisionError::NotFound)?;
            self.write_password_file(&record, &self.password_of(&record)?).await
        };
        if let Err(error) = written.await {
            tracing::warn!(instance_id = %id, %error, "could not write the password file; an adopt would not find the password");
        }
    }

    /// Resolves a pending password (see `rotate_now`): whichever of the stored and the pending one
    /// the server accepts becomes the stored one. `Ok(true)` if one of them works.
    pub(super) async fn settle_password(&self, record: &InstanceRecord) -> Result<bool, ProvisionError> {
        let Some(pending_enc) = &record.pending_password_enc else {
            return Ok(true);
        };
        let Some(port) = record.port else { return Ok(false) };
        let host = self.probe_host();
        let stored = self.password_of(record)?;
        let pending = self.key.decrypt(pending_enc).map_err(|e| ProvisionError::Internal(e.into()))?;
        let endpoint = |password| engines::Endpoint { port, ..self.endpoint(record, &host, password) };
        if engines::probe(record.engine(), &endpoint(&stored)).await.is_ok() {
            self.store.clear_pending_password(&record.id).await?;
            return Ok(true);
        }
        if engines::probe(record.engine(), &endpoint(&pending)).await.is_ok() {
            tracing::warn!(instance_id = %record.id, "the server had the pending password; it is now the stored one");
            self.write_password_file(record, &pending).await?;
            self.store.set_password(&record.id, pending_enc).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The server's last `lines` lines, with the instance's password removed.
    /// An instance with no container (a failed create, one whose container was removed outside
    /// dbroker and not yet recreated) has no logs to show: `Conflict`, saying so.
    pub async fn logs(&self, owner_id: i64, id: &InstanceId, lines: usize) -> Result<Vec<String>, ProvisionError> {
        let record = self.owned(owner_id, id).await?;
        let password = self.password_of(&record)?;
        match self.runtime.logs_tail(&self.container_name(id), lines.min(MAX_LOG_LINES)).await {
            Ok(lines) => Ok(lines.into_iter().map(|line| crate::secrets::redact(line, &[&password])).collect()),
            Err(RuntimeError::NotFound) => Err(ProvisionError::Conflict(format!(
                "the instance has no container, so no server logs: it is {}{}",
                record.status,
                record.status_reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ))),
            Err(other) => Err(other.into()),
        }
    }

    /// What happened to the instance, oldest first.
    /// What happened to the instance: the `limit` latest events older than `before` (or the
    /// latest `limit`), oldest first.
    pub async fn events(
        &self,
        owner_id: i64,
        id: &InstanceId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Event>, ProvisionError> {
        self.owned(owner_id, id).await?;
        Ok(self.store.events(id, before, limit).await?)
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

    /// Waits until the server accepts the stored password; if it has a pending one (a rotation
    /// was interrupted), whichever works is settled on first.
    pub(super) async fn wait_until_ready(&self, record: &InstanceRecord) -> Result<(), ProvisionError> {
        if record.port.is_none() {
            return Err(ProvisionError::Conflict("the instance holds no port".into()));
        }
        let first = self.wait_ready_as_stored(record).await;
        match first {
            Err(error) if record.pending_password_enc.is_some() => {
                if self.settle_password(record).await? {
                    let record = self.store.instance(&record.id).await?.ok_or(ProvisionError::NotFound)?;
                    return self.wait_ready_as_stored(&record).await;
                }
                Err(error)
            }
            other => other,
        }
    }

    /// Waits until the server accepts the record's stored password on the record's port.
    async fn wait_ready_as_stored(&self, record: &InstanceRecord) -> Result<(), ProvisionError> {
        let password = self.password_of(record)?;
        let host = self.probe_host();
        let endpoint = self.endpoint(record, &host, &password);
        self.wait_ready(record.engine(), &self.container_name(&record.id), &endpoint).await
    }

    /// The instance as the store has it at the end of an operation's work, revealed for its
    /// owner. The operation in flight is the one ending, which its answer does not show.
    pub(super) async fn reveal_current(&self, id: &InstanceId) -> Result<Instance, ProvisionError> {
        let record = self.store.instance(id).await?.ok_or(ProvisionError::NotFound)?;
        self.reveal(InstanceRecord { running_operation: None, ..record })
    }
}

/// Refuses an operation that makes no sense in the instance's status, saying why.
pub(super) fn require_status(
    record: &InstanceRecord,
    allowed: &[Status],
    operation: &str,
) -> Result<(), ProvisionError> {
    if allowed.contains(&record.status) {
        Ok(())
    } else {
        Err(ProvisionError::Conflict(format!("cannot {operation} an instance that is {}", record.status.as_str())))
    }
}

/// When a rotation writes the new password into the container's password file (an upload through
/// Docker, about 50 ms on a running container).
pub(super) enum PasswordFile {
    /// Before the rotation ends: a rotation asked for.
    Written,
    /// Just after: a claim from the warm pool, which answers in milliseconds. A crash in between
    /// leaves the file with the pool's password, which only an adopt would notice.
    WrittenLater,
}
