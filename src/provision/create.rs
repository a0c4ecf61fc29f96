//! Creating an instance: validate, lease a port, write the record, start the container, wait until
//! a real client logs in, and undo everything if any step fails.

use std::collections::HashSet;
use std::net::{IpAddr, TcpListener};
use std::time::{Duration, Instant};

use super::templates::Template;
use super::{Caller, Instance, NewInstance, ProvisionError, Provisioner};
use crate::config::Catalogue;
use crate::engines::{self, Endpoint};
use crate::model::{Engine, EventKind, Flavor, InstanceId, MemoryMb, Status};
use crate::runtime::{ContainerState, RuntimeError};
use crate::secrets::{Secret, redact};
use crate::store::{InstanceRecord, NewInstanceRecord, StoreError};

/// How often readiness is polled. Each poll is a real login, which a server that is not listening
/// yet refuses at once, so a short interval costs little and keeps the wait within 20 ms of the
/// server's own start-up time (the benchmark measured 100 ms lost per create at 100 ms).
const READY_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many polls pass between two looks at the container's state (one Docker call), to notice a
/// server that exited without asking Docker 50 times a second.
const POLLS_PER_STATE_CHECK: u32 = 5;

/// How many server log lines an error carries when a database fails to start.
const FAILURE_LOG_LINES: usize = 20;

/// How many times a create moves to another port when Docker finds its port taken at start.
const PORT_RETRIES: usize = 5;

impl Provisioner {
    /// Creates an instance and returns it once the database accepts the returned credentials.
    /// Runs as a task of its own: if the caller goes away, the create still finishes or rolls back.
    pub async fn create(&self, caller: &Caller, request: NewInstance) -> Result<Instance, ProvisionError> {
        let this = self.clone();
        let caller = caller.clone();
        self.tasks
            .spawn(async move { this.create_in_task(Some(&caller), request).await })
            .await
            .map_err(|e| ProvisionError::Internal(e.into()))?
    }

    /// Creates an instance for `owner`, or for the warm pool when `owner` is `None`.
    #[tracing::instrument(skip_all, fields(engine = %request.engine, instance_id))]
    pub(super) async fn create_in_task(
        &self,
        owner: Option<&Caller>,
        request: NewInstance,
    ) -> Result<Instance, ProvisionError> {
        let engine = request.engine;
        let Plan { version, image, flavor, memory, pool } = plan(&self.config.catalogue, &request)?;
        // A started instance of the pool is ready in milliseconds; the pool holds only the
        // engine's defaults, so a MySQL character set of the user's own needs a fresh one.
        if let Some(caller) = owner
            && pool > 0
            && request.charset.is_none()
            && let Some(instance) = self.claim_from_pool(caller, &request, &version, memory).await?
        {
            return Ok(instance);
        }
        // Before the record: a missing image is a configuration problem, not an instance to undo;
        // and an engine that does not answer fails the create here, with nothing to undo.
        let image_id = self.runtime.ensure_image(&image).await.map_err(|e| match e {
            RuntimeError::ImageMissing { image, reason } => {
                ProvisionError::ImageMissing { image, flag: Catalogue::image_flag(engine), reason }
            }
            other => other.into(),
        })?;
        let database = match engine {
            Engine::Postgres => {
                Some(request.database.as_ref().map_or(engines::DEFAULT_POSTGRES_DATABASE, |d| d.as_str()))
            }
            _ => None,
        };
        let template = self.template_for(engine, flavor, &image, &image_id).await?;

        let id = InstanceId::random();
        tracing::Span::current().record("instance_id", tracing::field::display(&id));
        let password = Secret::generate_password();
        let password_enc = self.key.encrypt(&password);
        let name = match (&request.name, owner) {
            (Some(name), _) => name.as_str().to_string(),
            (None, Some(_)) => format!("{engine}-{id}"),
            (None, None) => format!("pool-{id}"),
        };
        let new_record = NewInstanceRecord {
            id: &id,
            owner_id: owner.map(|o| o.user_id),
            name: &name,
            engine,
            version: &version,
            image: &image,
            memory_mb: memory,
            charset: request.charset.as_ref().map(|c| c.as_str()),
            collation: request.collation.as_ref().map(|c| c.as_str()),
            database,
            port: 0, // chosen by lease_port
            username: engines::username(engine),
            password_enc: &password_enc,
            claimed_by: self.process.id(),
            status: Status::Provisioning,
            template_image: template.as_ref().map(|t| t.image_id.as_str()),
        };
        // The record comes first: from here on, no container exists that the store does not know.
        let _busy = self.mark_busy(&id);
        let record = self.lease_port(new_record).await?;
        let actor = owner.map_or(super::SYSTEM_ACTOR, |o| o.name.as_str());
        let detail = owner.is_none().then_some("for the warm pool");
        self.store.add_event(&id, EventKind::Created, actor, detail).await?;

        match self.start_and_wait(&record, &password, template.as_ref()).await {
            Ok(port) => {
                self.store.set_status(&id, Status::Running).await?;
                self.store.add_event(&id, EventKind::Ready, super::SYSTEM_ACTOR, None).await?;
                tracing::info!(port, "instance ready");
                let record = InstanceRecord { status: Status::Running, port: Some(port), claimed_by: None, ..record };
                Ok(Instance { record, password, host: self.config.advertise_host.clone() })
            }
            Err(error) => {
                tracing::warn!(error = %error, "create failed; rolling back");
                self.roll_back(&id, &error.to_string()).await;
                Err(error)
            }
        }
    }

