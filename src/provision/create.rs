//! Creating an instance: validate, check the quotas, lease a port and write the record (within the
//! quotas), start the container, wait until a real client logs in, and undo everything if any step
//! fails.

use std::collections::HashSet;
use std::net::{IpAddr, TcpListener};
use std::time::{Duration, Instant};

use super::templates::Template;
use super::{Begin, Caller, Idempotency, Instance, NewInstance, Progress, ProvisionError, Provisioner, Running};
use crate::config::Catalogue;
use crate::engines::{self, Endpoint};
use crate::model::{
    Engine, EngineSettings, EventKind, InstanceId, InstanceName, MemoryMb, OperationId, OperationKind, Status,
};
use crate::runtime::{ContainerState, RuntimeError};
use crate::secrets::{Secret, redact};
use crate::store::{InstanceRecord, Need, NewInstanceRecord, StoreError};

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
    /// Creates an instance for `caller`, as an operation: checked against the catalogue first
    /// (nothing is recorded for a request that cannot be served), then recorded, then run as a
    /// task of its own. Its outcome is the instance once the database accepts its credentials.
    pub async fn create(
        &self,
        caller: &Caller,
        request: NewInstance,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<Instance>, ProvisionError> {
        let input = serde_json::to_value(&request).unwrap_or_default();
        self.start_create(Some(caller), request, input, idempotency).await
    }

    /// Starts one member of the warm pool, as an operation of dbroker's own, and waits for it.
    pub(super) async fn create_pool_member(&self, request: NewInstance) -> Result<(), ProvisionError> {
        let input = serde_json::json!({ "for": "the warm pool" });
        self.start_create(None, request, input, None).await?.outcome().await.map(drop)
    }

    /// Plans a create for `owner` (the warm pool's if `None`), records its operation and runs it.
    async fn start_create(
        &self,
        owner: Option<&Caller>,
        request: NewInstance,
        input: serde_json::Value,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<Instance>, ProvisionError> {
        let plan = plan(&self.config.catalogue, &request)?;
        // A user beyond their quota is told so before anything is recorded; the create checks
        // again as it writes its record (or claims a pool member), which settles races.
        if let Some(owner) = owner {
            let need = Need {
                owner_id: Some(owner.user_id),
                instances: 1,
                owner_memory_mb: plan.memory.0.into(),
                host_memory_mb: 0,
            };
            self.store.check_room(&need, &self.quotas.users()).await?;
            if let Some(seed) = &request.seed {
                self.check_seed(owner.user_id, request.engine, seed).await?;
            }
        }
        let id = InstanceId::random();
        let begin = Begin {
            instance_id: id.clone(),
            kind: OperationKind::Create,
            engine: Some(request.engine),
            caller: owner.cloned(),
            owner_id: owner.map(|o| o.user_id),
            input,
            idempotency: idempotency.cloned(),
        };
        let (this, owner) = (self.clone(), owner.cloned());
        let work = move |progress| async move { this.create_now(owner.as_ref(), id, request, plan, &progress).await };
        self.ops.start(begin, work).await
    }

    /// Creates instance `id` for `owner`, or for the warm pool when `owner` is `None`, within its
    /// create operation.
    #[tracing::instrument(skip_all, fields(engine = %request.engine, instance_id))]
    async fn create_now(
        &self,
        owner: Option<&Caller>,
        id: InstanceId,
        request: NewInstance,
        plan: Plan,
        progress: &Progress,
    ) -> Result<Instance, ProvisionError> {
        let seed = request.seed.clone();
        let instance = self.create_empty(owner, id, request, plan, progress).await?;
        let (Some(seed), Some(owner)) = (seed, owner) else { return Ok(instance) };
        // The instance is the caller's only once it holds its data: a seed that fails to load
        // undoes the whole create.
        if let Err(error) = self.seed_now(owner.user_id, &instance.record, &seed, progress).await {
            tracing::warn!(%error, "seeding the new instance failed; rolling back");
            self.roll_back(&instance.record.id, &error.to_string()).await;
            return Err(error);
        }
        self.reveal_current(&instance.record.id).await
    }

    /// Creates instance `id` with its engine's empty data (see `create_now`).
    async fn create_empty(
        &self,
        owner: Option<&Caller>,
        id: InstanceId,
        request: NewInstance,
        plan: Plan,
        progress: &Progress,
    ) -> Result<Instance, ProvisionError> {
        let engine = request.engine;
        let Plan { version, image, memory, pool, settings } = plan;
        // A started instance of the pool is ready in milliseconds; the pool holds only the
        // engine's defaults, so a MySQL character set of the user's own needs a fresh one.
        if let Some(caller) = owner
            && pool > 0
            && request.charset.is_none()
            && let Some(instance) = self.claim_from_pool(caller, &request, &version, memory, &id, progress).await?
        {
            return Ok(instance);
        }
        tracing::Span::current().record("instance_id", tracing::field::display(&id));
        // Before the record: a missing image is a configuration problem, not an instance to undo;
        // and an engine that does not answer fails the create here, with nothing to undo.
        let image_id = self.runtime.ensure_image(&image).await.map_err(|e| match e {
            RuntimeError::ImageMissing { image, reason } => {
                ProvisionError::ImageMissing { image, flag: Catalogue::image_flag(engine), reason }
            }
            other => other.into(),
        })?;
        let operation = progress.operation_id();
        let flavor = self.flavor_of(engine, &image, &image_id, operation).await?;
        let template = self.template_for(engine, flavor, &image, &image_id, operation).await?;
        // Before the record too: a character set or collation the server lacks is the request's
        // fault, and the server's own list says so (see `image_facts`).
        self.check_server_has(flavor, &settings, &version, &image, &image_id, operation).await?;
        progress.step("image ready").await;

        let password = Secret::generate_password();
        let password_enc = self.key.encrypt(&password);
        let name = match (&request.name, owner) {
            (Some(name), _) => name.clone(),
            (None, Some(_)) => default_name(&engine.to_string(), &id)?,
            (None, None) => default_name("pool", &id)?,
        };
        let new_record = NewInstanceRecord {
            id: &id,
            node_id: &self.node.id,
            owner_id: owner.map(|o| o.user_id),
            name: &name,
            settings: &settings,
            version: &version,
            image: &image,
            memory_mb: memory,
            port: 0, // chosen by lease_port
            username: engines::profile(engine).user,
            password_enc: &password_enc,
            status: Status::Provisioning,
            template_image: template.as_ref().map(|t| t.image_id.as_str()),
        };
        // The record comes first: from here on, no container exists that the store does not know.
        let record = self.lease_port(new_record).await?;
        let actor = owner.map_or(super::SYSTEM_ACTOR, |o| o.name.as_str());
        let detail = owner.is_none().then_some("for the warm pool");
        self.store.add_event(&id, EventKind::Created, actor, detail).await?;

        match self.start_and_wait(&record, &password, template.as_ref(), progress).await {
            Ok(port) => {
                self.store.set_status(&id, Status::Running).await?;
                self.store.add_event(&id, EventKind::Ready, super::SYSTEM_ACTOR, None).await?;
                progress.step("ready").await;
                tracing::info!(port, "instance ready");
                self.reveal_current(&id).await
            }
            Err(error) => {
                tracing::warn!(error = %error, "create failed; rolling back");
                self.roll_back(&id, &error.to_string()).await;
                Err(error)
            }
        }
    }

    /// Writes the record with the lowest free port of the range, if it fits within its owner's
    /// quota and the host's memory budget (checked as it is written, so concurrent creates never
    /// pass them together). The store's UNIQUE constraint settles races between concurrent
    /// creates, in this process or another: the loser tries the next port.
    async fn lease_port(&self, mut new: NewInstanceRecord<'_>) -> Result<InstanceRecord, ProvisionError> {
        let limits = self.quotas.limits(&self.runtime).await?;
        loop {
            new.port = self.free_port(&HashSet::new()).await?;
            match self.store.insert_instance_within(&new, &limits).await {
                Ok(record) => return Ok(record),
                Err(StoreError::PortTaken) => continue,
                Err(StoreError::NameTaken) => return Err(ProvisionError::NameTaken(new.name.as_str().to_string())),
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// The lowest port of the range that no record holds, nothing on the host listens on, and
    /// Docker has not refused already.
    pub(super) async fn free_port(&self, refused: &HashSet<u16>) -> Result<u16, ProvisionError> {
        let range = self.node.port_range;
        let leased = self.store.leased_ports(&self.node.id, range.first, range.last).await?;
        range
            .iter()
            .find(|p| !leased.contains(p) && !refused.contains(p) && host_port_free(self.node.publish_ip, *p))
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
        progress: &Progress,
    ) -> Result<u16, ProvisionError> {
        let mut port = record.port.expect("a record being created holds a port");
        let mut refused = HashSet::new();
        for _ in 0..PORT_RETRIES {
            // Each step's time is in the operation, and at debug level in the log: where a
            // create's time goes (see the benchmark).
            let spec = self.spec_for(record, password, port);
            self.runtime.create(&spec).await?;
            if let Some(template) = template {
                self.give_copy_its_own_identity(record.engine(), template, &spec.name).await?;
            }
            progress.step("container created").await;
            match self.runtime.start_created(&spec.name).await {
                Ok(()) => {
                    progress.step("started").await;
                    let host = self.probe_host();
                    let Some(template) = template else {
                        let endpoint = Endpoint { port, ..self.endpoint(record, &host, password) };
                        self.wait_ready(record.engine(), &spec.name, &endpoint).await?;
                        return Ok(port);
                    };
                    // A copy of a template first answers as the template: its password, its database.
                    let database = engines::profile(record.engine()).default_database;
                    let endpoint = Endpoint { host: &host, port, password: &template.password, database };
                    self.wait_ready(record.engine(), &spec.name, &endpoint).await?;
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
        let template_database = engines::profile(record.engine()).default_database;
        let endpoint = Endpoint { host: &host, port, password: &template.password, database: template_database };
        engines::rotate_password(record.engine(), &endpoint, password).await.map_err(|e| refused("new password", e))?;
        if let Some(wanted) = record.settings.database()
            && Some(wanted.as_str()) != template_database
        {
            engines::rename_database(record.engine(), &Endpoint { password, ..endpoint }, wanted)
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

    /// Polls with a real login at `endpoint` until it works, the server in `container` exits, or
    /// the ready timeout passes.
    pub(super) async fn wait_ready(
        &self,
        engine: Engine,
        container: &str,
        endpoint: &Endpoint<'_>,
    ) -> Result<(), ProvisionError> {
        self.wait_answer(container, &[endpoint.password], || engines::probe(engine, endpoint)).await
    }

    /// Polls `attempt` (real logins) until it works, the server in `container` exits, or the ready
    /// timeout passes; `secrets` are kept out of the server's log lines an error carries.
    async fn wait_answer<T, Attempt: Future<Output = Result<T, String>>>(
        &self,
        container: &str,
        secrets: &[&Secret],
        mut attempt: impl FnMut() -> Attempt,
    ) -> Result<T, ProvisionError> {
        let started = Instant::now();
        let deadline = started + self.config.ready_timeout;
        let restarts_before = match self.runtime.state(container).await? {
            ContainerState::Running { restart_count } => restart_count,
            _ => 0,
        };
        let mut polls = 0u32;
        loop {
            polls += 1;
            let last_error = match attempt().await {
                Ok(answer) => {
                    tracing::debug!(elapsed = ?started.elapsed(), "database accepted its credentials");
                    return Ok(answer);
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
                ContainerState::Running { .. } | ContainerState::Created | ContainerState::Starting => None,
            };
            let timed_out = timed_out
                .then(|| format!("not ready within {:?} (last attempt: {last_error})", self.config.ready_timeout));
            if let Some(reason) = exited.or(timed_out) {
                let last_logs = self.server_logs(container, FAILURE_LOG_LINES, secrets).await.unwrap_or_default();
                return Err(ProvisionError::NotReady { reason, last_logs });
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }

    /// Waits until a copy of a template, whose create a crash interrupted, answers: with the
    /// instance's own password (the create had taken the template over), or still as the
    /// template, which it then takes over as the create would have. A copy whose template the
    /// host no longer has can only answer with its own.
    pub(super) async fn finish_copy(
        &self,
        record: &InstanceRecord,
        template_image: &str,
        operation: &OperationId,
    ) -> Result<(), ProvisionError> {
        let Some(template) = self.template_by_id(record.engine(), template_image, operation).await? else {
            return self.wait_until_ready(record).await;
        };
        let (engine, host, password) = (record.engine(), self.probe_host(), self.password_of(record)?);
        let own = self.endpoint(record, &host, &password);
        let database = engines::profile(engine).default_database;
        let as_template = Endpoint { host: &host, port: own.port, password: &template.password, database };
        let container = self.container_name(&record.id);
        let (own, as_template) = (&own, &as_template);
        let still_the_template = self
            .wait_answer(&container, &[&password, &template.password], move || async move {
                let own_error = match engines::probe(engine, own).await {
                    Ok(()) => return Ok(false),
                    Err(e) => e,
                };
                engines::probe(engine, as_template).await.map(|()| true).map_err(|_| own_error)
            })
            .await?;
        if still_the_template {
            self.take_over_template(record, own.port, &template, &password).await?;
        }
        Ok(())
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
    /// engine is unreachable the record stays, provisioning with no operation in flight once this
    /// one has ended, and the reconciler finishes the undo when the engine is back.
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
pub(super) struct Plan {
    version: String,
    image: String,
    memory: MemoryMb,
    /// The version's warm pool size.
    pool: u32,
    /// What only the engine has: the request's options, or the engine's defaults.
    settings: EngineSettings,
}

/// Checks what depends on the engine and the catalogue, before anything is written or started:
/// the version, memory bounds, options that only one engine takes, and that a collation is named
/// for its character set. Whether the server has them is checked once the image is there.
fn plan(catalogue: &Catalogue, request: &NewInstance) -> Result<Plan, ProvisionError> {
    let engine = request.engine;
    let invalid = |field: &'static str, reason: String| ProvisionError::Invalid { field, reason };
    let (version, spec) = catalogue.resolve(engine, request.version.as_ref()).map_err(|e| invalid("version", e.0))?;
    let memory = check_memory(catalogue, engine, request.memory)?;
    // Which engine takes which option is the engine's to say (its profile's `options`).
    let given = [
        ("charset", request.charset.is_some()),
        ("collation", request.collation.is_some()),
        ("database", request.database.is_some()),
    ];
    let refused = given.into_iter().find(|(field, given)| *given && !engines::profile(engine).options.contains(field));
    if let Some((field, _)) = refused {
        let takers: Vec<&str> =
            Engine::ALL.iter().filter(|e| engines::profile(**e).options.contains(&field)).map(|e| e.as_str()).collect();
        return Err(invalid(field, format!("only {} instances take a {field}, not {engine}", takers.join(" and "))));
    }
    match (&request.charset, &request.collation) {
        (Some(charset), Some(collation)) => {
            collation.check_belongs_to(charset).map_err(|e| invalid("collation", e.0))?;
        }
        (None, Some(_)) => return Err(invalid("collation", "a collation needs its charset; give both".into())),
        _ => {}
    }
    let settings = match engine {
        Engine::Mysql => {
            EngineSettings::Mysql { charset: request.charset.clone(), collation: request.collation.clone() }
        }
        Engine::Redis => EngineSettings::Redis,
        Engine::Postgres => match &request.database {
            Some(database) => EngineSettings::Postgres { database: database.clone() },
            None => engines::default_settings(engine),
        },
    };
    Ok(Plan { version, image: spec.image.clone(), memory, pool: spec.pool, settings })
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

/// An instance's name when the request gives none: `PREFIX-ID` (`redis-3f2a9c01b7de`).
fn default_name(prefix: &str, id: &InstanceId) -> Result<InstanceName, ProvisionError> {
    format!("{prefix}-{id}").parse().map_err(|e: crate::model::Invalid| ProvisionError::Internal(anyhow::anyhow!(e)))
}

/// Whether nothing on the host listens on `ip:port`. A moment later another program may take it;
/// Docker then refuses the start and the create moves on (see `start_and_wait`).
fn host_port_free(ip: IpAddr, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_ok()
}