    /// Writes the record with the lowest free port of the range. The store's UNIQUE constraint
    /// settles races between concurrent creates, in this process or another: the loser tries the
    /// next port.
    async fn lease_port(&self, mut new: NewInstanceRecord<'_>) -> Result<InstanceRecord, ProvisionError> {
        loop {
            new.port = self.free_port(&HashSet::new()).await?;
            match self.store.insert_instance(&new).await {
                Ok(record) => return Ok(record),
                Err(StoreError::PortTaken) => continue,
                Err(StoreError::NameTaken) => return Err(ProvisionError::NameTaken(new.name.to_string())),
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// The lowest port of the range that no record holds, nothing on the host listens on, and
    /// Docker has not refused already.
    pub(super) async fn free_port(&self, refused: &HashSet<u16>) -> Result<u16, ProvisionError> {
        let range = self.config.port_range;
        let leased = self.store.leased_ports(range.first, range.last).await?;
        range
            .iter()
            .find(|p| !leased.contains(p) && !refused.contains(p) && host_port_free(self.config.publish_ip, *p))
            .ok_or(ProvisionError::PortsExhausted(range))
    }

    /// Starts the container and waits until the database is ready. Returns the port it ended on:
    /// if Docker finds the leased port taken after all (another program grabbed it since the
    /// check), the lease moves to another free port and the start is tried again.
    /// A copy of a template gets an identity of its own before it starts, and first answers as the
    /// template (its password, its database): it gets its own at once.
    async fn start_and_wait(
        &self,
        record: &InstanceRecord,
        password: &Secret,
        template: Option<&Template>,
    ) -> Result<u16, ProvisionError> {
        let mut port = record.port.expect("a record being created holds a port");
        let mut refused = HashSet::new();
        for _ in 0..PORT_RETRIES {
            // Each step's time at debug level: where a create's time goes (see the benchmark).
            let step = Instant::now();
            let spec = self.spec_for(record, password, port);
            self.runtime.create(&spec).await?;
            tracing::debug!(elapsed = ?step.elapsed(), "container created");
            if let Some(template) = template {
                self.give_copy_its_own_identity(record.engine, template, &spec.name).await?;
                tracing::debug!(elapsed = ?step.elapsed(), "identity given");
            }
            match self.runtime.start_created(&spec.name).await {
                Ok(()) => {
                    tracing::debug!(elapsed = ?step.elapsed(), "container started");
                    let Some(template) = template else {
                        self.wait_ready(record, port, password).await?;
                        return Ok(port);
                    };
                    let database = super::templates::template_database(record.engine).map(str::to_string);
                    let as_template = InstanceRecord { database, ..record.clone() };
                    self.wait_ready(&as_template, port, &template.password).await?;
                    tracing::debug!(elapsed = ?step.elapsed(), "template's server ready");
                    self.take_over_template(record, port, template, password).await?;
                    return Ok(port);
                }
                Err(RuntimeError::PortTaken) => {
                    tracing::info!(port, "Docker found the port taken; moving to another");
                    refused.insert(port);
                    port = self.move_lease(&record.id, &refused).await?;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ProvisionError::Internal(anyhow::anyhow!("Docker refused {PORT_RETRIES} ports in a row")))
    }

    /// Replaces the template's password with the instance's, and renames the template's database
    /// to the one asked for. (Every other setting is the container's, not the data's.)
    async fn take_over_template(
        &self,
        record: &InstanceRecord,
        port: u16,
        template: &Template,
        password: &Secret,
    ) -> Result<(), ProvisionError> {
        let host = self.probe_host();
        let refused = |what: &str, reason: String| ProvisionError::ServerRefused(format!("{what}: {reason}"));
        // `port`, not the record's: the lease may have moved since the record was read.
        let template_database = super::templates::template_database(record.engine);
        let endpoint = Endpoint { host: &host, port, password: &template.password, database: template_database };
        engines::rotate_password(record.engine, &endpoint, password).await.map_err(|e| refused("new password", e))?;
        if let Some(wanted) = record.database.as_deref()
            && Some(wanted) != template_database
        {
            let database = wanted.parse().map_err(|e: crate::model::Invalid| refused("database", e.0))?;
            engines::rename_database(record.engine, &Endpoint { password, ..endpoint }, &database)
                .await
                .map_err(|e| refused("database", e))?;
        }
        Ok(())
    }

    async fn move_lease(&self, id: &InstanceId, refused: &HashSet<u16>) -> Result<u16, ProvisionError> {
        loop {
            let candidate = self.free_port(refused).await?;
            match self.store.move_port(id, candidate).await {
                Ok(()) => return Ok(candidate),
                Err(StoreError::PortTaken) => continue,
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// Polls with a real login until it works, the server exits, or the deadline passes.
    pub(super) async fn wait_ready(
        &self,
        record: &InstanceRecord,
        port: u16,
        password: &Secret,
    ) -> Result<(), ProvisionError> {
        let host = self.probe_host();
        let endpoint = Endpoint { host: &host, port, password, database: record.database.as_deref() };
        let container = &self.container_name(&record.id);
        let started = Instant::now();
        let deadline = started + self.config.ready_timeout;
        let restarts_before = match self.runtime.state(container).await? {
            ContainerState::Running { restart_count } => restart_count,
            _ => 0,
        };
        let mut polls = 0u32;
        loop {
            polls += 1;
            let last_error = match engines::probe(record.engine, &endpoint).await {
                Ok(()) => {
                    tracing::debug!(elapsed = ?started.elapsed(), "database accepted its credentials");
                    return Ok(());
                }
                Err(e) => e,
            };
            let timed_out = Instant::now() >= deadline;
            if !polls.is_multiple_of(POLLS_PER_STATE_CHECK) && !timed_out {
                tokio::time::sleep(READY_POLL_INTERVAL).await;
                continue;
            }
            let exited = match self.runtime.state(container).await? {
                ContainerState::Exited { exit_code, oom_killed: true }
                | ContainerState::Restarting { exit_code, oom_killed: true } => Some(format!(
                    "the server was killed for exceeding its memory cap (exit code {exit_code}); ask for more memory"
                )),
                ContainerState::Exited { exit_code, .. } | ContainerState::Restarting { exit_code, .. } => {
                    Some(format!("the server exited with code {exit_code}"))
                }
                ContainerState::Running { restart_count } if restart_count > restarts_before => {
                    Some(format!("the server exited and was restarted {} times", restart_count - restarts_before))
                }
                ContainerState::Missing => Some("the container disappeared".to_string()),
                ContainerState::Running { .. } | ContainerState::Starting => None,
            };
            let timed_out = timed_out
                .then(|| format!("not ready within {:?} (last attempt: {last_error})", self.config.ready_timeout));
            if let Some(reason) = exited.or(timed_out) {
                let last_logs = self.server_logs(container, FAILURE_LOG_LINES, &[password]).await.unwrap_or_default();
                return Err(ProvisionError::NotReady { reason, last_logs });
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }

    /// The server's last log lines with the given secrets removed.
    pub(super) async fn server_logs(
        &self,
        container: &str,
        lines: usize,
        secrets: &[&Secret],
    ) -> Result<Vec<String>, ProvisionError> {
        let lines = self.runtime.logs_tail(container, lines).await?;
        Ok(lines.into_iter().map(|line| redact(line, secrets)).collect())
    }

    /// Undoes a failed create: container, volume, then the record, which releases the port. If the
    /// engine is unreachable the record stays, provisioning and claimed by this process, so that
    /// the reconciler finishes the undo once this process is gone.
    pub(super) async fn roll_back(&self, id: &InstanceId, reason: &str) {
        let container = self.runtime.remove_container(&self.container_name(id)).await;
        let volume = self.runtime.remove_volume(&self.volume_name(id)).await;
        if let Err(error) = container.and(volume) {
            tracing::error!(error = %error, "rollback could not remove the container or volume; keeping the record");
            return;
        }
        let done = async {
            self.store.add_event(id, EventKind::Failed, super::SYSTEM_ACTOR, Some(reason)).await?;
            self.store.delete_instance(id).await
        };
        if let Err(error) = done.await {
            tracing::error!(error = %error, "rollback could not delete the record");
        }
    }
}

/// What a create will run, once the request is checked against the catalogue.
struct Plan {
    version: String,
    image: String,
    flavor: Flavor,
    memory: MemoryMb,
    /// The version's warm pool size.
    pool: u32,
}

/// Checks what depends on the engine and the catalogue, before anything is written or started:
/// the version, memory bounds, and options that only one engine takes.
fn plan(catalogue: &Catalogue, request: &NewInstance) -> Result<Plan, ProvisionError> {
    let engine = request.engine;
    let invalid = |field: &'static str, reason: String| ProvisionError::Invalid { field, reason };
    let (version, spec) = catalogue.resolve(engine, request.version.as_ref()).map_err(|e| invalid("version", e.0))?;
    let memory = check_memory(catalogue, engine, request.memory)?;
    let only = |field: &'static str, given: bool, takes: Engine| {
        if given && engine != takes {
            Err(invalid(field, format!("only {takes} instances take a {field}, not {engine}")))
        } else {
            Ok(())
        }
    };
    only("charset", request.charset.is_some(), Engine::Mysql)?;
    only("collation", request.collation.is_some(), Engine::Mysql)?;
    only("database", request.database.is_some(), Engine::Postgres)?;
    match (&request.charset, &request.collation) {
        (Some(charset), Some(collation)) => {
            collation.check_belongs_to(charset).map_err(|e| invalid("collation", e.0))?;
            collation.check_flavor(spec.flavor).map_err(|e| invalid("collation", e.0))?;
        }
        (None, Some(_)) => return Err(invalid("collation", "a collation needs its charset; give both".into())),
        _ => {}
    }
    Ok(Plan { version, image: spec.image.clone(), flavor: spec.flavor, memory, pool: spec.pool })
}

/// The memory cap to use: the one asked for, within the engine's bounds, or the engine's default.
pub(super) fn check_memory(
    catalogue: &Catalogue,
    engine: Engine,
    memory: Option<MemoryMb>,
) -> Result<MemoryMb, ProvisionError> {
    let bounds = catalogue.engine(engine).memory;
    let memory = memory.unwrap_or(bounds.default);
    if memory < bounds.min || memory > bounds.max {
        return Err(ProvisionError::Invalid {
            field: "memory_mb",
            reason: format!(
                "{engine} instances take {} to {} MiB; {} is out of range",
                bounds.min.0, bounds.max.0, memory.0
            ),
        });
    }
    Ok(memory)
}

/// Whether nothing on the host listens on `ip:port`. A moment later another program may take it;
/// Docker then refuses the start and the create moves on (see `start_and_wait`).
fn host_port_free(ip: IpAddr, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_ok()
}
